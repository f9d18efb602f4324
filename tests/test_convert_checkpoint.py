"""Released checkpoints -> contraseg: state dicts with exactly the released names and shapes
(tests/fixtures/released_*.txt, random values) convert, load with strict=True, every tensor
lands where the map says (checked by value), and the converted file evaluates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from contraseg.cli import main
from contraseg.engine.build import segmentor_kwargs
from contraseg.engine.config_io import load_config
from contraseg.models import build_segmentor
from contraseg.models.convert import ConversionError, convert_state_dict, plan_conversion

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
K = 19


def read_shapes(path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{section: {name: shape}}`` from a fixture (``[section]`` lines start sections; '' if none)."""
    sections: dict[str, dict[str, tuple[int, ...]]] = {"": {}}
    current = ""
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip() if line.lstrip().startswith(("#", "[")) else line.strip()
        if not line:
            continue
        if line.startswith("["):
            current = line[1:line.index("]")]
            sections[current] = {}
            continue
        name, _, shape = line.partition(" ")
        sections[current][name] = tuple(int(s) for s in shape.split(",")) if shape.strip() else ()
    return sections


def random_state(shapes: dict[str, tuple[int, ...]], seed: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Random tensors with these names and shapes (int64 scalars for num_batches_tracked)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            out[prefix + name] = torch.randint(1, 1000, (), generator=g)
        else:
            out[prefix + name] = torch.rand(shape, generator=g) + 0.5  # > 0: also valid BN variances
    return out


HRNET_BACKBONE = read_shapes(FIXTURES / "released_openseg_hrnet_w48_backbone.txt")[""]
HRNET_HEADS = read_shapes(FIXTURES / "released_openseg_hrnet_w48_heads.txt")
DEEPLABV2 = read_shapes(FIXTURES / "released_deeplabv2_r101.txt")[""]


def released_hrnet(head: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A released openseg checkpoint's state dict (DDP 'module.' prefix) with the fixture's layout."""
    shapes = {**{f"backbone.{k}": s for k, s in HRNET_BACKBONE.items()}, **HRNET_HEADS[head]}
    return random_state(shapes, seed, prefix="module.")


def openseg_target(key: str) -> str | None:
    """Where a released HRNet key (other than ``proj_head``) must land, written from the README's map."""
    if key.startswith("backbone."):
        return "backbone.body." + key[len("backbone."):]
    fixed = {"cls_head.0.weight": "head.conv.0.weight", "cls_head.0.bias": "head.conv.0.bias",
             "cls_head.3.weight": "head.classifier.1.weight", "prototypes": "prototype_head.bank.prototypes"}
    if key in fixed:
        return fixed[key]
    for src, dst in (("cls_head.1.0.", "head.conv.1."), ("feat_norm.", "prototype_head.feat_norm."),
                     ("mask_norm.", "prototype_head.mask_norm.")):
        if key.startswith(src):
            return dst + key[len(src):]
    raise AssertionError(f"no expected target for {key}")


def expected_projection_target(key: str, kind: str) -> str | None:
    index, rest = key[len("proj_head.proj."):].split(".", 1)
    if kind == "convmlp":  # released Conv(bias) -> BNReLU -> Conv ; contraseg Conv -> BN -> ReLU -> Conv
        if index == "1":
            return "projection.proj.1." + rest[len("0."):]
        return {"0": "projection.proj.0.", "2": "projection.proj.3."}[index] + rest
    return f"projection.proj.{index}.{rest}"  # mlp: Conv -> ReLU -> Conv, same indices


def target_of(key: str, kind: str | None = None) -> str | None:
    if key in ("proj_head.proj.0.bias", "proj_head.proj.1.0.running_mean") and kind == "convmlp":
        return None  # folded, checked separately
    if key.startswith("proj_head.proj."):
        return expected_projection_target(key, kind)
    return openseg_target(key)


def assert_lands_by_value(model, source: dict[str, torch.Tensor], kind: str | None = None, skip=()) -> None:
    state = model.state_dict()
    for key, value in source.items():
        name = key.removeprefix("module.")
        if name.startswith(skip):
            continue
        target = target_of(name, kind)
        if target is None:
            continue
        assert torch.equal(state[target], value), f"{key} did not land in {target}"


# -- openseg HRNet-W48 (ContrastiveSeg / ProtoSeg CE) ----------------------------------------------------


@pytest.mark.slow
def test_openseg_hrnet_w48_contrast_loads_strict_and_lands_by_value():
    source = released_hrnet("hrnet_w48_contrast")
    plan = plan_conversion("openseg-hrnet-w48", source)
    assert plan.model_config["projection"] == "convmlp" and plan.model_config["embed_dim"] == 256
    for name in ("pascal_context", "coco_stuff"):  # the training configs build this very model
        cfg = load_config(CONFIGS / f"{name}_hrnet_w48_pixel_contrast.yaml")
        # the same model, but training keeps contraseg's padded fusion (the release's is a model option)
        assert segmentor_kwargs(cfg.model, K) == {k: v for k, v in plan.model_config.items() if k != "hrnet_fusion"}
    assert plan.model_config["hrnet_fusion"] == "interpolate"
    model = build_segmentor(**plan.model_config)
    conversion = convert_state_dict("openseg-hrnet-w48", source, template=model.state_dict())
    model.load_state_dict(conversion.state_dict, strict=True)
    assert_lands_by_value(model, source, "convmlp")
    state = model.state_dict()
    s = {k.removeprefix("module."): v for k, v in source.items()}
    torch.testing.assert_close(state["projection.proj.1.running_mean"],
                               s["proj_head.proj.1.0.running_mean"] - s["proj_head.proj.0.bias"], rtol=0, atol=0)
    assert torch.equal(state["head.classifier.1.bias"], torch.zeros(K))
    assert len(conversion.state_dict) == len(state) and not conversion.dropped

    # The backbone fuses as openseg: bilinear align_corners=True upsampling in every fusion
    # layer and in HRNetV2's concatenation (timm: nearest / contraseg's hrnet_w48: False).
    upsamplers = [m for m in model.backbone.body.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(upsamplers) == 31 and all(m.mode == "bilinear" and m.align_corners for m in upsamplers)
    pyramid = [torch.randn(1, c, 8 // 2 ** i, 12 // 2 ** i) for i, c in enumerate((48, 96, 192, 384))]
    merged = torch.cat([pyramid[0]] + [F.interpolate(p, size=(8, 12), mode="bilinear", align_corners=True)
                                       for p in pyramid[1:]], dim=1)
    torch.testing.assert_close(model.backbone.merge(pyramid), merged, rtol=0, atol=0)

    # Eval-mode function of head and projection == the released modules' (written with F.*).
    model.eval()
    x = torch.randn(1, 720, 3, 4, generator=torch.Generator().manual_seed(1))

    def bn(t, p):
        return F.batch_norm(t, s[p + "running_mean"], s[p + "running_var"], s[p + "weight"], s[p + "bias"],
                            False, 0.0, 1e-5)

    z = F.relu(bn(F.conv2d(x, s["cls_head.0.weight"], s["cls_head.0.bias"], padding=1), "cls_head.1.0."))
    logits = F.conv2d(z, s["cls_head.3.weight"])
    p = F.relu(bn(F.conv2d(x, s["proj_head.proj.0.weight"], s["proj_head.proj.0.bias"]), "proj_head.proj.1.0."))
    embed = F.normalize(F.conv2d(p, s["proj_head.proj.2.weight"], s["proj_head.proj.2.bias"]), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.head.classify(model.head.decode(x)), logits, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(model.projection(model.head.embedding_input(x, None)), embed, rtol=1e-4, atol=1e-5)

    # HRNet_W48 (no proj_head): projection None, the same tensors minus the projection.
    ce = {k: v for k, v in source.items() if ".proj_head." not in k}
    expected_ce = {f"backbone.{k}" for k in HRNET_BACKBONE} | set(HRNET_HEADS["hrnet_w48"])
    assert {k.removeprefix("module.") for k in ce} == expected_ce
    ce_plan = plan_conversion("openseg-hrnet-w48", ce)
    assert ce_plan.model_config["projection"] is None
    template = {k: v for k, v in state.items() if not k.startswith("projection.")}
    ce_conv = convert_state_dict("openseg-hrnet-w48", ce, template=template)
    assert set(ce_conv.state_dict) == set(template)
    model.projection = None
    model.load_state_dict(ce_conv.state_dict, strict=True)
    assert_lands_by_value(model, ce)

    # HRNet_W48_MEM: the network under encoder_q., the memory queues dropped.
    mem = {k.replace("module.", "module.encoder_q.", 1): v for k, v in source.items()}
    for queue in ("segment_queue", "pixel_queue"):
        mem[f"module.{queue}"] = torch.rand(K, 5, 256)
        mem[f"module.{queue}_ptr"] = torch.zeros(K, dtype=torch.long)
    mem_conv = convert_state_dict("openseg-hrnet-w48", mem, template=state)
    assert sorted(mem_conv.dropped) == ["pixel_queue", "pixel_queue_ptr", "segment_queue", "segment_queue_ptr"]
    assert all(torch.equal(mem_conv.state_dict[k], conversion.state_dict[k]) for k in state)


# -- ProtoSeg HRNet_W48_Proto ------------------------------------------------------------------------------


@pytest.mark.slow
def test_protoseg_hrnet_w48_loads_strict_and_lands_by_value():
    source = released_hrnet("hrnet_w48_proto", seed=3)
    for key in [k for k in source if ".proj_head.mlp2." in k]:  # one module under two names
        source[key] = source[key.replace(".mlp2.", ".proj.")]
    plan = plan_conversion("protoseg-hrnet-w48", source)
    assert {k: plan.model_config[k] for k in ("head", "projection", "classifier", "num_prototypes", "embed_dim")} == {
        "head": "hrnet", "projection": "mlp", "classifier": "prototype", "num_prototypes": 10, "embed_dim": 720}
    model = build_segmentor(**plan.model_config)
    conversion = convert_state_dict("protoseg-hrnet-w48", source, template=model.state_dict())
    model.load_state_dict(conversion.state_dict, strict=True)
    assert_lands_by_value(model, source, "mlp", skip=("proj_head.mlp2.",))
    assert sorted(conversion.dropped) == sorted(k.removeprefix("module.") for k in source if ".mlp2." in k)

    # Prediction from decoded features == ProtoSeg's formula on the released tensors, with the
    # release's L2 over the width (dim=-1 of B x C x H x W, contrast.py:15-16) that the plan sets.
    s = {k.removeprefix("module."): v for k, v in source.items()}
    model.eval()
    z = torch.randn(1, 720, 2, 3, generator=torch.Generator().manual_seed(4))
    c = F.conv2d(F.relu(F.conv2d(z, s["proj_head.proj.0.weight"], s["proj_head.proj.0.bias"])),
                 s["proj_head.proj.2.weight"], s["proj_head.proj.2.bias"])
    assert plan.model_config["projection_norm"] == "width"
    feats = F.normalize(F.layer_norm(F.normalize(c, dim=-1).permute(0, 2, 3, 1), (720,), s["feat_norm.weight"],
                                     s["feat_norm.bias"]), dim=-1)
    cos = torch.einsum("bhwd,kmd->bhwkm", feats, F.normalize(s["prototypes"], dim=-1)).amax(-1)
    logits = F.layer_norm(cos, (K,), s["mask_norm.weight"], s["mask_norm.bias"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = model.prototype_head(model.projection(z))
    torch.testing.assert_close(out["logits"], logits, rtol=1e-3, atol=1e-3)  # float32 LayerNorms of large sums

    source["module.proj_head.mlp2.0.bias"] = source["module.proj_head.mlp2.0.bias"] + 1
    with pytest.raises(ConversionError, match="proj_head.mlp2.0.bias' differs from 'proj_head.proj.0.bias'"):
        plan_conversion("protoseg-hrnet-w48", source)


# -- DeepLab-v2 ResNet-101 (UDA line) -----------------------------------------------------------------------------


def deeplabv2_backbone_reference(s: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The released DeepLab-v2 ResNet-101 forward, written from its description: stride on
    conv1 of the first block of layer2, every block of layer3 / layer4 dilated 2 / 4,
    ceil-mode max-pool."""

    def bn(t, p):
        return F.batch_norm(t, s[p + ".running_mean"], s[p + ".running_var"], s[p + ".weight"], s[p + ".bias"],
                            False, 0.0, 1e-5)

    x = F.relu(bn(F.conv2d(x, s["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    for layer, blocks, stride, rate in ((1, 3, 1, 1), (2, 4, 2, 1), (3, 23, 1, 2), (4, 3, 1, 4)):
        for i in range(blocks):
            p = f"layer{layer}.{i}"
            st = stride if i == 0 else 1
            out = F.relu(bn(F.conv2d(x, s[p + ".conv1.weight"], stride=st), p + ".bn1"))
            out = F.relu(bn(F.conv2d(out, s[p + ".conv2.weight"], padding=rate, dilation=rate), p + ".bn2"))
            out = bn(F.conv2d(out, s[p + ".conv3.weight"]), p + ".bn3")
            res = bn(F.conv2d(x, s[p + ".downsample.0.weight"], stride=st), p + ".downsample.1") if i == 0 else x
            x = F.relu(out + res)
    return x


def aspp_reference(s: dict[str, torch.Tensor], x: torch.Tensor, branches: int = 4) -> torch.Tensor:
    """Logits = sum of the first ``branches`` of the rate 6, 12, 18, 24 ASPP convs."""
    return sum(F.conv2d(x, s[f"layer5.conv2d_list.{i}.weight"], s[f"layer5.conv2d_list.{i}.bias"], padding=r,
                        dilation=r) for i, r in zip(range(branches), (6, 12, 18, 24)))


def sane_deeplabv2(seed: int = 0) -> dict[str, torch.Tensor]:
    return sane(DEEPLABV2, seed)


def sane(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random values that keep a 101-layer forward finite: small conv weights, BN var ~ 1."""
    state = random_state(shapes, seed)
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = value + 0.5
        elif value.dim() == 4:
            state[key] = (value - 1.0) * (2.0 / value[0].numel()) ** 0.5
    return state


def test_deeplabv2_loads_strict_lands_by_value_and_matches_released_forward():
    source = sane_deeplabv2()
    plan = plan_conversion("deeplabv2-r101", source)
    model = build_segmentor(**plan.model_config)
    template = model.state_dict()
    conversion = convert_state_dict("deeplabv2-r101", source, template=template)
    model.load_state_dict(conversion.state_dict, strict=True)
    state = model.state_dict()
    for key, value in source.items():
        target = (f"head.branches.{key.split('.')[2]}.{key.split('.')[3]}" if key.startswith("layer5.")
                  else f"backbone.body.{key}")
        assert torch.equal(state[target], value), key
    model.eval()
    x = torch.randn(1, 3, 33, 47, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        features = model.backbone(x)
        ref = deeplabv2_backbone_reference(source, x)
        logits = model(x)["logits"]
    # The released ceil-mode grid (47 -> 24 -> 13 -> 7 columns, one more than ceil(47/8)) is kept, not cropped.
    assert ref.shape[-2:] == features.shape[-2:] == logits.shape[-2:] == (5, 7)
    torch.testing.assert_close(features, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, aspp_reference(source, features), rtol=1e-4, atol=1e-4)

    # AdaptSegNet's Classifier_Module sums two branches: --aspp-branches 2 zeroes the others.
    two = convert_state_dict("deeplabv2-r101", source, template=template, aspp_branches=2)
    assert [op.kind for op in two.ops if op.target.startswith("head.branches.")] == ["copy"] * 4 + ["zero"] * 4
    model.load_state_dict(two.state_dict, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["logits"], aspp_reference(source, features, 2), rtol=1e-4, atol=1e-4)

    # Multi-level (layer5 on layer3 as auxiliary, layer6 the prediction); no num_batches_tracked (old torch).
    multi = {k.replace("layer5.", "layer6.") if k.startswith("layer5.") else k: v for k, v in source.items()
             if not k.endswith("num_batches_tracked")}
    multi.update({f"layer5.conv2d_list.{i}.{p}": torch.rand((K, 1024, 3, 3) if p == "weight" else (K,))
                  for i in range(4) for p in ("weight", "bias")})
    conv = convert_state_dict("deeplabv2-r101", multi, template=template)
    assert all(k.startswith("layer5.") for k in conv.dropped) and len(conv.dropped) == 8
    assert torch.equal(conv.state_dict["head.branches.3.weight"], source["layer5.conv2d_list.3.weight"])
    filled = [op.target for op in conv.ops if op.kind == "fill"]
    assert filled and all(t.endswith("num_batches_tracked") for t in filled)
    assert all(int(conv.state_dict[t]) == 0 for t in filled)


def test_conversion_errors_name_the_key():
    source = sane_deeplabv2()
    with pytest.raises(ConversionError, match="openseg-hrnet-w48: the checkpoint has no 'cls_head.3.weight'"):
        plan_conversion("openseg-hrnet-w48", source)
    with pytest.raises(ConversionError, match="unknown checkpoint format 'segformer'"):
        plan_conversion("segformer", source)
    with pytest.raises(ConversionError, match="option 'aspp_branches' does not apply to protoseg-hrnet-w48"):
        plan_conversion("protoseg-hrnet-w48", source, aspp_branches=2)
    template = build_segmentor(**plan_conversion("deeplabv2-r101", source).model_config).state_dict()
    extra = {**source, "layer4.2.se.weight": torch.zeros(3)}
    with pytest.raises(ConversionError, match="produces 'backbone.body.layer4.2.se.weight', which the contraseg model"):
        convert_state_dict("deeplabv2-r101", extra, template=template)
    with pytest.raises(ConversionError, match="released tensor 'fc.weight' is not part of the map"):
        convert_state_dict("deeplabv2-r101", {**source, "fc.weight": torch.zeros(3)}, template=template)
    short = {k: v for k, v in source.items() if k != "layer3.7.conv2.weight"}
    with pytest.raises(ConversionError, match="nothing in the map produces 'backbone.body.layer3.7.conv2.weight'"):
        convert_state_dict("deeplabv2-r101", short, template=template)
    wrong = {**source, "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}
    with pytest.raises(ConversionError, match=r"'layer1.0.conv1.weight' has shape \(64, 64, 3, 3\) but"):
        convert_state_dict("deeplabv2-r101", wrong, template=template)


# -- the command, and eval on the converted file --------------------------------------------------------------


@pytest.mark.slow
def test_convert_command_writes_a_checkpoint_that_evaluates(tmp_path, capsys):
    source = {f"module.{k}": v for k, v in sane_deeplabv2(seed=7).items()}
    released = tmp_path / "released.pth"
    torch.save({"config_dict": {"network": {"backbone": "resnet101"}}, "state_dict": source}, released)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "data:\n"
        "  train: {name: synthetic-source, split: train, options: {size: [32, 48], length: 2}}\n"
        "  val:\n    - {name: synthetic-source, split: val, options: {size: [32, 48], length: 2}}\n"
        "eval: {mode: whole}\n"
    )
    out = tmp_path / "converted" / "deeplabv2.pth"
    code = main(["convert-checkpoint", "--from", "deeplabv2-r101", str(released), str(out), "--config", str(config),
                 "--aspp-branches", "2"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert "resnet101_deeplabv2 + deeplabv2 head" in printed and "4 zeroed" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["deeplabv2.pth"]  # atomic: no temp file left
    state = torch.load(out, weights_only=True)
    assert state["format"] == "contraseg-checkpoint" and state["converted_from"]["format"] == "deeplabv2-r101"
    assert state["model_config"]["backbone"] == "resnet101_deeplabv2" and len(state["classes"]) == K
    assert "synthetic-source" in state["config"]

    code = main(["eval", str(out), "--device", "cpu", "--num-workers", "0"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert "synthetic-source/val: mIoU" in printed
    assert list((tmp_path / "converted").glob("deeplabv2.pth.eval*.json"))

    # Refusals: an existing output, the wrong format, a dataset with another class count.
    code = main(["convert-checkpoint", "--from", "deeplabv2-r101", str(released), str(out), "--config", str(config)])
    assert code == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    code = main(["convert-checkpoint", "--from", "openseg-hrnet-w48", str(released), str(tmp_path / "x.pth")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no 'cls_head.3.weight'" in err
    code = main(["convert-checkpoint", "--from", "deeplabv2-r101", str(released), str(tmp_path / "y.pth"),
                 "--set", "data.train.name=ade20k"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "has 19 classes but the config's data.train dataset 'ade20k' has 150" in err
    code = main(["convert-checkpoint", "--from", "deeplabv2-r101", str(released), str(tmp_path / "z.pth"),
                 "--config", str(CONFIGS / "cityscapes_hrnet_w48_protoseg.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "regulariser protoseg needs classifier 'prototype'" in err  # config re-checked
    assert not any((tmp_path / name).exists() for name in ("x.pth", "y.pth", "z.pth"))
