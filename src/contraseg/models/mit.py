"""SegFormer's Mix Transformer (MiT-B0..B2) encoder, written from the paper.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021. timm has no MiT and ``transformers`` is not a dependency,
so the encoder is here (~150 lines). Four stages; stage i:

* **overlapping patch embedding**: ``Conv2d(k=7, s=4, p=3)`` for stage 1, ``(k=3, s=2, p=1)``
  after, then LayerNorm; a ``H x W`` map becomes ``ceil(H/s) x ceil(W/s)`` tokens;
* ``depth_i`` **blocks** ``x = x + Attn(LN(x)); x = x + MixFFN(LN(x))`` with stochastic depth;
* a final LayerNorm, then the tokens are reshaped back to ``B x C_i x h_i x w_i``.

**Efficient self-attention** (paper Eq. 1-2): queries from every token, keys and values
from the token map shrunk by ``R = sr_ratio`` with a ``Conv2d(k=R, s=R)`` and LayerNorm,
``Attn(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V``: cost ``N^2 / R^2`` instead of ``N^2``.

**Mix-FFN** (Eq. 3): ``x_out = MLP(GELU(DWConv3x3(MLP(x_in)))) + x_in``; the depthwise 3x3
conv leaks positional information, so no positional encoding is needed and any input
size works.

Parameter names follow the released SegFormer encoder (``patch_embed1.proj``,
``block1.0.attn.q`` / ``.kv`` / ``.sr``, ``block1.0.mlp.dwconv.dwconv``, ``norm1``, ...), so
its ImageNet files (``mit_b0.pth``, ...) load with ``model.pretrained: /path/mit_b0.pth``.

Deliberate difference: the backbone pads its input to a multiple of 32 (see
:mod:`contraseg.models.backbone_base`), so every stage's token map is a multiple of its
spatial-reduction ratio and the reduction conv sees every token; the released encoder
floors instead (it drops the last rows / columns of keys at odd sizes, and fails on
inputs smaller than 29 pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone_base import Backbone
from .registry import register_backbone_family
from .weights import StateDict


@dataclass(frozen=True)
class MiTSpec:
    """Widths and depths of one MiT variant (the paper's Table 6); ``head_channels`` is
    the SegFormer all-MLP decoder width used with it."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4
    drop_path_rate: float = 0.1
    head_channels: int = 256


MIT_SPECS = {
    "mit_b0": MiTSpec((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": MiTSpec((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": MiTSpec((64, 128, 320, 512), (3, 4, 6, 3), head_channels=768),
}


class OverlapPatchEmbed(nn.Module):
    """``B x C_in x H x W -> (tokens B x N x C, h, w)`` by a strided conv with overlap + LN."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention with keys / values from a ``sr_ratio``-times smaller map."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """``x B x N x C`` (N = height * width) -> ``B x N x C``."""
        batch, tokens, dim = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(batch, tokens, heads, dim // heads).transpose(1, 2)
        source = x
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(batch, dim, height, width)
            source = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        k, v = self.kv(source).reshape(batch, -1, 2, heads, dim // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_head)) v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class DepthwiseConv(nn.Module):
    """3x3 depthwise conv on tokens: ``B x N x C -> B x N x C`` through the h x w grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        batch, _, dim = x.shape
        grid = x.transpose(1, 2).reshape(batch, dim, height, width)
        return self.dwconv(grid).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """``fc2(GELU(DWConv3x3(fc1(x))))`` (paper Eq. 3, without the residual)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), height, width)))


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: zero the residual branch of whole samples with probability
    ``rate`` and scale the kept ones by ``1 / (1 - rate)``."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class MiTBlock(nn.Module):
    """``x + Attn(LN(x))`` then ``x + MixFFN(LN(x))``, each branch with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int, drop_path_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + drop_path(self.attn(self.norm1(x), height, width), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x), height, width), self.drop_path_rate, self.training)


class MixTransformer(nn.Module):
    """The four-stage encoder: ``B x 3 x H x W -> [B x C_i x h_i x w_i]``, strides 4, 8, 16, 32."""

    def __init__(self, spec: MiTSpec) -> None:
        super().__init__()
        self.spec = spec
        total = sum(spec.depths)
        rates = [spec.drop_path_rate * i / max(1, total - 1) for i in range(total)]
        start, in_channels = 0, 3
        for i, (dim, depth) in enumerate(zip(spec.embed_dims, spec.depths), start=1):
            patch, stride = (7, 4) if i == 1 else (3, 2)
            setattr(self, f"patch_embed{i}", OverlapPatchEmbed(in_channels, dim, patch, stride))
            blocks = [MiTBlock(dim, spec.num_heads[i - 1], spec.sr_ratios[i - 1], spec.mlp_ratio, rates[start + j])
                      for j in range(depth)]
            setattr(self, f"block{i}", nn.ModuleList(blocks))
            setattr(self, f"norm{i}", nn.LayerNorm(dim, eps=1e-6))
            start, in_channels = start + depth, dim
        self.apply(_init_weights)

    def forward(self, images: Tensor) -> list[Tensor]:
        x, levels = images, []
        for i in range(1, 5):
            tokens, height, width = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                tokens = block(tokens, height, width)
            tokens = getattr(self, f"norm{i}")(tokens)
            x = tokens.transpose(1, 2).reshape(images.shape[0], -1, height, width)
            levels.append(x)
        return levels


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linears, unit LayerNorms, He-normal (fan-out) convs."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        nn.init.zeros_(module.bias)


class MiTBackbone(Backbone):
    """A Mix Transformer as a contraseg backbone: pyramid = the four stages (strides 4-32),
    single map = the last stage. ``output_stride`` is accepted and ignored.

    ``head_channels`` is the SegFormer decoder width of the variant (256 for B0/B1, 768
    for B2), used by ``build_segmentor`` for the ``segformer`` head.
    """

    drop_prefixes = ("head.",)
    size_divisor = 32

    def __init__(self, variant: str, output_stride: int = 8, spec: MiTSpec | None = None) -> None:
        if spec is None and variant not in MIT_SPECS:
            raise ValueError(f"unknown MiT variant {variant!r}; choose one of {', '.join(MIT_SPECS)}")
        spec = spec or MIT_SPECS[variant]
        body = MixTransformer(spec)
        super().__init__(body, spec.embed_dims[-1], 32, spec.embed_dims, (4, 8, 16, 32))
        self.name = variant
        self.head_channels = spec.head_channels

    def _pyramid(self, images: Tensor) -> list[Tensor]:
        return self.body(images)

    def fetch_hub_state_dict(self) -> StateDict:
        raise RuntimeError(f"no download for {self.name}: pass the released SegFormer ImageNet file "
                           f"(e.g. {self.name}.pth) as a local path")


register_backbone_family(MiTBackbone, {
    "mit_b0": "SegFormer Mix Transformer B0",
    "mit_b1": "SegFormer Mix Transformer B1",
    "mit_b2": "SegFormer Mix Transformer B2",
})
