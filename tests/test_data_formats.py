"""Real dataset formats on tiny fixture trees written in exactly the on-disk layout.

The ``write_*`` helpers are also used by tests/test_datasets_cli.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as CS_LABELS
from PIL import Image

from contraseg.data import (
    DatasetInfo,
    LabelTable,
    PseudoLabelDir,
    SegmentationDataset,
    TrainTransform,
    build_dataset,
    dataset_names,
    denormalize,
    write_label_png,
)
from contraseg.data.palettes import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    SYNTHIA_13_CLASSES,
    SYNTHIA_16_CLASSES,
    colorize,
)

H, W = 16, 32

# -- fixture writers (real layouts) ---------------------------------------------------


def _rgb(rng):
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def write_cityscapes(root: Path, split="train", mode="fine", cities=(("aachen", 2), ("bochum", 1)), seed=0):
    """leftImg8bit + gtFine/gtCoarse labelIds PNGs; returns {name: (image, labelIds)}."""
    rng = np.random.default_rng(seed)
    folder = {"fine": "gtFine", "coarse": "gtCoarse"}[mode]
    out = {}
    for city, count in cities:
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / folder / split / city).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f"{city}_{i:06d}_{19 + i:06d}"
            image = _rgb(rng)
            label = rng.integers(0, 34, (H, W)).astype(np.uint8)
            label[0, :3] = (7, 26, 0)  # road, car, unlabeled at known places
            Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
            Image.fromarray(label).save(root / folder / split / city / f"{name}_{folder}_labelIds.png")
            out[name] = (image, label)
    return out


def _cityscapes_palette_bytes():
    palette = [0] * 768
    for label in CS_LABELS:
        if 0 <= label.id < 256:
            palette[3 * label.id:3 * label.id + 3] = label.color
    return palette


def write_gta5(root: Path, count=3, seed=0, split_files=None):
    """images/00001.png + paletted labels/00001.png (Cityscapes labelIds as palette indices)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(1, count + 1):
        name = f"{i:05d}"
        image = _rgb(rng)
        label = rng.integers(0, 34, (H, W)).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        paletted = Image.frombytes("P", (W, H), label.tobytes())
        paletted.putpalette(_cityscapes_palette_bytes())
        paletted.save(root / "labels" / f"{name}.png")
        out[name] = (image, label)
    for split, lines in (split_files or {}).items():
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return out


def write_synthia(root: Path, count=2, seed=0):
    """RGB/0000000.png + GT/LABELS/0000000.png: 16-bit 3-channel, class id in R (cv2 index 2)."""
    rng = np.random.default_rng(seed)
    (root / "RGB").mkdir(parents=True, exist_ok=True)
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(count):
        name = f"{i:07d}"
        image = _rgb(rng)
        classes = rng.integers(0, 23, (H, W)).astype(np.uint16)
        bgr = np.empty((H, W, 3), np.uint16)
        bgr[..., 2] = classes  # R: class id
        bgr[..., 1] = rng.integers(0, 23, (H, W))  # G: instance id (kept in the id range so a wrong channel still maps)
        bgr[..., 0] = (classes + 5) % 23  # B: something else, also in range
        Image.fromarray(image).save(root / "RGB" / f"{name}.png")
        assert cv2.imwrite(str(root / "GT" / "LABELS" / f"{name}.png"), bgr)
        out[name] = (image, classes)
    return out


def write_ade20k(root: Path, split="training", count=2, seed=0):
    """images/{split}/ADE_train_XXXXXXXX.jpg + annotations/{split}/ADE_train_XXXXXXXX.png (0..150)."""
    rng = np.random.default_rng(seed)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    prefix = "ADE_train" if split == "training" else "ADE_val"
    out = {}
    for i in range(1, count + 1):
        name = f"{prefix}_{i:08d}"
        image = _rgb(rng)
        label = rng.integers(0, 151, (H, W)).astype(np.uint8)
        label[0, :3] = (0, 1, 150)
        Image.fromarray(image).save(root / "images" / split / f"{name}.jpg", quality=95)
        Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")
        out[name] = (image, label)
    return out


# -- slow references --------------------------------------------------------------------


def _slow_map(raw, table, ignore=255):
    out = np.empty(raw.shape, np.int64)
    for y in range(raw.shape[0]):
        for x in range(raw.shape[1]):
            out[y, x] = table.get(int(raw[y, x]), ignore)
    return out


CS_REFERENCE = {l.id: (255 if l.trainId in (-1, 255) else l.trainId) for l in CS_LABELS if l.id >= 0}

# SYNTHIA README: id -> name; the name gives the Cityscapes train id (None: ignored).
SYNTHIA_README = {
    0: None, 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation", 7: "pole",
    8: "car", 9: "traffic sign", 10: "person", 11: "bicycle", 12: "motorcycle", 13: None, 14: None,
    15: "traffic light", 16: "terrain", 17: "rider", 18: "truck", 19: "bus", 20: "train", 21: "wall", 22: None,
}
SYNTHIA_REFERENCE = {k: 255 if v is None else CITYSCAPES_CLASSES.index(v) for k, v in SYNTHIA_README.items()}


def _image_of(sample):
    return denormalize(sample["image"]).permute(1, 2, 0).numpy()


# -- Cityscapes ---------------------------------------------------------------------------


def test_cityscapes_label_mapping_pixel_by_pixel(tmp_path):
    written = write_cityscapes(tmp_path)
    dataset = build_dataset("cityscapes", root=tmp_path, split="train")
    assert len(dataset) == 3
    assert [dataset[i]["name"] for i in range(3)] == sorted(written)
    for i in range(3):
        sample = dataset[i]
        image, raw = written[sample["name"]]
        assert sample["label"].dtype == torch.int64 and sample["label"].shape == (H, W)
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, H, W)
        assert np.array_equal(sample["label"].numpy(), _slow_map(raw, CS_REFERENCE))
        assert sample["label"][0, :3].tolist() == [0, 13, 255]  # 7 road, 26 car, 0 unlabeled
        assert np.array_equal(_image_of(sample), image)


def test_cityscapes_info_is_the_official_train_id_table():
    from contraseg.data.cityscapes import CityscapesDataset

    info = CityscapesDataset.info
    assert info.num_classes == 19 and info.ignore_index == 255
    for label in CS_LABELS:
        if 0 <= label.trainId < 19:
            assert info.classes[label.trainId] == label.name
            assert info.palette[label.trainId] == tuple(label.color)


def test_cityscapes_coarse_train_extra(tmp_path):
    written = write_cityscapes(tmp_path, split="train_extra", mode="coarse", cities=(("augsburg", 2),))
    dataset = build_dataset("cityscapes", root=tmp_path, split="train_extra", mode="coarse")
    assert len(dataset) == 2
    sample = dataset[1]
    assert np.array_equal(sample["label"].numpy(), _slow_map(written[sample["name"]][1], CS_REFERENCE))
    with pytest.raises(ValueError, match="split must be one of .*'train_extra'.* for mode='coarse', got 'test'"):
        build_dataset("cityscapes", root=tmp_path, split="test", mode="coarse")
    with pytest.raises(ValueError, match="mode must be 'fine' or 'coarse', got 'medium'"):
        build_dataset("cityscapes", root=tmp_path, mode="medium")


def test_cityscapes_without_label_folder_is_unlabeled(tmp_path):
    write_cityscapes(tmp_path, split="val", cities=(("frankfurt", 2),))
    for path in (tmp_path / "gtFine" / "val" / "frankfurt").iterdir():
        path.unlink()
    (tmp_path / "gtFine" / "val" / "frankfurt").rmdir()
    (tmp_path / "gtFine" / "val").rmdir()
    dataset = build_dataset("cityscapes", root=tmp_path, split="val")
    assert len(dataset) == 2
    assert (dataset[0]["label"] == 255).all()


def test_missing_root_and_missing_label_name_the_file(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"dataset root not found: {missing}"):
        build_dataset("cityscapes", root=missing)
    with pytest.raises(FileNotFoundError, match="Cityscapes image folder not found: .*leftImg8bit/val"):
        write_cityscapes(tmp_path)
        build_dataset("cityscapes", root=tmp_path, split="val")
    label = tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000019_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(FileNotFoundError, match=r"label not found for image .*bochum_000000_000019_leftImg8bit.png: "
                       r"expected .*bochum_000000_000019_gtFine_labelIds.png \(1 images without labels\)"):
        build_dataset("cityscapes", root=tmp_path)
    lenient = build_dataset("cityscapes", root=tmp_path, missing_labels="unlabeled")
    names = [lenient[i]["name"] for i in range(len(lenient))]
    bochum = lenient[names.index("bochum_000000_000019")]
    assert (bochum["label"] == 255).all()


# -- GTA5 -------------------------------------------------------------------------------------


def test_gta5_paletted_labels_map_like_cityscapes(tmp_path):
    written = write_gta5(tmp_path)
    with Image.open(tmp_path / "labels" / "00001.png") as img:
        assert img.mode == "P"
    dataset = build_dataset("gta5", root=tmp_path)
    assert len(dataset) == 3 and dataset.info.name == "gta5"
    for i in range(3):
        sample = dataset[i]
        image, raw = written[sample["name"]]
        assert np.array_equal(sample["label"].numpy(), _slow_map(raw, CS_REFERENCE))
        assert np.array_equal(_image_of(sample), image)


def test_gta5_split_files(tmp_path):
    write_gta5(tmp_path, count=4, split_files={"train": ["00001", "00003.png", "", "# comment"], "val": ["images/00004.png"]})
    train = build_dataset("gta5", root=tmp_path, split="train")
    assert [train[i]["name"] for i in range(len(train))] == ["00001", "00003"]
    val = build_dataset("gta5", root=tmp_path, split="val")
    assert len(val) == 1 and val[0]["name"] == "00004"
    assert len(build_dataset("gta5", root=tmp_path, split="all")) == 4
    (tmp_path / "val.txt").write_text("00009\n")
    with pytest.raises(FileNotFoundError, match=r"split file .*val.txt lists 1 samples without an image, first: .*00009.png"):
        build_dataset("gta5", root=tmp_path, split="val")
    (tmp_path / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"GTA5 split list not found: .*val.txt"):
        build_dataset("gta5", root=tmp_path, split="val")
    with pytest.raises(ValueError, match=r"split must be one of \['all', 'train', 'val'\], got 'test'"):
        build_dataset("gta5", root=tmp_path, split="test")


def test_gta5_image_label_size_mismatch_names_both_files(tmp_path):
    write_gta5(tmp_path, count=2)
    Image.fromarray(np.zeros((H + 2, W, 3), np.uint8)).save(tmp_path / "images" / "00002.png")
    dataset = build_dataset("gta5", root=tmp_path)
    dataset[0]
    with pytest.raises(ValueError, match=r"image .*00002.png \(label .*labels/00002.png\): label is 16x32 but image is 18x32"):
        dataset[1]


# -- SYNTHIA -------------------------------------------------------------------------------------


def test_synthia_reads_class_from_red_channel(tmp_path):
    written = write_synthia(tmp_path)
    raw = cv2.imread(str(tmp_path / "GT" / "LABELS" / "0000000.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (H, W, 3)
    dataset = build_dataset("synthia", root=tmp_path)
    assert len(dataset) == 2
    for i in range(2):
        sample = dataset[i]
        image, classes = written[sample["name"]]
        expected = _slow_map(classes, SYNTHIA_REFERENCE)
        assert np.array_equal(sample["label"].numpy(), expected)
        assert np.array_equal(_image_of(sample), image)


def test_synthia_table_matches_readme_names():
    from contraseg.data.synthia import SYNTHIA_ID_TO_TRAIN_ID

    assert SYNTHIA_ID_TO_TRAIN_ID == SYNTHIA_REFERENCE


@pytest.mark.parametrize("num_classes, dropped", [
    (16, {"terrain", "truck", "train"}),
    (13, {"terrain", "truck", "train", "wall", "fence", "pole"}),
])
def test_synthia_eval_subsets(tmp_path, num_classes, dropped):
    write_synthia(tmp_path, count=1)
    dataset = build_dataset("synthia", root=tmp_path, num_classes=num_classes)
    expected = tuple(k for k, name in enumerate(CITYSCAPES_CLASSES) if name not in dropped)
    assert dataset.eval_classes == expected == dataset.info.eval_classes
    assert len(expected) == num_classes
    assert dataset.info.num_classes == 19
    assert (SYNTHIA_16_CLASSES, SYNTHIA_13_CLASSES)[num_classes == 13] == expected


def test_synthia_rejects_other_class_counts(tmp_path):
    write_synthia(tmp_path, count=1)
    with pytest.raises(ValueError, match="SYNTHIA num_classes must be 16 or 13, got 19"):
        build_dataset("synthia", root=tmp_path, num_classes=19)


# -- ADE20K ----------------------------------------------------------------------------------------


def test_ade20k_reduce_zero_label(tmp_path):
    written = write_ade20k(tmp_path, split="validation")
    dataset = build_dataset("ade20k", root=tmp_path, split="validation")
    assert dataset.info.num_classes == 150 and len(dataset) == 2
    reference = {0: 255, **{k: k - 1 for k in range(1, 151)}}
    for i in range(2):
        sample = dataset[i]
        assert sample["name"].startswith("ADE_val_")
        raw = written[sample["name"]][1]
        assert np.array_equal(sample["label"].numpy(), _slow_map(raw, reference))
        assert sample["label"][0, :3].tolist() == [255, 0, 149]


def test_ade20k_names_and_palette():
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert ADE20K_CLASSES[0] == "wall" and ADE20K_CLASSES[149] == "flag"
    assert len(set(ADE20K_PALETTE)) == 150 and (0, 0, 0) not in ADE20K_PALETTE


# -- pseudo labels ----------------------------------------------------------------------------------


def test_pseudo_labels_override_and_keep_ground_truth(tmp_path):
    written = write_cityscapes(tmp_path / "cs")
    pseudo = PseudoLabelDir(tmp_path / "pseudo", create=True)
    rng = np.random.default_rng(5)
    expected = {}
    for name in written:
        label = rng.integers(0, 19, (H, W)).astype(np.uint8)
        label[rng.random((H, W)) < 0.2] = 255
        pseudo.write(name, label)
        expected[name] = label
    dataset = build_dataset("cityscapes", root=tmp_path / "cs", pseudo_label_dir=tmp_path / "pseudo")
    for i in range(len(dataset)):
        sample = dataset[i]
        assert np.array_equal(sample["label"].numpy(), expected[sample["name"]])
        assert np.array_equal(sample["gt_label"].numpy(), _slow_map(written[sample["name"]][1], CS_REFERENCE))
    assert pseudo.names() == sorted(written)


def test_pseudo_labels_follow_the_random_crop_with_the_ground_truth(tmp_path):
    written = write_cityscapes(tmp_path / "cs", cities=(("ulm", 1),))
    name = next(iter(written))
    pseudo = PseudoLabelDir(tmp_path / "pseudo", create=True)
    gt = _slow_map(written[name][1], CS_REFERENCE).astype(np.uint8)
    pseudo.write(name, gt)  # pseudo label == ground truth, so both outputs must agree
    dataset = build_dataset("cityscapes", root=tmp_path / "cs", pseudo_label_dir=pseudo,
                            transform=TrainTransform((8, 8), seed=0))
    for _ in range(5):
        sample = dataset[0]
        assert sample["label"].shape == (8, 8)
        assert torch.equal(sample["label"], sample["gt_label"])


def test_pseudo_label_errors_name_the_file(tmp_path):
    written = write_cityscapes(tmp_path / "cs", cities=(("ulm", 2),))
    with pytest.raises(FileNotFoundError, match=f"pseudo-label folder not found: {tmp_path / 'none'}"):
        build_dataset("cityscapes", root=tmp_path / "cs", pseudo_label_dir=tmp_path / "none")
    pseudo = PseudoLabelDir(tmp_path / "pseudo", create=True)
    first, second = sorted(written)
    pseudo.write(first, np.zeros((H, W), np.uint8))
    pseudo.write(second, np.zeros((H // 2, W), np.uint8))
    dataset = build_dataset("cityscapes", root=tmp_path / "cs", pseudo_label_dir=pseudo)
    dataset[0]
    with pytest.raises(ValueError, match=rf"pseudo label .*{second}.png is 8x32 but its image is 16x32"):
        dataset[1]
    (pseudo.path / f"{second}.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"pseudo label not found: .*pseudo/{second}.png"):
        dataset[1]
    with pytest.raises(ValueError, match="plain file name"):
        pseudo.path_for("a/b")


def test_unlabeled_dataset_with_pseudo_labels_has_no_gt_label(tmp_path):
    written = write_cityscapes(tmp_path / "cs", split="test", cities=(("berlin", 1),))
    for city in (tmp_path / "cs" / "gtFine" / "test").iterdir():
        for path in city.iterdir():
            path.unlink()
        city.rmdir()
    (tmp_path / "cs" / "gtFine" / "test").rmdir()
    pseudo = PseudoLabelDir(tmp_path / "pseudo", create=True)
    pseudo.write(next(iter(written)), np.full((H, W), 4, np.uint8))
    sample = build_dataset("cityscapes", root=tmp_path / "cs", split="test", pseudo_label_dir=pseudo)[0]
    assert "gt_label" not in sample and (sample["label"] == 4).all()


def test_write_label_png_is_atomic_and_round_trips(tmp_path, monkeypatch):
    label = np.arange(H * W, dtype=np.int64).reshape(H, W) % 256
    path = write_label_png(tmp_path / "sub" / "x.png", torch.from_numpy(label))
    with Image.open(path) as img:
        assert img.mode == "L"
        assert np.array_equal(np.asarray(img), label.astype(np.uint8))
    assert sorted(os.listdir(tmp_path / "sub")) == ["x.png"]

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_label_png(path, np.zeros((H, W), np.uint8))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "sub")) == ["x.png"]  # no temporary file left, old file intact
    with Image.open(path) as img:
        assert np.array_equal(np.asarray(img), label.astype(np.uint8))
    with pytest.raises(ValueError, match=r"label values must be in \[0, 255\], got range \[0, 300\]"):
        write_label_png(tmp_path / "y.png", np.array([[0, 300]]))
    with pytest.raises(ValueError, match=r"label must be H x W, got shape \(1, 2, 2\)"):
        write_label_png(tmp_path / "y.png", np.zeros((1, 2, 2), np.uint8))


# -- shared pieces -------------------------------------------------------------------------------


def test_label_table_maps_wide_ids_and_reports_unknown_values():
    table = LabelTable({0: 255, 3: 0, 300: 1})
    raw = np.array([[0, 3, 300], [4, 70000, 3]], dtype=np.int64)
    assert table.map(raw).tolist() == [[255, 0, 1], [255, 255, 0]]
    assert table.map(raw.astype(np.uint32)).dtype == np.uint8
    assert table.unknown_values(raw) == [4, 70000]
    assert table.unknown_values(np.array([-1, 0])) == [-1]
    with pytest.raises(ValueError, match="raw ids must be >= 0 and train ids in"):
        LabelTable({-1: 0})
    with pytest.raises(ValueError, match="must be integers, got dtype float"):
        table.map(np.zeros((2, 2)))


def test_dataset_info_validation():
    info = DatasetInfo("toy", ("a", "b"), ((0, 0, 0), (1, 2, 3)))
    assert info.num_classes == 2 and info.eval_classes is None
    with pytest.raises(ValueError, match="palette has 1 colours but there are 2 classes"):
        DatasetInfo("toy", ("a", "b"), ((0, 0, 0),))
    with pytest.raises(ValueError, match=r"ignore_index=1 collides with class ids \[0, 2\)"):
        DatasetInfo("toy", ("a", "b"), ((0, 0, 0), (1, 1, 1)), ignore_index=1)
    with pytest.raises(ValueError, match=r"eval_classes \[5\] outside \[0, 2\)"):
        DatasetInfo("toy", ("a", "b"), ((0, 0, 0), (1, 1, 1)), eval_classes=(0, 5))
    with pytest.raises(ValueError, match="not 3 values"):
        DatasetInfo("toy", ("a",), ((0, 0, 300),))


def test_registry_lists_the_formats_and_index_errors(tmp_path):
    assert {"cityscapes", "gta5", "synthia", "ade20k"} <= set(dataset_names())
    write_gta5(tmp_path, count=1)
    dataset = build_dataset("gta5", root=tmp_path)
    assert dataset[-1]["name"] == "00001"
    with pytest.raises(IndexError, match="index 1 out of range for GTA5Dataset of length 1"):
        dataset[1]
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        build_dataset("kitti", root=tmp_path)


def test_colorize_uses_palette_and_ignore_colour():
    label = np.array([[0, 13], [255, 18]])
    rgb = colorize(label, CITYSCAPES_PALETTE)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 142)
    assert tuple(rgb[1, 0]) == (0, 0, 0) and tuple(rgb[1, 1]) == CITYSCAPES_PALETTE[18]


# -- the base class on its own ------------------------------------------------------------------


class _InMemory(SegmentationDataset):
    """Two fixed samples; the second one's label has the wrong size."""

    def __init__(self, **kwargs):
        super().__init__(DatasetInfo("toy", ("a", "b"), ((0, 0, 0), (9, 9, 9))), **kwargs)
        rng = np.random.default_rng(0)
        self.images = [_rgb(rng), _rgb(rng)]
        self.labels = [rng.integers(0, 2, (H, W)).astype(np.uint8), np.zeros((2, 2), np.uint8)]

    def __len__(self):
        return 2

    def sample_name(self, index):
        return f"toy_{index}"

    def load_image(self, index):
        return self.images[index]

    def load_ground_truth(self, index):
        return self.labels[index]


def test_in_memory_subclass_gets_the_sample_contract():
    dataset = _InMemory()
    sample = dataset[0]
    assert set(sample) == {"image", "label", "name"} and sample["name"] == "toy_0"
    assert np.array_equal(_image_of(sample), dataset.images[0])
    assert np.array_equal(sample["label"].numpy(), dataset.labels[0])
    assert dataset.eval_classes is None
    with pytest.raises(ValueError, match="sample toy_1: label is 2x2 but image is 16x32"):
        dataset[1]


def test_base_classes_are_abstract():
    from contraseg.data.base import FileSegmentationDataset, SegmentationDataset

    with pytest.raises(TypeError, match="abstract"):
        SegmentationDataset(DatasetInfo("toy", ("a",), ((0, 0, 0),)))

    class NoScan(FileSegmentationDataset):
        info = DatasetInfo("toy", ("a",), ((0, 0, 0),))

    with pytest.raises(TypeError, match="abstract"):
        NoScan(".", "train")
