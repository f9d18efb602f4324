"""Weak labels: image-level sets, point labels per connected region, eroded coarse labels,
determinism, the ``contraseg weak-labels`` command and reading them back."""

from __future__ import annotations

import json
import re
from collections import deque

import numpy as np
import pytest
import torch

from contraseg.adapt.weak_labels import (
    coarse_labels,
    erode_mask,
    image_level_classes,
    point_labels,
    presence_from_labels,
    read_image_labels,
    sample_rng,
)
from contraseg.cli import main

TARGET = ["--dataset", "synthetic-target", "--option", "size=[32,64]", "--option", "length=4"]


def blocky_label(seed: int = 0, shape=(24, 30), classes: int = 5) -> np.ndarray:
    """Random label with blobs of several sizes (nearest-upsampled noise) and some ignore."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, size=(shape[0] // 3, shape[1] // 3))
    label = np.kron(coarse, np.ones((3, 3), dtype=np.int64))
    label[rng.random(shape) < 0.05] = rng.integers(0, classes)  # specks: regions below min size
    label[:2, :4] = 255
    return label.astype(np.uint8)


def components(mask: np.ndarray, connectivity: int) -> list[list[tuple[int, int]]]:
    """Connected components of a bool mask by breadth-first flood fill (the slow reference)."""
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    seen = np.zeros_like(mask, dtype=bool)
    found = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        queue, region = deque([start]), []
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            region.append((y, x))
            for dy, dx in steps:
                ny, nx = y + dy, x + dx
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        found.append(region)
    return found


@pytest.mark.parametrize("connectivity, min_size", [(8, 5), (4, 1), (8, 12)])
def test_point_labels_one_pixel_per_region(connectivity, min_size):
    label = blocky_label()
    points = point_labels(label, sample_rng(3, "x"), min_size=min_size, connectivity=connectivity)
    assert points.dtype == np.uint8 and points.shape == label.shape
    expected_points = small = 0
    for k in set(np.unique(label).tolist()) - {255}:
        for region in components(label == k, connectivity):
            ys, xs = zip(*region)
            inside = points[list(ys), list(xs)]
            labelled = int((inside != 255).sum())
            if len(region) >= min_size:
                assert labelled == 1 and int(inside[inside != 255][0]) == k
                expected_points += 1
            else:
                assert labelled == 0
                small += 1
    assert int((points != 255).sum()) == expected_points
    assert expected_points > 5 and (small > 0 or min_size == 1)  # both branches are exercised
    assert np.all(points[points != 255] == label[points != 255])


def test_point_labels_several_points_and_determinism():
    label = blocky_label(1)
    a = point_labels(label, sample_rng(7, "img_1"), min_size=4, points=3)
    b = point_labels(label, sample_rng(7, "img_1"), min_size=4, points=3)
    c = point_labels(label, sample_rng(8, "img_1"), min_size=4, points=3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for k in set(np.unique(label).tolist()) - {255}:
        for region in components(label == k, 8):
            if len(region) >= 4:
                ys, xs = zip(*region)
                assert int((a[list(ys), list(xs)] != 255).sum()) == min(3, len(region))


def test_image_level_classes_are_the_set_present():
    label = blocky_label(2)
    assert image_level_classes(label) == sorted(set(np.unique(label).tolist()) - {255})
    assert image_level_classes(np.full((3, 3), 255, np.uint8)) == []
    labels = torch.from_numpy(np.stack([label, np.full_like(label, 255), np.zeros_like(label)])).long()
    presence = presence_from_labels(labels, 6)
    for b in range(3):
        want = set(np.unique(labels[b].numpy()).tolist()) - {255}
        assert set(torch.nonzero(presence[b]).flatten().tolist()) == want


def test_erosion_matches_a_window_loop():
    label = blocky_label(4)
    for radius in (1, 2):
        mask = label == 2
        eroded = erode_mask(mask, radius)
        h, w = mask.shape
        for y in range(h):
            for x in range(w):
                window = mask[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1]
                assert eroded[y, x] == window.all(), (radius, y, x)
    assert np.array_equal(erode_mask(label == 1, 0), label == 1)


def test_coarse_labels_are_an_eroded_subset_without_thin_classes():
    label = blocky_label(5)
    coarse = coarse_labels(label, radius=1, drop=[3])
    labelled = coarse != 255
    assert np.all(coarse[labelled] == label[labelled])  # never a wrong label
    assert not np.any(coarse == 3) and np.any(label == 3)  # the thin class is dropped
    h, w = label.shape
    for y in range(h):
        for x in range(w):  # a pixel next to another class (or ignore) is never labelled
            window = label[max(0, y - 1):y + 2, max(0, x - 1):x + 2]
            if np.any(window != label[y, x]):
                assert coarse[y, x] == 255
            elif label[y, x] not in (3, 255):
                assert coarse[y, x] == label[y, x]
    assert labelled.sum() < (label != 255).sum()


def read_png(path):
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img).copy()


def test_command_point_is_deterministic_and_reads_back(tmp_path, capsys):
    from contraseg.data import build_dataset

    for out, seed in ((tmp_path / "a", 0), (tmp_path / "b", 0), (tmp_path / "c", 1)):
        assert main(["weak-labels", "--kind", "point", *TARGET, "--out", str(out), "--seed", str(seed)]) == 0
    names = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert len(names) == 4
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in names)
    dataset = build_dataset("synthetic-target", split="train", size=[32, 64], length=4, pseudo_label_dir=tmp_path / "a")
    sample = dataset[0]
    points = sample["label"]
    assert 0 < int((points != 255).sum()) < 40
    assert torch.equal(points[points != 255], sample["gt_label"][points != 255])
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    total = sum(int((read_png(tmp_path / "a" / n) != 255).sum()) for n in names)
    assert summary["kind"] == "point" and sum(v for k, v in summary["labelled"].items() if k != "unit") == total
    assert "labelled pixels per class" in capsys.readouterr().out


def test_command_image_and_coarse(tmp_path):
    from contraseg.data import build_dataset

    assert main(["weak-labels", "--kind", "image", *TARGET, "--out", str(tmp_path / "img")]) == 0
    assert main(["weak-labels", "--kind", "coarse", *TARGET, "--out", str(tmp_path / "co"), "--radius", "1"]) == 0
    full = build_dataset("synthetic-target", split="train", size=[32, 64], length=4)
    image_labels = read_image_labels(tmp_path / "img")
    assert image_labels == read_image_labels(tmp_path / "img" / "image_labels.json")
    thin = [full.info.classes.index(n) for n in ("pole", "traffic light", "traffic sign")]
    for i in range(4):
        name, label = full.sample_name(i), full.load_ground_truth(i)
        assert image_labels[name] == sorted(set(np.unique(label).tolist()) - {255})
        coarse = read_png(tmp_path / "co" / f"{name}.png")
        assert np.array_equal(coarse, coarse_labels(label, radius=1, drop=thin))
        assert not np.isin(coarse, thin).any()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.parametrize("extra, message", [
    (["--kind", "coarse", "--drop", "pole,lamp post"], r"unknown class 'lamp post'; classes are: road, "),
    (["--kind", "point", "--as-is"], r"as_is writes the dataset's own coarse labels; it needs kind coarse"),
    (["--kind", "point", "--min-size", "0"], r"--min-size must be >= 1, got 0"),
    (["--kind", "image", "--seed", "-1"], r"--seed must be >= 0, got -1"),
    (["--kind", "point", "--option", "lenght=4"], r"dataset synthetic-target/train: .*unexpected keyword argument 'lenght'"),
])
def test_command_errors_exit_2_with_one_line(tmp_path, capsys, extra, message):
    argv = ["weak-labels", "--dataset", "synthetic-target", "--option", "size=[32,64]", "--option", "length=2",
            "--out", str(tmp_path / "w"), *extra]
    assert main(argv) == 2
    assert re.search(message, one_line_error(capsys))


def test_read_image_labels_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image-level labels not found: .*image_labels.json"):
        read_image_labels(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": [1, "x"]}')
    with pytest.raises(ValueError, match="bad.json: expected a mapping of sample name -> list of class ids"):
        read_image_labels(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json: not a readable JSON file"):
        read_image_labels(bad)
