"""Every backbone x every head at odd input sizes (65 x 65, 100 x 140, 129 x 257), in train
and eval mode: the outputs have the grid ``ceil(H / stride) x ceil(W / stride)``.

Before the backbones padded their input, ``hrnet_w18`` / ``hrnet_w48`` failed at every side
that is not a multiple of 32 (timm's branch fusion adds maps of different sizes).

To stay fast, each backbone class is built once at its smallest width and shared by the
heads (8 channels); the named variants differ from the built one only in widths / depths,
never in the code that pads, crops or fuses:

==========================  =============================================================
built here                  covers
==========================  =============================================================
``resnet18`` (os 16)        ``resnet50``, ``resnet101``, os 8 (same ``ResNetBackbone``)
``hrnet_w18_small``         ``hrnet_w18``, ``hrnet_w48`` (same timm ``HighResolutionNet``)
``mobilenet_v3`` (os 16)    itself, os 8
Swin-T, 32 wide, depth 1    ``swin_t`` (timm ``swin_tiny_patch4_window7_224``, same window / patch)
ConvNeXt-T, 16 wide         ``convnext_t`` (timm ``convnext_tiny``)
MiT, 16 wide, depth 1       ``mit_b0``, ``mit_b1``, ``mit_b2`` (same ``MixTransformer``)
``timm:resnet10t`` (os 16)  any ``timm:NAME`` with channels-first features
==========================  =============================================================

Each backbone runs once per size and mode; the seven heads then run through
``Segmentor.forward`` on its output (``_Replay``). Whole segmentors with the registry's
backbones at an odd size are in tests/test_models.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from contraseg.models import Segmentor, available_heads, build_backbone, build_head
from contraseg.models.heads import is_multi_level_head
from contraseg.models.mit import MiTBackbone, MiTSpec
from contraseg.models.ocr import OCRHead
from contraseg.models.projection import ProjectionHead
from contraseg.models.timm_backbone import TimmBackbone

K, D, C = 3, 4, 8
SIZES = [(65, 65), (100, 140), (129, 257)]


def _small_backbones():
    return {
        "resnet18": build_backbone("resnet18", output_stride=16),
        "hrnet_w18_small": build_backbone("hrnet_w18_small"),
        "mobilenet_v3": build_backbone("mobilenet_v3", output_stride=16),
        "swin_t": TimmBackbone("swin_tiny_patch4_window7_224", name="swin_t", strict_img_size=False,
                               embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
        "convnext_t": TimmBackbone("convnext_tiny", name="convnext_t", dims=(16, 32, 64, 128), depths=(1, 1, 1, 1)),
        "mit": MiTBackbone("mit_b0", spec=MiTSpec((16, 32, 64, 128), (1, 1, 1, 1), num_heads=(1, 2, 4, 8))),
        "timm:resnet10t": build_backbone("timm:resnet10t", output_stride=16),
    }


@pytest.fixture(scope="module")
def backbones():
    torch.manual_seed(0)
    return _small_backbones()


class _Replay(torch.nn.Module):
    """Stands in for a backbone inside a Segmentor: returns the pyramid the real backbone
    computed on the same images (and its own ``merge`` of it), so each head runs through
    ``Segmentor.forward`` without recomputing the backbone seven times."""

    def __init__(self, backbone, pyramid) -> None:
        super().__init__()
        self.pyramid = pyramid
        self.merge = backbone.merge
        for attr in ("out_channels", "output_stride", "pyramid_channels", "pyramid_strides"):
            setattr(self, attr, getattr(backbone, attr))

    def forward_pyramid(self, images):
        return self.pyramid

    def forward(self, images):
        return self.merge(self.pyramid)


def _head(backbone, head_name: str):
    if head_name == "ocr":  # the released soft-region head is C_in wide: narrowed here
        return OCRHead(backbone.out_channels, K, K, channels=C, region_channels=C)
    multi = is_multi_level_head(head_name)
    channels = list(backbone.pyramid_channels) if multi else backbone.out_channels
    return build_head(head_name, channels, K, output_stride=backbone.output_stride, channels=C, num_regions=K)


@pytest.mark.parametrize("name", ["resnet18", "hrnet_w18_small", "mobilenet_v3", "swin_t", "convnext_t", "mit",
                                  "timm:resnet10t"])
def test_every_head_on_backbone_at_odd_sizes(backbones, name: str) -> None:
    backbone = backbones[name]
    decoders = {head: _head(backbone, head) for head in available_heads()}
    heads = {head: (dec, ProjectionHead(dec.embed_channels, D, "linear")) for head, dec in decoders.items()}
    for height, width in SIZES:
        images = torch.randn(1, 3, height, width)
        for train in (True, False):
            backbone.train(train)
            with torch.set_grad_enabled(train):
                pyramid = backbone.forward_pyramid(images)
                single = backbone(images)
            what = (name, height, width, "train" if train else "eval")
            assert [f.shape[-2:] for f in pyramid] == [
                (math.ceil(height / s), math.ceil(width / s)) for s in backbone.pyramid_strides
            ], what
            assert [f.shape[1] for f in pyramid] == list(backbone.pyramid_channels), what
            stride = backbone.output_stride
            assert single.shape == (1, backbone.out_channels, math.ceil(height / stride), math.ceil(width / stride))
            for head, (decoder, projection) in heads.items():
                model = Segmentor(_Replay(backbone, pyramid), decoder, projection).train(train)
                grid = (math.ceil(height / model.output_stride), math.ceil(width / model.output_stride))
                with torch.set_grad_enabled(train):
                    out = model(images)
                assert out["logits"].shape == (1, K, *grid), (head, *what)
                assert out["embed"].shape == (1, D, *grid), (head, *what)
                assert torch.isfinite(out["logits"]).all(), (head, *what)
                if head == "ocr":
                    assert out["aux_logits"].shape == (1, K, *grid), (head, *what)


def test_padding_does_not_change_a_multiple_of_the_divisor(backbones) -> None:
    """At a size that needs no padding, HRNet's output is the network's own."""
    backbone = backbones["hrnet_w18_small"].eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = backbone.forward_pyramid(images)
        raw = backbone.body(images)
    for a, b in zip(ours, raw):
        torch.testing.assert_close(a, b)


def test_padded_input_equals_cropped_network_output(backbones) -> None:
    """At 100 x 140 the maps are the network's output on the zero-padded 128 x 160 input,
    cropped to ceil(H / stride) x ceil(W / stride)."""
    backbone = backbones["hrnet_w18_small"].eval()
    images = torch.randn(1, 3, 100, 140)
    padded = torch.zeros(1, 3, 128, 160)
    padded[..., :100, :140] = images
    with torch.no_grad():
        ours = backbone.forward_pyramid(images)
        raw = backbone.body(padded)
    for a, b, stride in zip(ours, raw, backbone.pyramid_strides):
        torch.testing.assert_close(a, b[..., : math.ceil(100 / stride), : math.ceil(140 / stride)])
