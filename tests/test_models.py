"""Tests of contraseg.models: backbones, heads, projection, segmentor factory, weights."""

from __future__ import annotations

import math
import urllib.error

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from contraseg.models import (
    ProjectionHead,
    Segmentor,
    available_backbones,
    available_heads,
    build_backbone,
    build_head,
    build_segmentor,
)
from contraseg.models.deeplab_heads import ASPP, DeepLabV2Head, aspp_rates
from contraseg.models.heads import is_multi_level_head
from contraseg.models.ocr import OCRHead
from contraseg.models.resnet import dilate_resnet
from contraseg.models.weights import read_state_dict


K, D = 3, 8  # small class count and embedding size keep every build fast


def _conv_settings(module: nn.Module) -> list[tuple[str, tuple, tuple, tuple]]:
    return [
        (name, m.stride, m.dilation, m.padding)
        for name, m in module.named_modules()
        if isinstance(m, nn.Conv2d)
    ]


# ---------------------------------------------------------------- every combination


SMALL_BACKBONES = ["resnet18", "hrnet_w18_small", "mobilenet_v3", "mit_b0"]
BIG_BACKBONES = ["resnet50", "resnet101", "hrnet_w18", "hrnet_w48", "swin_t", "convnext_t", "mit_b1", "mit_b2"]
SIDE = (36, 44)  # not multiples of 32: every backbone pads / crops to ceil(H / stride)


def _grid(stride: int) -> tuple[int, int]:
    return (math.ceil(SIDE[0] / stride), math.ceil(SIDE[1] / stride))


def _check_contract(out: dict, grid: tuple[int, int], what: tuple) -> None:
    expected = {"logits", "embed", "aux_logits"} if what[1] == "ocr" else {"logits", "embed"}
    assert set(out) == expected, what
    assert out["logits"].shape == (2, K, *grid), what
    assert out["embed"].shape == (2, D, *grid), what
    norms = out["embed"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


@pytest.mark.parametrize("backbone", SMALL_BACKBONES)
def test_every_head_on_backbone_gives_contract_shapes(backbone: str) -> None:
    """Whole segmentors from ``build_segmentor`` (narrow heads), at an odd size."""
    images = torch.randn(2, 3, *SIDE)
    for head in available_heads():
        model = build_segmentor(backbone, head, num_classes=K, embed_dim=D, output_stride=8, head_channels=8).eval()
        with torch.no_grad():
            _check_contract(model(images), _grid(model.output_stride), (backbone, head))
        multi = is_multi_level_head(head)
        assert model.output_stride == (4 if multi or backbone.startswith("hrnet") else
                                       32 if backbone.startswith("mit") else 8), (backbone, head)


def _head_for(body, head_name: str, channels: int = 16):
    if is_multi_level_head(head_name):
        return build_head(head_name, list(body.pyramid_channels), K, channels=channels)
    if head_name == "ocr":
        return OCRHead(body.out_channels, K, K, channels=channels, region_channels=channels)
    return build_head(head_name, body.out_channels, K, output_stride=body.output_stride, channels=channels)


@pytest.mark.parametrize(
    ("backbone", "channels", "pyramid", "stride"),
    [
        ("resnet50", 2048, (256, 512, 1024, 2048), 8),
        ("resnet101", 2048, (256, 512, 1024, 2048), 8),
        ("hrnet_w18", 270, (18, 36, 72, 144), 4),
        ("hrnet_w48", 720, (48, 96, 192, 384), 4),
        ("swin_t", 768, (96, 192, 384, 768), 32),
        ("convnext_t", 768, (96, 192, 384, 768), 32),
        ("mit_b1", 512, (64, 128, 320, 512), 32),
        ("mit_b2", 512, (64, 128, 320, 512), 32),
    ],
)
def test_big_backbones_build_their_widths_and_take_a_head(backbone, channels, pyramid, stride) -> None:
    """Big backbones are built at their real widths and take the FPN head (and
    HRNet-W48 the OCR head, its headline setting); every head on every backbone class is
    in tests/test_models_any_size.py."""
    body = build_backbone(backbone, output_stride=8).eval()
    assert (body.out_channels, body.pyramid_channels, body.output_stride) == (channels, pyramid, stride)
    images = torch.randn(2, 3, *SIDE)
    heads = ["fpn", "ocr"] if backbone == "hrnet_w48" else ["fpn"]
    for head_name in heads:
        head = _head_for(body, head_name)
        model = Segmentor(body, head, ProjectionHead(head.embed_channels, D, "linear")).eval()
        with torch.no_grad():
            _check_contract(model(images), _grid(model.output_stride), (backbone, head_name))


def test_available_lists() -> None:
    """The registries hold (at least) these names; other entries are tested where they are added."""
    assert set(SMALL_BACKBONES + BIG_BACKBONES) <= set(available_backbones())
    assert {"deeplabv2", "deeplabv3", "fcn", "mlp", "ocr", "fpn", "segformer"} <= set(available_heads())


# ---------------------------------------------------------------- adding a backbone or a head


@pytest.fixture
def scratch_registry(monkeypatch):
    """The model registry's tables copied for one test: what it registers is gone after it."""
    from contraseg.models import registry

    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))
    monkeypatch.setattr(registry, "_HEADS", dict(registry._HEADS))
    return registry


def test_a_registered_backbone_and_head_build_a_segmentor(scratch_registry) -> None:
    """The walk-through of docs/architecture.md ("Add a backbone or a head"): a backbone
    file is a Backbone subclass plus a decorated builder, a head file a decorated SegHead
    subclass; build_segmentor then takes both names, with each other and with the built-ins."""
    from contraseg.models import Backbone, LinearClassifierHead, register_backbone, register_head

    class TinyBackbone(Backbone):
        """Two strided 3x3 convs: pyramid = both outputs (8, 16 channels; strides 2, 4),
        single map = the second."""

        def __init__(self) -> None:
            body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1))
            super().__init__(body, 16, 4, pyramid_channels=(8, 16), pyramid_strides=(2, 4))
            self.name = "tiny"

        def _pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
            first = self.body[0](images)
            return [first, self.body[1](first)]

    @register_backbone("tiny", "two strided convs")
    def tiny(output_stride: int = 8) -> TinyBackbone:
        return TinyBackbone()

    @register_head("pointwise")
    class PointwiseHead(LinearClassifierHead):
        """One 1x1 conv (``decode``) -> dropout -> 1x1 classifier."""

        def __init__(self, in_channels: int, num_classes: int | None, channels: int = 256,
                     dropout: float = 0.1) -> None:
            super().__init__(in_channels, channels, num_classes, dropout)
            self.conv = nn.Conv2d(in_channels, channels, 1)

        def decode(self, features: torch.Tensor) -> torch.Tensor:
            return self.conv(features)

    assert available_backbones()[-1] == "tiny" and available_heads()[-1] == "pointwise"
    images = torch.randn(2, 3, *SIDE)
    for backbone, head, stride in (("tiny", "pointwise", 4), ("tiny", "fpn", 2), ("resnet18", "pointwise", 8)):
        model = build_segmentor(backbone, head, num_classes=K, embed_dim=D, head_channels=8).eval()
        with torch.no_grad():
            _check_contract(model(images), _grid(stride), (backbone, head))
        assert model.output_stride == stride
    assert build_head("pointwise", 4, K).out_channels == 256  # from_options: default width


def test_registry_refuses_a_taken_name_and_a_non_head(scratch_registry) -> None:
    from contraseg.models import register_backbone, register_head
    from contraseg.models.conv_heads import MLPHead

    with pytest.raises(ValueError, match="head 'fcn' is already registered by contraseg.models.conv_heads.FCNHead"):
        register_head("fcn")(MLPHead)
    with pytest.raises(ValueError, match="backbone 'resnet18' is already registered"):
        register_backbone("resnet18")(lambda output_stride=8: None)
    with pytest.raises(TypeError, match="decorates a SegHead subclass"):
        register_head("not_a_head")(nn.Conv2d)
    assert register_head("fcn")(scratch_registry.head_class("fcn")) is scratch_registry.head_class("fcn")
    with pytest.raises(ValueError, match=r"^unknown head 'nope'; choose one of deeplabv2, deeplabv3, fcn"):
        build_head("nope", 4, K)


# ---------------------------------------------------------------- backbones


@pytest.mark.parametrize(
    ("name", "stride", "side"),
    [("resnet18", 8, 8), ("resnet18", 16, 4), ("resnet18", 32, 2), ("mobilenet_v3", 16, 4), ("mobilenet_v3", 32, 2)],
)
def test_output_stride_sets_feature_grid(name: str, stride: int, side: int) -> None:
    backbone = build_backbone(name, output_stride=stride).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 64))
    assert backbone.output_stride == stride
    assert feats.shape == (1, backbone.out_channels, side, side)


def test_output_stride_changes_segmentor_grid() -> None:
    images = torch.randn(1, 3, 64, 64)
    sides = []
    for stride in (8, 16):
        model = build_segmentor("resnet18", "deeplabv3", num_classes=K, embed_dim=D, output_stride=stride)
        model.eval()
        with torch.no_grad():
            sides.append(model(images)["logits"].shape[-1])
    assert sides == [8, 4]


@pytest.mark.parametrize("flags", [(False, True, True), (False, False, True), (True, False, False)])
def test_dilate_resnet_matches_torchvision_replace_stride_with_dilation(flags: tuple[bool, bool, bool]) -> None:
    ours = torchvision.models.resnet50(weights=None)
    dilate_resnet(ours, flags)
    reference = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=list(flags))
    assert _conv_settings(ours) == _conv_settings(reference)


def test_resnet18_dilated_keeps_size_and_uses_dilation() -> None:
    backbone = build_backbone("resnet18", output_stride=8)
    convs = dict((name, (s, d)) for name, s, d, _ in _conv_settings(backbone.body))
    assert convs["layer3.0.conv1"] == ((1, 1), (1, 1))  # first block keeps the previous dilation
    assert convs["layer3.1.conv1"] == ((1, 1), (2, 2))
    assert convs["layer4.1.conv2"] == ((1, 1), (4, 4))
    assert convs["layer4.0.downsample.0"][0] == (1, 1)


def test_hrnet_concatenates_upsampled_branches() -> None:
    backbone = build_backbone("hrnet_w18_small").eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = backbone(images)
        branches = backbone.body(images)
    assert backbone.out_channels == 16 + 32 + 64 + 128 and backbone.output_stride == 4
    assert feats.shape == (1, 240, 16, 16)
    start = 0
    for branch in branches:
        expected = F.interpolate(branch, size=(16, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(feats[:, start : start + branch.shape[1]], expected)
        start += branch.shape[1]


def test_bad_output_stride() -> None:
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\), got 4"):
        build_backbone("resnet18", output_stride=4)


# ---------------------------------------------------------------- heads


def test_deeplabv2_head_is_sum_of_four_dilated_convs() -> None:
    head = DeepLabV2Head(6, K)
    feats = torch.randn(2, 6, 9, 9)
    expected = torch.zeros(2, K, 9, 9)
    for conv, rate in zip(head.branches, (6, 12, 18, 24)):
        expected += F.conv2d(feats, conv.weight, conv.bias, padding=rate, dilation=rate)
    torch.testing.assert_close(head(feats), expected)
    assert head.decode(feats) is feats and head.out_channels == 6


def test_aspp_rates_and_branches() -> None:
    assert aspp_rates(8) == (12, 24, 36)
    assert aspp_rates(16) == (6, 12, 18)
    aspp = ASPP(4, 5, aspp_rates(8))
    dilations = [b[0].dilation for b in aspp.branches]
    assert dilations == [(1, 1), (12, 12), (24, 24), (36, 36)]
    out = aspp.eval()(torch.randn(1, 4, 7, 7))
    assert out.shape == (1, 5, 7, 7)


@pytest.mark.parametrize("name", ["deeplabv3", "fcn", "mlp"])
def test_heads_decode_then_classify(name: str) -> None:
    head = build_head(name, in_channels=12, num_classes=K, channels=10).eval()
    feats = torch.randn(2, 12, 5, 5)
    decoded = head.decode(feats)
    assert decoded.shape == (2, 10, 5, 5) and head.out_channels == 10
    torch.testing.assert_close(head(feats), head.classify(decoded))
    assert head.classify(decoded).shape == (2, K, 5, 5)


@pytest.mark.parametrize("name", available_heads())
def test_head_without_classifier_refuses_to_classify(name: str) -> None:
    in_channels = [4, 4] if is_multi_level_head(name) else 4
    head = build_head(name, in_channels=in_channels, num_classes=None, channels=4, num_regions=K)
    with pytest.raises(RuntimeError, match="num_classes=None"):
        head.classify(torch.randn(1, head.out_channels, 3, 3))


def test_head_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown head 'upernet'; choose one of deeplabv2, deeplabv3, fcn"):
        build_head("upernet", 4, K)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        build_head("fcn", 4, 0)
    with pytest.raises(ValueError, match="channels must be a positive int, got -1"):
        build_head("mlp", 4, K, channels=-1)


# ---------------------------------------------------------------- projection


def test_linear_projection_is_normalised_conv() -> None:
    proj = ProjectionHead(5, 3, kind="linear")
    feats = torch.randn(2, 5, 4, 4)
    z = torch.einsum("oc,bchw->bohw", proj.proj.weight[:, :, 0, 0], feats) + proj.proj.bias[None, :, None, None]
    expected = z / z.norm(dim=1, keepdim=True)
    torch.testing.assert_close(proj(feats), expected)


def test_convmlp_projection_shape_and_norm() -> None:
    proj = ProjectionHead(6, 4)
    assert [type(m) for m in proj.proj] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert proj.proj[0].out_channels == 6
    out = proj(torch.randn(2, 6, 3, 3))
    assert out.shape == (2, 4, 3, 3)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 3, 3))


def test_projection_errors() -> None:
    with pytest.raises(ValueError, match="unknown projection kind 'mlp3'; choose one of convmlp, linear"):
        ProjectionHead(4, 4, kind="mlp3")
    with pytest.raises(ValueError, match="embed_dim must be a positive int, got 0"):
        ProjectionHead(4, 0)
    with pytest.raises(ValueError, match=r"features must be B x 4 x h x w, got shape \(1, 3, 2, 2\)"):
        ProjectionHead(4, 2)(torch.randn(1, 3, 2, 2))


# ---------------------------------------------------------------- segmentor


def test_prototype_classifier_outputs() -> None:
    from contraseg.prototypes import NearestPrototypeHead

    model = build_segmentor(
        "resnet18", "fcn", num_classes=K, embed_dim=D, classifier="prototype", num_prototypes=2
    )
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
        again = model.prototype_head(out["embed"])
    assert isinstance(model.prototype_head, NearestPrototypeHead)
    assert set(out) == {"logits", "prototype_logits", "embed"}
    assert out["logits"].shape == (2, K, 4, 4)
    assert out["prototype_logits"].shape == (2, K * 2, 4, 4)
    assert out["embed"].shape == (2, D, 4, 4)
    torch.testing.assert_close(out["logits"], again["logits"])
    assert model.head.num_classes is None  # the linear classifier is not built


def test_projection_none_embeds_normalised_decoded_features() -> None:
    model = build_segmentor("resnet18", "mlp", num_classes=K, projection=None).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model(images)
        decoded = model.head.decode(model.backbone(images))
    assert model.projection is None
    torch.testing.assert_close(out["embed"], F.normalize(decoded, dim=1))
    assert out["embed"].shape[1] == model.head.out_channels


def test_param_groups_partition_every_parameter_once() -> None:
    for kwargs in ({"head": "deeplabv3"}, {"head": "deeplabv2", "classifier": "prototype"}):
        model = build_segmentor("resnet18", num_classes=K, embed_dim=D, **kwargs)
        groups = model.param_groups()
        assert set(groups) == {"backbone", "head"}
        ids = [id(p) for group in groups.values() for p in group]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in model.parameters()}
        assert {id(p) for p in groups["backbone"]} == {id(p) for p in model.backbone.parameters()}
        assert {id(p) for p in model.projection.parameters()} <= {id(p) for p in groups["head"]}


def test_training_step_with_one_image_reaches_every_head_parameter() -> None:
    model = build_segmentor("resnet18", "deeplabv3", num_classes=K, embed_dim=D).train()
    out = model(torch.randn(1, 3, 32, 32))
    (out["logits"].sum() + out["embed"].sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_segmentor_follows_input_dtype() -> None:
    model = build_segmentor("resnet18", "mlp", num_classes=K, embed_dim=D).double().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    assert out["logits"].dtype == torch.float64 and out["embed"].dtype == torch.float64


def test_config_rebuilds_the_same_architecture() -> None:
    model = build_segmentor(
        "resnet18", "deeplabv3", num_classes=K, embed_dim=D, projection="linear", output_stride=16
    )
    assert model.config == dict(backbone="resnet18", head="deeplabv3", num_classes=K, embed_dim=D,
                                projection="linear", classifier="linear", num_prototypes=10,
                                output_stride=16, pretrained=None)
    clone = build_segmentor(**model.config)
    clone.load_state_dict(model.state_dict(), strict=True)
    assert isinstance(clone, Segmentor)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "vgg16"}, "unknown backbone 'vgg16'; choose one of resnet18, resnet50, resnet101"),
        ({"head": "psp"}, "unknown head 'psp'; choose one of deeplabv2, deeplabv3, fcn, mlp, ocr, fpn, fpn_topdown, "
                          "segformer"),
        ({"backbone": "timm:not_a_model"}, "unknown timm model 'not_a_model' in backbone 'timm:not_a_model'"),
        ({"head_channels": 0}, "head_channels must be a positive int, got 0"),
        ({"projection": "deep"}, "unknown projection 'deep'; choose one of convmlp, linear"),
        ({"classifier": "cosine"}, "unknown classifier 'cosine'; choose one of linear, prototype"),
        ({"num_classes": 0}, "num_classes must be a positive int, got 0"),
        ({"embed_dim": 2.5}, "embed_dim must be a positive int, got 2.5"),
        ({"num_prototypes": -1}, "num_prototypes must be a positive int, got -1"),
        ({"projection": None, "classifier": "prototype"}, "classifier='prototype' needs a projection"),
    ],
)
def test_build_segmentor_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_segmentor(**kwargs)


def test_segmentor_rejects_non_image_input() -> None:
    model = build_segmentor("resnet18", "mlp", num_classes=K, embed_dim=D)
    with pytest.raises(ValueError, match=r"images must be B x 3 x H x W, got shape \(3, 32, 32\)"):
        model(torch.randn(3, 32, 32))


# ---------------------------------------------------------------- pretrained weights


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], msg=key)


def _differs(a: nn.Module, b: nn.Module) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_local_pth_round_trip_drops_classifier_keys(tmp_path) -> None:
    source = build_backbone("resnet18")
    state = dict(source.body.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)  # like an ImageNet file
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    fresh = build_backbone("resnet18")
    assert _differs(source, fresh)
    report = fresh.load_pretrained(path)
    _assert_same_weights(source, fresh)
    assert report.dropped == ["fc.weight", "fc.bias"]
    assert report.missing == [] and report.unexpected == []
    assert report.loaded == len(source.body.state_dict())
    assert "loaded" in report.summary() and "\n" not in report.summary()


def test_local_safetensors_round_trip_into_segmentor(tmp_path) -> None:
    from safetensors.torch import save_file

    source = timm.create_model("mobilenetv3_large_100", pretrained=False)  # a full timm classifier
    path = tmp_path / "mnv3.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_segmentor("mobilenet_v3", "mlp", num_classes=K, embed_dim=D, pretrained=path)
    body = model.backbone.body.state_dict()
    for key, value in body.items():
        torch.testing.assert_close(value, source.state_dict()[key], msg=key)
    assert model.config["pretrained"] == str(path)


def test_wrapped_checkpoint_and_prefixes_are_unwrapped(tmp_path) -> None:
    source = build_backbone("resnet18")
    path = tmp_path / "ckpt.pth"
    # a DDP-wrapped contraseg backbone inside a training checkpoint
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    assert all(k.startswith("module.body.") for k in read_state_dict(path))
    fresh = build_backbone("resnet18", pretrained=path)
    _assert_same_weights(source, fresh)


def test_backbone_loads_from_a_whole_segmentor_checkpoint(tmp_path) -> None:
    trained = build_segmentor("resnet18", "fcn", num_classes=K, embed_dim=D)
    path = tmp_path / "segmentor.pth"
    torch.save({"model": trained.state_dict(), "iteration": 10}, path)
    fresh = build_backbone("resnet18")
    report = fresh.load_pretrained(path)
    _assert_same_weights(trained.backbone, fresh)
    assert report.unexpected == [] and report.missing == []


def test_missing_weights_file(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="pretrained weights file not found: .*nope.pth"):
        build_backbone("resnet18", pretrained=missing)


def test_bad_weights_files(tmp_path) -> None:
    wrong_shape = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1, 1, 1, 1)}, wrong_shape)
    expected = r"tensor 'conv1.weight' has shape \(1, 1, 1, 1\) but the model expects \(64, 3, 7, 7\)"
    with pytest.raises(ValueError, match=expected):
        build_backbone("resnet18", pretrained=wrong_shape)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.w": torch.zeros(2)}, unrelated)
    with pytest.raises(ValueError, match="no key matches the model"):
        build_backbone("resnet18", pretrained=unrelated)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(ValueError, match="does not hold a state_dict"):
        build_backbone("resnet18", pretrained=not_a_dict)
    with pytest.raises(TypeError, match="pretrained must be None, 'hub' or a file path, got int"):
        build_backbone("resnet18", pretrained=1)


def test_hub_offline_torchvision_raises_one_line(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    expected = "could not download pretrained weights for backbone 'resnet18'"
    with pytest.raises(RuntimeError, match=expected) as info:
        build_segmentor("resnet18", "mlp", num_classes=K, embed_dim=D, pretrained="hub")
    message = str(info.value)
    assert "\n" not in message and "pass a local file path" in message and "name resolution" in message


def test_hub_offline_timm_raises_one_line(monkeypatch) -> None:
    real_create = timm.create_model

    def create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create)
    with pytest.raises(RuntimeError, match="backbone 'mobilenet_v3'.*pass a local file path"):
        build_backbone("mobilenet_v3", pretrained="hub")


def test_hub_download_is_loaded_like_a_local_file(monkeypatch) -> None:
    imagenet = torchvision.models.resnet18(weights=None).state_dict()  # with fc: like the real download
    urls = []

    def download(url, *args, **kwargs):
        urls.append(url)
        return imagenet

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    backbone = build_backbone("resnet18", pretrained="hub")
    assert urls == [torchvision.models.ResNet18_Weights.DEFAULT.url]
    for key, value in backbone.body.state_dict().items():
        torch.testing.assert_close(value, imagenet[key], msg=key)


# ---------------------------------------------------------------- timm:NAME, Swin, ConvNeXt


def test_timm_backbone_reads_feature_info_and_drops_the_stride_2_level() -> None:
    backbone = build_backbone("timm:resnet10t", output_stride=32).eval()
    info = timm.create_model("resnet10t", features_only=True).feature_info
    assert info.reduction() == [2, 4, 8, 16, 32]
    assert backbone.pyramid_strides == (4, 8, 16, 32)
    assert backbone.pyramid_channels == tuple(info.channels()[1:])
    assert (backbone.out_channels, backbone.output_stride, backbone.name) == (info.channels()[-1], 32, "timm:resnet10t")
    dilated = build_backbone("timm:resnet10t", output_stride=8)
    assert dilated.pyramid_strides == (4, 8, 8, 8) and dilated.size_divisor == 8


def test_swin_features_are_channels_first_and_equal_timm_s() -> None:
    from contraseg.models.timm_backbone import TimmBackbone

    kwargs = dict(strict_img_size=False, embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
    backbone = TimmBackbone("swin_tiny_patch4_window7_224", name="swin_t", **kwargs).eval()
    assert backbone.channels_last and backbone.size_divisor == 32
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = backbone.forward_pyramid(images)
        theirs = backbone.body(images)  # NHWC
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.permute(0, 3, 1, 2))


def test_timm_classifier_checkpoint_loads_into_features_model(tmp_path) -> None:
    """timm's features_only renames ``stages.0`` to ``stages_0``: a classifier checkpoint
    is renamed the same way and every backbone tensor is loaded by value."""
    classifier = timm.create_model("convnext_atto", pretrained=False)
    path = tmp_path / "convnext_atto.pth"
    torch.save(classifier.state_dict(), path)
    backbone = build_backbone("timm:convnext_atto", output_stride=32, pretrained=path)
    own = backbone.body.state_dict()
    source = classifier.state_dict()
    assert any(k.startswith("stages_0.") for k in own)
    for key, value in own.items():
        torch.testing.assert_close(value, source[key.replace("stages_", "stages.").replace("stem_", "stem.")], msg=key)


def test_timm_model_without_output_stride_is_built_native(caplog) -> None:
    backbone = build_backbone("timm:swin_tiny_patch4_window7_224", output_stride=8)
    assert backbone.pyramid_strides == (4, 8, 16, 32)
    assert "does not take output_stride" in caplog.text


def test_unknown_timm_backbone_in_config_is_one_line() -> None:
    from contraseg.engine.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="config key model.backbone: unknown timm model 'resnet_9000'"):
        config_from_dict({"model": {"backbone": "timm:resnet_9000"}})
    cfg = config_from_dict({"model": {"backbone": "timm:convnext_atto", "head": "fpn"}})
    assert cfg.model.backbone == "timm:convnext_atto"


# ---------------------------------------------------------------- SegFormer MiT


@pytest.mark.parametrize(("variant", "millions"), [("mit_b0", 3.4), ("mit_b1", 13.1), ("mit_b2", 24.2)])
def test_mit_encoder_sizes_match_the_paper(variant: str, millions: float) -> None:
    """Encoder parameters of SegFormer's Table 1 (MiT-B0 3.4 M, B1 13.1 M, B2 24.2 M)."""
    from contraseg.models.mit import MIT_SPECS, MixTransformer

    count = sum(p.numel() for p in MixTransformer(MIT_SPECS[variant]).parameters()) / 1e6
    assert abs(count - millions) < 0.1, count


def test_mit_efficient_attention_matches_the_formula() -> None:
    """softmax(Q K^T / sqrt(d)) V with K, V from the sr-reduced, LayerNormed map, per head."""
    from contraseg.models.mit import EfficientSelfAttention

    torch.manual_seed(0)
    attn = EfficientSelfAttention(8, num_heads=2, sr_ratio=2).double().eval()
    height, width = 4, 6
    x = torch.randn(2, height * width, 8, dtype=torch.float64)
    out = attn(x, height, width)
    expected = torch.zeros_like(out)
    for b in range(2):
        grid = x[b].T.reshape(1, 8, height, width)
        reduced = F.conv2d(grid, attn.sr.weight, attn.sr.bias, stride=2).flatten(2)[0].T  # (h/2 * w/2) x 8
        reduced = F.layer_norm(reduced, (8,), attn.norm.weight, attn.norm.bias)
        q = x[b] @ attn.q.weight.T + attn.q.bias
        kv = reduced @ attn.kv.weight.T + attn.kv.bias
        k, v = kv[:, :8], kv[:, 8:]
        heads = []
        for h in range(2):
            cols = slice(4 * h, 4 * h + 4)
            weights = torch.softmax(q[:, cols] @ k[:, cols].T / math.sqrt(4), dim=1)
            heads.append(weights @ v[:, cols])
        expected[b] = torch.cat(heads, dim=1) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(out, expected)


def test_mit_mix_ffn_is_fc_dwconv_gelu_fc() -> None:
    from contraseg.models.mit import MixFFN

    ffn = MixFFN(4, 8).double()
    x = torch.randn(1, 6, 4, dtype=torch.float64)
    hidden = (x @ ffn.fc1.weight.T + ffn.fc1.bias)[0].T.reshape(1, 8, 2, 3)
    mixed = F.conv2d(hidden, ffn.dwconv.dwconv.weight, ffn.dwconv.dwconv.bias, padding=1, groups=8)
    expected = F.gelu(mixed.flatten(2)[0].T) @ ffn.fc2.weight.T + ffn.fc2.bias
    torch.testing.assert_close(ffn(x, 2, 3)[0], expected)


def test_mit_loads_a_released_layout_checkpoint(tmp_path) -> None:
    """The released SegFormer names (and its ImageNet ``head.``) load by value."""
    source = build_backbone("mit_b0")
    state = dict(source.body.state_dict())
    for key in ("patch_embed1.proj.weight", "block1.0.attn.sr.weight", "block4.1.mlp.dwconv.dwconv.weight",
                "block2.1.attn.kv.bias", "norm4.weight"):
        assert key in state
    state["head.weight"], state["head.bias"] = torch.randn(1000, 256), torch.randn(1000)
    path = tmp_path / "mit_b0.pth"
    torch.save({"state_dict": state}, path)
    fresh = build_backbone("mit_b0")
    report = fresh.load_pretrained(path)
    _assert_same_weights(source, fresh)
    assert report.dropped == ["head.weight", "head.bias"] and report.missing == []


def test_segformer_head_width_follows_the_mit_variant() -> None:
    assert build_segmentor("mit_b0", "segformer", num_classes=K, embed_dim=D).head.out_channels == 256
    assert build_segmentor("mit_b0", "segformer", num_classes=K, embed_dim=D, head_channels=32).head.out_channels == 32
    assert build_segmentor("mit_b0", "fpn", num_classes=K, embed_dim=D).head.out_channels == 256


# ---------------------------------------------------------------- pyramid heads


def test_segformer_head_is_projections_upsampled_concatenated_fused() -> None:
    from contraseg.models.pyramid_heads import SegFormerHead

    head = SegFormerHead([3, 5], K, channels=4).eval()
    fine, coarse = torch.randn(2, 3, 6, 8), torch.randn(2, 5, 3, 4)
    projected = [F.conv2d(f, p.weight, p.bias) for f, p in zip((fine, coarse), head.level_projections)]
    up = F.interpolate(projected[1], size=(6, 8), mode="bilinear", align_corners=False)
    expected = head.fuse(torch.cat([up, projected[0]], dim=1))
    torch.testing.assert_close(head.decode([fine, coarse]), expected)


def test_fpn_head_top_down_pathway() -> None:
    from contraseg.models.pyramid_heads import FPNHead

    head = FPNHead([3, 5], K, channels=4).eval()
    fine, coarse = torch.randn(2, 3, 6, 8), torch.randn(2, 5, 3, 4)
    top = head.lateral_convs[1](coarse)
    bottom = head.lateral_convs[0](fine) + F.interpolate(top, size=(6, 8), mode="bilinear", align_corners=False)
    outs = [head.output_convs[0](bottom), head.output_convs[1](top)]
    up = F.interpolate(outs[1], size=(6, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(head.decode([fine, coarse]), head.fuse(torch.cat([outs[0], up], dim=1)))


def test_topdown_fpn_head_is_the_top_down_sum_read_at_the_finest_level() -> None:
    from contraseg.models.pyramid_heads import TopDownFPNHead

    head = build_head("fpn_topdown", [3, 5, 2], K, channels=4).eval()
    assert isinstance(head, TopDownFPNHead) and head.out_channels == 4
    fine, middle, coarse = torch.randn(2, 3, 12, 16), torch.randn(2, 5, 6, 8), torch.randn(2, 2, 3, 4)

    def up(x, like):
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    top = head.lateral_convs[2](coarse)
    mid = head.lateral_convs[1](middle) + up(top, middle)
    bottom = head.lateral_convs[0](fine) + up(mid, fine)
    torch.testing.assert_close(head.decode([fine, middle, coarse]), head.output_conv(bottom))
    assert head(([fine, middle, coarse])).shape == (2, K, 12, 16)


def test_pyramid_head_rejects_a_single_map() -> None:
    head = build_head("fpn", [4, 8], K, channels=4)
    with pytest.raises(ValueError, match=r"FPNHead needs the backbone pyramid of 2 maps, got a tensor"):
        head.decode(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="in_channels of a multi-level head must be a list of ints, got 4"):
        build_head("segformer", 4, K)


# ---------------------------------------------------------------- OCR


def test_object_region_representations_are_softmax_weighted_pixel_sums() -> None:
    from contraseg.models.ocr import object_region_representations

    pixels = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    regions = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    out = object_region_representations(pixels, regions)
    assert out.shape == (2, 4, 3, 1)
    for b in range(2):
        for k in range(3):
            weights = torch.exp(regions[b, k]) / torch.exp(regions[b, k]).sum()
            expected = (pixels[b] * weights).sum(dim=(1, 2))
            torch.testing.assert_close(out[b, :, k, 0], expected)


def test_object_context_is_relation_weighted_values() -> None:
    from contraseg.models.ocr import ObjectContextBlock

    block = ObjectContextBlock(6, 4).double().eval()
    pixels = torch.randn(1, 6, 2, 3, dtype=torch.float64)
    regions = torch.randn(1, 6, 3, 1, dtype=torch.float64)
    query = block.pixel_query(pixels)[0].flatten(1)  # 4 x 6 positions
    key = block.object_key(regions)[0].flatten(1)  # 4 x 3 regions
    value = block.object_value(regions)[0].flatten(1)
    context = torch.zeros(4, 6, dtype=torch.float64)
    for i in range(6):
        scores = torch.stack([query[:, i] @ key[:, k] / 2.0 for k in range(3)])  # sqrt(C_key) = 2
        weights = torch.softmax(scores, dim=0)
        context[:, i] = sum(weights[k] * value[:, k] for k in range(3))
    expected = block.context_up(context.reshape(1, 4, 2, 3))
    torch.testing.assert_close(block(pixels, regions), expected)


def test_ocr_head_outputs_names_and_embedding_source() -> None:
    model = build_segmentor("hrnet_w18_small", "ocr", num_classes=K, embed_dim=D).eval()
    head = model.head
    assert (head.out_channels, head.object_context.key_channels, head.aux_loss_weight) == (512, 256, 0.4)
    assert model.projection.in_channels == 240  # ContrastiveSeg: embedding from the HRNet features
    prefixes = {k.split(".")[1] for k in model.state_dict() if k.startswith("head.")}
    assert prefixes == {"soft_region_head", "pixel_representation", "object_context", "fuse", "classifier"}
    images = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        out = model(images)
        features = model.backbone(images)
        torch.testing.assert_close(out["aux_logits"], head.soft_region_head(features))
        torch.testing.assert_close(out["embed"], model.projection(features))
    assert model.aux_loss_weight == 0.4
    proto = build_segmentor("hrnet_w18_small", "ocr", num_classes=K, embed_dim=D, classifier="prototype")
    assert proto.head.embed_from == "decoded" and proto.projection.in_channels == 512
    assert proto.head.classifier is None and proto.head.num_regions == K
    assert build_segmentor("resnet18", "fcn", num_classes=K, embed_dim=D).aux_loss_weight == 0.0


# ---------------------------------------------------------------- training steps


def _train_steps(model, regulariser_name: str, steps: int = 2, size=(40, 56)):
    from contraseg.engine.config import OptimConfig, RegulariserConfig
    from contraseg.engine.optim import build_optimizer, split_parameters
    from contraseg.engine.precision import resolve_precision
    from contraseg.engine.regularisers import build_regulariser
    from contraseg.engine.step import StepParts, training_step

    cfg = RegulariserConfig(name=regulariser_name, max_samples=64, max_views=8)
    regulariser = build_regulariser(cfg, K, D, 255)
    optimizer = build_optimizer(split_parameters(model), OptimConfig(name="sgd", lr=0.01))
    parts = StepParts(model, model, regulariser, optimizer, resolve_precision("off", torch.device("cpu")), 255)
    images = torch.randn(2, 3, *size)
    labels = torch.randint(0, K, (2, *size))
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    history = [training_step(parts, images, labels, i) for i in range(steps)]
    moved = [n for (n, p), b in zip(model.named_parameters(), before) if not torch.equal(p, b)]
    return history, moved, images, labels


@pytest.mark.parametrize(
    ("backbone", "head", "regulariser"),
    [("hrnet_w18_small", "ocr", "pixel_contrast"), ("mit_b0", "segformer", "protoseg"),
     ("timm:convnext_atto", "fpn", "proac")],
)
def test_new_backbones_and_heads_train(backbone: str, head: str, regulariser: str) -> None:
    classifier = "prototype" if regulariser == "protoseg" else "linear"
    model = build_segmentor(backbone, head, num_classes=K, embed_dim=D, head_channels=16, classifier=classifier,
                            num_prototypes=2)
    history, moved, _, _ = _train_steps(model, regulariser)
    for terms in history:
        assert all(torch.isfinite(v) for v in terms.values()), terms
    assert ("aux_ce" in history[0]) == (head == "ocr")
    assert any(n.startswith("backbone.") for n in moved) and any(n.startswith("head.") for n in moved)


def test_swin_trains() -> None:
    from contraseg.models.timm_backbone import TimmBackbone

    body = TimmBackbone("swin_tiny_patch4_window7_224", name="swin_t", strict_img_size=False, embed_dim=32,
                        depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
    head = build_head("fpn", list(body.pyramid_channels), K, channels=8)
    model = Segmentor(body, head, ProjectionHead(8, D, "linear"))
    history, moved, _, _ = _train_steps(model, "none", size=(36, 52))
    assert torch.isfinite(history[-1]["loss"]) and any(n.startswith("backbone.body.layers_3") for n in moved)


def test_ocr_auxiliary_loss_is_weighted_cross_entropy_of_soft_regions() -> None:
    from contraseg.engine.step import segmentation_loss

    torch.manual_seed(0)
    model = build_segmentor("hrnet_w18_small", "ocr", num_classes=K, embed_dim=D, head_channels=8)
    clone = build_segmentor("hrnet_w18_small", "ocr", num_classes=K, embed_dim=D, head_channels=8)
    clone.load_state_dict(model.state_dict())
    history, _, images, labels = _train_steps(model, "none", steps=1)
    with torch.no_grad():
        out = clone.train()(images)  # the same batch statistics as the step's forward
    expected_aux = 0.4 * segmentation_loss(out["aux_logits"], labels, 255)
    torch.testing.assert_close(history[0]["aux_ce"], expected_aux)
    torch.testing.assert_close(history[0]["loss"], history[0]["ce"] + history[0]["aux_ce"])


def test_hrnet_prototype_embedding_sees_the_released_dropout() -> None:
    """ProtoSeg's released HRNet embeds ``proj_head(cls_head(feats))`` with ``Dropout2d(0.1)`` at
    the end of ``cls_head``: under ``embed_from="decoded"`` the embedding's input is dropped
    out in training (whole channels) and untouched in eval; ``"backbone"`` never is."""
    from contraseg.models.hrnet_head import HRNetHead

    torch.manual_seed(0)
    feats = torch.randn(2, 64, 3, 3)  # 128 channels: some are dropped whatever the draw
    decoded_head = HRNetHead(64, None, embed_from="decoded")
    z = decoded_head.decode(feats)
    decoded_head.train()
    dropped = decoded_head.embedding_input(feats, z)
    zeroed = (dropped == 0).flatten(2).all(2)
    assert zeroed.any() and not zeroed.all()
    kept = ~zeroed
    assert torch.allclose(dropped[kept], z[kept] / 0.9)
    decoded_head.eval()
    assert torch.equal(decoded_head.embedding_input(feats, z), z)
    backbone_head = HRNetHead(64, 3).train()
    assert backbone_head.embedding_input(feats, z) is feats
