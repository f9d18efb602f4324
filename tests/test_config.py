"""Config schema, YAML includes, --set overrides and the shipped configs/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from contraseg.engine.config import Config, ConfigError, config_from_dict, config_to_dict
from contraseg.engine.config_io import (
    apply_overrides,
    config_from_yaml,
    config_to_yaml,
    load_config,
    load_raw_config,
    merge_dicts,
    parse_override,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------ shipped configs
def test_configs_folder_has_the_promised_files():
    names = {p.stem for p in ALL_CONFIGS}
    for model in ("deeplabv3_r101", "hrnet_w48"):
        for method in ("none", "proac", "pixel_contrast", "pixel_contrast_memory", "protoseg"):
            assert f"cityscapes_{model}_{method}" in names
    assert {"gta5_deeplabv2_r101_source_only", "synthia_deeplabv2_r101_source_only",
            "ade20k_deeplabv3_r101_none", "synthetic_source_only", "synthetic_proac"} <= names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # the resolved config survives a YAML round trip unchanged
    assert config_from_yaml(config_to_yaml(cfg)) == cfg
    if cfg.regulariser.name == "protoseg":
        assert cfg.model.classifier == "prototype"


def test_method_files_combine_model_base_and_method():
    cfg = load_config(CONFIGS / "cityscapes_hrnet_w48_pixel_contrast_memory.yaml")
    assert cfg.name == "cityscapes_hrnet_w48_pixel_contrast_memory"
    assert cfg.model.backbone == "hrnet_w48" and cfg.model.head == "fcn"
    assert cfg.regulariser.name == "pixel_contrast_memory"
    assert cfg.regulariser.memory_pixel_size == 5000
    assert cfg.schedule.max_iters == 80000
    proto = load_config(CONFIGS / "cityscapes_deeplabv3_r101_protoseg.yaml")
    assert proto.model.classifier == "prototype" and proto.model.num_prototypes == 10
    assert (proto.regulariser.ppc_weight, proto.regulariser.ppd_weight) == (0.01, 0.001)
    synthia = load_config(CONFIGS / "synthia_deeplabv2_r101_source_only.yaml")
    assert len(synthia.data.eval_classes) == 16 and "terrain" not in synthia.data.eval_classes


# ------------------------------------------------------------------ includes
def test_base_include_merges_recursively_and_file_wins(tmp_path):
    write(tmp_path / "a.yaml", {"optim": {"lr": 0.1, "momentum": 0.5}, "data": {"crop_size": [8, 8]}})
    write(tmp_path / "b.yaml", {"optim": {"lr": 0.2}, "schedule": {"max_iters": 7}})
    child = write(tmp_path / "c.yaml", {"_base_": ["a.yaml", "b.yaml"], "optim": {"momentum": 0.7},
                                         "data": {"crop_size": [16, 32]}})
    raw = load_raw_config(child)
    assert raw["optim"] == {"lr": 0.2, "momentum": 0.7}  # b over a, then the file over both
    assert raw["data"]["crop_size"] == [16, 32]  # lists are replaced, not merged
    assert raw["schedule"] == {"max_iters": 7}
    cfg = load_config(child)
    assert cfg.name == "c" and cfg.optim.lr == 0.2 and cfg.optim.momentum == 0.7


def test_nested_include_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "root.yaml", {"schedule": {"max_iters": 3}})
    write(tmp_path / "sub" / "mid.yaml", {"_base_": "../root.yaml", "optim": {"lr": 0.3}})
    top = write(tmp_path / "top.yaml", {"_base_": "sub/mid.yaml"})
    cfg = load_config(top)
    assert cfg.schedule.max_iters == 3 and cfg.optim.lr == 0.3


def test_circular_include_is_an_error(tmp_path):
    write(tmp_path / "x.yaml", {"_base_": "y.yaml"})
    write(tmp_path / "y.yaml", {"_base_": "x.yaml"})
    with pytest.raises(ConfigError, match=r"circular _base_ include \(x.yaml -> y.yaml -> x.yaml\)"):
        load_config(tmp_path / "x.yaml")


def test_missing_base_and_bad_yaml_name_the_file(tmp_path):
    write(tmp_path / "a.yaml", {"_base_": "nope.yaml"})
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2:1: not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list.yaml: a config must be a YAML mapping, got list"):
        load_config(tmp_path / "list.yaml")


def test_merge_dicts_does_not_mutate_inputs():
    base = {"a": {"b": 1}}
    update = {"a": {"c": 2}}
    merged = merge_dicts(base, update)
    assert merged == {"a": {"b": 1, "c": 2}} and base == {"a": {"b": 1}} and update == {"a": {"c": 2}}


# ------------------------------------------------------------------ overrides
def test_parse_override_reads_yaml_values():
    assert parse_override("optim.lr=0.02") == (["optim", "lr"], 0.02)
    assert parse_override("data.crop_size=[64, 128]") == (["data", "crop_size"], [64, 128])
    assert parse_override("optim.nesterov=true") == (["optim", "nesterov"], True)
    assert parse_override("model.pretrained=null") == (["model", "pretrained"], None)
    assert parse_override("name=a=b") == (["name"], "a=b")
    for bad in ("optim.lr", "=3", "optim..lr=1"):
        with pytest.raises(ConfigError, match="expected key.sub=value"):
            parse_override(bad)


def test_overrides_apply_on_top_of_file(tmp_path):
    path = write(tmp_path / "c.yaml", {"optim": {"lr": 0.1}})
    cfg = load_config(path, ["optim.lr=0.5", "data.crop_size=[32,64]", "regulariser.name=proac",
                             "data.val=[{name: synthetic-target, split: val}]"])
    assert cfg.optim.lr == 0.5 and cfg.data.crop_size == [32, 64] and cfg.regulariser.name == "proac"
    assert cfg.data.val[0].name == "synthetic-target"
    with pytest.raises(ConfigError, match=r"config key optim.lr is not a section"):
        apply_overrides({"optim": {"lr": 1}}, ["optim.lr.x=1"])


def test_overrides_address_list_items_by_index(tmp_path):
    path = write(tmp_path / "c.yaml", {"data": {"val": [{"name": "synthetic-target", "split": "val"},
                                                        {"name": "synthetic-source", "split": "val"}]}})
    cfg = load_config(path, ["data.val.0.options.length=4", "data.val[1].split=train"])
    assert cfg.data.val[0].options == {"length": 4} and cfg.data.val[1].split == "train"
    with pytest.raises(ConfigError, match=r"config key data.val has 2 item\(s\), no index 5"):
        load_config(path, ["data.val[5].split=x"])
    with pytest.raises(ConfigError, match=r"config key data.val is a list; address an item by its index"):
        load_config(path, ["data.val.split=x"])
    with pytest.raises(ConfigError, match=r"config key eval.scales is not set in the config, so it has no item 0"):
        load_config(path, ["eval.scales[0]=1.5"])


def test_replace_key_drops_inherited_mapping_entries(tmp_path):
    write(tmp_path / "base.yaml", {"data": {"train": {"name": "synthetic-source",
                                                      "options": {"length": 5, "size": [32, 64]}}},
                                   "optim": {"lr": 0.1, "momentum": 0.5}})
    write(tmp_path / "child.yaml", {"_base_": "base.yaml",
                                    "data": {"train": {"options": {"_replace_": True, "length": 7}}}})
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.data.train.options == {"length": 7} and cfg.data.train.name == "synthetic-source"
    assert cfg.optim.momentum == 0.5  # everything else still merges
    write(tmp_path / "whole.yaml", {"_base_": "base.yaml", "optim": {"_replace_": True, "lr": 0.2}})
    assert load_config(tmp_path / "whole.yaml").optim.momentum == 0.9  # back to the default
    assert "_replace_" not in str(load_raw_config(tmp_path / "child.yaml"))
    write(tmp_path / "bad.yaml", {"_base_": "base.yaml", "optim": {"_replace_": "yes"}})
    with pytest.raises(ConfigError, match=r"config key optim._replace_: expected true or false"):
        load_config(tmp_path / "bad.yaml")


def test_unknown_key_names_key_and_allowed_keys(tmp_path):
    path = write(tmp_path / "c.yaml", {})
    with pytest.raises(ConfigError, match=r"unknown config key optim.lrr; allowed keys in optim: name, lr, "):
        load_config(path, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown config key optimiser; allowed keys in the top level: name, model"):
        load_config(path, ["optimiser.lr=0.1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.name=adam", r"config key optim.name: 'adam' is not allowed; allowed values: sgd, adamw"),
        ("regulariser.name=proto", r"config key regulariser.name: 'proto' is not allowed; allowed values: none, proac, "
                                   r"pixel_contrast, pixel_contrast_memory, protoseg"),
        ("optim.lr=fast", r"config key optim.lr: expected a number, got 'fast' \(str\)"),
        ("optim.lr=0", r"config key optim.lr: 0.0 is not allowed; it must be > 0.0"),
        ("schedule.max_iters=2.5", r"config key schedule.max_iters: expected an integer, got 2.5 \(float\)"),
        ("schedule.max_iters=true", r"config key schedule.max_iters: expected an integer, got True \(bool\)"),
        ("optim.nesterov=1", r"config key optim.nesterov: expected a boolean, got 1 \(int\)"),
        ("data.crop_size=[1, 2, 3]", r"config key data.crop_size: expected a list of 2 values, got \[1, 2, 3\]"),
        ("data.crop_size=64", r"config key data.crop_size: expected a list, got 64 \(int\)"),
        ("data.crop_size=[0, 4]", r"config key data.crop_size: \[0, 4\] is not allowed; it must be >= 1"),
        ("data.batch_size=null", r"config key data.batch_size: null is not allowed"),
        ("model.output_stride=4", r"config key model.output_stride: 4 is not allowed; allowed values: 8, 16, 32"),
        ("train.amp=fp8", r"config key train.amp: 'fp8' is not allowed; allowed values: auto, off, fp16, bf16"),
        ("model.backbone=vgg", r"config key model.backbone: 'vgg' is not allowed; allowed values: resnet18, "),
        ("model.head=unet", r"config key model.head: 'unet' is not allowed; allowed values: deeplabv2"),
        ("model.projection=mlp3", r"config key model.projection: 'mlp3' is not allowed; allowed values: convmlp"),
        ("data.train.name=kitti", r"config key data.train.name: 'kitti' is not allowed; allowed values: ade20k, "),
        ("data.val=[]", r"config key data.val: at least one evaluation dataset is needed"),
        ("data.val=[{name: x, splt: val}]", r"unknown config key data.val\[0\].splt; allowed keys in data.val\[0\]: "),
        ("data.scale_range=[2.0, 1.0]", r"data.scale_range: \[2.0, 1.0\] must be \[low, high\] with low <= high"),
        ("data.jitter=1.5", r"config key data.jitter: 1.5 is not allowed; it must be in \[0, 1\)"),
        ("schedule.warmup_iters=50000", r"schedule.warmup_iters: 50000 exceeds schedule.max_iters=40000"),
        ("regulariser.name=protoseg", r"model.classifier: regulariser protoseg needs classifier 'prototype'"),
        ("data.train.options=3", r"config key data.train.options: expected a mapping with string keys, got 3"),
        ("model=3", r"config key model: expected a mapping, got 3 \(int\)"),
    ],
)
def test_bad_values_give_one_line_errors(tmp_path, override, message):
    path = write(tmp_path / "c.yaml", {})
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, [override])
    assert "\n" not in str(info.value)


def test_defaults_are_valid_and_numbers_convert():
    cfg = config_from_dict({"optim": {"lr": 1, "weight_decay": "1e-4"}})
    assert cfg == config_from_dict(config_to_dict(cfg))
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert cfg.optim.weight_decay == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string
    assert cfg.optim.head_lr_mult is None and cfg.regulariser.weight is None


def test_config_yaml_is_plain_and_safe_loadable():
    text = config_to_yaml(Config())
    data = yaml.safe_load(text)
    assert data["optim"]["name"] == "sgd" and data["data"]["val"][0]["split"] == "val"
    with pytest.raises(ConfigError, match="stored config is not a YAML mapping"):
        config_from_yaml("- 1")


def test_synthetic_configs_are_the_demo_settings():
    from contraseg.commands.demo import demo_config

    assert load_config(CONFIGS / "synthetic_source_only.yaml") == demo_config("none")
    assert load_config(CONFIGS / "synthetic_proac.yaml") == demo_config("proac")
