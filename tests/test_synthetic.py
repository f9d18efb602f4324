"""The synthetic two-domain street-scene benchmark (contraseg.data.synthetic)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from contraseg.data import build_dataset
from contraseg.data.palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from contraseg.data.pseudo_labels import PseudoLabelDir
from contraseg.data.synthetic import (
    DEFAULT_LENGTHS,
    SyntheticSourceDataset,
    SyntheticStreetDataset,
    SyntheticTargetDataset,
    render_scene,
    scene_seed,
)
from contraseg.data.synthetic_render import _plane_coordinates, _shadow_mask
from contraseg.data.synthetic_scenes import Camera, Kind, generate_layout
from contraseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform

K = len(CITYSCAPES_CLASSES)
SIZE = (128, 256)
N_SCENES = 50


@pytest.fixture(scope="module")
def scenes():
    """The same 50 layouts rendered in both domains: {domain: (images N x H x W x 3, labels N x H x W)}."""
    out = {}
    for domain in ("source", "target"):
        pairs = [render_scene(domain, seed, SIZE) for seed in range(N_SCENES)]
        out[domain] = (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
    return out


def _class_histogram(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels.ravel(), minlength=K).astype(np.float64)
    return counts / counts.sum()


# ---------------------------------------------------------------- render_scene
def test_render_scene_types_shapes_and_label_range(scenes):
    images, labels = scenes["source"]
    assert images.dtype == np.uint8 and images.shape == (N_SCENES, *SIZE, 3)
    assert labels.dtype == np.uint8 and labels.shape == (N_SCENES, *SIZE)
    assert labels.max() <= K - 1


def test_render_scene_is_deterministic_and_seeds_differ():
    a_img, a_lab = render_scene("target", 7, (64, 96))
    b_img, b_lab = render_scene("target", 7, (64, 96))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, c_lab = render_scene("target", 8, (64, 96))
    assert not np.array_equal(a_lab, c_lab)
    assert not np.array_equal(a_img, c_img)


@pytest.mark.parametrize("size", [(37, 53), (96, 320), (200, 120)])
def test_render_scene_any_size(size):
    image, label = render_scene("target", 3, size)
    assert image.shape == (*size, 3) and label.shape == size
    assert label.max() < K


def test_same_seed_gives_same_layout_in_both_domains(scenes):
    np.testing.assert_array_equal(scenes["source"][1], scenes["target"][1])
    assert not np.array_equal(scenes["source"][0], scenes["target"][0])


def test_every_class_appears_in_at_least_10_percent_of_images(scenes):
    labels = scenes["source"][1]
    present = np.array([[np.any(lab == k) for k in range(K)] for lab in labels])
    per_class = present.sum(0)
    rare = {CITYSCAPES_CLASSES[k]: int(per_class[k]) for k in range(K) if per_class[k] < N_SCENES // 10}
    assert not rare, f"classes in fewer than {N_SCENES // 10} of {N_SCENES} images: {rare}"
    # The big classes are in (nearly) every image.
    for name in ("road", "sidewalk", "building", "vegetation", "sky"):
        assert per_class[CITYSCAPES_CLASSES.index(name)] >= 0.9 * N_SCENES, name


def test_road_below_sky_in_every_image(scenes):
    road, sky = CITYSCAPES_CLASSES.index("road"), CITYSCAPES_CLASSES.index("sky")
    rows = np.arange(SIZE[0])[:, None]
    for label in scenes["source"][1]:
        road_rows = np.broadcast_to(rows, label.shape)[label == road]
        sky_rows = np.broadcast_to(rows, label.shape)[label == sky]
        assert road_rows.size and sky_rows.size
        assert road_rows.mean() > SIZE[0] / 2 > sky_rows.mean()
        assert road_rows.mean() > sky_rows.max()  # the sky never reaches below the road's centre row


def test_domains_differ_in_colour_per_class(scenes):
    (src_img, labels), (tgt_img, _) = scenes["source"], scenes["target"]
    differing = []
    for k in range(K):
        mask = labels == k
        distance = np.linalg.norm(src_img[mask].mean(0) - tgt_img[mask].mean(0))
        differing.append(distance > 25.0)
    assert sum(differing) >= 15, [CITYSCAPES_CLASSES[k] for k in range(K) if not differing[k]]
    # Pixel noise: the target domain is not flat inside a region, the source nearly is.
    road = labels == CITYSCAPES_CLASSES.index("road")
    src_dx = np.abs(np.diff(src_img.astype(np.float32), axis=2))[road[:, :, 1:]].mean()
    tgt_dx = np.abs(np.diff(tgt_img.astype(np.float32), axis=2))[road[:, :, 1:]].mean()
    assert tgt_dx > src_dx


def test_domains_share_label_statistics():
    """Different scene seeds per domain (as the datasets use), alike class frequencies."""
    source = SyntheticSourceDataset(split="train", length=40, size=(64, 128))
    target = SyntheticTargetDataset(split="train", length=40, size=(64, 128))
    src = _class_histogram(np.stack([source.load_ground_truth(i) for i in range(40)]))
    tgt = _class_histogram(np.stack([target.load_ground_truth(i) for i in range(40)]))
    total_variation = 0.5 * np.abs(src - tgt).sum()
    assert total_variation < 0.1, (src.round(3), tgt.round(3))
    # Cityscapes-like ordering: road, building, vegetation, sky and car dominate.
    top = {CITYSCAPES_CLASSES[k] for k in np.argsort(-(src + tgt))[:5]}
    assert top <= {"road", "building", "vegetation", "sky", "car", "sidewalk"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(domain="night"), "domain must be one of"),
        (dict(size=(4, 64)), "size must be two integers >= 8"),
        (dict(size=(64,)), r"size must be \(height, width\)"),
        (dict(seed=-1), "seed must be a non-negative integer"),
    ],
)
def test_render_scene_rejects_bad_arguments(kwargs, match):
    args = dict(domain="source", seed=0, size=(32, 64)) | kwargs
    with pytest.raises(ValueError, match=match):
        render_scene(args["domain"], args["seed"], args["size"])


# --------------------------------------------------------------- geometry helpers
def test_camera_projection_matches_pinhole_formula():
    cam = Camera(focal=200.0, cx=120.0, horizon=50.0)
    rng = np.random.default_rng(0)
    xs, hs, zs = rng.uniform(-5, 5, 20), rng.uniform(0, 3, 20), rng.uniform(1, 50, 20)
    px, py = cam.project(xs, hs, zs)
    for i in range(20):
        assert px[i] == pytest.approx(120.0 + 200.0 * xs[i] / zs[i])
        assert py[i] == pytest.approx(50.0 + 200.0 * (1.0 - hs[i]) / zs[i])
    # Scalars and arrays broadcast together; farther is closer to the horizon.
    x2, y2 = cam.project(1.0, np.array([0.0, 0.0]), np.array([2.0, 20.0]))
    assert x2.shape == y2.shape == (2,)
    assert y2[0] > y2[1] > cam.horizon


def test_plane_coordinates_invert_the_projection():
    """Depth and height recovered on a facade plane project back onto the pixel centre."""
    layout = generate_layout(np.random.default_rng(3), (96, 192))
    on_plane = ~np.isnan(layout.planes[layout.ids])
    rows, cols = np.nonzero(on_plane)
    pick = np.random.default_rng(0).choice(rows.size, size=min(200, rows.size), replace=False)
    rows, cols = rows[pick], cols[pick]
    depth, height = _plane_coordinates(layout, (rows, cols))
    for r, c, z, h in zip(rows, cols, depth, height):
        plane = layout.planes[layout.ids[r, c]]
        x, y = layout.camera.project(plane, h, z)
        assert x == pytest.approx(c + 0.5, abs=1e-6)
        assert y == pytest.approx(r + 0.5, abs=1e-6)


def test_layout_tables_are_consistent():
    layout = generate_layout(np.random.default_rng(11), (64, 128))
    n = layout.classes.shape[0]
    assert layout.kinds.shape == layout.variants.shape == layout.planes.shape == (n,)
    assert layout.ids.max() < n
    np.testing.assert_array_equal(layout.label(), layout.classes[layout.ids])


# ------------------------------------------------------------------- datasets
def test_scene_seeds_are_injective_and_train_val_disjoint():
    seeds = {}
    for seed, domain, split, index in itertools.product(range(3), ("source", "target"), ("train", "val"), range(50)):
        value = scene_seed(seed, domain, split, index)
        assert value not in seeds, (seeds.get(value), (seed, domain, split, index))
        seeds[value] = (seed, domain, split, index)
    train = SyntheticTargetDataset(split="train", length=30, size=(32, 64))
    val = SyntheticTargetDataset(split="val", length=30, size=(32, 64))
    assert not {train.scene_seed(i) for i in range(30)} & {val.scene_seed(i) for i in range(30)}
    assert not torch.equal(train[0]["label"], val[0]["label"])


def test_dataset_sample_contract_and_determinism():
    dataset = SyntheticTargetDataset(split="val", length=12, size=(48, 80), seed=3)
    sample = dataset[11]
    assert set(sample) == {"image", "label", "name"}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 48, 80)
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == (48, 80)
    assert sample["name"] == "synthetic-target_val_000011"
    assert int(sample["label"].min()) >= 0 and int(sample["label"].max()) < K
    again = SyntheticTargetDataset(split="val", length=12, size=(48, 80), seed=3)[11]
    assert torch.equal(sample["image"], again["image"]) and torch.equal(sample["label"], again["label"])
    other_seed = SyntheticTargetDataset(split="val", length=12, size=(48, 80), seed=4)[11]
    assert not torch.equal(sample["label"], other_seed["label"])
    assert len({dataset.sample_name(i) for i in range(len(dataset))}) == len(dataset)
    with pytest.raises(IndexError):
        dataset[12]


def test_dataset_normalises_the_rendered_image_with_imagenet_statistics():
    dataset = SyntheticSourceDataset(split="train", length=2, size=(24, 40))
    image, label = render_scene("source", dataset.scene_seed(1), (24, 40))
    sample = dataset[1]
    expected = np.empty((3, 24, 40), dtype=np.float32)
    for c in range(3):
        for y in range(24):
            for x in range(40):
                expected[c, y, x] = (image[y, x, c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    np.testing.assert_allclose(sample["image"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(sample["label"].numpy(), label)


def test_dataset_info_lengths_and_registry():
    source = build_dataset("synthetic-source", split="val")
    target = build_dataset("synthetic-target")
    assert isinstance(source, SyntheticSourceDataset) and isinstance(target, SyntheticTargetDataset)
    assert len(source) == DEFAULT_LENGTHS["val"] and len(target) == DEFAULT_LENGTHS["train"]
    assert source.info.name == "synthetic-source" and target.info.name == "synthetic-target"
    assert source.info.classes == CITYSCAPES_CLASSES and source.info.palette == CITYSCAPES_PALETTE
    assert source.info.ignore_index == 255
    assert len(build_dataset("synthetic-target", split="train", length=7, size=[16, 32])) == 7


def test_dataset_applies_a_joint_transform():
    transform = TrainTransform(crop_size=(32, 48), scale_range=(1.0, 1.0), seed=0)
    dataset = SyntheticSourceDataset(split="train", length=3, size=(40, 64), transform=transform)
    sample = dataset[0]
    assert sample["image"].shape == (3, 32, 48) and sample["label"].shape == (32, 48)


def test_dataset_with_pseudo_labels_returns_the_drawn_label_as_gt(tmp_path):
    dataset = SyntheticTargetDataset(split="train", length=2, size=(16, 32), pseudo_label_dir=tmp_path)
    pseudo = np.full((16, 32), 4, dtype=np.uint8)
    PseudoLabelDir(tmp_path).write(dataset.sample_name(1), pseudo)
    sample = dataset[1]
    assert torch.equal(sample["label"], torch.full((16, 32), 4, dtype=torch.int64))
    np.testing.assert_array_equal(sample["gt_label"].numpy(), dataset.load_ground_truth(1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(domain="night"), "domain must be one of"),
        (dict(split="test"), "split must be one of"),
        (dict(length=0), "length must be a positive integer"),
        (dict(length=2.5), "length must be a positive integer"),
        (dict(seed=-3), "seed must be a non-negative integer"),
        (dict(size=(128, 3)), "size must be two integers >= 8"),
    ],
)
def test_dataset_rejects_bad_arguments(kwargs, match):
    args = dict(domain="source") | kwargs
    with pytest.raises(ValueError, match=match):
        SyntheticStreetDataset(**args)


def test_shadow_mask_matches_a_per_pixel_ground_position_loop():
    """Shaded pixels: ground with side * X > side * X_s (X from the pixel), and that side's upright parts."""
    layout = generate_layout(np.random.default_rng(5), (40, 72))
    label = layout.label()
    cam = layout.camera
    sky = CITYSCAPES_CLASSES.index("sky")
    for side, lateral in ((1, 2.0), (-1, -1.5), (1, -3.0)):
        mask = _shadow_mask(layout, label, side, lateral)
        for r in range(40):
            for c in range(72):
                x, y = c + 0.5, r + 0.5
                if label[r, c] == sky:
                    expected = False
                elif y > cam.horizon:
                    ground_x = (x - cam.cx) / (y - cam.horizon)  # X of the ground seen at this pixel
                    expected = side * ground_x > side * lateral
                else:
                    expected = side * (x - cam.cx) > max(0.0, side * lateral * (y - cam.horizon))
                assert mask[r, c] == expected, (side, lateral, r, c)


def test_vehicles_shrink_towards_the_horizon():
    """Perspective: the rear face of a car is taller the lower its bottom edge sits in the image."""
    car = CITYSCAPES_CLASSES.index("car")
    heights, bottoms = [], []
    for seed in range(30):
        layout = generate_layout(np.random.default_rng(seed), (128, 256))
        faces = np.nonzero((layout.classes == car) & (layout.kinds == Kind.PLAIN) & np.isnan(layout.planes))[0]
        for part in faces:
            rows = np.nonzero(np.any(layout.ids == part, axis=1))[0]
            if rows.size >= 2 and rows.max() < 127:  # fully above the bottom edge
                heights.append(rows.max() - rows.min() + 1)
                bottoms.append(rows.max() - layout.camera.horizon)
    assert len(heights) > 30
    assert np.corrcoef(heights, bottoms)[0, 1] > 0.7


def test_scene_cache_gives_the_drawn_scenes_as_copies_within_its_byte_budget():
    from contraseg.data.synthetic import SceneCache, SyntheticStreetDataset, render_scene

    cache = SceneCache(max_bytes=3 * (16 * 32 * 4))  # three 16 x 32 scenes (image 3 B + label 1 B per pixel)
    first = cache.render("source", 7, (16, 32))
    again = cache.render("source", 7, (16, 32))
    drawn = render_scene("source", 7, (16, 32))
    assert all(np.array_equal(a, b) for a, b in zip(first, drawn)) and len(cache) == 1
    again[0][:] = 0  # writing into a returned copy leaves the cache intact
    assert np.array_equal(cache.render("source", 7, (16, 32))[0], drawn[0])
    for seed in range(8, 12):
        cache.render("target", seed, (16, 32))
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes  # least recently used scenes dropped
    plain = SyntheticStreetDataset("target", split="val", length=3, size=(16, 32))
    cached = SyntheticStreetDataset("target", split="val", length=3, size=(16, 32), cache=True)
    for index in range(3):
        assert torch.equal(plain[index]["image"], cached[index]["image"])
        assert torch.equal(plain[index]["label"], cached[index]["label"])
    with pytest.raises(ValueError, match="cache must be true or false"):
        SyntheticStreetDataset("target", cache="yes")
