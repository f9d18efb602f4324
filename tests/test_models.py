"""Tests of contraseg.models: backbones, heads, projection, segmentor factory, weights."""

from __future__ import annotations

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
from contraseg.models.backbones import dilate_resnet
from contraseg.models.heads import ASPP, DeepLabV2Head, aspp_rates
from contraseg.models.weights import read_state_dict


K, D = 3, 8  # small class count and embedding size keep every build fast


def _conv_settings(module: nn.Module) -> list[tuple[str, tuple, tuple, tuple]]:
    return [
        (name, m.stride, m.dilation, m.padding)
        for name, m in module.named_modules()
        if isinstance(m, nn.Conv2d)
    ]


# ---------------------------------------------------------------- every combination


SMALL_BACKBONES = ["resnet18", "hrnet_w18", "mobilenet_v3"]
BIG_BACKBONES = ["resnet50", "resnet101", "hrnet_w48"]


def _check_contract(out: dict, grid: int, what: tuple) -> None:
    assert set(out) == {"logits", "embed"}, what
    assert out["logits"].shape == (2, K, grid, grid), what
    assert out["embed"].shape == (2, D, grid, grid), what
    norms = out["embed"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


@pytest.mark.parametrize("backbone", SMALL_BACKBONES)
def test_every_head_on_backbone_gives_contract_shapes(backbone: str) -> None:
    images = torch.randn(2, 3, 32, 32)
    grid = 8 if backbone.startswith("hrnet") else 4  # HRNet stride 4, others 8
    for head in available_heads():
        model = build_segmentor(backbone, head, num_classes=K, embed_dim=D, output_stride=8).eval()
        with torch.no_grad():
            _check_contract(model(images), grid, (backbone, head))
        assert model.output_stride == 32 // grid


@pytest.mark.parametrize(
    ("backbone", "channels", "grid"), [("resnet50", 2048, 4), ("resnet101", 2048, 4), ("hrnet_w48", 720, 8)]
)
def test_every_head_on_big_backbone(backbone: str, channels: int, grid: int) -> None:
    """Big backbones are built once; every head and a projection are put on top of it."""
    body = build_backbone(backbone, output_stride=8).eval()
    assert body.out_channels == channels
    images = torch.randn(2, 3, 32, 32)
    for head_name in available_heads():
        head = build_head(head_name, body.out_channels, K, output_stride=body.output_stride, channels=16)
        model = Segmentor(body, head, ProjectionHead(head.out_channels, D, "linear")).eval()
        with torch.no_grad():
            _check_contract(model(images), grid, (backbone, head_name))
    assert set(available_backbones()) == set(SMALL_BACKBONES + BIG_BACKBONES)


def test_available_lists() -> None:
    assert available_backbones() == [
        "resnet18", "resnet50", "resnet101", "hrnet_w18", "hrnet_w48", "mobilenet_v3"
    ]
    assert available_heads() == ["deeplabv2", "deeplabv3", "fcn", "mlp"]


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
    backbone = build_backbone("hrnet_w18").eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = backbone(images)
        branches = backbone.body(images)
    assert backbone.out_channels == 18 + 36 + 72 + 144 and backbone.output_stride == 4
    assert feats.shape == (1, 270, 16, 16)
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
    head = build_head(name, in_channels=4, num_classes=None, channels=4)
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
        ({"head": "psp"}, "unknown head 'psp'; choose one of deeplabv2, deeplabv3, fcn, mlp"),
        ({"projection": "mlp"}, "unknown projection 'mlp'; choose one of convmlp, linear, None"),
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
