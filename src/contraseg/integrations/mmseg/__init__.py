"""contraseg in mmsegmentation (1.x): ProAC, pixel contrast (with memory) and ProtoSeg
by ``custom_imports`` and a few config lines.

Importing this package registers, in mmseg's ``MODELS`` registry:

- the embedding losses ``ProACLoss``, ``PixelContrastLoss`` (``memory=dict(...)`` for
  the memory bank), ``PPCLoss``, ``PPDLoss`` (:mod:`.losses`);
- decode heads that also give the pixel embedding, ``EmbedFCNHead``,
  ``EmbedASPPHead``, ``EmbedDepthwiseSeparableASPPHead``, ``EmbedPSPHead``,
  ``EmbedUPerHead``, ``EmbedSegformerHead`` (:mod:`.heads`), optionally with ProtoSeg's
  nearest-prototype classifier (``prototypes=dict(num_prototypes=10)``).

A config on top of any mmseg config (see ``configs/mmseg/`` in the repository)::

    _base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py'
    custom_imports = dict(imports=['contraseg.integrations.mmseg'], allow_failed_imports=False)
    model = dict(decode_head=dict(
        type='EmbedDepthwiseSeparableASPPHead', embed_channels=256,
        loss_decode=[dict(type='CrossEntropyLoss', loss_weight=1.0),
                     dict(type='ProACLoss', loss_weight=0.1)]))

mmseg trains it with its own loop; the head's ``loss_by_feat`` returns mmseg's losses
(``decode.loss_ce``) and the embedding losses (``decode.loss_proac``).
"""

from __future__ import annotations

_INSTALL = "pip install 'contraseg[mmseg]' (mmsegmentation 1.x, mmengine, mmcv 2.x)"

try:
    import mmseg
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(f"contraseg.integrations.mmseg needs mmsegmentation: {_INSTALL}; {error}") from error

if int(str(getattr(mmseg, "__version__", "0")).split(".")[0]) < 1:  # pragma: no cover
    raise ImportError(
        f"contraseg.integrations.mmseg needs mmsegmentation >= 1.0 (loss_by_feat API), found {mmseg.__version__}; "
        f"{_INSTALL}"
    )

try:
    import mmseg.models  # noqa: F401  (imports mmcv.ops)
except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
    if error.name != "mmcv._ext":
        raise
    raise ImportError(
        "contraseg.integrations.mmseg: `import mmseg.models` needs mmcv's compiled ops (mmcv._ext), which "
        "mmcv-lite does not have; install the full mmcv 2.0/2.1 built for your torch (mmseg's install docs)"
    ) from error

from .heads import (  # noqa: E402  (registers the heads)
    EmbedASPPHead,
    EmbedDepthwiseSeparableASPPHead,
    EmbeddingHeadMixin,
    EmbedFCNHead,
    EmbedPSPHead,
    EmbedSegformerHead,
    EmbedUPerHead,
)
from .losses import EmbeddingLoss, PixelContrastLoss, PPCLoss, PPDLoss, ProACLoss  # noqa: E402

__all__ = [
    "EmbedASPPHead",
    "EmbedDepthwiseSeparableASPPHead",
    "EmbedFCNHead",
    "EmbedPSPHead",
    "EmbedSegformerHead",
    "EmbedUPerHead",
    "EmbeddingHeadMixin",
    "EmbeddingLoss",
    "PPCLoss",
    "PPDLoss",
    "PixelContrastLoss",
    "ProACLoss",
]
