"""Released checkpoints of the seed methods -> contraseg state dicts.

Five released layouts are understood (``FORMATS``); for each, the key map below was
written from the parameter names and shapes of the released models (listed in
``tests/fixtures/released_*.txt``):

``openseg-hrnet-w48``  openseg / ContrastiveSeg / ProtoSeg ``HRNet_W48`` (cross-entropy),
                       ``HRNet_W48_CONTRAST`` (+ ``proj_head``) and ``HRNet_W48_MEM``
                       (``encoder_q.`` prefix, memory queues)
``protoseg-hrnet-w48`` ProtoSeg ``HRNet_W48_Proto`` (prototype classifier)
``deeplabv2-r101``     DeepLab-v2 ResNet-101 (Caffe layout) with the ASPP classifier of the
                       UDA line (``layer5`` / multi-level ``layer5`` + ``layer6``
                       ``conv2d_list``), as AdaptSegNet and FDA release it (a bare state
                       dict). AdaptSegNet's ``Classifier_Module`` sums 2 branches
                       (``aspp_branches=2``), FDA's all 4 (default). ProAC has this model
                       only as a commented-out line (UDA/models/deeplabv2plus.py:229).
                       ProDA's stage-1 ``ResNet101`` has another head and is refused.
``proac-deeplab``      ProAC's UDA ``DeepLab`` (:mod:`.convert_uda`)
``fada-deeplabv2``     FADA's ``feature_extractor`` + ``classifier`` (:mod:`.convert_uda`)

Key map (released -> contraseg):

=====================================  =============================================  ===========
released                               contraseg                                      how
=====================================  =============================================  ===========
``backbone.<k>`` (HRNet)               ``backbone.body.<k>`` (``hrnet_w48_openseg``)  copy
``cls_head.0.{weight,bias}``           ``head.conv.0.{weight,bias}`` (head ``hrnet``)  copy
``cls_head.1.0.<bn>``                  ``head.conv.1.<bn>``                           copy
``cls_head.3.weight``                  ``head.classifier.1.weight``                   copy
(no bias in the release)               ``head.classifier.1.bias``                     zeros
``proj_head.proj.0.weight`` (contrast) ``projection.proj.0.weight`` (``convmlp``)     copy
``proj_head.proj.0.bias``              folded: ``projection.proj.1.running_mean`` =   fold
                                       ``proj_head.proj.1.0.running_mean - bias``
``proj_head.proj.1.0.<bn>``            ``projection.proj.1.<bn>``                     copy
``proj_head.proj.2.*``                 ``projection.proj.3.*``                        copy
``proj_head.proj.{0,2}.*`` (proto)     ``projection.proj.{0,2}.*`` (``mlp``)          copy
``proj_head.mlp2.*`` (proto)           the same module as ``proj.*``: checked equal   dropped
``prototypes`` K x M x D (proto)       ``prototype_head.bank.prototypes``             copy
``feat_norm.*`` / ``mask_norm.*``      ``prototype_head.feat_norm.*`` / ``mask_norm.*`` copy
``segment_queue``, ``pixel_queue``...  (ContrastiveSeg memory, not needed to predict) dropped
``conv1``, ``bn1``, ``layer1..4.*``    ``backbone.body.*`` (``resnet101_deeplabv2``)  copy
``layerN.conv2d_list.i.*`` (last N)    ``head.branches.i.*`` (head ``deeplabv2``)     copy
``layer5.*`` when ``layer6`` exists    (multi-level auxiliary classifier on layer3)   dropped
``backbone.<k>`` (ProAC, FADA)         ``backbone.body.<k>`` (``resnet101_proac`` /   copy
                                       ``resnet101``)
``decoder.conv2d_list.i.*`` (ProAC),   ``head.branches.i.*`` (head ``deeplabv2``)     copy
``classifier.conv2d_list.i.*`` (FADA)
``decoder.proj.*`` (ProAC)             ``projection.proj.*`` (``linear``)             copy
=====================================  =============================================  ===========

Folding a conv bias into the following BatchNorm's running mean is exact: in eval mode
``BN(Wx + b)`` with mean ``m`` equals ``BN'(Wx)`` with mean ``m - b``; in training mode the
batch mean absorbs any constant. A BatchNorm's ``num_batches_tracked`` missing from an old
checkpoint is filled with 0. A leading ``module.`` (DataParallel / DDP) is removed first.

Parameter-free released behaviours are reproduced by model options the plan sets
(``model_config``): ``hrnet_fusion="interpolate"`` (openseg's size-targeted branch fusion,
no padding) for both HRNet formats, ``projection_norm="width"`` for ProtoSeg (its
``proj_head`` L2-normalises over ``dim=-1`` of B x C x H x W); ``convert-checkpoint`` also
stores ``eval.align_corners: true`` (every released tester upsamples so). AdaptSegNet's
``Classifier_Module`` returns inside its loop and so sums only its first two ASPP branches
(``aspp_branches=2`` reproduces that by zeroing the other two). The measured equality with
the released code is in docs/checkpoints.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .convert_formats import plan_deeplabv2, plan_openseg_hrnet, plan_protoseg_hrnet
from .convert_plan import Conversion, ConversionError, Op, Plan, strip_prefix
from .convert_uda import plan_fada, plan_proac_deeplab

__all__ = [
    "FORMATS",
    "Conversion",
    "ConversionError",
    "Op",
    "convert_state_dict",
    "load_released_state_dict",
    "plan_conversion",
]


def load_released_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, Tensor]:
    """The tensors of a released checkpoint file, ``module.`` prefixes removed.

    Accepts a bare state dict (AdaptSegNet, FDA) or a dict holding it under
    ``state_dict`` / ``model`` (openseg saves ``{"config_dict": ..., "state_dict": ...}``),
    under ``{<NetClass>: {"model_state": ...}}`` (ProAC ``'DeepLab'``, ProDA
    ``'ResNet101'``: the one such entry, or ``DeepLab`` / ``ResNet101`` among several), or
    FADA's ``{"feature_extractor": ..., "classifier": ...}`` (merged as ``backbone.*`` and
    ``classifier.*``, each without ``module.``). Loaded with
    ``weights_only=True`` unless ``allow_pickle`` (only for files you trust).

    Raises:
        ConversionError: one line naming the file when it is missing, unreadable or holds
            no state dict.
    """
    from ..load_errors import describe_load_error, not_a_file_message

    path = Path(path)
    if not path.is_file():
        raise ConversionError(not_a_file_message(path, "checkpoint"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means an unusable file here
        reason = describe_load_error(err)
        hint = "; re-run with --allow-pickle if you trust it" if "pickled" in reason and not allow_pickle else ""
        raise ConversionError(f"{path}: not a readable checkpoint ({reason}){hint}") from None
    obj = _unwrap(obj, path)
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return strip_prefix(dict(obj), "module.")


def _unwrap(obj: Any, path: Path) -> Any:
    """The state dict inside one of the layouts :func:`load_released_state_dict` accepts."""
    if not isinstance(obj, Mapping):
        return obj
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            return obj[key]
    if isinstance(obj.get("feature_extractor"), Mapping) and isinstance(obj.get("classifier"), Mapping):
        merged = dict(strip_prefix(dict(obj["feature_extractor"]), "module."))
        merged.update({f"classifier.{k}": v for k, v in strip_prefix(dict(obj["classifier"]), "module.").items()})
        return merged
    nets = [k for k, v in obj.items() if isinstance(v, Mapping) and isinstance(v.get("model_state"), Mapping)]
    preferred = [k for k in nets if k in ("DeepLab", "ResNet101")]
    if len(nets) == 1 or len(preferred) == 1:
        return obj[(preferred or nets)[0]]["model_state"]
    if nets:
        raise ConversionError(f"{path}: holds several networks ({', '.join(map(str, nets))}); cannot tell which to convert")
    return obj


FORMATS: dict[str, tuple[Callable[..., Plan], str]] = {
    "openseg-hrnet-w48": (plan_openseg_hrnet,
                          "openseg / ContrastiveSeg / ProtoSeg HRNet_W48, HRNet_W48_CONTRAST, HRNet_W48_MEM"),
    "protoseg-hrnet-w48": (plan_protoseg_hrnet, "ProtoSeg HRNet_W48_Proto (prototype classifier)"),
    "deeplabv2-r101": (plan_deeplabv2, "DeepLab-v2 ResNet-101, AdaptSegNet / FDA layer5/layer6 ASPP classifier"),
    "proac-deeplab": (plan_proac_deeplab, "ProAC UDA DeepLab ({'DeepLab': {'model_state'}}, torchvision-style ResNet)"),
    "fada-deeplabv2": (plan_fada, "FADA feature_extractor + classifier (torchvision ResNet-101, ASPP classifier)"),
}


def plan_conversion(fmt: str, source: Mapping[str, Tensor], **options: Any) -> Plan:
    """The :class:`Plan` of format ``fmt`` for a released state dict (``module.`` removed).

    ``options``: ``aspp_branches`` (deeplabv2-r101 only). Raises ConversionError.
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown checkpoint format {fmt!r}; choose one of {', '.join(FORMATS)}")
    unknown = sorted(set(options) - ({"aspp_branches"} if fmt == "deeplabv2-r101" else set()))
    given = [k for k in unknown if options[k] is not None]
    if given:
        raise ConversionError(f"option {given[0]!r} does not apply to {fmt}")
    options = {k: v for k, v in options.items() if k not in unknown}
    return FORMATS[fmt][0](_normalised_source(fmt, source), **options)


def _normalised_source(fmt: str, source: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``source`` without ``module.``; for openseg also without HRNet_W48_MEM's ``encoder_q.``
    (the network sits under it, the memory queues beside it)."""
    state = strip_prefix(dict(source), "module.")
    if fmt == "openseg-hrnet-w48":
        state = {k[len("encoder_q."):] if k.startswith("encoder_q.") else k: v for k, v in state.items()}
    return state


def convert_state_dict(fmt: str, source: Mapping[str, Tensor], template: Mapping[str, Tensor] | None = None,
                       **options: Any) -> Conversion:
    """Convert a released state dict of format ``fmt`` into a contraseg one.

    Args:
        fmt: a key of :data:`FORMATS`.
        source: the released tensors (``module.`` / ``encoder_q.`` prefixes allowed).
        template: the state dict of ``build_segmentor(**plan.model_config)``; built here
            when None. Every template key must be produced and every shape must match.
        options: ``aspp_branches`` for ``deeplabv2-r101``.

    Raises:
        ConversionError: one line naming the first missing, unexpected or mis-shaped key.
    """
    plan = plan_conversion(fmt, source, **options)
    source = _normalised_source(fmt, source)
    if template is None:
        from .segmentor import build_segmentor

        template = build_segmentor(**plan.model_config).state_dict()
    # Old checkpoints (PyTorch < 0.4.1) have no num_batches_tracked.
    ops = [Op(op.target, "fill") if op.target.endswith(".num_batches_tracked") and op.sources
           and op.sources[0] not in source else op for op in plan.ops]
    targets = {op.target for op in ops}
    missing = [k for k in template if k not in targets]
    if missing:
        raise ConversionError(f"{fmt}: nothing in the map produces {missing[0]!r} "
                              f"({len(missing)} contraseg tensors unmapped)")
    extra = [op.target for op in ops if op.target not in template]
    if extra:
        raise ConversionError(f"{fmt}: the map produces {extra[0]!r}, which the contraseg model does not have "
                              f"(is it a different network size?)")
    used = {s for op in ops for s in op.sources}
    unused = [k for k in source if k not in used and k not in plan.dropped]
    if unused:
        raise ConversionError(f"{fmt}: released tensor {unused[0]!r} is not part of the map ({len(unused)} unused); "
                              f"is it a {fmt} checkpoint?")
    state: dict[str, Tensor] = {}
    for op in ops:
        like = template[op.target]
        for key in op.sources:
            if key not in source:
                raise ConversionError(f"{fmt}: the checkpoint has no {key!r}; is it a {fmt} checkpoint?")
        if op.kind in ("fill", "zero"):
            value = torch.zeros_like(like)
        elif op.kind == "fold":
            value = source[op.sources[0]] - source[op.sources[1]]
        else:
            value = source[op.sources[0]]
        if tuple(value.shape) != tuple(like.shape):
            raise ConversionError(f"{fmt}: {op.sources[0]!r} has shape {tuple(value.shape)} but contraseg's "
                                  f"{op.target!r} has {tuple(like.shape)}")
        state[op.target] = value.detach().to(like.dtype)  # shares the released tensor's storage
    return Conversion(state, plan.model_config, ops, dict(plan.dropped), list(plan.notes))
