"""``contraseg config PATH [--set KEY=VALUE ...]``: the resolved config as YAML."""

from __future__ import annotations

import yaml

from contraseg.cli import main
from contraseg.engine.config import config_from_dict, config_to_dict

from helpers import tiny_config, write_yaml


def test_prints_the_resolved_config_with_overrides(tmp_path, capsys):
    base = write_yaml(tmp_path / "base.yaml", tiny_config())
    child = tmp_path / "child.yaml"
    child.write_text(f"_base_: {base.name}\nregulariser:\n  name: pixel_contrast\n")
    assert main(["config", str(child), "--set", "regulariser.start_iter=5000", "--set", "schedule.poly_iters=62500",
                 "--set", "loss.class_weights=openseg_cityscapes"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["regulariser"]["name"] == "pixel_contrast" and printed["regulariser"]["start_iter"] == 5000
    assert printed["regulariser"]["weight"] is None and printed["regulariser"]["max_views"] == 100  # defaults filled
    assert printed["schedule"] == {"max_iters": 2, "poly_iters": 62500, "power": 0.9, "warmup_iters": 0,
                                   "warmup_ratio": 1e-6}
    assert printed["loss"]["class_weights"] == "openseg_cityscapes" and printed["recipe"] is None
    assert printed["name"] == "tiny"  # inherited from the base
    # the output is itself a config that loads to the same thing
    assert config_to_dict(config_from_dict(printed)) == printed


def test_adapt_section_is_resolved(tmp_path, capsys):
    path = write_yaml(tmp_path / "a.yaml", tiny_config(adapt={"method": "source_only"}))
    assert main(["config", str(path)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["adapt"]["method"] == "source_only" and "target" in printed["adapt"]


def test_bad_key_and_value_are_one_line_errors(tmp_path, capsys):
    path = write_yaml(tmp_path / "c.yaml", tiny_config())
    for override, message in (("regulariser.start_itr=3", "unknown config key regulariser.start_itr; allowed keys"),
                              ("loss.name=focal", "config key loss.name: 'focal' is not allowed"),
                              ("recipe.world_size=4", "config key recipe.total_batch_size: 1 != data.batch_size 2")):
        assert main(["config", str(path), "--set", override]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert main(["config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
