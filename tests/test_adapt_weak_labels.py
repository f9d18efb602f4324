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


# ------------------------------------------------------------------ weak labels on the embedding grid


def _downsample_loop(labels: torch.Tensor, size, ignore=255) -> torch.Tensor:
    """Per cell: the majority class of its labelled pixels (ties: smallest id), cells = floor(y * h / H)."""
    b, big_h, big_w = labels.shape
    h, w = size
    out = torch.full((b, h, w), ignore, dtype=torch.long)
    for i in range(b):
        votes: dict[tuple[int, int], dict[int, int]] = {}
        for y in range(big_h):
            for x in range(big_w):
                value = int(labels[i, y, x])
                if value == ignore:
                    continue
                cell = votes.setdefault((y * h // big_h, x * w // big_w), {})
                cell[value] = cell.get(value, 0) + 1
        for (cy, cx), cell in votes.items():
            best = max(cell.values())
            out[i, cy, cx] = min(c for c, n in cell.items() if n == best)
    return out


@pytest.mark.parametrize("size", [(3, 4), (5, 7), (24, 30), (6, 1)])
def test_downsample_labels_keeps_every_labelled_cell_by_majority(size):
    from contraseg.adapt.weak_labels import downsample_labels

    rng = np.random.default_rng(3)
    labels = torch.from_numpy(rng.integers(0, 4, (2, 24, 30)))
    labels[torch.from_numpy(rng.random((2, 24, 30)) < 0.8)] = 255
    labels[1, :12] = 255
    out = downsample_labels(labels, size)
    assert torch.equal(out, _downsample_loop(labels, size))
    # A cell is labelled exactly when one of its pixels is.
    rows = torch.arange(24) * size[0] // 24
    cols = torch.arange(30) * size[1] // 30
    covered = torch.zeros(2, *size, dtype=torch.bool)
    for i, y, x in (labels != 255).nonzero().tolist():
        covered[i, rows[y], cols[x]] = True
    assert torch.equal(out != 255, covered)


def test_downsample_labels_point_labels_survive_where_nearest_loses_them():
    from contraseg._labels import resize_labels
    from contraseg.adapt.weak_labels import downsample_labels

    points = torch.full((1, 64, 128), 255)
    points[0, 5, 9], points[0, 30, 77], points[0, 63, 127] = 1, 2, 3
    grid = downsample_labels(points, (8, 16))
    assert sorted(grid[grid != 255].tolist()) == [1, 2, 3]
    assert grid[0, 0, 1] == 1 and grid[0, 3, 9] == 2 and grid[0, 7, 15] == 3
    assert (resize_labels(points, (8, 16)) != 255).sum() == 0  # nearest keeps none of them
    # Ties: two pixels each of classes 4 and 2 in one cell -> 2; majority otherwise.
    tie = torch.full((1, 4, 4), 255)
    tie[0, 0, 0], tie[0, 0, 1], tie[0, 1, 0], tie[0, 1, 1] = 4, 4, 2, 2
    tie[0, 2, 2], tie[0, 2, 3], tie[0, 3, 3] = 1, 0, 1
    assert downsample_labels(tie, (2, 2)).tolist() == [[[2, 255], [255, 1]]]
    # Enlarged axes fall back to nearest; all-ignored stays ignored.
    assert torch.equal(downsample_labels(tie, (8, 8)), resize_labels(tie, (8, 8)))
    assert (downsample_labels(torch.full((2, 9, 9), 255), (3, 3)) == 255).all()
    with pytest.raises(ValueError, match="labels must be an integer B x H x W tensor"):
        downsample_labels(torch.zeros(4, 4), (2, 2))


def test_crop_presence_masks_what_the_crop_cannot_tell():
    from contraseg.adapt.weak_labels import crop_presence

    weak = torch.full((2, 4, 4), 255)
    weak[0, 0, 0], weak[1, 2, 2] = 1, 3
    image_classes = torch.tensor([[False, True, True, False], [True, False, False, True]])
    presence, known = crop_presence(weak, image_classes)
    assert presence.tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]
    # Known: labelled in the crop, or absent from the whole image; class 2 of image 0 and
    # class 0 of image 1 are in the image but unlabelled in the crop: unknown.
    assert known.tolist() == [[True, True, False, True], [False, True, True, True]]


def test_image_level_loss_mask_leaves_unknown_classes_out():
    from contraseg.losses import ImageLevelLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    presence = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False, True], [False, True, True, True]])
    each = ImageLevelLoss("none")(logits, presence)
    value = ImageLevelLoss()(logits, presence, mask)
    assert torch.allclose(value, each[mask].mean())
    assert torch.allclose(ImageLevelLoss("sum")(logits, presence, mask), each[mask].sum())
    assert torch.equal(ImageLevelLoss("none")(logits, presence, mask) == 0, ~mask)
    nothing = ImageLevelLoss()(logits, presence, torch.zeros(2, 4, dtype=torch.bool))
    nothing.backward()
    assert nothing.item() == 0 and logits.grad is not None
    with pytest.raises(ValueError, match=r"mask must be a bool B x K = \(2, 4\) tensor"):
        ImageLevelLoss()(logits, presence, mask.float())


def test_target_dataset_full_image_and_image_classes(tmp_path):
    from contraseg.adapt.target_data import TargetDataset
    from contraseg.adapt.weak_labels import make_weak_labels
    from contraseg.data import TrainTransform, build_dataset
    from contraseg.data.transforms import normalize

    plain = build_dataset("synthetic-target", split="train", size=[32, 64], length=2)
    make_weak_labels(plain, "coarse", tmp_path / "coarse", radius=1)
    make_weak_labels(plain, "image", tmp_path / "image")
    transform = TrainTransform(crop_size=(16, 24), scale_range=(1.0, 1.0), seed=0)
    dense = build_dataset("synthetic-target", split="train", size=[32, 64], length=2, transform=transform,
                          pseudo_label_dir=tmp_path / "coarse")
    sample = TargetDataset(dense, "dense", image_classes=True)[1]
    full_classes = np.unique(np.asarray(dense.pseudo_labels.load(dense.sample_name(1))))
    assert sorted(torch.nonzero(sample["image_classes"]).flatten().tolist()) == [c for c in full_classes if c != 255]
    images = build_dataset("synthetic-target", split="train", size=[32, 64], length=2, transform=transform)
    labels = read_image_labels(tmp_path / "image")
    sample = TargetDataset(images, "image", labels, full_image=True)[0]
    assert sample["full_image"].shape == sample["image"].shape == (3, 16, 24)
    raw = torch.from_numpy(np.ascontiguousarray(images.load_image(0))).permute(2, 0, 1)[None].float()
    expected = normalize(torch.nn.functional.interpolate(raw, size=(16, 24), mode="bilinear",
                                                         align_corners=False)[0].clamp(0, 255))
    assert torch.allclose(sample["full_image"], expected)
    with pytest.raises(ValueError, match="image_classes needs kind 'dense'"):
        TargetDataset(images, "image", labels, image_classes=True)
