"""Confusion matrix and segmentation metrics against slow loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from contraseg.engine.evaluate import InferenceOptions, evaluate_confusion, evaluate_dataset
from contraseg.engine.metrics import compute_metrics, confusion_matrix, format_metrics_table


def loop_confusion(pred, label, k, ignore=255):
    conf = [[0] * k for _ in range(k)]
    for p, g in zip(pred.flatten().tolist(), label.flatten().tolist()):
        if g != ignore:
            conf[g][p] += 1
    return conf


def loop_metrics(conf, subset=None):
    """IoU / Acc straight from the definitions, NaN for 0/0, means over non-NaN."""
    k = len(conf)
    iou, acc = [], []
    for c in range(k):
        tp = conf[c][c]
        fn = sum(conf[c][j] for j in range(k)) - tp
        fp = sum(conf[i][c] for i in range(k)) - tp
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        acc.append(tp / (tp + fn) if tp + fn else math.nan)
    subset = range(k) if subset is None else subset
    kept_iou = [iou[c] for c in subset if not math.isnan(iou[c])]
    kept_acc = [acc[c] for c in subset if not math.isnan(acc[c])]
    total = sum(map(sum, conf))
    return {
        "IoU": iou, "Acc": acc, "mIoU": sum(kept_iou) / len(kept_iou), "mAcc": sum(kept_acc) / len(kept_acc),
        "aAcc": sum(conf[c][c] for c in range(k)) / total,
    }


def random_case(seed, k=5, shape=(3, 7, 9)):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, k, shape, generator=g)
    label[torch.rand(shape, generator=g) < 0.2] = 255
    pred = torch.where(torch.rand(shape, generator=g) < 0.6, label.clamp(max=k - 1), torch.randint(0, k, shape, generator=g))
    return pred, label


@pytest.mark.parametrize("seed", range(4))
def test_confusion_matrix_matches_loop(seed):
    pred, label = random_case(seed)
    conf = confusion_matrix(pred, label, 5)
    assert conf.dtype == torch.int64
    assert conf.tolist() == loop_confusion(pred, label, 5)
    assert int(conf.sum()) == int((label != 255).sum())


def test_confusion_matrix_custom_ignore_and_empty():
    label = torch.tensor([[0, 1, 7], [7, 2, 2]])
    pred = torch.tensor([[0, 2, 1], [0, 2, 1]])
    assert confusion_matrix(pred, label, 3, ignore_index=7).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    empty = confusion_matrix(pred, torch.full_like(label, 255), 3)
    assert empty.tolist() == [[0] * 3] * 3


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match=r"pred and label must have the same shape, got \(2, 3\) and \(3, 2\)"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"label contains 5, outside \[0, 3\) and not ignore_index=255"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.tensor([0, 5, 1, 255]), 3)
    with pytest.raises(ValueError, match=r"pred contains 3, outside \[0, 3\)"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


@pytest.mark.parametrize("seed", range(4))
def test_metrics_match_loop_reference(seed):
    pred, label = random_case(seed, k=6)
    pred[pred == 5] = 4  # class 5 never predicted ...
    label[label == 5] = 255  # ... and never in the ground truth: NaN, left out
    conf = confusion_matrix(pred, label, 6)
    got = compute_metrics(conf)
    ref = loop_metrics(conf.tolist())
    assert got["IoU"][5] is None and got["Acc"][5] is None
    for c in range(5):
        assert got["IoU"][c] == pytest.approx(ref["IoU"][c], abs=1e-12)
        assert got["Acc"][c] == pytest.approx(ref["Acc"][c], abs=1e-12)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12)
    assert got["pixels"] == int((label != 255).sum())


def test_predicted_but_absent_class_counts_as_zero():
    # GT has only class 0; the model predicts class 1 on some of it; class 2 nowhere.
    conf = torch.tensor([[6, 2, 0], [0, 0, 0], [0, 0, 0]])
    got = compute_metrics(conf, ["a", "b", "c"])
    assert got["IoU"] == [0.75, 0.0, None]
    assert got["mIoU"] == pytest.approx(0.375)  # (0.75 + 0) / 2: class c is absent from both
    assert got["Acc"] == [0.75, None, None] and got["mAcc"] == pytest.approx(0.75)
    assert got["aAcc"] == pytest.approx(0.75)


def test_eval_classes_subset_by_name_and_index():
    pred, label = random_case(11, k=5)
    conf = confusion_matrix(pred, label, 5)
    names = ["road", "car", "sky", "tree", "bus"]
    by_name = compute_metrics(conf, names, ["car", "tree", "bus"])
    by_index = compute_metrics(conf, names, [1, 3, 4])
    ref = loop_metrics(conf.tolist(), subset=[1, 3, 4])
    assert by_name["mIoU"] == pytest.approx(ref["mIoU"]) and by_index["mIoU"] == by_name["mIoU"]
    assert by_name["IoU"] == compute_metrics(conf, names)["IoU"]  # per-class values unchanged
    assert by_name["eval_classes"] == ["car", "tree", "bus"]
    with pytest.raises(ValueError, match=r"eval_classes: unknown class 'truck'; classes: road, car, sky, tree, bus"):
        compute_metrics(conf, names, ["truck"])
    with pytest.raises(ValueError, match=r"eval_classes: class index 9 outside \[0, 5\)"):
        compute_metrics(conf, names, [9])
    with pytest.raises(ValueError, match=r"class_names has 2 names but confusion is 5 x 5"):
        compute_metrics(conf, ["a", "b"])
    with pytest.raises(ValueError, match=r"confusion must be K x K, got shape \(2, 3\)"):
        compute_metrics(torch.zeros(2, 3))


def test_empty_confusion_gives_nan_means():
    got = compute_metrics(torch.zeros(3, 3, dtype=torch.long))
    assert math.isnan(got["mIoU"]) and math.isnan(got["aAcc"]) and got["IoU"] == [None] * 3


def test_table_lists_classes_and_marks_excluded_ones():
    conf = torch.tensor([[6, 2, 0], [1, 3, 0], [0, 0, 0]])
    metrics = compute_metrics(conf, ["road", "car", "sky"], ["road", "car"])
    table = format_metrics_table(metrics)
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU", "Acc"]
    assert any(line.split()[:2] == ["road", f"{100 * 6 / 9:.1f}"] for line in lines)
    assert any(line.startswith("sky*") and line.split()[1] == "-" for line in lines)
    assert any(line.split()[:2] == ["mean", f"{100 * metrics['mIoU']:.1f}"] for line in lines)
    compare = format_metrics_table(metrics, {"CE": metrics, "CE+ProAC": metrics})
    assert compare.splitlines()[0].split() == ["class", "CE", "CE+ProAC"]
    assert compare.splitlines()[-1].split()[0] == "mIoU"


# ------------------------------------------------------------------ evaluation loop
class TinyInfo:
    classes = ("a", "b", "c")
    palette = ((0, 0, 0), (1, 1, 1), (2, 2, 2))
    ignore_index = 255
    eval_classes = None


class TinyEvalSet(torch.utils.data.Dataset):
    """Images of varying size whose labels a colour-threshold model partly gets right."""

    info = TinyInfo()

    def __init__(self, n=5):
        self.items = []
        for i in range(n):
            g = torch.Generator().manual_seed(i)
            h, w = 6 + i, 8
            image = torch.randn(3, h, w, generator=g)
            label = torch.randint(0, 3, (h, w), generator=g)
            label[0, :2] = 255
            self.items.append({"image": image, "label": label, "name": f"s{i}"})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class ChannelModel(nn.Module):
    """logits = the first three image channels at half resolution (a fixed 'segmentor')."""

    def forward(self, images):
        return {"logits": nn.functional.avg_pool2d(images[:, :3], 2, ceil_mode=True)}


def test_evaluate_matches_per_image_loop():
    dataset = TinyEvalSet()
    model = ChannelModel()
    conf = evaluate_confusion(model, dataset, 3, InferenceOptions(), torch.device("cpu"))
    expected = np.zeros((3, 3), dtype=np.int64)
    for sample in dataset:
        logits = nn.functional.interpolate(model(sample["image"][None])["logits"], size=sample["label"].shape,
                                           mode="bilinear", align_corners=False)
        expected += np.array(loop_confusion(logits.argmax(1)[0], sample["label"], 3))
    assert conf.tolist() == expected.tolist()
    metrics = evaluate_dataset(model, dataset, InferenceOptions(), torch.device("cpu"))
    assert metrics["confusion"] == expected.tolist()
    assert metrics["mIoU"] == pytest.approx(loop_metrics(expected.tolist())["mIoU"])
    assert metrics["classes"] == ["a", "b", "c"]
