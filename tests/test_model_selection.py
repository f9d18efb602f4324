"""``train.best_on``: which evaluation set picks ``best.pth``, stated at the start."""

from __future__ import annotations

import pytest

from contraseg.engine.config import config_from_dict
from contraseg.engine.config_schema import ConfigError
from contraseg.engine.model_selection import resolve_best_on

from helpers import tiny_config, tiny_dataset

LABELS = ["synthetic-target/val", "synthetic-source/val"]


def cfg(**train):
    raw = tiny_config(model={"embed_dim": 8}, train=train)
    raw["data"]["val"] = [tiny_dataset("synthetic-target", "val", 2), tiny_dataset("synthetic-source", "val", 2)]
    return config_from_dict(raw)


def test_choices_resolve_to_a_stated_val_set():
    label, note = resolve_best_on(cfg(), LABELS)
    assert label == "synthetic-target/val"
    assert "chosen on synthetic-target/val (data.val[0], train.best_on: auto)" in note
    assert "not the training data's dataset (synthetic-source)" in note  # a source-only run on the target: said
    assert resolve_best_on(cfg(best_on=1), LABELS)[0] == "synthetic-source/val"
    assert resolve_best_on(cfg(best_on="synthetic-source/val"), LABELS)[0] == "synthetic-source/val"
    label, note = resolve_best_on(cfg(best_on="none"), LABELS)
    assert label is None and "last.pth is the result" in note
    with pytest.raises(ConfigError, match=r"train.best_on: 'cityscapes/val' is not a data.val set; allowed values: "
                                          r"auto, none, synthetic-target/val, synthetic-source/val"):
        resolve_best_on(cfg(best_on="cityscapes/val"), LABELS)
    with pytest.raises(ConfigError, match="train.best_on: 2 but data.val has 2 set"):
        resolve_best_on(cfg(best_on=2), LABELS)


def test_adaptation_keeps_last_unless_told():
    config = cfg()
    config.adapt = {"method": "source_only"}
    label, note = resolve_best_on(config, LABELS)
    assert label is None and "adaptation: the evaluation sets hold target labels" in note
    config.train.best_on = "synthetic-source/val"
    assert resolve_best_on(config, LABELS)[0] == "synthetic-source/val"


def test_training_selects_on_the_stated_set(tmp_path, capsys):
    from contraseg.engine.trainer import Trainer

    trainer = Trainer(cfg(best_on="synthetic-source/val", eval_interval=1), tmp_path / "a", progress=True)
    trainer.fit()
    out = capsys.readouterr().out
    assert "model selection: best.pth is chosen on synthetic-source/val (train.best_on)" in out
    best = trainer.best
    assert best["iteration"] is not None and (tmp_path / "a" / "best.pth").is_file()
    Trainer(cfg(best_on="none"), tmp_path / "b", progress=False).fit()
    assert (tmp_path / "b" / "last.pth").is_file() and not (tmp_path / "b" / "best.pth").exists()
