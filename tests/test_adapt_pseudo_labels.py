"""``contraseg pseudo-label``: files, global and class-wise thresholds against numpy, summary,
reading back through ``build_dataset(pseudo_label_dir=...)``, user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from contraseg.adapt.pseudo_labels import (
    CONFIDENCE_LEVELS,
    ConfidenceHistogram,
    class_threshold_levels,
    filter_predictions,
    quantise_confidence,
    threshold_level,
)
from contraseg.cli import main

from helpers import tiny_config

TARGET = ["--dataset", "synthetic-target", "--option", "size=[32,64]", "--option", "length=5"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from contraseg.engine.config import config_from_dict
    from contraseg.engine.trainer import Trainer

    run = tmp_path_factory.mktemp("source")
    raw = tiny_config(schedule={"max_iters": 1}, train={"eval_interval": 1, "checkpoint_interval": 1})
    Trainer(config_from_dict(raw), run, progress=False).fit()
    return run / "last.pth"


@pytest.fixture(scope="module")
def reference(checkpoint):
    """``reference(batch_size)``: per image (name, prediction, confidence level) computed directly
    with the model the way the command computes them: consecutive images in batches of
    ``batch_size`` and float32 probabilities rounded to levels in float32. (A float64 reference
    one image at a time differs by one level on some CPUs, which moves a percentile threshold.)"""
    from contraseg.data import build_dataset
    from contraseg.engine.inference import predict_logits
    from contraseg.engine.restore import restore_model

    model = restore_model(checkpoint).model
    dataset = build_dataset("synthetic-target", split="train", size=[32, 64], length=5)
    cache = {}

    def compute(batch_size):
        if batch_size not in cache:
            out = []
            for start in range(0, len(dataset), batch_size):
                samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                with torch.no_grad():
                    probs = predict_logits(model, torch.stack([s["image"] for s in samples])).float()
                confidence, prediction = probs.max(dim=1)
                levels = torch.round(confidence.clamp(0.0, 1.0) * CONFIDENCE_LEVELS).long()
                out += [(s["name"], prediction[j].numpy(), levels[j].numpy()) for j, s in enumerate(samples)]
            cache[batch_size] = out
        return cache[batch_size]

    return compute


def read_png(path):
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img).copy()


def test_global_threshold_files_and_summary(checkpoint, reference, tmp_path, capsys):
    out = tmp_path / "pl"
    assert main(["pseudo-label", str(checkpoint), *TARGET, "--out", str(out), "--threshold", "0.3",
                 "--num-workers", "0", "--batch-size", "1"]) == 0
    reference = reference(1)
    level = int(np.ceil(0.3 * CONFIDENCE_LEVELS))
    summary = json.loads((out / "summary.json").read_text())
    predicted = np.zeros(19, dtype=np.int64)
    kept = np.zeros(19, dtype=np.int64)
    assert sorted(p.name for p in out.glob("*.png")) == [f"{name}.png" for name, _, _ in reference]
    for name, prediction, levels in reference:
        expected = np.where(levels >= level, prediction, 255)
        written = read_png(out / f"{name}.png")
        assert written.dtype == np.uint8 and written.shape == (32, 64)
        assert np.array_equal(written, expected)
        predicted += np.bincount(prediction.ravel(), minlength=19)
        kept += np.bincount(expected[expected != 255], minlength=19)
    assert [c["predicted_pixels"] for c in summary["classes"]] == predicted.tolist()
    assert [c["kept_pixels"] for c in summary["classes"]] == kept.tolist()
    assert summary["kept_pixels"] == kept.sum() and summary["predicted_pixels"] == 5 * 32 * 64
    assert all(c["threshold"] == pytest.approx(level / CONFIDENCE_LEVELS) for c in summary["classes"])
    printed = capsys.readouterr().out
    assert "kept %" in printed and '"images": 5' in printed


@pytest.mark.parametrize("percentile", [0.5, 0.25])
def test_class_percentile_thresholds_match_numpy(checkpoint, reference, tmp_path, percentile):
    out = tmp_path / "pl"
    cap = 0.6
    assert main(["pseudo-label", str(checkpoint), *TARGET, "--out", str(out), "--threshold", str(cap),
                 "--class-percentile", str(percentile), "--num-workers", "0", "--batch-size", "2"]) == 0
    reference = reference(2)
    predictions = np.stack([p for _, p, _ in reference])
    levels = np.stack([q for _, _, q in reference])
    cap_level = int(np.ceil(cap * CONFIDENCE_LEVELS))
    thresholds = np.full(19, cap_level)
    for k in range(19):
        values = levels[predictions == k]
        if values.size:
            thresholds[k] = min(int(np.quantile(values, percentile, method="lower")), cap_level)
    summary = json.loads((out / "summary.json").read_text())
    assert [round(c["threshold"] * CONFIDENCE_LEVELS) for c in summary["classes"]] == thresholds.tolist()
    assert len(set(thresholds[np.unique(predictions)].tolist())) > 1  # genuinely class-wise
    for name, prediction, level in reference:
        expected = np.where(level >= thresholds[prediction], prediction, 255)
        assert np.array_equal(read_png(out / f"{name}.png"), expected)
    # at least the most confident (1 - p) of every predicted class survives
    for k in np.unique(predictions):
        assert summary["classes"][k]["kept_pixels"] >= (1 - percentile) * summary["classes"][k]["predicted_pixels"]


def test_pseudo_labels_read_back_through_build_dataset(checkpoint, tmp_path):
    from contraseg.data import build_dataset

    out = tmp_path / "pl"
    assert main(["pseudo-label", str(checkpoint), *TARGET, "--out", str(out), "--threshold", "0.2",
                 "--num-workers", "0"]) == 0
    dataset = build_dataset("synthetic-target", split="train", size=[32, 64], length=5, pseudo_label_dir=out)
    sample = dataset[3]
    assert torch.equal(sample["label"], torch.from_numpy(read_png(out / f"{sample['name']}.png")).long())
    assert "gt_label" in sample and not torch.equal(sample["label"], sample["gt_label"])


def test_histogram_quantiles_match_numpy():
    generator = torch.Generator().manual_seed(3)
    predictions = torch.randint(0, 4, (3, 7, 9), generator=generator)
    predictions[predictions == 2] = 1  # class 2 never predicted
    levels = torch.randint(0, CONFIDENCE_LEVELS + 1, (3, 7, 9), generator=generator)
    histogram = ConfidenceHistogram(4)
    histogram.add(predictions[:2], levels[:2])
    histogram.add(predictions[2:], levels[2:])  # streaming: two batches
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        got = histogram.quantile_levels(p)
        for k in range(4):
            values = levels[predictions == k].numpy()
            want = int(np.quantile(values, p, method="lower")) if values.size else -1
            assert int(got[k]) == want, (p, k)
    capped = class_threshold_levels(histogram, 0.5, 0.5, 4)
    assert int(capped[2]) == threshold_level(0.5)  # never predicted: the global threshold
    assert (capped <= threshold_level(0.5)).all()
    labels = filter_predictions(predictions, levels, capped)
    assert torch.equal(labels == 255, levels < capped[predictions])


def test_quantisation_and_threshold_levels():
    assert quantise_confidence(torch.tensor([0.0, 0.5, 1.0, 1.2])).tolist() == [0, 32768, 65535, 65535]
    assert threshold_level(0.0) == 0 and threshold_level(1.0) == CONFIDENCE_LEVELS
    assert threshold_level(0.9) == 58982  # 0.9 * 65535 = 58981.5
    with pytest.raises(ValueError, match="threshold must be in \\[0, 1\\], got 1.5"):
        threshold_level(1.5)
    with pytest.raises(ValueError, match="class percentile must be in \\[0, 1\\], got -0.1"):
        ConfidenceHistogram(2).quantile_levels(-0.1)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.parametrize("extra, message", [
    (["--threshold", "1.5"], r"contraseg pseudo-label: error: --threshold must be in \[0, 1\], got 1.5"),
    (["--class-percentile", "-0.2"], r"--class-percentile must be in \[0, 1\], got -0.2"),
    (["--option", "size"], r"bad --option 'size': expected KEY=VALUE"),
    (["--option", "size=[2,2]"], r"dataset synthetic-target/train: size must be two integers >= 8"),
    (["--split", "test"], r"dataset synthetic-target/test: synthetic-target: split must be one of"),
    (["--batch-size", "0"], r"--batch-size must be >= 1, got 0"),
])
def test_bad_arguments_exit_2_with_one_line(checkpoint, tmp_path, capsys, extra, message):
    import re

    argv = ["pseudo-label", str(checkpoint), *TARGET, "--out", str(tmp_path / "pl"), *extra]
    assert main(argv) == 2
    assert re.search(message, one_line_error(capsys))


def test_bad_checkpoint_and_class_count_exit_2(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    assert main(["pseudo-label", str(bad), *TARGET, "--out", str(tmp_path / "pl")]) == 2
    assert "bad.pth: not a readable checkpoint" in one_line_error(capsys)
    assert main(["pseudo-label", str(checkpoint), "--dataset", "ade20k", "--root", str(tmp_path),
                 "--out", str(tmp_path / "pl")]) == 2
    assert one_line_error(capsys).startswith("contraseg pseudo-label: error: dataset ade20k/train: ")
