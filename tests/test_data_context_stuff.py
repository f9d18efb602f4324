"""PASCAL-Context (59) and COCO-Stuff (171) on tiny trees written in the real on-disk layouts,
and the import direction inside ``contraseg.data``."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contraseg.data import build_dataset, dataset_names
from contraseg.data.check import check_dataset
from contraseg.data.palettes import COCO_STUFF_171_CLASSES, PASCAL_CONTEXT_59_CLASSES
from test_datasets_cli import _histogram_rows, _one_line_error, _run

H, W = 12, 20
DATA = Path(__file__).resolve().parents[1] / "src" / "contraseg" / "data"


def _image(rng):
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


# -- slow references, written from the datasets' definitions ------------------------------


def context_reference(raw: int) -> int:
    """59-class PASCAL-Context: 0 background -> ignore, 1..59 -> 0..58, anything else ignore."""
    if 1 <= raw <= 59:
        return raw - 1
    return 255


# COCO category ids (1-based) that COCO-Stuff never uses.
UNUSED_COCO_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}


def coco_raw_reference(raw: int) -> int:
    """stuffthingmaps value (COCO id - 1) -> train id = rank among the used ids; else ignore."""
    coco_id = raw + 1
    if raw == 255 or coco_id in UNUSED_COCO_IDS or not 1 <= coco_id <= 182:
        return 255
    return sum(1 for c in range(1, coco_id) if c not in UNUSED_COCO_IDS)


def slow_histogram(raws, reference, k):
    hist = np.zeros(k, np.int64)
    ignored = 0
    for raw in raws:
        for value in raw.ravel():
            train = reference(int(value))
            if train == 255:
                ignored += 1
            else:
                hist[train] += 1
    return hist, ignored


# -- writers: the real layouts ------------------------------------------------------------------


def write_context_voc2010(root: Path, seed=0, extra_value=None):
    """VOC2010 tree: JPEGImages (train, val and images of no split), SegmentationClassContext,
    ImageSets/SegmentationContext/{train,val}.txt. Returns {split: {name: (image, raw label)}}."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassContext").mkdir()
    (root / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    splits = {"train": ["2008_000002", "2008_000007", "2010_001234"], "val": ["2008_000019"], None: ["2007_000032"]}
    out = {}
    for split, names in splits.items():
        for name in names:
            image = _image(rng)
            label = rng.integers(0, 60, (H, W)).astype(np.uint8)
            label[0, :3] = (0, 1, 59)
            if extra_value is not None and split == "train" and name == names[0]:
                label[1, 1] = extra_value
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            Image.fromarray(label).save(root / "SegmentationClassContext" / f"{name}.png")
            if split is not None:
                out.setdefault(split, {})[name] = (image, label)
        if split is not None:
            (root / "ImageSets" / "SegmentationContext" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return out


def write_context_openseg(root: Path, written):
    """The same samples in openseg's {split}/image, {split}/label layout."""
    for split, samples in written.items():
        (root / split / "image").mkdir(parents=True)
        (root / split / "label").mkdir(parents=True)
        for name, (image, label) in samples.items():
            Image.fromarray(image).save(root / split / "image" / f"{name}.jpg", quality=95)
            Image.fromarray(label).save(root / split / "label" / f"{name}.png")


def write_coco_stuff(root: Path, split="val2017", count=3, seed=0, formats=("raw",), unused=False):
    """images/{split}/*.jpg + annotations/{split}/*.png (raw, 0-based COCO ids, 255 unlabeled)
    and/or *_labelTrainIds.png (as mmsegmentation's converter writes them)."""
    rng = np.random.default_rng(seed)
    used = [r for r in range(182) if r + 1 not in UNUSED_COCO_IDS] + [255]
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations" / split).mkdir(parents=True)
    out = {}
    for i in range(count):
        name = f"{9 + i:012d}"
        image = _image(rng)
        raw = rng.choice(used, size=(H, W)).astype(np.uint8)
        raw[0, :6] = (0, 10, 12, 91, 181, 255)
        if unused and i == 0:
            raw[1, :2] = (11, 90)
        Image.fromarray(image).save(root / "images" / split / f"{name}.jpg", quality=95)
        if "raw" in formats:
            Image.fromarray(raw).save(root / "annotations" / split / f"{name}.png")
        if "trainids" in formats:
            train = np.vectorize(coco_raw_reference)(raw).astype(np.uint8)
            Image.fromarray(train).save(root / "annotations" / split / f"{name}_labelTrainIds.png")
        out[name] = (image, raw)
    return out


# -- the import knot --------------------------------------------------------------------------


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_base_and_pseudo_labels_no_longer_import_each_other():
    assert not any(m in (".base", "contraseg.data.base") for m in _imported_modules(DATA / "pseudo_labels.py"))
    assert not any(m.startswith(".") or m.startswith("contraseg.data") for m in _imported_modules(DATA / "files.py"))
    assert ".pseudo_labels" in _imported_modules(DATA / "base.py")
    # Importing pseudo_labels afresh must not import base (the originals are restored after).
    names = ("contraseg.data.base", "contraseg.data.pseudo_labels", "contraseg.data.files")
    package = importlib.import_module("contraseg.data")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    attributes = {name: getattr(package, name.rsplit(".", 1)[1], None) for name in names}
    try:
        fresh = importlib.import_module("contraseg.data.pseudo_labels")
        assert fresh.PseudoLabelDir.__name__ == "PseudoLabelDir"
        assert "contraseg.data.base" not in sys.modules
    finally:
        for name in names:
            sys.modules.pop(name, None)
            attribute = name.rsplit(".", 1)[1]
            if attributes[name] is None:
                if hasattr(package, attribute):
                    delattr(package, attribute)
            else:
                setattr(package, attribute, attributes[name])
        sys.modules.update(saved)


def test_readers_still_exported_from_base(tmp_path):
    from contraseg.data import base, files

    assert base.read_label_png is files.read_label_png and base.read_rgb_image is files.read_rgb_image
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=f"cannot read label {bad}"):
        files.read_label_png(bad)


# -- PASCAL-Context -----------------------------------------------------------------------------


def test_registered_with_names_and_palettes():
    assert {"pascal-context", "coco-stuff"} <= set(dataset_names())
    assert len(PASCAL_CONTEXT_59_CLASSES) == 59 and len(set(PASCAL_CONTEXT_59_CLASSES)) == 59
    assert len(COCO_STUFF_171_CLASSES) == 171 and len(set(COCO_STUFF_171_CLASSES)) == 171
    # Spot checks of the published orders (alphabetical Detail classes; ascending COCO ids).
    assert PASCAL_CONTEXT_59_CLASSES[:3] == ("aeroplane", "bag", "bed") and PASCAL_CONTEXT_59_CLASSES[-1] == "wood"
    assert COCO_STUFF_171_CLASSES[11] == "stop sign" and COCO_STUFF_171_CLASSES[80] == "banner"
    assert COCO_STUFF_171_CLASSES[170] == "wood"


@pytest.mark.parametrize("layout", ["voc2010", "openseg"])
def test_pascal_context_samples_follow_reduce_zero_label(tmp_path, layout):
    written = write_context_voc2010(tmp_path / "voc")
    root = tmp_path / "voc"
    if layout == "openseg":
        root = tmp_path / "openseg"
        write_context_openseg(root, written)
    for split, samples in written.items():
        dataset = build_dataset("pascal-context", root=root, split=split)
        assert dataset.layout == layout
        assert [dataset.sample_name(i) for i in range(len(dataset))] == sorted(samples)
        for i in range(len(dataset)):
            sample = dataset[i]
            raw = samples[sample["name"]][1]
            expected = np.vectorize(context_reference)(raw)
            np.testing.assert_array_equal(sample["label"].numpy(), expected)
            assert sample["label"][0, 0] == 255 and sample["label"][0, 1] == 0 and sample["label"][0, 2] == 58
            assert sample["image"].shape == (3, H, W)


def test_pascal_context_check_histogram_and_out_of_table_value(tmp_path, capsys):
    written = write_context_voc2010(tmp_path)
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "pascal-context", "--split", "train")
    assert code == 0, err
    assert "3 images, 3 labels, 3 samples read" in out and "ok: no problems found" in out
    hist, ignored = slow_histogram([lab for _, lab in written["train"].values()], context_reference, 59)
    rows = _histogram_rows(out)
    assert [rows[name] for name in PASCAL_CONTEXT_59_CLASSES] == hist.tolist()
    assert rows["ignored"] == ignored

    bad_root = tmp_path / "bad"
    write_context_voc2010(bad_root, extra_value=60)
    code, out, err = _run(capsys, "datasets", "check", str(bad_root), "--dataset", "pascal-context",
                          "--split", "train", "--option", "layout=voc2010")
    assert code == 2
    line = _one_line_error(err)
    assert "outside the pascal-context id table" in line and "2008_000002.png" in line and ": 60" in line


def test_pascal_context_missing_pieces_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="JPEGImages.*mmsegmentation layout.*train/image.*openseg"):
        build_dataset("pascal-context", root=tmp_path, split="train")
    write_context_voc2010(tmp_path)
    report = check_dataset("pascal-context", tmp_path, split="val")
    assert report.num_images == 1 and report.clean
    (tmp_path / "ImageSets" / "SegmentationContext" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="split list not found: .*SegmentationContext/val.txt"):
        build_dataset("pascal-context", root=tmp_path, split="val")
    (tmp_path / "JPEGImages" / "2008_000007.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="without an image, first: .*2008_000007.jpg"):
        build_dataset("pascal-context", root=tmp_path, split="train")
    with pytest.raises(ValueError, match="layout must be one of"):
        build_dataset("pascal-context", root=tmp_path, split="train", layout="detail")


# -- COCO-Stuff ---------------------------------------------------------------------------------


def test_coco_raw_table_matches_reference_and_converter_pairs():
    from contraseg.data.coco_stuff import COCO_STUFF_RAW_TABLE

    raw = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(COCO_STUFF_RAW_TABLE.map(raw), [coco_raw_reference(v) for v in range(256)])
    # Pairs of mmsegmentation's clsID_to_trID around every gap.
    pairs = {0: 0, 10: 10, 12: 11, 24: 23, 26: 24, 27: 25, 30: 26, 43: 39, 45: 40, 64: 59, 66: 60,
             69: 61, 71: 62, 81: 72, 83: 73, 89: 79, 91: 80, 92: 81, 181: 170, 255: 255}
    assert {k: int(COCO_STUFF_RAW_TABLE.map(np.array([k]))[0]) for k in pairs} == pairs
    assert COCO_STUFF_RAW_TABLE.unknown_values(np.array([11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90, 182])) == [
        11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90, 182]


@pytest.mark.parametrize("formats, expected_format", [(("raw",), "raw"), (("raw", "trainids"), "trainids"),
                                                       (("trainids",), "trainids")])
def test_coco_stuff_samples_and_check_histogram(tmp_path, capsys, formats, expected_format):
    written = write_coco_stuff(tmp_path, formats=formats)
    dataset = build_dataset("coco-stuff", root=tmp_path, split="val2017")
    assert dataset.label_format == expected_format and len(dataset) == 3
    for i in range(len(dataset)):
        sample = dataset[i]
        expected = np.vectorize(coco_raw_reference)(written[sample["name"]][1])
        np.testing.assert_array_equal(sample["label"].numpy(), expected)
        assert sample["label"][0, :6].tolist() == [0, 10, 11, 80, 170, 255]

    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "coco-stuff", "--split", "val2017")
    assert code == 0, err
    assert "3 images, 3 labels, 3 samples read" in out
    hist, ignored = slow_histogram([lab for _, lab in written.values()], coco_raw_reference, 171)
    rows = _histogram_rows(out)
    assert [rows[name] for name in COCO_STUFF_171_CLASSES] == hist.tolist()
    assert rows["ignored"] == ignored


def test_coco_stuff_unused_ids_and_missing_labels_are_reported(tmp_path, capsys):
    write_coco_stuff(tmp_path, split="train2017", unused=True)
    (tmp_path / "annotations" / "train2017" / f"{10:012d}.png").unlink()
    report = check_dataset("coco-stuff", tmp_path, split="train2017", label_format="raw")
    assert report.num_images == 3 and report.num_labels == 2
    assert any("image without label" in p and f"{10:012d}.png" in p for p in report.problems)
    assert any("outside the coco-stuff id table" in p and ": 11, 90" in p for p in report.problems)
    with pytest.raises(FileNotFoundError, match=f"label not found for image .*{10:012d}.jpg"):
        build_dataset("coco-stuff", root=tmp_path, split="train2017")
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset("coco-stuff", root=tmp_path, split="train")
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "coco-stuff", "--split", "val2017")
    assert code == 2 and f"COCO-Stuff image folder not found: {tmp_path / 'images' / 'val2017'}" in _one_line_error(err)
