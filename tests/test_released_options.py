"""The released behaviours as model / eval options (issue 22), each against its formula:
``projection_norm: width`` vs a plain loop, ``eval.align_corners`` vs F.interpolate and a
plain bilinear formula, ``hrnet_fusion: interpolate`` vs the fusion written out and its
branch sizes, DeepLab-v2's ceil-mode grid; plus the config keys and their defaults."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.hrnet import HighResolutionModule

from contraseg.engine.build import segmentor_kwargs
from contraseg.engine.config import ConfigError, config_from_dict
from contraseg.engine.evaluate import inference_options
from contraseg.engine.inference import predict_logits
from contraseg.models import build_backbone, build_segmentor
from contraseg.models.hrnet import SizedFusionModule
from contraseg.models.projection import ProjectionHead


def test_width_normalisation_is_the_plain_loop_over_the_last_axis():
    head = ProjectionHead(6, 4, "mlp", norm="width").eval()
    x = torch.randn(2, 6, 3, 5, generator=torch.Generator().manual_seed(0))
    x[1, :, 2, :] = 0.0  # a row whose projection is the bias only
    with torch.no_grad():
        z = head.proj(x)
        out = head(x)
    ref = torch.empty_like(z)
    for b in range(2):
        for c in range(4):
            for y in range(3):
                row = z[b, c, y, :]
                ref[b, c, y, :] = row / max(math.sqrt(sum(float(v) ** 2 for v in row)), 1e-12)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 4, 3))  # unit over the width, not channels
    assert not torch.allclose(out.norm(dim=1), torch.ones(2, 3, 5))
    default = ProjectionHead(6, 4, "mlp")
    default.load_state_dict(head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(default(x).norm(dim=1), torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match="unknown projection norm 'height'"):
        ProjectionHead(6, 4, norm="height")


def bilinear_align_corners_reference(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Plain bilinear resize with align_corners=True: output i samples input i * (h - 1) / (H - 1)."""
    h, w = t.shape[-2:]
    out = torch.empty(*t.shape[:-2], *size)
    for i in range(size[0]):
        for j in range(size[1]):
            y = i * (h - 1) / (size[0] - 1) if size[0] > 1 else 0.0
            x = j * (w - 1) / (size[1] - 1) if size[1] > 1 else 0.0
            y0, x0 = min(int(y), h - 2), min(int(x), w - 2)
            dy, dx = y - y0, x - x0
            out[..., i, j] = ((1 - dy) * (1 - dx) * t[..., y0, x0] + (1 - dy) * dx * t[..., y0, x0 + 1]
                              + dy * (1 - dx) * t[..., y0 + 1, x0] + dy * dx * t[..., y0 + 1, x0 + 1])
    return out


class Coarse(torch.nn.Module):
    """Logits on a ceil(H/4) x ceil(W/4) grid: a fixed random field sliced to it."""

    def __init__(self) -> None:
        super().__init__()
        self.field = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))

    def forward(self, images):
        h, w = math.ceil(images.shape[-2] / 4), math.ceil(images.shape[-1] / 4)
        return {"logits": self.field[..., :h, :w].expand(images.shape[0], -1, -1, -1) + images.mean()}


def test_align_corners_upsampling_matches_the_formula_in_every_mode():
    model, images = Coarse(), torch.zeros(1, 3, 25, 37)
    coarse = model(images)["logits"]
    out = predict_logits(model, images, softmax=False, align_corners=True)
    torch.testing.assert_close(out, F.interpolate(coarse, size=(25, 37), mode="bilinear", align_corners=True))
    torch.testing.assert_close(out, bilinear_align_corners_reference(coarse, (25, 37)), rtol=1e-5, atol=1e-5)
    off = predict_logits(model, images, softmax=False)
    torch.testing.assert_close(off, F.interpolate(coarse, size=(25, 37), mode="bilinear", align_corners=False))
    assert (off - out).abs().max() > 1e-3
    # slide windows and scaled inputs resize with the same flag
    slide = predict_logits(model, images, mode="slide", crop_size=(25, 20), stride=(25, 17), softmax=False,
                           align_corners=True)
    left = F.interpolate(model(images[..., :20])["logits"], size=(25, 20), mode="bilinear", align_corners=True)
    torch.testing.assert_close(slide[..., :17], left[..., :17])
    scaled = predict_logits(model, images, scales=(0.5,), softmax=False, align_corners=True)
    small = F.interpolate(images, size=(12, 18), mode="bilinear", align_corners=True)
    up = F.interpolate(model(small)["logits"], size=(12, 18), mode="bilinear", align_corners=True)
    torch.testing.assert_close(scaled, F.interpolate(up, size=(25, 37), mode="bilinear", align_corners=True))


def test_eval_align_corners_and_model_options_are_config_keys():
    base = {"data": {"train": {"name": "synthetic-source"}}}
    cfg = config_from_dict(base)
    assert cfg.eval.align_corners is False and inference_options(cfg).kwargs()["align_corners"] is False
    assert (cfg.model.projection_norm, cfg.model.hrnet_fusion) == ("channels", "pad")
    assert "projection_norm" not in segmentor_kwargs(cfg.model, 19)  # other checkpoints' kwargs unchanged
    cfg = config_from_dict({**base, "eval": {"align_corners": True},
                            "model": {"projection_norm": "width", "hrnet_fusion": "interpolate"}})
    assert inference_options(cfg).kwargs()["align_corners"] is True
    kwargs = segmentor_kwargs(cfg.model, 19)
    assert (kwargs["projection_norm"], kwargs["hrnet_fusion"]) == ("width", "interpolate")
    with pytest.raises(ConfigError, match="model.hrnet_fusion"):
        config_from_dict({**base, "model": {"hrnet_fusion": "crop"}})
    with pytest.raises(ValueError, match="hrnet_fusion='interpolate' applies to HRNet backbones only"):
        build_segmentor("resnet18", "deeplabv2", hrnet_fusion="interpolate")
    with pytest.raises(ValueError, match="needs a projection head"):
        build_segmentor("resnet18", "deeplabv2", projection=None, projection_norm="width")


def fused_reference(module: HighResolutionModule, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """y_i = act(sum_j g_ij(b_j(x_j))): g_ii identity, g_ij (j < i) the strided convs, and for
    j > i the 1x1 conv + BN resized to branch i's size (openseg hrnet_backbone.py:275-283)."""
    bs = [branch(x) for branch, x in zip(module.branches, xs)]
    out = []
    for i in range(len(module.fuse_layers)):
        terms = []
        for j, f in enumerate(module.fuse_layers[i]):
            if j > i:
                up = f[2]
                terms.append(F.interpolate(f[1](f[0](bs[j])), size=bs[i].shape[-2:], mode=up.mode,
                                           align_corners=up.align_corners))
            else:
                terms.append(f(bs[j]))
        out.append(module.fuse_act(sum(terms)))
    return out


@pytest.mark.parametrize("name", ["hrnet_w18_small", "hrnet_w48_openseg"])
def test_interpolate_fusion_formula_and_branch_sizes(name):
    backbone = build_backbone(name).eval()
    pad_copy = copy.deepcopy(backbone)
    backbone.set_fusion("interpolate")
    assert backbone.size_divisor == 1 and pad_copy.size_divisor == 32
    modules = [m for m in backbone.body.modules() if isinstance(m, HighResolutionModule)]
    assert modules and all(type(m) is SizedFusionModule for m in modules)
    last = modules[-1]
    channels = [b[0].conv1.in_channels for b in last.branches]
    xs = [torch.randn(1, c, math.ceil(25 / 2 ** k), math.ceil(35 / 2 ** k)) for k, c in enumerate(channels)]
    with torch.no_grad():
        for got, ref in zip(last([x.clone() for x in xs]), fused_reference(last, xs)):
            torch.testing.assert_close(got, ref)
        odd = torch.randn(1, 3, 100, 140)
        levels = backbone.forward_pyramid(odd)
        assert [tuple(t.shape[-2:]) for t in levels] == [(25, 35), (13, 18), (7, 9), (4, 5)]
        assert (backbone(odd) - pad_copy(odd)).abs().max() > 1e-4  # padding is another computation
        even = torch.randn(1, 3, 64, 96)
        torch.testing.assert_close(backbone(even), pad_copy(even))  # multiples of 32: the same map
    assert backbone.state_dict().keys() == pad_copy.state_dict().keys()
    backbone.set_fusion("pad")
    assert all(type(m) is HighResolutionModule for m in modules) and backbone.size_divisor == 32


def released_deeplabv2_grid(side: int) -> int:
    """conv1 (7x7 s2 p3) -> ceil-mode max-pool (3, s2, p1) -> layer2's strided 1x1."""
    after_conv = math.ceil(side / 2)
    after_pool = math.ceil((after_conv - 1) / 2) + 1
    return math.ceil(after_pool / 2)


def test_deeplabv2_keeps_the_released_ceil_mode_grid():
    assert [released_deeplabv2_grid(s) for s in (128, 256, 512, 1024, 100, 140)] == [17, 33, 65, 129, 13, 18]
    model = build_segmentor("resnet101_deeplabv2", "deeplabv2", num_classes=3, projection=None).eval()
    for size in ((33, 47), (64, 64), (50, 70), (16, 24)):
        with torch.no_grad():
            logits = model(torch.randn(1, 3, *size))["logits"]
        assert tuple(logits.shape[-2:]) == tuple(released_deeplabv2_grid(s) for s in size), size


def test_deeplabv2_aspp_rates_are_the_dilated_sum_and_a_recorded_model_option():
    """``model.aspp_rates``: logits = sum_r conv3x3(x; dilation = padding = r), written out
    with F.conv2d (forward and gradient); WDASS's released rates 12/24/36/48."""
    rates = [12, 24, 36, 48]
    model = build_segmentor("resnet18", "deeplabv2", num_classes=3, projection=None, aspp_rates=rates).eval()
    head = model.head
    assert head.dilations == (12, 24, 36, 48) and model.config["aspp_rates"] == rates
    assert [(b.dilation, b.padding) for b in head.branches] == [((r, r), (r, r)) for r in rates]
    x = torch.randn(2, head.in_channels, 9, 11, generator=torch.Generator().manual_seed(0), requires_grad=True)
    got = head.classify(x)
    ref = sum(F.conv2d(x, b.weight, b.bias, padding=r, dilation=r) for b, r in zip(head.branches, rates))
    torch.testing.assert_close(got, ref)
    weight = torch.randn_like(got)
    g_got = torch.autograd.grad((got * weight).sum(), [x, head.branches[3].weight])
    g_ref = torch.autograd.grad((ref * weight).sum(), [x, head.branches[3].weight])
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 80))["logits"].shape == (1, 3, 8, 10)
    rebuilt = build_segmentor(**model.config)  # a checkpoint rebuilds the same head
    assert rebuilt.head.dilations == head.dilations
    default = build_segmentor("resnet18", "deeplabv2", num_classes=3, projection=None)
    assert default.head.dilations == (6, 12, 18, 24) and "aspp_rates" not in default.config
    assert default.state_dict().keys() == model.state_dict().keys()  # same parameters: old checkpoints load
    with pytest.raises(ValueError, match="aspp_rates=\\[12, 24\\] applies to the deeplabv2 head only"):
        build_segmentor("resnet18", "fcn", aspp_rates=[12, 24])
    for bad in ([], [0, 6], [6.5], "12"):
        with pytest.raises(ValueError, match="aspp_rates must be a non-empty list of positive ints"):
            build_segmentor("resnet18", "deeplabv2", aspp_rates=bad)


def test_aspp_rates_config_key_default_validation_and_checkpoint_kwargs():
    base = {"data": {"train": {"name": "synthetic-source"}}, "model": {"head": "deeplabv2"}}
    cfg = config_from_dict(base)
    assert cfg.model.aspp_rates == [6, 12, 18, 24] and "aspp_rates" not in segmentor_kwargs(cfg.model, 19)
    cfg = config_from_dict({**base, "model": {"head": "deeplabv2", "aspp_rates": [12, 24, 36, 48]}})
    assert segmentor_kwargs(cfg.model, 19)["aspp_rates"] == [12, 24, 36, 48]
    for model, message in (({"head": "deeplabv2", "aspp_rates": [12, 0]}, "model.aspp_rates"),
                           ({"head": "deeplabv2", "aspp_rates": []}, "model.aspp_rates: needs at least one rate"),
                           ({"head": "deeplabv2", "aspp_rates": 12}, "model.aspp_rates: expected a list"),
                           ({"head": "deeplabv3", "aspp_rates": [12, 24, 36, 48]}, "applies to head deeplabv2 only")):
        with pytest.raises(ConfigError, match=message) as err:
            config_from_dict({**base, "model": model})
        assert "\n" not in str(err.value)


def _wdass_layout_reference():
    """WDASS@7276a27 network/utils.py:60-81 written out on torchvision's ResNet-101 (whose
    Bottleneck strides its 3x3 conv2 and whose max-pool floors, as WDASS's network/Resnet.py:105,
    :148): layer3 / layer4 strides 1 and EVERY block's conv2 dilated 2 / 4."""
    import torchvision

    net = torchvision.models.resnet101(weights=None)
    for layer, rate in ((net.layer3, 2), (net.layer4, 4)):
        for name, module in layer.named_modules():
            if "conv2" in name:
                module.dilation, module.padding, module.stride = (rate, rate), (rate, rate), (1, 1)
            elif "downsample.0" in name:
                module.stride = (1, 1)
    del net.fc, net.avgpool
    return net


def test_wdass_deepv2_backbone_is_resnet101_proac_not_torchvision_dilation():
    reference = _wdass_layout_reference().eval()
    proac = build_backbone("resnet101_proac").eval()
    plain = build_backbone("resnet101").eval()
    assert proac.body.state_dict().keys() == reference.state_dict().keys()
    proac.body.load_state_dict(reference.state_dict())
    plain.body.load_state_dict(reference.state_dict())
    images = torch.randn(1, 3, 37, 45, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(images))))
        want = reference.layer4(reference.layer3(reference.layer2(reference.layer1(x))))
        torch.testing.assert_close(proac(images), want)
        assert (plain(images) - want).abs().max() > 1e-4  # torchvision keeps layer3/4's first blocks at 1 / 2
