"""The papers' headline recipes (issue 18): every recipe config resolves, through contraseg's
own loaders, to the released value of each manifest item marked equal (or to the recorded
value of a written difference); docs/recipes.md is what the generator writes; and every
recipe config builds and trains two iterations on CPU on a tiny Cityscapes tree in the real
format (the real backbones, at 64 x 128)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from contraseg.engine.config_schema import ConfigError
from contraseg.recipes import (NORMALISERS, check_manifest, compare_item, load_manifest, lookup, manifest_paths,
                               render_recipes, resolve_recipe)
from contraseg.recipes.table import ORDER

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = manifest_paths(ROOT)
COMMIT = "287e5d3069ce6d7a1517ddf98e004c00f23f8f99"


def manifest(experiment: str):
    return load_manifest(ROOT / "configs" / "recipes" / "released" / f"{experiment}.yaml")


# ------------------------------------------------------------------ manifests and drift
def test_every_headline_experiment_has_a_manifest_and_a_recipe_config():
    assert sorted(p.stem for p in MANIFESTS) == sorted(ORDER)
    for path in MANIFESTS:
        m = load_manifest(path)
        assert m.experiment == path.stem and (ROOT / m.config).is_file(), m.config
        assert all(item.source["repo"] == m.released["repo"] for item in m.items)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.stem)
def test_recipe_config_does_not_drift_from_its_manifest(path):
    m = load_manifest(path)
    results = check_manifest(m, ROOT)
    drift = [f"{r.item.name}: {r.problem}" for r in results if not r.ok]
    assert not drift, f"{m.config} drifted from {path.name}:\n" + "\n".join(drift)
    assert lookup(resolve_recipe(ROOT / m.config), "recipe.experiment") == m.experiment
    for r in results:  # every difference is written down; every equal item is checked or in code
        assert r.item.kind == "equal" or len(r.item.reason) > 10, r.item.name
        assert r.item.kind != "equal" or r.values or r.item.in_code, r.item.name


def test_synthia_items_are_all_marked_not_released():
    kinds = {item.kind for item in manifest("proac_uda_synthia").items}
    assert kinds == {"not released"}


@pytest.mark.parametrize("experiment, override, item", [
    ("contrastiveseg_hrnet_w48", "optim.lr=0.02", "optimizer.base_lr"),                 # an equal item
    ("contrastiveseg_hrnet_w48", "data.crop_size=[1024,512]", "augmentation.crop_size_wh"),  # [w, h] -> [h, w]
    ("contrastiveseg_hrnet_w48", "model.pretrained=weights.pth", "pretrained"),  # a deliberate difference too
    ("contrastiveseg_hrnet_w48", "schedule.max_iters=80000", "iterations"),
    ("contrastiveseg_hrnet_w48", "model.hrnet_fusion=pad", "model.backbone"),
    ("proac_uda_gta", "model.backbone=resnet101", "model.arch"),                  # the released model's layout
    ("proac_uda_gta", "eval.align_corners=false", "eval.align_corners"),
    ("wdass_gta_point", "model.backbone=resnet101_deeplabv2", "model.arch"),
    ("wdass_gta_point", "model.aspp_rates=[6,12,18,24]", "model.classifier"),
])
def test_a_changed_recipe_value_is_reported_as_drift(experiment, override, item):
    m = manifest(experiment)
    results = {r.item.name: r for r in check_manifest(m, ROOT, (override,))}
    assert not results[item].ok and override.split("=")[0] in results[item].problem
    assert sum(not r.ok for r in results.values()) >= 1


def test_docs_recipes_md_is_what_the_generator_writes():
    text = render_recipes(ROOT)
    assert (ROOT / "docs" / "recipes.md").read_text() == text, "run python benchmarks/recipes_table.py"
    assert "DRIFT" not in text
    for path in MANIFESTS:
        m = load_manifest(path)
        assert f"## {m.title}" in text and all(f"| {item.name} |" in text for item in m.items)


# ------------------------------------------------------------------ comparison rules (no loader)
def _item(tmp_path, **fields):
    item = {"value": 0.01, "source": {"repo": "tfzhou/ContrastiveSeg", "commit": COMMIT, "file": "a.json", "line": 3},
            "key": "optim.lr", "status": "equal", **fields}
    raw = {"experiment": "x", "title": "X", "config": "c.yaml", "released": {"repo": "r", "commit": COMMIT},
           "items": {"it": item}}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _compare(tmp_path, resolved, **fields):
    return compare_item(load_manifest(_item(tmp_path, **fields)).items[0], resolved)


def test_compare_checks_values_parts_expectations_and_normalisers(tmp_path):
    assert _compare(tmp_path, {"optim": {"lr": 0.01}}).ok
    assert not _compare(tmp_path, {"optim": {"lr": 0.011}}).ok
    assert not _compare(tmp_path, {"optim": {"lr": True}}, value=1, key="optim.lr").ok  # bools are not numbers
    assert _compare(tmp_path, {"data": {"crop_size": [512, 1024]}}, value=[1024, 512], key="data.crop_size",
                    normalise="wh_to_hw").ok
    assert not _compare(tmp_path, {"data": {"crop_size": [1024, 512]}}, value=[1024, 512], key="data.crop_size",
                        normalise="wh_to_hw").ok
    parts = [{"key": "a.t", "from": "inter.t"}, {"key": "a.name", "expect": "released"}]
    assert _compare(tmp_path, {"a": {"t": 0.1, "name": "released"}}, value={"inter": {"t": 0.1}}, key=parts).ok
    bad = _compare(tmp_path, {"a": {"t": 0.2, "name": "released"}}, value={"inter": {"t": 0.1}}, key=parts)
    assert not bad.ok and "a.t = 0.2" in bad.problem
    # a|b: the first that is not null (a poly horizon that defaults to max_iters)
    horizon = {"key": "schedule.poly_iters|schedule.max_iters"}
    assert _compare(tmp_path, {"schedule": {"poly_iters": None, "max_iters": 150000}}, value=150000, key=[horizon]).ok
    assert not _compare(tmp_path, {"schedule": {"poly_iters": 62500, "max_iters": 150000}}, value=150000,
                        key=[horizon]).ok
    missing = _compare(tmp_path, {"optim": {}})
    assert not missing.ok and "optim.lr: config key optim.lr: not in the resolved config" in missing.problem


def test_a_difference_is_compared_with_its_recorded_value(tmp_path):
    fields = {"status": "differs: a released bug fixed", "contraseg": {"optim.lr": 0.02}}
    assert _compare(tmp_path, {"optim": {"lr": 0.02}}, **fields).ok
    assert not _compare(tmp_path, {"optim": {"lr": 0.01}}, **fields).ok


def test_normalisers_give_the_released_meaning():
    assert NORMALISERS["wh_to_hw"]([896, 512]) == [512, 896]
    assert NORMALISERS["range_max"]({"range": [-10, 10]}) == 10
    assert NORMALISERS["after_iteration"]({"on_when": "itern > 10000"}) == 10001
    assert NORMALISERS["start_iteration"]({"type": "hard start", "iteration": 5000}) == 5000
    assert NORMALISERS["top_bottom"]({"top": 15, "bottom": 120}) == [15, 120]
    assert NORMALISERS["head_over_backbone"]({"backbone_lr_mult": 1.0, "head_lr_mult": 10.0}) == 10.0
    assert NORMALISERS["per_process"](4, {"recipe": {"world_size": 2}}) == 2


@pytest.mark.parametrize("fields, message", [
    ({"status": "differs"}, "item it.status: expected 'equal', 'differs: <reason>'"),
    ({"status": "differs:  "}, "item it.status: a difference needs its written reason"),
    ({"status": "same"}, "item it.status: expected"),
    ({"key": None}, "item it: equal with key null needs in_code"),
    ({"text": "released line"}, "item it: unknown field(s) ['text']"),
    ({"source": {"repo": "r", "commit": "abc", "file": "f", "line": 1}}, "item it.source.commit: not a 40-digit"),
    ({"status": "differs: because", "contraseg": {}}, "item it.contraseg: must give the recipe's value"),
])
def test_manifest_errors_are_one_line_naming_file_and_item(tmp_path, fields, message):
    path = _item(tmp_path, **fields)
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ two iterations on CPU
CITY = "aachen"
TRAIN_IDS_TO_LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    """A Cityscapes tree in the real layout: 4 train, 2 val images of 64 x 128, labelIds PNGs
    (every train id present as stripes, plus unlabelled 0), and point / coarse / image weak
    labels and ProAC-style offline pseudo labels of the train images."""
    from contraseg.adapt.weak_labels import make_weak_labels
    from contraseg.data import build_dataset

    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for i in range(count):
            name = f"{CITY}_{i:06d}_000019"
            image_dir, label_dir = root / "leftImg8bit" / split / CITY, root / "gtFine" / split / CITY
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(image_dir / f"{name}_leftImg8bit.png")
            stripes = np.repeat(np.array(TRAIN_IDS_TO_LABEL_IDS + [0], dtype=np.uint8), 7)[:128]
            labels = np.tile(np.roll(stripes, 3 * i), (64, 1))
            Image.fromarray(labels).save(label_dir / f"{name}_gtFine_labelIds.png")
    train = build_dataset("cityscapes", root=str(root), split="train")
    for kind in ("image", "point", "coarse"):
        make_weak_labels(train, kind, root / "weak" / kind, seed=0, min_size=4, radius=1)
    pseudo = root / "pseudo"
    pseudo.mkdir()
    for i in range(4):
        Image.fromarray(np.tile(np.arange(128, dtype=np.uint8) % 19, (64, 1))).save(pseudo / f"{CITY}_{i:06d}_000019.png")
    return root


def tiny_overrides(m, root: Path) -> list[str]:
    """Replace data by the tiny tree and shorten the run; everything else stays the recipe's.
    fp16 needs CUDA, so the tests train in fp32; hard starts move to iteration 1 so that the
    second iteration runs every term."""
    city = f"{{name: cityscapes, root: {root}, split: %s}}"
    out = [f"data.train={city % 'train'}", f"data.val=[{city % 'val'}]", "data.crop_size=[64,128]",
           "data.base_size=null", "data.num_workers=0", "model.pretrained=null", "schedule.max_iters=2",
           "schedule.warmup_iters=1", 'train.amp="off"', "train.eval_interval=2", "train.checkpoint_interval=2",
           "train.log_interval=1", "train.tensorboard=false"]
    if m.experiment.startswith("contrastiveseg"):
        out.append("regulariser.start_iter=1")
    if m.experiment.startswith(("wdass", "proac")):
        out += [f"adapt.target={city % 'train'}", "adapt.target_base_size=null", "adapt.init_checkpoint=null"]
    if m.experiment.startswith("wdass"):
        kind = m.experiment.rsplit("_", 1)[1]
        out += [f"adapt.wdass.weak_labels={root / 'weak' / kind}", "adapt.wdass.start_iter=1",
                "adapt.teacher.ignore_rows=[2,4]"]
    if m.experiment.startswith("proac"):
        out += [f"adapt.pseudo_labels.dir={root / 'pseudo'}", "data.scale_to_width=128"]
    return out


FAST = {"contrastiveseg_hrnet_w48", "protoseg_hrnet_w48", "proac_uda_gta"}  # the rest: 10-25 s each (2 cores)


@pytest.mark.parametrize("experiment", [pytest.param(e, marks=() if e in FAST else pytest.mark.slow) for e in ORDER])
def test_recipe_config_builds_and_trains_two_iterations_on_cpu(experiment, cityscapes, tmp_path):
    m = manifest(experiment)
    overrides = tiny_overrides(m, cityscapes)
    run = tmp_path / "run"
    if m.experiment.startswith(("wdass", "proac")):
        from contraseg.adapt.config import load_adapt_config
        from contraseg.adapt.run import run_adaptation

        cfg, adapt = load_adapt_config(ROOT / m.config, overrides)
        summary = run_adaptation(cfg, adapt, run, progress=False)
        run = Path(summary.get("run_dir", run))
    else:
        from contraseg.engine.config_io import load_config
        from contraseg.engine.trainer import Trainer

        cfg = load_config(ROOT / m.config, overrides)
        summary = Trainer(cfg, run, progress=False).fit()
    assert summary["iteration"] == 2
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2] and all(math.isfinite(r["loss"]) for r in train)
    assert (run / "last.pth").is_file()
    for checkpoint in run.glob("*.pth"):  # 0.5-1.5 GB each at the real sizes: not kept once checked
        checkpoint.unlink()
