"""The UDA checkpoint layouts with a torchvision-style ResNet-101 (ProAC's UDA ``DeepLab``,
FADA) and the nested trainer layouts: state dicts with exactly the released names and shapes
(tests/fixtures/released_{proac_deeplab,fada_deeplabv2,proda_layer5}.txt, random values)
load from the released file layout, convert, load with strict=True, land by value, and the
converted model computes the released forward written from its description (stride on the
3x3 conv2, floor max-pool, ProAC's first-block dilation, the summed 4-branch ASPP)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from contraseg.models import build_segmentor
from contraseg.models.convert import ConversionError, convert_state_dict, load_released_state_dict, plan_conversion
from test_convert_checkpoint import DEEPLABV2, random_state, read_shapes, released_hrnet, sane

FIXTURES = Path(__file__).parent / "fixtures"
PROAC = read_shapes(FIXTURES / "released_proac_deeplab.txt")[""]
FADA = read_shapes(FIXTURES / "released_fada_deeplabv2.txt")
PRODA_LAYER5 = read_shapes(FIXTURES / "released_proda_layer5.txt")[""]


def resnet_v15_reference(s: dict[str, torch.Tensor], x: torch.Tensor, p0: str, first_block_dilated: bool):
    """torchvision-style ResNet-101 at output stride 8, written from the released code's
    description: stride on the 3x3 conv2 and the downsample, max-pool without ceil_mode;
    layer3 / layer4 dilated 2 / 4, their first block at that rate (ProAC) or at the
    previous rate 1 / 2 (torchvision, FADA)."""

    def bn(t, p):
        return F.batch_norm(t, s[p + ".running_mean"], s[p + ".running_var"], s[p + ".weight"], s[p + ".bias"],
                            False, 0.0, 1e-5)

    x = F.relu(bn(F.conv2d(x, s[p0 + "conv1.weight"], stride=2, padding=3), p0 + "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)  # floor mode
    for layer, blocks, stride, rate, previous in ((1, 3, 1, 1, 1), (2, 4, 2, 1, 1), (3, 23, 1, 2, 1), (4, 3, 1, 4, 2)):
        for i in range(blocks):
            p = f"{p0}layer{layer}.{i}"
            st = stride if i == 0 else 1
            r = previous if i == 0 and not first_block_dilated else rate
            out = F.relu(bn(F.conv2d(x, s[p + ".conv1.weight"]), p + ".bn1"))
            out = F.relu(bn(F.conv2d(out, s[p + ".conv2.weight"], stride=st, padding=r, dilation=r), p + ".bn2"))
            out = bn(F.conv2d(out, s[p + ".conv3.weight"]), p + ".bn3")
            res = bn(F.conv2d(x, s[p + ".downsample.0.weight"], stride=st), p + ".downsample.1") if i == 0 else x
            x = F.relu(out + res)
    return x


def aspp_sum(s: dict[str, torch.Tensor], x: torch.Tensor, prefix: str) -> torch.Tensor:
    return sum(F.conv2d(x, s[f"{prefix}{i}.weight"], s[f"{prefix}{i}.bias"], padding=r, dilation=r)
               for i, r in enumerate((6, 12, 18, 24)))


def _converted(fmt: str, path: Path):
    source = load_released_state_dict(path)
    plan = plan_conversion(fmt, source)
    model = build_segmentor(**plan.model_config)
    conversion = convert_state_dict(fmt, source, template=model.state_dict())
    model.load_state_dict(conversion.state_dict, strict=True)
    return model.eval(), conversion, source


def test_proac_deeplab_converts_from_its_file_layout_and_computes_the_released_forward(tmp_path):
    released = sane(PROAC, 0)
    path = tmp_path / "proac.pkl"
    # UDA/train.py:152-169: {'DeepLab': {'model_state', 'optimizer_state', 'scheduler_state'}, 'iter', 'best_iou'}
    torch.save({"DeepLab": {"model_state": released, "optimizer_state": {}, "scheduler_state": {}}, "iter": 5,
                "best_iou": 0.0}, path)
    model, conversion, source = _converted("proac-deeplab", path)
    assert conversion.model_config["backbone"] == "resnet101_proac" and not conversion.dropped
    state = model.state_dict()
    for key, value in released.items():
        if key.startswith("backbone."):
            target = "backbone.body." + key[len("backbone."):]
        elif key.startswith("decoder.conv2d_list."):
            target = "head.branches." + key[len("decoder.conv2d_list."):]
        else:
            target = "projection.proj." + key[len("decoder.proj."):]
        assert torch.equal(state[target], value), key
    # The stride sits on the 3x3 conv2, the pool floors, the first blocks of layer3 / 4 are dilated.
    net = model.backbone.body
    assert net.layer2[0].conv1.stride == (1, 1) and net.layer2[0].conv2.stride == (2, 2)
    assert net.maxpool.ceil_mode is False
    assert net.layer3[0].conv2.dilation == (2, 2) and net.layer4[0].conv2.dilation == (4, 4)
    x = torch.randn(1, 3, 37, 50, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x)
        ref = resnet_v15_reference(released, x, "backbone.", first_block_dilated=True)
        assert ref.shape[-2:] == out["logits"].shape[-2:] == (5, 7)  # ceil(37/8) x ceil(50/8)
        torch.testing.assert_close(out["logits"], aspp_sum(released, ref, "decoder.conv2d_list."), rtol=1e-4,
                                   atol=1e-4)
        feat = F.conv2d(ref, released["decoder.proj.weight"], released["decoder.proj.bias"])
        torch.testing.assert_close(out["embed"], F.normalize(feat, dim=1), rtol=1e-4, atol=1e-4)
        # torchvision's first-block rates give another network: the dilation of layer3[0] / layer4[0] matters.
        other = resnet_v15_reference(released, x, "backbone.", first_block_dilated=False)
        assert (other - ref).abs().max() > 1e-3


def test_fada_merges_its_two_dicts_and_computes_the_released_forward(tmp_path):
    fe, cls = sane(FADA["feature_extractor"], 1), sane(FADA["classifier"], 2)
    path = tmp_path / "g2c_sd.pth"
    # train_self_distill.py:170, from DDP-wrapped nets ('module.')
    torch.save({"iteration": 5, "feature_extractor": fe, "classifier": cls, "optimizer_fea": {}}, path)
    model, conversion, source = _converted("fada-deeplabv2", path)
    assert conversion.model_config["backbone"] == "resnet101"
    state = model.state_dict()
    assert torch.equal(state["backbone.body.layer4.2.bn3.running_var"], fe["module.backbone.layer4.2.bn3.running_var"])
    assert torch.equal(state["head.branches.3.bias"], cls["module.conv2d_list.3.bias"])
    plain = {k[len("module."):]: v for k, v in {**fe, **{"module.c." + k[7:]: v for k, v in cls.items()}}.items()}
    x = torch.randn(1, 3, 33, 47, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = resnet_v15_reference(plain, x, "backbone.", first_block_dilated=False)
        torch.testing.assert_close(model(x)["logits"], aspp_sum(plain, ref, "c.conv2d_list."), rtol=1e-4, atol=1e-4)


def test_proda_is_refused_naming_its_head(tmp_path):
    proda = {**random_state(DEEPLABV2, 0), **random_state(PRODA_LAYER5, 1)}
    proda = {k: v for k, v in proda.items() if not k.startswith("layer5.conv2d_list.") or k in PRODA_LAYER5}
    path = tmp_path / "from_gta5_to_cityscapes_on_deeplab101_best_model.pkl"
    torch.save({"ResNet101": {"model_state": proda, "objective_vectors": torch.zeros(19, 256)}, "iter": 1}, path)
    source = load_released_state_dict(path)  # the nested layout unwraps
    with pytest.raises(ConversionError, match=r"ProDA's head \(layer5 = Classifier_Module2.*SE block"):
        plan_conversion("deeplabv2-r101", source)


def test_nested_layouts_and_format_hints(tmp_path):
    state = random_state({"conv1.weight": (2, 3, 1, 1)}, 0)
    several = tmp_path / "several.pkl"
    torch.save({"Generator": {"model_state": state}, "Discriminator": {"model_state": state}}, several)
    with pytest.raises(ConversionError, match="several networks \\(Generator, Discriminator\\)"):
        load_released_state_dict(several)
    preferred = tmp_path / "preferred.pkl"
    torch.save({"DeepLab": {"model_state": state}, "FCDiscriminator": {"model_state": {}}}, preferred)
    assert set(load_released_state_dict(preferred)) == {"conv1.weight"}
    proac = random_state(PROAC, 0)
    with pytest.raises(ConversionError, match="use --from proac-deeplab"):
        plan_conversion("deeplabv2-r101", proac)
    with pytest.raises(ConversionError, match="decoder.conv2d_list.\\* has branches \\[0, 1\\]"):
        plan_conversion("proac-deeplab", {k: v for k, v in proac.items() if not k.startswith(
            ("decoder.conv2d_list.2", "decoder.conv2d_list.3"))})


def test_hrnet_plans_carry_the_released_options():
    assert plan_conversion("openseg-hrnet-w48", released_hrnet("hrnet_w48_contrast")).model_config["hrnet_fusion"] == "interpolate"
    source = released_hrnet("hrnet_w48_proto")
    source.update({k: source[k.replace(".mlp2.", ".proj.")] for k in source if ".proj_head.mlp2." in k})
    proto = plan_conversion("protoseg-hrnet-w48", source).model_config
    assert proto["hrnet_fusion"] == "interpolate" and proto["projection_norm"] == "width"
    assert "projection_norm" not in plan_conversion("deeplabv2-r101", random_state(DEEPLABV2, 0)).model_config


def test_convert_command_stores_the_released_options(tmp_path, capsys):
    from contraseg.cli import main
    from contraseg.engine.restore import restore_model

    released = tmp_path / "proac.pkl"
    torch.save({"DeepLab": {"model_state": sane(PROAC, 5)}, "iter": 1, "best_iou": 0.0}, released)
    out, kept = tmp_path / "proac.pth", tmp_path / "kept.pth"
    assert main(["convert-checkpoint", "--from", "proac-deeplab", str(released), str(out)]) == 0
    assert "released behaviours: eval.align_corners=True" in capsys.readouterr().out
    restored = restore_model(out)
    assert restored.config.eval.align_corners is True and restored.config.model.backbone == "resnet101_proac"
    assert main(["convert-checkpoint", "--from", "proac-deeplab", str(released), str(kept),
                 "--set", "eval.align_corners=false"]) == 0
    assert restore_model(kept).config.eval.align_corners is False
