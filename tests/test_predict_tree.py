"""``predict`` on folder trees: relative paths kept, the official Cityscapes evaluator scores
``--format labelid`` output of a whole ``leftImg8bit/val`` tree, unreadable images skipped
and counted, a rerun continues, a legend beside the palette PNGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from contraseg.cli import main

from helpers import tiny_config, write_yaml
from test_data_formats import H, W, write_cityscapes


@pytest.fixture(scope="module")
def cityscapes_run(tmp_path_factory):
    """A 1-iteration run on a tiny Cityscapes tree: (root, checkpoint)."""
    root = tmp_path_factory.mktemp("cs")
    write_cityscapes(root, "train", seed=1)
    val = write_cityscapes(root, "val", cities=(("frankfurt", 2), ("lindau", 1)), seed=2)
    for name, (_, label) in val.items():  # the real format also has instanceIds (the evaluator reads them)
        city = name.split("_")[0]
        Image.fromarray(label.astype(np.uint16)).save(root / "gtFine" / "val" / city / f"{name}_gtFine_instanceIds.png")
    dataset = {"name": "cityscapes", "root": str(root), "options": {}}
    raw = tiny_config(model={"embed_dim": 8}, schedule={"max_iters": 1},
                      train={"eval_interval": 1, "checkpoint_interval": 1}, data={"crop_size": [H, W]})
    raw["data"]["train"], raw["data"]["val"] = {**dataset, "split": "train"}, [{**dataset, "split": "val"}]
    config = write_yaml(root / "cs.yaml", raw)
    assert main(["train", str(config), "--run-dir", str(root / "run"), "--device", "cpu"]) == 0
    return root, root / "run" / "last.pth"


def test_labelid_output_of_a_val_tree_is_scored_by_the_official_evaluator(cityscapes_run, tmp_path, capsys):
    root, checkpoint = cityscapes_run
    out = tmp_path / "results"
    assert main(["predict", str(checkpoint), str(root / "leftImg8bit" / "val"), "--out", str(out),
                 "--format", "labelid", "--device", "cpu"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["frankfurt/frankfurt_000000_000019_leftImg8bit.png",
                       "frankfurt/frankfurt_000001_000020_leftImg8bit.png",
                       "lindau/lindau_000000_000019_leftImg8bit.png"]
    env = {**os.environ, "CITYSCAPES_DATASET": str(root), "CITYSCAPES_RESULTS": str(out),
           "CITYSCAPES_EXPORT_DIR": str(tmp_path)}
    # the installed cityscapesscripts still calls np.in1d, which numpy 2.4 removed: alias it, run unchanged
    driver = ("import numpy as np, runpy; np.in1d = getattr(np, 'in1d', None) or np.isin; "
              "runpy.run_module('cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", driver],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    official = json.loads((tmp_path / "resultPixelLevelSemanticLabeling.json").read_text())
    # our own evaluation of the same checkpoint on the same tree gives the same class IoUs
    assert main(["eval", str(checkpoint), "--dataset", "cityscapes", "--root", str(root), "--num-workers", "0",
                 "--device", "cpu", "--out", str(tmp_path / "ours.json")]) == 0
    ours = json.loads((tmp_path / "ours.json").read_text())["results"]["cityscapes/val"]
    ious = dict(zip(ours["classes"], ours["IoU"]))
    compared = 0
    for name, value in official["classScores"].items():
        if isinstance(value, float) and not np.isnan(value) and ious.get(name) is not None:
            assert ious[name] == pytest.approx(100 * value, abs=1e-4), name  # ours: percent, 4 decimals
            compared += 1
    assert compared >= 2


def test_skip_unreadable_counts_continues_and_writes_a_legend(cityscapes_run, tmp_path, capsys):
    _, checkpoint = cityscapes_run
    images = tmp_path / "images"
    (images / "a" / "b").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for rel in ("one.png", "a/two.jpg", "a/b/three.png"):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(images / rel)
    (images / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "pred"
    common = ["predict", str(checkpoint), str(images), "--out", str(out), "--device", "cpu"]
    assert main(common) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"contraseg predict: error: cannot read image {images / 'a' / 'broken.png'}")
    assert err.endswith("(pass --skip-unreadable to skip such images)") and len(err.splitlines()) == 1
    done_first = sorted(str(p.relative_to(out)) for p in out.rglob("*_pred.png"))
    assert done_first == ["a/b/three_pred.png"]  # sorted order: a/b/three.png came before a/broken.png
    assert main(common + ["--skip-unreadable"]) == 0  # continues, no --overwrite needed
    printed = capsys.readouterr().out
    assert "continued " in printed and "1 image(s) already predicted were skipped" in printed
    assert f"skipped 1 unreadable image(s) of 4: {images / 'a' / 'broken.png'}" in printed
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*_pred.png")) == [
        "a/b/three_pred.png", "a/two_pred.png", "one_pred.png"]
    legend = json.loads((out / "legend.json").read_text())
    assert legend[0] == {"id": 0, "name": "road", "rgb": [128, 64, 128]} and len(legend) == 19
    image = np.asarray(Image.open(out / "legend.png"))
    assert image.shape[0] >= 19 * 18 and (image == [128, 64, 128]).all(axis=-1).any()


def test_an_unwritable_out_fails_before_any_prediction(cityscapes_run, tmp_path, capsys):
    _, checkpoint = cityscapes_run
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["predict", str(checkpoint), str(tmp_path), "--out", str(locked / "p"), "--device", "cpu"]) == 2
        assert "Permission denied" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)
