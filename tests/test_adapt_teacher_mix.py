"""Mean-teacher EMA against a loop, ClassMix masks and mixing, the adaptation cross-entropies."""

from __future__ import annotations

import math

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contraseg.adapt.losses import masked_cross_entropy, weighted_cross_entropy
from contraseg.adapt.mean_teacher import MeanTeacher, ema_momentum
from contraseg.adapt.mixing import class_mix_masks, mix


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return {"logits": self.bn(self.conv(x))}


def perturb(net: Net, seed: int) -> None:
    """A fake optimiser step plus a BatchNorm statistics update."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    net.train()
    net(torch.randn(2, 3, 5, 5, generator=g))


@pytest.mark.parametrize("buffers", ["ema", "copy"])
def test_ema_matches_a_loop(buffers):
    student = Net()
    teacher = MeanTeacher(student, momentum=0.6, buffers=buffers)
    expected = {k: v.clone().double() for k, v in student.state_dict().items()}
    alphas = []
    for step in range(1, 6):
        perturb(student, step)
        alphas.append(teacher.update(student, step))
        a = min(1 - 1 / (step + 1), 0.6)
        for name, value in student.state_dict().items():
            is_param = name in dict(student.named_parameters())
            if value.is_floating_point() and (is_param or buffers == "ema"):
                expected[name] = a * expected[name] + (1 - a) * value.double()
            else:
                expected[name] = value.clone().double()
    assert alphas == [0.5, 0.6, 0.6, 0.6, 0.6]
    for name, value in teacher.model.state_dict().items():
        assert torch.allclose(value.double(), expected[name], atol=1e-6), name
    assert int(teacher.model.bn.num_batches_tracked) == 5  # integer buffers are copied
    assert not any(p.requires_grad for p in teacher.parameters())


def test_teacher_is_the_average_during_warm_start_and_stays_in_eval_mode():
    student = Net()
    teacher = MeanTeacher(student, momentum=0.999)
    iterates = [student.conv.weight.detach().clone()]
    for step in range(1, 4):
        perturb(student, 10 + step)
        iterates.append(student.conv.weight.detach().clone())
        teacher.update(student, step)
    assert torch.allclose(teacher.model.conv.weight, torch.stack(iterates).mean(0), atol=1e-6)
    teacher.train()
    assert not teacher.model.training and teacher.model.bn.training is False
    out = teacher(torch.randn(1, 3, 5, 5))
    assert not out["logits"].requires_grad
    assert ema_momentum(1, 0.9) == 0.5 and ema_momentum(100, 0.9) == 0.9
    with pytest.raises(ValueError, match="step must be >= 1"):
        ema_momentum(0, 0.9)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        MeanTeacher(student, momentum=1.0)
    with pytest.raises(ValueError, match="buffers must be 'ema' or 'copy', got 'freeze'"):
        MeanTeacher(student, buffers="freeze")


def test_wdass_teacher_fixed_momentum_and_batch_statistics():
    """warm_start=False blends with m from the first step (WDASS's release); batch_norm="batch"
    predicts in train mode: BatchNorm normalises with the batch's own statistics."""
    student = Net()
    teacher = MeanTeacher(student, momentum=0.6, warm_start=False, batch_norm="batch")
    before = teacher.model.conv.weight.detach().clone()
    perturb(student, 3)
    assert teacher.update(student, 1) == 0.6
    assert torch.allclose(teacher.model.conv.weight, 0.6 * before + 0.4 * student.conv.weight.detach(), atol=1e-6)
    teacher.eval()
    teacher.train()
    assert teacher.model.training and teacher.model.bn.training
    x = torch.randn(4, 3, 5, 5) * 3 + 2
    by_batch = copy.deepcopy(teacher.model).train()
    with torch.no_grad():
        want = by_batch(x)["logits"]
    assert torch.allclose(teacher(x)["logits"], want, atol=1e-6)
    running = MeanTeacher(student, momentum=0.6)
    assert not torch.allclose(running(x)["logits"], MeanTeacher(student, batch_norm="batch")(x)["logits"], atol=1e-3)
    with pytest.raises(ValueError, match="batch_norm must be 'running' or 'batch', got 'frozen'"):
        MeanTeacher(student, batch_norm="frozen")


def test_class_mix_masks_take_half_the_source_classes():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (4, 6, 7), generator=g)
    labels[0] = 255  # nothing to paste
    labels[1, :, :3] = 255
    labels[2] = torch.where(labels[2] < 2, labels[2], torch.full_like(labels[2], 1))  # two classes: paste one
    masks = class_mix_masks(labels, torch.Generator().manual_seed(5))
    assert masks.dtype == torch.bool and masks.shape == labels.shape
    assert not masks[0].any()
    for i in range(1, 4):
        present = sorted(set(labels[i].unique().tolist()) - {255})
        chosen = sorted(set(labels[i][masks[i]].unique().tolist()))
        assert len(chosen) == math.ceil(len(present) / 2) and set(chosen) <= set(present)
        assert torch.equal(masks[i], torch.isin(labels[i], torch.tensor(chosen)))  # whole classes
        assert not masks[i][labels[i] == 255].any()
    again = class_mix_masks(labels, torch.Generator().manual_seed(5))
    assert torch.equal(masks, again)


def test_mix_images_labels_and_weights():
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 4, 5, generator=g) > 0.5
    source, target = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    mixed = mix(mask, source, target)
    for b in range(2):
        for y in range(4):
            for x in range(5):
                want = source[b, :, y, x] if mask[b, y, x] else target[b, :, y, x]
                assert torch.equal(mixed[b, :, y, x], want)
    labels = mix(mask, torch.zeros(2, 4, 5, dtype=torch.long), torch.ones(2, 4, 5, dtype=torch.long))
    assert torch.equal(labels, (~mask).long())
    weights = mix(mask, torch.ones(2, 4, 5), torch.full((2, 4, 5), 0.3))
    assert torch.equal(weights == 1.0, mask)
    with pytest.raises(ValueError, match=r"mask \(2, 5\) must be B x H x W of \(2, 3, 4, 5\)"):
        mix(mask[:, 0], source, target)
    with pytest.raises(ValueError, match=r"source_labels must be an integer B x H x W tensor, got shape \(2, 3\)"):
        class_mix_masks(torch.zeros(2, 3), torch.Generator())


def test_weighted_and_masked_cross_entropy_match_loops():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (2, 6, 10), generator=g)
    labels[0, :2] = 255
    weights = torch.rand(2, 6, 10, generator=g, dtype=torch.float64)
    up = F.interpolate(logits, size=(6, 10), mode="bilinear", align_corners=False)
    log_probs = up.log_softmax(1)
    total, weighted, count = 0.0, 0.0, 0
    for b in range(2):
        for y in range(6):
            for x in range(10):
                k = int(labels[b, y, x])
                if k != 255:
                    total += -log_probs[b, k, y, x]
                    weighted += -log_probs[b, k, y, x] * weights[b, y, x]
                    count += 1
    assert torch.allclose(masked_cross_entropy(logits, labels), total / count)
    assert torch.allclose(weighted_cross_entropy(logits, labels, weights), weighted / labels.numel())
    assert torch.allclose(weighted_cross_entropy(logits, labels, weights, over="labelled"), weighted / count)
    with pytest.raises(ValueError, match="over must be 'all' or 'labelled', got 'pixels'"):
        weighted_cross_entropy(logits, labels, weights, over="pixels")
    empty = masked_cross_entropy(logits, torch.full_like(labels, 255))
    assert empty.item() == 0.0
    empty.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)
    with pytest.raises(ValueError, match=r"weights \(2, 6\) must have the shape of labels \(2, 6, 10\)"):
        weighted_cross_entropy(logits, labels, weights[:, :, 0])


# ------------------------------------------------------------------ photometric augmentation of mixed images


def _released_kernel_size(side: int) -> int:
    import numpy as np

    return int(np.floor(np.ceil(0.1 * side) - 0.5 + np.ceil(0.1 * side) % 2))


def _gaussian_blur_loop(image: torch.Tensor, kernel: tuple[int, int], sigma: float) -> torch.Tensor:
    """Separable Gaussian (taps exp(-d^2 / 2 sigma^2), normalised), reflected borders; kernel (ky, kx)."""
    out = image.double().clone()
    for axis, size in ((1, kernel[0]), (2, kernel[1])):
        half = size // 2
        taps = [math.exp(-(d * d) / (2 * sigma * sigma)) for d in range(-half, half + 1)]
        total = sum(taps)
        n = out.shape[axis]
        blurred = torch.zeros_like(out)
        for i in range(n):
            for j, tap in enumerate(taps):
                k = i + j - half
                k = -k if k < 0 else (2 * (n - 1) - k if k >= n else k)  # reflect
                blurred.select(axis, i).add_(out.select(axis, k) * tap / total)
        out = blurred
    return out


def test_blur_kernel_size_is_the_released_one():
    from contraseg.adapt.photometric import blur_kernel_size

    for side in list(range(1, 60)) + [64, 128, 512, 1024, 2048]:
        assert blur_kernel_size(side) == _released_kernel_size(side), side


def test_mixed_image_blur_matches_a_gaussian_loop_and_jitter_keeps_images_valid():
    from contraseg.adapt.photometric import MixPhotometric
    from contraseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    plain = torch.rand(2, 3, 30, 44)
    images = (plain - mean) / std
    blur_only = MixPhotometric(IMAGENET_MEAN, IMAGENET_STD, jitter_probability=0.0, blur_probability=1.0)
    out = blur_only(images, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    torch.rand((), generator=g), torch.rand((), generator=g)  # the two per-step draws
    sigmas = []
    for i in range(2):
        sigma = 0.15 + float(torch.rand((), generator=g))
        ref = _gaussian_blur_loop(images[i], (3, 5), sigma)  # ceil(3.0) = 3, ceil(4.4) = 5
        sigmas.append(sigma)
        assert torch.allclose(out[i].double(), ref, atol=1e-5)
    assert max(sigmas) > 0.8  # wide enough for the 5-tap axis to matter
    assert torch.equal(MixPhotometric(IMAGENET_MEAN, IMAGENET_STD, 0.0, 0.25, 0.0)(images, g), images)
    no_change = MixPhotometric(IMAGENET_MEAN, IMAGENET_STD, jitter_probability=1.0, strength=0.0, blur_probability=0.0)
    assert torch.allclose(no_change(images, torch.Generator().manual_seed(1)), images, atol=1e-5)
    jitter = MixPhotometric(IMAGENET_MEAN, IMAGENET_STD, jitter_probability=1.0, blur_probability=0.0)
    first = jitter(images, torch.Generator().manual_seed(2))
    again = jitter(images, torch.Generator().manual_seed(2))
    restored = first * std + mean
    assert torch.equal(first, again) and not torch.allclose(first, images, atol=1e-3)
    assert restored.min() >= -1e-5 and restored.max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="strength must be in"):
        MixPhotometric(IMAGENET_MEAN, IMAGENET_STD, strength=0.7)


def test_mixed_image_augmentation_probabilities_are_the_released_ones():
    from contraseg.adapt.photometric import MixPhotometric

    aug = MixPhotometric((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    images = torch.zeros(1, 3, 20, 20)
    calls = {"jitter": 0, "blur": 0}
    aug.jitter = lambda x, g: calls.__setitem__("jitter", calls["jitter"] + 1) or x  # type: ignore[method-assign]
    aug.blur = lambda x, g: calls.__setitem__("blur", calls["blur"] + 1) or x  # type: ignore[method-assign]
    for seed in range(2000):
        aug(images, torch.Generator().manual_seed(seed))
    assert abs(calls["jitter"] / 2000 - 0.8) < 0.04 and abs(calls["blur"] / 2000 - 0.5) < 0.04
