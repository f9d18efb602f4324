"""Adaptation training: WDASS steps for every weak-label kind, self-training with ProAC,
checkpoints and exact resume, self-training rounds, config and command-line errors."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
import yaml

from contraseg.adapt.config import adapt_section, load_adapt_config
from contraseg.adapt.run import build_adapt_trainer, run_adaptation
from contraseg.adapt.weak_labels import make_weak_labels
from contraseg.engine.config import ConfigError, config_from_dict
from contraseg.engine.config_io import merge_dicts

from helpers import TINY_SIZE, tiny_config, tiny_dataset

def raw_config(adapt: dict | None = None, **sections) -> dict:
    """The shared tiny config with 6 training scenes and 4 iterations, ``sections`` merged
    on top, and an ``adapt:`` section on 4 synthetic-target training scenes when given."""
    raw = tiny_config(train_scenes=6, **merge_dicts({"schedule": {"max_iters": 4}}, sections))
    if adapt is not None:
        raw["adapt"] = {"target": tiny_dataset("synthetic-target", "train", 4), **adapt}
    return raw


def load(tmp_path, raw: dict, *overrides: str):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_adapt_config(path, overrides)


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory):
    from contraseg.engine.trainer import Trainer

    run = tmp_path_factory.mktemp("source")
    Trainer(config_from_dict(raw_config(schedule={"max_iters": 1})), run, progress=False).fit()
    return str(run / "last.pth")


@pytest.fixture(scope="module")
def weak_labels(tmp_path_factory):
    from contraseg.data import build_dataset

    root = tmp_path_factory.mktemp("weak")
    dataset = build_dataset("synthetic-target", split="train", size=TINY_SIZE, length=4)
    for kind in ("image", "point", "coarse"):
        make_weak_labels(dataset, kind, root / kind, seed=0, min_size=4, radius=1)
    return root


def wdass_adapt(weak_labels, kind: str, source_checkpoint: str, **wdass) -> dict:
    return {"method": "wdass", "init_checkpoint": source_checkpoint,
            "wdass": {"weak_kind": kind, "weak_labels": str(weak_labels / kind), **wdass}}


# ------------------------------------------------------------------ WDASS
@pytest.mark.parametrize("kind", ["image", "point", "coarse"])
def test_wdass_steps_update_teacher_prototypes_and_lower_the_loss(tmp_path, weak_labels, source_checkpoint, kind):
    cfg, adapt = load(tmp_path, raw_config(wdass_adapt(weak_labels, kind, source_checkpoint, warmup_iters=2),
                                           optim={"lr": 0.02}),
                      "adapt.teacher.threshold=0.05", "adapt.wdass.prototype_threshold=0.05",
                      "adapt.wdass.max_views=2", "adapt.wdass.cross_threshold=0.05",
                      "adapt.wdass.intra_threshold=0.05")  # a 4 x 8 embedding grid, an untrained model
    trainer = build_adapt_trainer(cfg, adapt, tmp_path / "run", progress=False)
    assert trainer.initialised_from == source_checkpoint
    assert trainer.target_set.kind == ("image" if kind == "image" else "dense")
    batch = next(iter(trainer._loader()))
    assert set(batch[1]) == ({"image", "name", "presence", "full_image"} if kind == "image"
                             else {"image", "name", "label", "image_classes"})
    teacher_before = copy.deepcopy(trainer.teacher.model.state_dict())
    history = []
    for step in range(6):
        terms = trainer.train_step(batch)
        trainer.iteration += 1
        assert all(torch.isfinite(v) for v in terms.values()), terms
        history.append(terms)
    assert set(history[0]) >= {"loss", "ce_source", "ce_mix", "image", "contrast", "cross", "intra_source",
                               "intra_target", "confident"}
    assert ("weak" in history[0]) == (kind != "image")
    assert history[0]["image"] == 0 and history[0]["contrast"] == 0 and history[2]["image"] > 0  # warm-up ramp
    assert history[-1]["ce_source"] < history[0]["ce_source"]
    if kind != "image":
        assert history[-1]["weak"] < history[0]["weak"]
    assert trainer.estimator.initialised[0].any() and trainer.estimator.initialised[1].any()
    protos, valid = trainer.estimator.get("target")
    assert valid.any() and torch.isfinite(protos).all() and (protos[~valid] == 0).all()  # released: not normalised
    moved = [k for k, v in trainer.teacher.model.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, teacher_before[k])]
    assert moved and history[-1]["cross"] > 0


@pytest.mark.parametrize("kind", ["image", "point"])
def test_wdass_prototype_softmax_variant_steps(tmp_path, weak_labels, source_checkpoint, kind):
    cfg, adapt = load(tmp_path, raw_config(wdass_adapt(weak_labels, kind, source_checkpoint,
                                                       contrast="prototype-softmax", photometric=False)),
                      "adapt.teacher.threshold=0.05")
    trainer = build_adapt_trainer(cfg, adapt, tmp_path / "run", progress=False)
    assert type(trainer.contrast).__name__ == "WDASSSoftmaxContrastLoss" and trainer.photometric is None
    batch = next(iter(trainer._loader()))
    for _ in range(2):
        terms = trainer.train_step(batch)
        trainer.iteration += 1
        assert all(torch.isfinite(v) for v in terms.values()), terms
    protos, valid = trainer.estimator.get("target")
    assert valid.any() and torch.allclose(protos[valid].norm(dim=1), torch.ones(int(valid.sum())), atol=1e-5)


def test_wdass_checkpoint_resumes_bit_for_bit(tmp_path, weak_labels, source_checkpoint):
    raw = raw_config(wdass_adapt(weak_labels, "point", source_checkpoint))
    cfg, adapt = load(tmp_path, raw, "adapt.teacher.threshold=0.3")
    straight = build_adapt_trainer(cfg, adapt, tmp_path / "a", progress=False)
    straight.fit()
    interrupted = build_adapt_trainer(cfg, adapt, tmp_path / "b", progress=False)
    stop_at_iteration(interrupted, 2)
    resumed = build_adapt_trainer(cfg, adapt, tmp_path / "b", resume="auto", progress=False)
    assert resumed.iteration == 2 and resumed.initialised_from is None
    resumed.fit()
    assert_same_state(straight, resumed)
    for key in ("teacher", "estimator"):
        for name, value in straight.adapt_state_dict()[key].items():
            assert torch.equal(value, resumed.adapt_state_dict()[key][name]), name
    state = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    assert yaml.safe_load(state["adapt_config"])["method"] == "wdass"
    assert state["config"] and "estimator" in state["adapt_state"]


def stop_at_iteration(trainer, iteration: int) -> None:
    """Train until ``iteration`` (a checkpoint exists there), then stop as if killed."""
    original = trainer.train_step

    def step(batch):
        if trainer.iteration == iteration:
            raise KeyboardInterrupt
        return original(batch)

    trainer.train_step = step
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def assert_same_state(a, b) -> None:
    assert a.iteration == b.iteration
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name


# ------------------------------------------------------------------ self-training
@pytest.fixture(scope="module")
def pseudo_labels(tmp_path_factory, source_checkpoint):
    from contraseg.adapt.run import label_target

    root = tmp_path_factory.mktemp("pseudo")
    cfg = config_from_dict(raw_config({"method": "self_training", "init_checkpoint": source_checkpoint}))
    label_target(source_checkpoint, adapt_section(cfg), root, torch.device("cpu"))
    return root


def test_self_training_with_proac_checkpoints_and_resumes(tmp_path, pseudo_labels, source_checkpoint):
    adapt = {"method": "self_training", "init_checkpoint": source_checkpoint,
             "pseudo_labels": {"dir": str(pseudo_labels)}}
    cfg, parsed = load(tmp_path, raw_config(adapt, regulariser={"name": "proac"}))
    straight = build_adapt_trainer(cfg, parsed, tmp_path / "a", progress=False)
    source, target = next(iter(straight._loader()))
    assert "gt_label" not in target and target["label"].shape == source["label"].shape == (2, *TINY_SIZE)
    summary = straight.fit()
    records = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert {"loss", "ce_source", "ce_target", "proac", "target_labelled"} <= set(train[0])
    assert train[0]["loss"] == pytest.approx(train[0]["ce_source"] + train[0]["ce_target"] + train[0]["proac"],
                                             rel=1e-5)
    assert summary["iteration"] == 4 and (tmp_path / "a" / "last.pth").is_file()
    assert not (tmp_path / "a" / "best.pth").exists()  # adaptation selects on no target labels unless told
    assert (tmp_path / "a" / "adapt.yaml").is_file()
    interrupted = build_adapt_trainer(cfg, parsed, tmp_path / "b", progress=False)
    stop_at_iteration(interrupted, 2)
    resumed = build_adapt_trainer(cfg, parsed, tmp_path / "b", resume="auto", progress=False)
    resumed.fit()
    assert_same_state(straight, resumed)


def test_self_training_target_batch_holds_pseudo_labels_only(tmp_path, pseudo_labels, source_checkpoint):
    from contraseg.data.pseudo_labels import PseudoLabelDir

    cfg, parsed = load(tmp_path, raw_config({"method": "self_training", "pseudo_labels": {"dir": str(pseudo_labels)}},
                                            data={"scale_range": [1.0, 1.0], "hflip": False}))
    trainer = build_adapt_trainer(cfg, parsed, tmp_path / "run", progress=False)
    sample = trainer.target_set[1]
    assert set(sample) == {"image", "label", "name"}
    stored = torch.from_numpy(PseudoLabelDir(pseudo_labels).load(sample["name"]).copy()).long()
    assert torch.equal(sample["label"], stored)


def test_self_training_rounds_relabel_with_the_previous_model(tmp_path, source_checkpoint, capsys):
    from contraseg.commands.adapt import main

    raw = raw_config({"method": "self_training", "init_checkpoint": source_checkpoint, "rounds": 2,
                      "pseudo_labels": {"threshold": 0.5, "class_percentile": 0.5}},
                     schedule={"max_iters": 2})
    path = tmp_path / "rounds.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main([str(path), "--run-dir", str(run), "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"round 1/2: pseudo-labelling synthetic-target/train with {source_checkpoint}" in out
    assert f"round 2/2: pseudo-labelling synthetic-target/train with {run / 'round_1' / 'last.pth'}" in out
    summary = json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))
    assert summary["run_dir"] == str(run / "round_2") and out.strip().splitlines()[-1].startswith("done: ")
    for index in (1, 2):
        assert len(list((run / f"round_{index}" / "pseudo_labels").glob("*.png"))) == 4
        stored = yaml.safe_load((run / f"round_{index}" / "adapt.yaml").read_text())
        assert stored["pseudo_labels"]["dir"] == str(run / f"round_{index}" / "pseudo_labels")
    assert yaml.safe_load((run / "round_2" / "adapt.yaml").read_text())["init_checkpoint"] == str(
        run / "round_1" / "last.pth")
    summary = run / "round_2" / "pseudo_labels" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    result = run_adaptation(*load_adapt_config(path), run, resume="auto", progress=False)
    assert summary.stat().st_mtime_ns == stamp and result["iteration"] == 2 and len(result["rounds"]) == 2


def test_source_only_fine_tuning_starts_from_the_checkpoint(tmp_path, source_checkpoint):
    cfg, parsed = load(tmp_path, raw_config({"method": "source_only", "init_checkpoint": source_checkpoint}))
    trainer = build_adapt_trainer(cfg, parsed, tmp_path / "run", progress=False)
    stored = torch.load(source_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, stored[k]) for k, v in trainer.model.state_dict().items())
    assert trainer.target_set is None
    assert trainer.fit()["iteration"] == 4


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("adapt, overrides, message", [
    ({"method": "wdass"}, (), "config key adapt.wdass.weak_labels: method wdass needs the folder"),
    ({"method": "self_training"}, (), "self_training needs pseudo_labels.dir, pseudo_labels.checkpoint or"),
    ({"method": "wdass", "rounds": 2, "wdass": {"weak_labels": "x"}}, (), "2 rounds need method self_training"),
    ({"method": "wdass", "wdass": {"weak_labels": "x"}}, ("regulariser.name=proac",),
     "method wdass brings its own contrast; set regulariser.name to none"),
    ({"method": "source_only"}, ("adapt.teacher.threshold=1.5",), r"adapt.teacher.threshold: 1.5 is not allowed"),
    ({"method": "source_only"}, ("adapt.wdass.weak_kind=scribble",),
     "config key adapt.wdass.weak_kind: 'scribble' is not allowed; allowed values: image, point, coarse"),
    ({"method": "source_only", "rouns": 2}, (), "unknown config key adapt.rouns; allowed keys in adapt: method"),
    ({"method": "source_only", "target": {"name": "gta6"}}, (), "config key adapt.target.name: 'gta6' is not allowed"),
    ({"method": "source_only", "target": {"name": "synthetic-target", "options": {"pseudo_label_dir": "x"}}}, (),
     "set adapt.pseudo_labels.dir"),
])
def test_adapt_config_errors_are_one_line(tmp_path, adapt, overrides, message):
    raw = raw_config()
    raw["adapt"] = adapt
    with pytest.raises(ConfigError, match=message) as info:
        load(tmp_path, raw, *overrides)
    assert "\n" not in str(info.value)


def test_missing_target_labels_name_the_file(tmp_path, pseudo_labels, weak_labels):
    from contraseg.data import build_dataset

    empty = tmp_path / "empty"
    empty.mkdir()
    cfg, parsed = load(tmp_path, raw_config({"method": "self_training", "pseudo_labels": {"dir": str(empty)}}))
    with pytest.raises(FileNotFoundError, match=r"label folder .*empty has no label for 4 of 4 target samples, "
                                                r"first: .*synthetic-target_train_000000.png"):
        build_adapt_trainer(cfg, parsed, tmp_path / "run", progress=False)
    (tmp_path / "img.json").write_text('{"synthetic-target_train_000000": [1]}')
    cfg, parsed = load(tmp_path, raw_config({"method": "wdass", "wdass": {"weak_kind": "image",
                                                                           "weak_labels": str(tmp_path / "img.json")}}))
    with pytest.raises(ValueError, match=r"img.json lack 3 of 4 target samples, first: 'synthetic-target_train_000001'"):
        build_adapt_trainer(cfg, parsed, tmp_path / "run", progress=False)
    assert len(build_dataset("synthetic-target", split="train", size=TINY_SIZE, length=4)) == 4


def test_command_line_errors(tmp_path, capsys):
    from contraseg.cli import main
    from contraseg.commands.adapt import main as adapt_main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw_config({"method": "wdass", "wdass": {"weak_labels": "x"}})))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("contraseg train: error: the config has an adapt: section; "
                   "train it with contraseg adapt (or python -m contraseg.adapt)")
    assert adapt_main([str(path), "--set", "adapt.methd=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.match(r"contraseg adapt: error: unknown config key adapt.methd", err)
    assert adapt_main([str(path), "--run-dir", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pseudo-label folder not found: x" in err
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(raw_config()))
    assert adapt_main([str(plain)]) == 2
    assert "plain.yaml: no adapt section; a plain training config runs with contraseg train" in capsys.readouterr().err
