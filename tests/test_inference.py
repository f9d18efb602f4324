"""Tests of contraseg.engine.inference: whole / slide, multi-scale and flip averaging."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.engine.inference import predict_labels, predict_logits, window_starts


K = 4


class Pointwise(nn.Module):
    """A 1x1 conv "segmentor": translation- and flip-equivariant, output stride 1."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, K, 1)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"logits": self.conv(images), "embed": images}


class Strided(nn.Module):
    """3x3 conv then 2x2 average pooling: output stride 2, not translation-equivariant
    at window borders, not flip-symmetric (random kernel)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, K, 3, padding=1)

    def forward(self, images: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(images), 2, ceil_mode=True)


def _whole_reference(model: nn.Module, images: Tensor) -> Tensor:
    out = model(images)
    logits = out["logits"] if isinstance(out, dict) else out
    logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)


def _slide_reference(
    model: nn.Module, images: Tensor, crop: tuple[int, int], stride: tuple[int, int]
) -> Tensor:
    """Per pixel: the mean of the softmax of every window that contains it (NaN-mean over
    a stack of full-size maps, NaN outside each window). Windows start at 0, stride, ...
    while the window fits, plus one window ending at the border."""
    _, _, h, w = images.shape

    def starts(size: int, c: int, s: int) -> list[int]:
        out = list(range(0, size - c, s)) + [size - c]
        return sorted(set(out))

    maps = []
    for top in starts(h, crop[0], stride[0]):
        for left in starts(w, crop[1], stride[1]):
            probs = _whole_reference(model, images[:, :, top : top + crop[0], left : left + crop[1]])
            full = torch.full((images.shape[0], K, h, w), float("nan"))
            full[:, :, top : top + crop[0], left : left + crop[1]] = probs
            maps.append(full)
    return torch.stack(maps).nanmean(dim=0)


def test_window_starts_cover_the_axis_and_end_at_the_border() -> None:
    assert window_starts(10, 10, 3) == [0]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(12, 4, 4) == [0, 4, 8]
    for size, crop, stride in [(23, 8, 5), (19, 19, 7), (50, 13, 13), (9, 4, 1)]:
        covered = set()
        for s in window_starts(size, crop, stride):
            covered |= set(range(s, s + crop))
            assert 0 <= s <= size - crop
        assert covered == set(range(size))


def test_whole_is_upsampled_softmax() -> None:
    model, images = Strided(), torch.randn(2, 3, 13, 10)
    out = predict_logits(model, images)
    assert out.shape == (2, K, 13, 10)
    torch.testing.assert_close(out, _whole_reference(model, images))
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 13, 10))


def test_slide_matches_slow_reference() -> None:
    model, images = Strided(), torch.randn(2, 3, 19, 23)
    out = predict_logits(model, images, mode="slide", crop_size=(8, 10), stride=(5, 7))
    torch.testing.assert_close(out, _slide_reference(model, images, (8, 10), (5, 7)))
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 19, 23))


def test_slide_with_crop_equal_to_image_equals_whole() -> None:
    model, images = Strided(), torch.randn(1, 3, 12, 16)
    whole = predict_logits(model, images, mode="whole")
    slide = predict_logits(model, images, mode="slide", crop_size=(12, 16), stride=(5, 5))
    torch.testing.assert_close(slide, whole)


@pytest.mark.parametrize(("crop", "stride"), [((8, 8), (5, 3)), ((7, 11), (7, 11)), (6, None)])
def test_translation_equivariant_model_slide_equals_whole(crop, stride) -> None:
    model, images = Pointwise(), torch.randn(2, 3, 19, 23)
    whole = predict_logits(model, images, mode="whole")
    slide = predict_logits(model, images, mode="slide", crop_size=crop, stride=stride)
    torch.testing.assert_close(slide, whole)


def test_image_smaller_than_crop_is_padded() -> None:
    model, images = Pointwise(), torch.randn(1, 3, 10, 12)
    slide = predict_logits(model, images, mode="slide", crop_size=(16, 16), stride=(8, 8))
    assert slide.shape == (1, K, 10, 12)
    torch.testing.assert_close(slide, predict_logits(model, images))

    seen = []
    model_strided = Strided()

    def spy(x: Tensor) -> Tensor:
        seen.append(tuple(x.shape[-2:]))
        return model_strided(x)

    predict_logits(spy, images, mode="slide", crop_size=(16, 14), stride=(8, 8))
    assert seen == [(16, 14)]  # padded to the crop, one window


def test_flip_on_symmetric_model_changes_nothing() -> None:
    model, images = Pointwise(), torch.randn(2, 3, 9, 14)
    torch.testing.assert_close(predict_logits(model, images, flip=True), predict_logits(model, images))


def test_flip_averages_with_flipped_back_prediction() -> None:
    model, images = Strided(), torch.randn(2, 3, 9, 14)
    expected = 0.5 * (_whole_reference(model, images) + _whole_reference(model, images.flip(-1)).flip(-1))
    out = predict_logits(model, images, flip=True)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, _whole_reference(model, images))


def test_multi_scale_averages_resized_predictions() -> None:
    model, images = Strided(), torch.randn(1, 3, 16, 20)
    half = F.interpolate(images, size=(8, 10), mode="bilinear", align_corners=False)
    big = F.interpolate(images, size=(24, 30), mode="bilinear", align_corners=False)
    parts = [_whole_reference(model, images)]
    for scaled in (half, big):
        probs = _whole_reference(model, scaled)
        parts.append(F.interpolate(probs, size=(16, 20), mode="bilinear", align_corners=False))
    out = predict_logits(model, images, scales=(1.0, 0.5, 1.5))
    torch.testing.assert_close(out, sum(parts) / 3)


def test_multi_scale_slide_with_flip_shapes_and_normalisation() -> None:
    model, images = Strided(), torch.randn(2, 3, 20, 18)
    out = predict_logits(model, images, mode="slide", crop_size=12, stride=8, scales=(0.75, 1.25), flip=True)
    assert out.shape == (2, K, 20, 18)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 20, 18))


def test_raw_logit_averaging_and_labels() -> None:
    model, images = Pointwise(), torch.randn(1, 3, 6, 7)
    raw = predict_logits(model, images, softmax=False)
    torch.testing.assert_close(raw, model.conv(images).detach())
    labels = predict_labels(model, images, mode="slide", crop_size=4, stride=2)
    assert labels.dtype == torch.long and labels.shape == (1, 6, 7)
    assert torch.equal(labels, model.conv(images).argmax(dim=1))


def test_segmentor_inference() -> None:
    from contraseg.models import build_segmentor

    model = build_segmentor("resnet18", "fcn", num_classes=3, embed_dim=8).eval()
    images = torch.randn(1, 3, 40, 36)
    whole = predict_logits(model, images)
    slide = predict_logits(model, images, mode="slide", crop_size=(32, 32), stride=(24, 24))
    assert whole.shape == slide.shape == (1, 3, 40, 36)
    torch.testing.assert_close(slide.sum(dim=1), torch.ones(1, 40, 36))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "tile"}, r"mode must be one of \('whole', 'slide'\), got 'tile'"),
        ({"mode": "slide"}, "mode='slide' needs crop_size, got None"),
        (
            {"mode": "slide", "crop_size": (4, 0)},
            r"crop_size must be a positive int or \(h, w\) of positive ints, got \(4, 0\)",
        ),
        ({"mode": "slide", "crop_size": 4, "stride": (2, 2, 2)}, "stride must be a positive int or"),
        ({"mode": "slide", "crop_size": 4, "stride": 5}, r"stride \(5, 5\) is larger than crop_size \(4, 4\)"),
        ({"scales": ()}, "scales must be a non-empty sequence of positive numbers"),
        ({"scales": (1.0, -0.5)}, "scales must be a non-empty sequence of positive numbers"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predict_logits(Pointwise(), torch.randn(1, 3, 8, 8), **kwargs)


def test_bad_images_and_model_outputs() -> None:
    with pytest.raises(ValueError, match=r"images must be a floating B x C x H x W tensor, got \(3, 8, 8\)"):
        predict_logits(Pointwise(), torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match=r"model output has no 'logits' key: keys \['embed'\]"):
        predict_logits(lambda x: {"embed": x}, torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"model must return B x K x h x w logits, got \(1, 3\)"):
        predict_logits(lambda x: x.mean(dim=(2, 3)), torch.randn(1, 3, 8, 8))
