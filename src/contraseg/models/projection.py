"""Projection head: dense features to L2-normalised embeddings for the contrastive losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

PROJECTION_KINDS = ("convmlp", "linear", "mlp")


class ProjectionHead(nn.Module):
    """``B x in_channels x h x w -> B x embed_dim x h x w``, unit L2 norm over channels.

    ``kind="linear"``: one 1x1 conv. ``kind="convmlp"`` (ContrastiveSeg, Wang et al.
    ICCV 2021): 1x1 conv (in -> in) -> BN -> ReLU -> 1x1 conv (in -> embed_dim).
    ``kind="mlp"`` (ProtoSeg's ``proj_head``, Zhou et al. CVPR 2022): 1x1 conv (in -> in,
    with bias) -> ReLU -> 1x1 conv (in -> embed_dim), no BN. (The released ProtoSeg
    normalises this output over the image *width*, ``F.normalize(x, dim=-1)`` on a
    B x C x H x W tensor; here, as everywhere in contraseg, over channels.)
    The output is ``F.normalize(z, dim=1)``, i.e. ``z / max(||z||_2, eps)`` per pixel.

    Example:
        >>> import torch
        >>> head = ProjectionHead(64, 16)
        >>> head(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(self, in_channels: int, embed_dim: int, kind: str = "convmlp") -> None:
        super().__init__()
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
        """``B x in_channels x h x w -> B x embed_dim x h x w`` with unit norm over dim 1."""
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"features must be B x {self.in_channels} x h x w, got shape {tuple(features.shape)}"
            )
        return F.normalize(self.proj(features), dim=1)
