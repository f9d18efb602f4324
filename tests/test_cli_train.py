"""The train / eval / predict / prototypes / demo commands and the train-step benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from contraseg.cli import main
from contraseg.data.palettes import CITYSCAPES_CLASSES

from helpers import tiny_config, write_yaml

TINY = tiny_config(train_scenes=6, regulariser={"name": "proac"})


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the eval and predict tests: (run dir, checkpoint)."""
    root = tmp_path_factory.mktemp("trained")
    config = write_yaml(root / "tiny.yaml", TINY)
    assert main(["train", str(config), "--run-dir", str(root / "run"), "--device", "cpu"]) == 0
    return root / "run", root / "run" / "last.pth"


# ------------------------------------------------------------------ train
def test_train_writes_a_run(trained, capsys):
    run_dir, checkpoint = trained
    assert checkpoint.is_file() and (run_dir / "best.pth").is_file()
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["regulariser"]["name"] == "proac" and stored["schedule"]["max_iters"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "optim.lrr=1"], r"contraseg train: error: unknown config key optim.lrr; allowed keys in optim: "),
        (["--set", "optim.name=adam"], r"config key optim.name: 'adam' is not allowed; allowed values: sgd, adamw"),
        (["--set", "optim.lr"], r"bad override 'optim.lr': expected key.sub=value"),
        (["--resume", "nowhere.pth"], r"contraseg train: error: --resume: checkpoint not found: nowhere.pth"),
        (["--set", "data.train.options.size=[2, 2]"], r"contraseg train: error: size must be two integers >= 8"),
    ],
)
def test_train_user_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    config = write_yaml(tmp_path / "tiny.yaml", TINY)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run"), "--device", "cpu", *args]) == 2
    assert __import__("re").search(message, error_line(capsys))


def test_train_missing_config(tmp_path, capsys):
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "contraseg train: error: config file not found: " in error_line(capsys)


def test_corrupt_resume_checkpoint_names_the_file(tmp_path, capsys):
    config = write_yaml(tmp_path / "tiny.yaml", TINY)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pth").write_bytes(b"\x00garbage")
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run"), "--resume", "auto", "--device", "cpu"]) == 2
    assert f"{tmp_path / 'run' / 'last.pth'}: not a readable checkpoint" in error_line(capsys)


# ------------------------------------------------------------------ eval
def test_eval_prints_table_and_writes_json(trained, tmp_path, capsys):
    _, checkpoint = trained
    out = tmp_path / "m.json"
    assert main(["eval", str(checkpoint), "--out", str(out), "--device", "cpu", "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "synthetic-target/val: mIoU" in printed and "traffic light" in printed
    result = json.loads(out.read_text())
    metrics = result["results"]["synthetic-target/val"]
    assert result["iteration"] == 2 and len(metrics["IoU"]) == 19
    assert metrics["pixels"] == 2 * 32 * 64 and sum(map(sum, metrics["confusion"])) == metrics["pixels"]
    final = json.loads((checkpoint.parent / "eval" / "iter_00000002.json").read_text())["results"]
    assert final["synthetic-target/val"]["confusion"] == metrics["confusion"]  # same model, same numbers
    slide = tmp_path / "s.json"
    assert main(["eval", str(checkpoint), "--out", str(slide), "--device", "cpu", "--num-workers", "0",
                 "--mode", "slide", "--crop-size", "16", "32", "--stride", "8", "16", "--scales", "1.0", "0.5",
                 "--flip"]) == 0
    assert json.loads(slide.read_text())["results"]["synthetic-target/val"]["pixels"] == 2 * 32 * 64


def test_eval_user_errors(trained, tmp_path, capsys):
    _, checkpoint = trained
    assert main(["eval", str(checkpoint), "--dataset", "kitti", "--device", "cpu"]) == 2
    assert "contraseg eval: error: dataset kitti/val: unknown dataset 'kitti'; known datasets: " in error_line(capsys)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    assert main(["eval", str(bad), "--device", "cpu"]) == 2
    assert f"contraseg eval: error: {bad}: not a readable checkpoint" in error_line(capsys)
    assert main(["eval", str(tmp_path / "none.pth"), "--device", "cpu"]) == 2
    assert "checkpoint not found" in error_line(capsys)


# ------------------------------------------------------------------ predict
def test_predict_writes_palette_predictions_and_overlays(trained, tmp_path, capsys):
    from contraseg.engine.prediction_images import overlay
    from contraseg.engine.restore import restore_model

    _, checkpoint = trained
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "folder").mkdir()
    Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(tmp_path / "folder" / "b.jpg")
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(tmp_path / "a.png"), str(tmp_path / "folder"), "--out", str(out),
                 "--device", "cpu"]) == 0
    palette = restore_model(checkpoint).palette
    for stem, size in (("a", (40, 60)), ("b", (24, 30))):
        pred = np.asarray(Image.open(out / f"{stem}_pred.png"))
        blended = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        assert pred.shape == blended.shape == (*size, 3)
        colours = {tuple(c) for c in pred.reshape(-1, 3).tolist()}
        assert colours <= {tuple(c) for c in palette}
        source = np.asarray(Image.open(tmp_path / ("a.png" if stem == "a" else "folder/b.jpg")).convert("RGB"))
        assert np.array_equal(blended, overlay(source, pred, 0.5))
    assert "a_pred.png" in capsys.readouterr().out


def test_overlay_formula_and_predict_errors(trained, tmp_path, capsys):
    from contraseg.engine.prediction_images import overlay

    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    colours = np.full((2, 2, 3), 201, dtype=np.uint8)
    assert overlay(image, colours, 0.25).tolist() == [[[125] * 3] * 2] * 2  # 0.75 * 100 + 0.25 * 201 = 125.25
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 2"):
        overlay(image, colours, 2)
    _, checkpoint = trained
    assert main(["predict", str(checkpoint), str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 2
    assert f"contraseg predict: error: image not found: {tmp_path / 'missing.png'}" in error_line(capsys)


# ------------------------------------------------------------------ prototypes
def test_prototypes_make_and_inspect(tmp_path, capsys):
    from contraseg.prototypes import load_prototypes

    path = tmp_path / "p.pt"
    assert main(["prototypes", "make", "--classes", "19", "--dim", "256", "--out", str(path)]) == 0
    made = capsys.readouterr().out
    assert "max pairwise cosine:  -0.055556" in made
    assert "optimum max cosine: -0.055556 (regular simplex, -1/(K-1))" in made
    assert load_prototypes(path).shape == (19, 256)
    assert main(["prototypes", "inspect", str(path)]) == 0
    inspected = capsys.readouterr().out
    assert "prototypes: K=19 classes x D=256 dims" in inspected and "max pairwise cosine:  -0.055556" in inspected
    assert main(["prototypes", "make", "--classes", "6", "--dim", "4", "--out", str(tmp_path / "q.pt")]) == 0
    assert "optimum max cosine: +0.000000 (cross-polytope bound, K <= 2D)" in capsys.readouterr().out
    assert main(["prototypes", "make", "--classes", "0", "--dim", "4", "--out", str(tmp_path / "r.pt")]) == 2
    assert "contraseg prototypes: error: --classes must be >= 1, got 0" in error_line(capsys)
    assert main(["prototypes", "inspect", str(tmp_path / "none.pt")]) == 2
    assert "prototype file not found" in error_line(capsys)


# ------------------------------------------------------------------ demo and benchmark
@pytest.mark.slow
def test_demo_end_to_end_on_a_few_iterations(tmp_path, capsys, monkeypatch):
    from contraseg.commands import demo

    original = demo.demo_config

    def smaller(regulariser, iters, seed=0):  # fewer validation images keep the test short
        from contraseg.engine.config import config_from_dict, config_to_dict

        raw = config_to_dict(original(regulariser, iters, seed))
        raw["data"]["train"]["options"]["length"] = 16
        for val in raw["data"]["val"]:
            val["options"]["length"] = 4
        return config_from_dict(raw)

    monkeypatch.setattr(demo, "demo_config", smaller)
    monkeypatch.setattr(demo, "VAL_SCENES", 4)
    (tmp_path / "ce").mkdir()
    (tmp_path / "ce" / "last.pth").write_text("an earlier demo's checkpoint")  # replaced, not refused
    (tmp_path / "notes.txt").write_text("kept")
    assert main(["demo", "--iters", "2", "--out", str(tmp_path), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    top = next(i for i, line in enumerate(lines) if line.split() == ["synthetic-source/val", "synthetic-target/val"])
    assert lines[top + 1].split() == ["IoU", "%", "CE", "CE+ProAC", "delta", "CE", "CE+ProAC", "delta"]
    miou = next(line for line in lines if line.startswith("mIoU"))
    assert len(miou.split()) == 7
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) >= {"total_seconds", "runs"} and set(summary["runs"]) == {"ce", "proac"}
    for run in summary["runs"].values():
        assert set(run) == {"synthetic-source/val", "synthetic-target/val"}
        for result in run.values():
            assert 0.0 <= result["miou"] <= 100.0
            assert list(result["per_class_iou"]) == list(CITYSCAPES_CLASSES)
    assert sorted(p.name for p in (tmp_path / "overlays").glob("compare_*.png")) == [
        f"compare_synthetic-target_val_00000{i}.png" for i in range(4)]
    compare = np.asarray(Image.open(tmp_path / "overlays" / "compare_synthetic-target_val_000000.png"))
    assert compare.shape == (2 * 64, 2 * 4 * 128, 3)  # input | ground truth | CE | CE+ProAC, zoomed x2
    assert (tmp_path / "ce" / "last.pth").stat().st_size > 1000 and (tmp_path / "proac" / "last.pth").is_file()
    assert (tmp_path / "embed_ce_vs_proac.png").is_file() and (tmp_path / "notes.txt").read_text() == "kept"


def test_demo_training_is_repeatable_in_one_process(tmp_path):
    """The demo's config trained twice from the same seed gives bit-identical weights
    (the in-memory scene cache is warm the second time, so this also checks that caching
    does not change what is trained on)."""
    from contraseg.commands.demo import demo_config
    from contraseg.engine.config import config_from_dict, config_to_dict
    from contraseg.engine.trainer import Trainer

    raw = config_to_dict(demo_config("proac", iters=3))
    raw["data"]["train"]["options"]["length"] = 12
    raw["data"]["val"] = raw["data"]["val"][:1]
    raw["data"]["val"][0]["options"]["length"] = 2
    weights = []
    for run in ("a", "b"):
        trainer = Trainer(config_from_dict(raw), tmp_path / run)
        trainer.fit()
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_demo_table_marks_differences():
    from contraseg.commands.demo import comparison_table

    def metrics(iou, miou):
        return {"classes": ["road", "car", "bus"], "IoU": iou, "mIoU": miou}

    results = {"CE": {"s": metrics([0.9, 0.8, None], 0.85), "t": metrics([0.5, 0.25, None], 0.375)},
               "CE+ProAC": {"s": metrics([0.9, 0.7, None], 0.8), "t": metrics([0.6, 0.2, None], 0.4)}}
    lines = comparison_table(results, ["s", "t"]).splitlines()
    assert lines[0].split() == ["s", "t"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:] if not line.startswith("-")}
    assert rows["road"] == ["90.0", "90.0", "+0.0", "50.0", "60.0", "+10.0"]
    assert rows["car"] == ["80.0", "70.0", "-10.0", "25.0", "20.0", "-5.0"]
    assert "bus" not in rows  # absent from both runs and datasets: not listed
    assert rows["mIoU"] == ["85.0", "80.0", "-5.0", "37.5", "40.0", "+2.5"]


def test_demo_summary_has_the_documented_shape():
    from contraseg.commands.demo import summary_record

    def metrics(iou, miou):
        return {"classes": ["road", "car"], "IoU": iou, "mIoU": miou}

    results = {"CE": {"s": metrics([0.9, None], 0.9)}, "CE+ProAC": {"s": metrics([0.5, float("nan")], 0.5)}}
    record = summary_record(results, {"ce": 1.25, "proac": 2.0}, 7, 3.5)
    assert record["total_seconds"] == 3.5 and record["unit"] == "%"
    assert record["runs"] == {"ce": {"s": {"miou": 90.0, "per_class_iou": {"road": 90.0, "car": None}}},
                              "proac": {"s": {"miou": 50.0, "per_class_iou": {"road": 50.0, "car": None}}}}


def test_train_step_benchmark_prints_a_table(capsys):
    from contraseg.bench.train_step import format_table, main as bench_main

    threads = torch.get_num_threads()
    try:
        assert bench_main(["--size", "32", "64", "--batch", "1", "--embed-dim", "8", "--memory-size", "4",
                           "--repeats", "1", "--warmup", "0", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "none (CE only)", "proac", "pixel_contrast", "pixel_contrast_memory", "protoseg"]
    assert rows[1].split("|")[3].strip() == "1.00x"
    assert format_table({"none": 0.2, "proac": 0.3}).splitlines()[-1] == "| proac | 300.0 | 1.50x |"
