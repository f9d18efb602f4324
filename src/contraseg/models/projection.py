"""Projection head: dense features to L2-normalised embeddings for the contrastive losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

PROJECTION_KINDS = ("convmlp", "linear", "mlp")
# The axis of the output's L2 normalisation: "channels" (dim 1, contraseg's default) or
# "width" (dim -1 of B x C x H x W, as ProtoSeg releases it).
PROJECTION_NORMS = ("channels", "width")


class ProjectionHead(nn.Module):
    """``B x in_channels x h x w -> B x embed_dim x h x w``, unit L2 norm over channels.

    ``kind="linear"``: one 1x1 conv. ``kind="convmlp"`` (ContrastiveSeg, Wang et al.
    ICCV 2021): 1x1 conv (in -> in) -> BN -> ReLU -> 1x1 conv (in -> embed_dim).
    ``kind="mlp"`` (ProtoSeg's ``proj_head``, Zhou et al. CVPR 2022): 1x1 conv (in -> in,
    with bias) -> ReLU -> 1x1 conv (in -> embed_dim), no BN.

    ``norm="channels"`` (default): the output is ``F.normalize(z, dim=1)``, i.e.
    ``z[b, :, y, x] / max(||z[b, :, y, x]||_2, eps)`` per pixel. ``norm="width"``: as the
    released ProtoSeg, ``F.normalize(z, dim=-1)`` on B x C x H x W, i.e.
    ``z[b, c, y, :] / max(||z[b, c, y, :]||_2, eps)`` over the image width
    (ProtoSeg@1c4a778 lib/models/modules/contrast.py:15-16, used at :29 and
    lib/models/nets/hrnet.py:152). That is not a per-pixel unit vector and depends on the
    width of the image (or crop); it exists so that converted ProtoSeg checkpoints
    compute what they were trained to compute. New training keeps ``"channels"``.

    Example:
        >>> import torch
        >>> head = ProjectionHead(64, 16)
        >>> head(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(self, in_channels: int, embed_dim: int, kind: str = "convmlp", norm: str = "channels") -> None:
        super().__init__()
        if norm not in PROJECTION_NORMS:
            raise ValueError(f"unknown projection norm {norm!r}; choose one of {', '.join(PROJECTION_NORMS)}")
        self.norm = norm
        for name, value in (("in_channels", in_channels), ("embed_dim", embed_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if kind == "linear":
            self.proj: nn.Module = nn.Conv2d(in_channels, embed_dim, 1)
        elif kind == "convmlp":
            self.proj = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 1, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, embed_dim, 1),
            )
        elif kind == "mlp":
            self.proj = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, embed_dim, 1),
            )
        else:
            raise ValueError(f"unknown projection kind {kind!r}; choose one of {', '.join(PROJECTION_KINDS)}")
        self.kind = kind
        self.in_channels = in_channels
        self.embed_dim = embed_dim

    def forward(self, features: Tensor) -> Tensor:
        """``B x in_channels x h x w -> B x embed_dim x h x w``, unit norm over channels
        (``norm="channels"``) or over the width (``norm="width"``)."""
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"features must be B x {self.in_channels} x h x w, got shape {tuple(features.shape)}"
            )
        return F.normalize(self.proj(features), dim=1 if self.norm == "channels" else -1)
