"""The training progress line: weighted terms labelled, it/s without evaluation time."""

from __future__ import annotations

import time

from contraseg.engine.config import config_from_dict
from contraseg.engine.run_log import read_jsonl, term_label

from helpers import tiny_config


def test_weighted_terms_are_labelled_and_evaluations_do_not_count_in_it_per_s(tmp_path, capsys, monkeypatch):
    from contraseg.engine.trainer import Trainer

    raw = tiny_config(model={"embed_dim": 8}, regulariser={"name": "proac", "weight": 0.1},
                      schedule={"max_iters": 3}, train={"log_interval": 1, "eval_interval": 1,
                                                        "checkpoint_interval": 3})
    trainer = Trainer(config_from_dict(raw), tmp_path / "run", progress=True)
    real = trainer.evaluate

    def slow_evaluate():
        time.sleep(1.5)
        return real()

    monkeypatch.setattr(trainer, "evaluate", slow_evaluate)
    trainer.fit()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    train_lines = [line for line in lines if line.split("]")[0].count("/") == 1 and " | lr " in line]
    assert len(train_lines) == 3
    for line in train_lines:
        assert " ce " in line and " proac(w) " in line and " proac " not in line
        assert float(line.split(" it/s")[0].rsplit("| ", 1)[1]) > 1 / 1.5  # the 1.5 s evaluations are not in it
    records = [r for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r["type"] == "train"]
    assert all(r["time"] < 1.5 for r in records) and "proac" in records[0]  # the JSONL keeps the bare name
    weighted = records[0]["proac"]
    assert abs(records[0]["loss"] - records[0]["ce"] - weighted) < 1e-4  # what is shown is what was added


def test_term_labels():
    assert [term_label(n) for n in ("loss", "ce", "proac", "aux_ce", "ce_source", "contrast")] == [
        "loss", "ce", "proac(w)", "aux_ce(w)", "ce_source", "contrast(w)"]
