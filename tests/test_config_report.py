"""Config mistakes: all of them in one report (one line each), YAML errors with line and column."""

from __future__ import annotations

import pytest

from contraseg.cli import main
from contraseg.engine.config import config_from_dict
from contraseg.engine.config_report import ConfigErrors, collect_config_errors
from contraseg.engine.config_schema import ConfigError

from helpers import tiny_config, write_yaml


def test_every_error_is_reported_one_line_each(tmp_path, capsys):
    config = write_yaml(tmp_path / "c.yaml", tiny_config(model={"embed_dim": 8}))
    code = main(["train", str(config), "--run-dir", str(tmp_path / "r"), "--set", "schedule.max_iters=2",
                 "--set", "schedule.warmup_iters=5", "--set", "optim.lrr=1", "--set", "data.jitter=2",
                 "--set", "model.head=nope"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "contraseg train: error: 4 config errors:"
    body = sorted(line.split("error:   ", 1)[1].split(":")[0].split(";")[0] for line in lines[1:])
    assert body == ["config key data.jitter", "config key model.head", "config key schedule.warmup_iters",
                    "unknown config key optim.lrr"]
    assert not (tmp_path / "r").exists()


def test_one_error_keeps_its_single_line():
    raw = tiny_config(model={"embed_dim": 8})
    raw["optim"] = {"lrr": 1}
    with pytest.raises(ConfigError) as info:
        collect_config_errors(raw, config_from_dict)
    assert not isinstance(info.value, ConfigErrors) and str(info.value).startswith("unknown config key optim.lrr;")
    assert raw["optim"] == {"lrr": 1}  # the caller's mapping is untouched


def test_list_items_are_dropped_by_index():
    raw = tiny_config(model={"embed_dim": 8})
    raw["data"]["val"][0]["nmae"] = "x"
    raw["optim"] = {"momentum": -1}
    with pytest.raises(ConfigErrors) as info:
        collect_config_errors(raw, config_from_dict)
    assert len(info.value.messages) == 3 and "data.val[0].nmae" in str(info.value)


def test_yaml_errors_name_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel:\n  backbone: resnet18\n  head: [mlp\noptim: {lr: 1}\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"contraseg train: error: {bad}:5:6: not valid YAML (while parsing a flow sequence: "
                   f"expected ',' or ']', but got ':')")
    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("name: x\nmodel:\n\tbackbone: resnet18\n")
    assert main(["train", str(tabs)]) == 2
    assert f"{tabs}:3:1: not valid YAML (" in capsys.readouterr().err
