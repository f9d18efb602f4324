"""Released-recipe augmentations (issue 18): openseg aspect jitter and additive brightness,
hue jitter, ProAC scale-to-width. Each: the draws cover the released range (many seeded
draws), the output size equals the released formula, labels are resized by nearest
neighbour and ignore pixels stay ignore; the data.* keys reach the transform."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contraseg.data.photometric_transforms import brightness_shift, colour_jitter
from contraseg.data.resize_draws import draw_train_size
from contraseg.data.transforms import TrainTransform, denormalize
from contraseg.engine.build import build_train_dataset
from contraseg.engine.config import ConfigError, config_from_dict

from helpers import tiny_config


def _draws(n, **kwargs):
    base = kwargs.pop("base")
    return [draw_train_size(base, generator=torch.Generator().manual_seed(seed), **kwargs) for seed in range(n)]


def test_aspect_draws_cover_the_released_range_and_keep_the_area_scale():
    base = (1024, 2048)
    sizes = _draws(2000, base=base, scale_range=(0.5, 2.0), aspect_range=(0.9, 1.1))
    aspects = np.array([(w / base[1]) / (h / base[0]) for h, w in sizes])
    scales = np.array([math.sqrt((w / base[1]) * (h / base[0])) for h, w in sizes])
    assert aspects.min() > 0.899 and aspects.max() < 1.101
    assert aspects.min() < 0.905 and aspects.max() > 1.095 and abs(aspects.mean() - 1.0) < 0.01
    assert scales.min() > 0.499 and scales.max() < 2.001 and abs(scales.mean() - 1.25) < 0.03


def test_aspect_size_is_openseg_formula():
    for seed in range(50):
        gen = torch.Generator().manual_seed(seed)
        s = 0.5 + 1.5 * float(torch.rand((), generator=gen))
        a = 0.9 + 0.2 * float(torch.rand((), generator=gen))
        expected = (int(375 * s * math.sqrt(1 / a)), int(500 * s * math.sqrt(a)))  # cv2_aug_transforms.py:429-437
        got = draw_train_size((375, 500), (0.5, 2.0), (0.9, 1.1), None, torch.Generator().manual_seed(seed))
        assert got == expected


def test_scale_to_width_draws_and_formula():
    base = (256, 512)  # ProAC's Cityscapes target before RandomSized
    sizes = _draws(2000, base=base, scale_range=(0.5, 1.5), scale_to_width=2200)
    factors = np.array([w / 2200 for _, w in sizes])
    assert factors.min() >= 0.4995 and factors.max() <= 1.5 and abs(factors.mean() - 1.0) < 0.02
    assert factors.min() < 0.51 and factors.max() > 1.49
    for h, w in sizes:
        assert h == int(w / (512 / 256))  # augmentations.py:369-371, aspect kept
    gen = torch.Generator().manual_seed(3)
    s = 0.5 + float(torch.rand((), generator=gen))
    w = int(s * 2200)
    assert draw_train_size((1052, 1914), (0.5, 1.5), None, 2200, torch.Generator().manual_seed(3)) == \
        (int(w / (1914 / 1052)), w)


def _scene(h=48, w=64, seed=0):
    g = np.random.default_rng(seed)
    image = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 3:] = 1
    mask[h // 2:, :] = 2
    mask[5:12, 7:20] = 255  # ignore block
    return image, mask


@pytest.mark.parametrize("options", [{"aspect_range": (0.9, 1.1), "scale_range": (0.5, 2.0)},
                                     {"scale_to_width": 96, "scale_range": (0.5, 1.5)},
                                     {"scale_to_width": 96, "aspect_range": (0.8, 1.2), "scale_range": (0.5, 1.5)}])
def test_transform_resizes_labels_with_nearest_and_keeps_ignore(options):
    image, mask = _scene()
    for seed in range(5):
        size = draw_train_size((48, 64), options["scale_range"], options.get("aspect_range"),
                               options.get("scale_to_width"), torch.Generator().manual_seed(seed))
        transform = TrainTransform(size, flip=False, jitter=0.0, **options)  # crop = the whole rescaled image
        out_image, out_mask = transform(image, mask, generator=torch.Generator().manual_seed(seed))
        assert tuple(out_image.shape) == (3, *size) and tuple(out_mask.shape) == size
        reference = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=size, mode="nearest-exact")[0, 0]
        assert torch.equal(out_mask, reference.long())
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, 255} and (out_mask == 255).any()


def test_brightness_shift_draws_every_integer_in_range_and_clips():
    flat = torch.full((3, 4, 5), 100, dtype=torch.uint8)
    shifts = [int(brightness_shift(flat, 10, torch.Generator().manual_seed(s))[0, 0, 0]) - 100 for s in range(3000)]
    counts = np.bincount(np.array(shifts) + 10, minlength=21)
    assert len(counts) == 21 and (counts > 80).all()  # U{-10..10}: ~143 each
    assert abs(np.mean(shifts)) < 0.5
    image = torch.tensor([[[0, 128, 250]]], dtype=torch.uint8).expand(3, 1, 3)
    for s in range(50):
        gen = torch.Generator().manual_seed(s)
        d = int(torch.randint(-10, 11, (), generator=torch.Generator().manual_seed(s)))
        out = brightness_shift(image, 10, gen)
        assert out.tolist() == (image.int() + d).clamp(0, 255).tolist()
    assert brightness_shift(image, 0) is image


def test_brightness_shift_in_the_transform_is_one_shift_on_all_pixels():
    image = np.full((16, 16, 3), 128, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    seen = set()
    for seed in range(200):
        out, _ = TrainTransform(16, scale_range=(1, 1), flip=False, jitter=0.0, brightness_shift=10,
                                seed=seed)(image, mask)
        pixels = denormalize(out).int() - 128
        assert (pixels == pixels[0, 0, 0]).all() and -10 <= int(pixels[0, 0, 0]) <= 10
        seen.add(int(pixels[0, 0, 0]))
    assert len(seen) == 21


def _hue(pixel):
    return colorsys.rgb_to_hsv(*(float(v) / 255 for v in pixel))[0]


def test_hue_jitter_draws_cover_the_range_and_only_hue_changes():
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2).contiguous()
    shifts = []
    for seed in range(1000):
        out = colour_jitter(red, 0.0, 0.2, torch.Generator().manual_seed(seed))
        shift = (_hue(out[:, 0, 0]) + 0.5) % 1.0 - 0.5
        shifts.append(shift)
        assert int(out.max()) == 255  # value and (full) saturation kept
    shifts = np.array(shifts)
    assert shifts.min() >= -0.2 - 0.01 and shifts.max() <= 0.2 + 0.01
    assert shifts.min() < -0.18 and shifts.max() > 0.18 and abs(shifts.mean()) < 0.02


def test_no_new_key_keeps_the_old_draws():
    image, mask = _scene()
    old = TrainTransform((32, 32), seed=5)(image, mask)
    new = TrainTransform((32, 32), seed=5, aspect_range=None, brightness_shift=0, hue_jitter=0.0)(image, mask)
    assert all(torch.equal(a, b) for a, b in zip(old, new))


def test_data_keys_reach_the_training_transform():
    cfg = config_from_dict(tiny_config(data={"aspect_range": [0.9, 1.1], "brightness_shift": 10, "hue_jitter": 0.25,
                                             "scale_to_width": 128}))
    transform = build_train_dataset(cfg.data).transform
    assert (transform.aspect_range, transform.brightness_shift, transform.hue_jitter, transform.scale_to_width) == \
        ((0.9, 1.1), 10, 0.25, 128)


@pytest.mark.parametrize("data, message", [
    ({"hue_jitter": 0.7}, "config key data.hue_jitter must be in [0, 0.5]"),
    ({"brightness_shift": 2.5}, "config key data.brightness_shift must be a whole number"),
    ({"aspect_range": [1.2, 0.9]}, "config key data.aspect_range must be [lo, hi] with 0 < lo <= hi"),
    ({"aspect_range": [0.0, 1.1]}, "data.aspect_range"),
    ({"scale_to_width": 0}, "data.scale_to_width"),
])
def test_bad_values_are_one_line_errors(data, message):
    with pytest.raises(ConfigError) as err:
        build_train_dataset(config_from_dict(tiny_config(data=data)).data)
    assert message in str(err.value) and "\n" not in str(err.value)
