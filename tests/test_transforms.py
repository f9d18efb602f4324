"""Joint image + mask transforms: shapes, alignment, nearest-only masks, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from contraseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    denormalize,
    mask_to_tensor,
    normalize,
)


def _image(h=16, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h=16, w=32, values=(3, 7, 11), seed=1):
    rng = np.random.default_rng(seed)
    mask = rng.choice(np.array(values, dtype=np.uint8), size=(h, w))
    mask[rng.random((h, w)) < 0.1] = 255
    return mask


def _slow_normalize(image_hwc):
    """Per-pixel reference of (x / 255 - mean) / std, returned 3 x H x W."""
    h, w, _ = image_hwc.shape
    out = torch.empty(3, h, w)
    for c in range(3):
        for y in range(h):
            for x in range(w):
                out[c, y, x] = (image_hwc[y, x, c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    return out


def test_normalize_matches_loop_and_denormalize_inverts():
    image = _image(4, 5)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    normed = normalize(tensor)
    assert normed.dtype == torch.float32
    torch.testing.assert_close(normed, _slow_normalize(image), rtol=0, atol=1e-5)
    assert torch.equal(denormalize(normed), tensor)
    batch = torch.stack([normed, normed])
    assert denormalize(batch).shape == (2, 3, 4, 5)


def test_train_output_shapes_and_dtypes():
    transform = TrainTransform((8, 12), seed=0)
    image, label, extra = transform(_image(), _mask(), _mask(seed=5))
    assert image.shape == (3, 8, 12) and image.dtype == torch.float32
    assert label.shape == (8, 12) and label.dtype == torch.int64
    assert extra.shape == (8, 12) and extra.dtype == torch.int64


def test_crop_is_a_window_of_the_input_found_by_exhaustive_search():
    """scale 1, no flip, no jitter: the output must be exactly one window of the input."""
    image, mask = _image(), _mask()
    transform = TrainTransform((6, 10), scale_range=(1.0, 1.0), flip=False, jitter=0.0, seed=3)
    offsets = set()
    for _ in range(8):
        out_image, out_mask = transform(image, mask)
        pixels = denormalize(out_image).permute(1, 2, 0).numpy()
        matches = [
            (top, left)
            for top in range(16 - 6 + 1)
            for left in range(32 - 10 + 1)
            if np.array_equal(image[top:top + 6, left:left + 10], pixels)
        ]
        assert len(matches) == 1
        top, left = matches[0]
        assert np.array_equal(out_mask.numpy(), mask[top:top + 6, left:left + 10])
        offsets.add(matches[0])
    assert len(offsets) > 1  # the crop position is random


def test_padding_uses_zero_image_and_ignore_mask():
    image, mask = _image(4, 6), _mask(4, 6)
    transform = TrainTransform((10, 9), scale_range=(1.0, 1.0), flip=False, jitter=0.0, seed=0)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 10, 9)
    assert np.array_equal(out_mask[:4, :6].numpy(), mask)
    assert (out_mask[4:] == 255).all() and (out_mask[:, 6:] == 255).all()
    assert (denormalize(out_image)[:, 4:] == 0).all()
    assert np.array_equal(denormalize(out_image)[:, :4, :6].permute(1, 2, 0).numpy(), image)


def test_openseg_padding_is_the_mean_colour_after_jitter_and_flip():
    """pad_fill="mean": the padded pixels are 0 after normalising (openseg pads in its collate),
    brightness / colour jitter do not reach them, and the image's own pixels are those of the
    black padding run with the same draws."""
    image, mask = _image(4, 6), _mask(4, 6)
    kwargs = dict(scale_range=(1.0, 1.0), flip=True, jitter=0.3, hue_jitter=0.1, brightness_shift=10)
    for seed in range(4):  # flips both ways
        black = TrainTransform((10, 9), seed=seed, **kwargs)(image, mask)
        mean = TrainTransform((10, 9), pad_fill="mean", seed=seed, **kwargs)(image, mask)
        assert torch.equal(black[1], mean[1])
        pad = (mean[1] == 255)
        assert pad.sum() == 10 * 9 - 4 * 6
        assert (mean[0][:, pad] == 0).all() and (black[0][:, pad] != 0).any()
        assert torch.equal(mean[0][:, ~pad], black[0][:, ~pad])


def test_openseg_bicubic_resize_is_opencvs_inter_cubic():
    """resize_interpolation="bicubic" resizes like cv2.INTER_CUBIC (openseg; both cubic with a = -0.75,
    no antialiasing) within one grey level."""
    cv2 = pytest.importorskip("cv2")
    image, mask = _image(40, 60), _mask(40, 60)
    transform = TrainTransform((24, 36), scale_range=(0.6, 0.6), flip=False, jitter=0.0,
                               resize_interpolation="bicubic", seed=0)
    out, _ = transform(image, mask)
    want = cv2.resize(image, (36, 24), interpolation=cv2.INTER_CUBIC)
    got = denormalize(out).permute(1, 2, 0).numpy().astype(np.int16)
    assert np.abs(got - want.astype(np.int16)).max() <= 1
    with pytest.raises(ValueError, match="resize_interpolation must be 'bilinear' or 'bicubic', got 'area'"):
        TrainTransform((4, 4), resize_interpolation="area")
    with pytest.raises(ValueError, match="pad_fill must be 'black' or 'mean', got 'grey'"):
        TrainTransform((4, 4), pad_fill="grey")


def test_custom_ignore_index_pads_with_it():
    transform = TrainTransform((6, 8), scale_range=(1.0, 1.0), flip=False, jitter=0.0, ignore_index=99, seed=0)
    _, out_mask = transform(_image(4, 4), np.zeros((4, 4), np.uint8))
    assert set(out_mask.unique().tolist()) == {0, 99}


def test_flip_moves_image_and_mask_together():
    """The image's red channel encodes the mask; it must still do so after any flip."""
    mask = _mask(8, 12, values=(1, 2, 3, 4, 5))
    image = np.zeros((8, 12, 3), np.uint8)
    image[..., 0] = np.where(mask == 255, 0, mask * 20)
    image[..., 1] = np.arange(12, dtype=np.uint8)[None, :] * 10  # a horizontal ramp reveals flips
    transform = TrainTransform((8, 12), scale_range=(1.0, 1.0), flip=True, jitter=0.0, seed=0)
    flipped = kept = 0
    for _ in range(20):
        out_image, out_mask = transform(image, mask)
        pixels = denormalize(out_image).permute(1, 2, 0).numpy()
        expected_red = np.where(out_mask.numpy() == 255, 0, out_mask.numpy() * 20)
        assert np.array_equal(pixels[..., 0], expected_red)
        if np.array_equal(pixels[..., 1], image[..., 1][:, ::-1]):
            flipped += 1
            assert np.array_equal(out_mask.numpy(), mask[:, ::-1])
        else:
            kept += 1
            assert np.array_equal(out_mask.numpy(), mask)
    assert flipped > 0 and kept > 0


def test_no_flip_when_disabled():
    image, mask = _image(8, 12), _mask(8, 12)
    transform = TrainTransform((8, 12), scale_range=(1.0, 1.0), flip=False, jitter=0.0)
    for seed in range(10):
        _, out_mask = transform(image, mask, generator=torch.Generator().manual_seed(seed))
        assert np.array_equal(out_mask.numpy(), mask)


@pytest.mark.parametrize("scale_range", [(0.3, 0.7), (1.3, 2.5), (0.5, 2.0)])
def test_mask_values_are_never_interpolated(scale_range):
    mask = _mask(values=(3, 7, 11))
    transform = TrainTransform((12, 20), scale_range=scale_range, jitter=0.2, seed=1)
    for _ in range(10):
        _, out_mask, out_extra = transform(_image(), mask, mask)
        assert set(out_mask.unique().tolist()) <= {3, 7, 11, 255}
        assert torch.equal(out_mask, out_extra)


def _interior(mask, radius=2):
    """Pixels whose (2 radius + 1)^2 neighbourhood holds a single label (slow loop)."""
    h, w = mask.shape
    inside = np.zeros((h, w), bool)
    for y in range(radius, h - radius):
        for x in range(radius, w - radius):
            window = mask[y - radius:y + radius + 1, x - radius:x + radius + 1]
            inside[y, x] = (window == mask[y, x]).all()
    return inside


def test_image_and_mask_stay_aligned_after_scaling():
    """Blocks of constant colour per class: away from block edges, colour and label agree exactly."""
    classes = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], np.uint8)
    mask = np.kron(classes, np.ones((8, 8), np.uint8))  # 16 x 32, 8 x 8 blocks
    image = np.stack([mask * 30, 255 - mask * 30, np.full_like(mask, 128)], axis=-1).astype(np.uint8)
    transform = TrainTransform((24, 24), scale_range=(1.5, 2.0), jitter=0.0, seed=2)
    for _ in range(5):
        out_image, out_mask = transform(image, mask)
        red = denormalize(out_image)[0].numpy().astype(np.int64)
        labels = out_mask.numpy()
        inside = _interior(labels) & (labels != 255)
        assert inside.sum() > 50
        assert (np.abs(red - labels * 30)[inside] <= 1).all()


def test_jitter_changes_image_only():
    image, mask = _image(), _mask()
    plain = TrainTransform((16, 32), scale_range=(1.0, 1.0), flip=False, jitter=0.0)
    jittered = TrainTransform((16, 32), scale_range=(1.0, 1.0), flip=False, jitter=0.4)
    a_image, a_mask = plain(image, mask, generator=torch.Generator().manual_seed(0))
    b_image, b_mask = jittered(image, mask, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a_image, _slow_normalize(image), rtol=0, atol=1e-5)
    assert not torch.allclose(a_image, b_image)
    assert torch.equal(a_mask, b_mask)


def test_seed_and_generator_make_it_deterministic():
    image, mask = _image(), _mask()
    first = TrainTransform((8, 12), seed=7)(image, mask)
    second = TrainTransform((8, 12), seed=7)(image, mask)
    other = TrainTransform((8, 12), seed=8)(image, mask)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    unseeded = TrainTransform((8, 12))
    g1 = unseeded(image, mask, generator=torch.Generator().manual_seed(3))
    g2 = unseeded(image, mask, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    torch.manual_seed(11)
    global1 = unseeded(image, mask)
    torch.manual_seed(11)
    global2 = unseeded(image, mask)
    assert all(torch.equal(a, b) for a, b in zip(global1, global2))


def test_base_size_sets_the_scale_reference():
    transform = TrainTransform((10, 20), scale_range=(1.0, 1.0), flip=False, jitter=0.0, base_size=(10, 20), seed=0)
    image, mask = transform(_image(16, 32), _mask(16, 32))
    assert image.shape == (3, 10, 20)  # resized to 10 x 20 exactly, so the crop is the whole image
    assert set(mask.unique().tolist()) <= {3, 7, 11, 255}


def test_pil_inputs_are_accepted():
    image, mask = _image(), _mask()
    out = EvalTransform()(Image.fromarray(image), Image.fromarray(mask))
    assert torch.equal(out[1], torch.from_numpy(mask).long())
    torch.testing.assert_close(out[0], _slow_normalize(image), rtol=0, atol=1e-5)


def test_eval_resize_short_side_and_fixed_size():
    image, mask = _image(16, 32), _mask(16, 32)
    out_image, out_mask = EvalTransform(resize=8)(image, mask)
    assert out_image.shape == (3, 8, 16) and out_mask.shape == (16, 32)  # label keeps its resolution
    assert torch.equal(out_mask, torch.from_numpy(mask).long())
    out_image, out_mask = EvalTransform(resize=(12, 20), resize_label=True)(image, mask)
    assert out_image.shape == (3, 12, 20) and out_mask.shape == (12, 20)
    assert set(out_mask.unique().tolist()) <= {3, 7, 11, 255}
    assert EvalTransform(resize=8).output_size(30, 10) == (24, 8)


def test_eval_nearest_upscale_by_two_repeats_pixels():
    mask = _mask(4, 6)
    _, out_mask = EvalTransform(resize=(8, 12), resize_label=True)(_image(4, 6), mask)
    assert np.array_equal(out_mask.numpy(), np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="crop_size"):
        TrainTransform((0, 4))
    with pytest.raises(ValueError, match="scale_range"):
        TrainTransform(8, scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="jitter"):
        TrainTransform(8, jitter=1.5)
    with pytest.raises(ValueError, match="ignore_index"):
        TrainTransform(8, ignore_index=300)
    with pytest.raises(ValueError, match="std"):
        EvalTransform(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="resize"):
        EvalTransform(resize=0)
    transform = TrainTransform(8)
    with pytest.raises(ValueError, match=r"mask 0 is 8x8 but image is 16x32"):
        transform(_image(), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="image must be uint8"):
        transform(_image().astype(np.float32), _mask())
    with pytest.raises(ValueError, match=r"image must be H x W x 3"):
        transform(_image()[..., 0], _mask())
    with pytest.raises(ValueError, match=r"mask values must be in \[0, 255\]"):
        transform(_image(), np.full((16, 32), 300, np.int64))
    with pytest.raises(ValueError, match="integer labels"):
        mask_to_tensor(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="image must be a numpy array or PIL image"):
        transform([[1, 2]], _mask())


def test_pickled_seeded_transform_continues_the_same_random_stream():
    import pickle

    image, mask = _image(), _mask()
    transform = TrainTransform((8, 12), seed=4)
    transform(image, mask)  # advance the stream once
    copy = pickle.loads(pickle.dumps(transform))
    assert isinstance(copy.generator, torch.Generator)
    for _ in range(3):
        a, b = transform(image, mask), copy(image, mask)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
