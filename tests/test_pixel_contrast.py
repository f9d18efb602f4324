"""Tests for the ContrastiveSeg pixel-to-pixel contrastive loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contraseg.losses import PixelContrastLoss
from contraseg.losses.memory_contrast import default_block_size, memory_contrast
from contraseg._labels import resize_labels
from contraseg.sampling import AnchorSamples, HardAnchorSampler, LoopAnchorSampler, PixelMemoryBank


def reference_loss(anchors, anchor_labels, contrast, contrast_labels, t, t_base, exclude_self):
    """The formula with Python loops over anchors, positives and negatives."""
    losses = []
    for a in range(anchors.shape[0]):
        positives, negatives = [], []
        for c in range(contrast.shape[0]):
            if exclude_self and c == a:
                continue
            (positives if contrast_labels[c] == anchor_labels[a] else negatives).append(c)
        if not positives:
            continue
        negative_sum = sum(torch.exp(anchors[a] @ contrast[n] / t) for n in negatives) if negatives else 0.0
        terms = []
        for p in positives:
            s_ap = anchors[a] @ contrast[p] / t
            terms.append(s_ap - torch.log(torch.exp(s_ap) + negative_sum))
        losses.append(-(t / t_base) * sum(terms) / len(terms))
    return sum(losses) / len(losses)


def make_inputs(batch=2, dim=4, h=6, w=6, num_classes=3, seed=0, dtype=torch.float64, label_scale=1):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, dim, h, w, generator=g, dtype=dtype)
    small = torch.randint(0, num_classes, (batch, h // 2, w // 2), generator=g)
    labels = small.repeat_interleave(2 * label_scale, 1).repeat_interleave(2 * label_scale, 2)
    wrong = torch.randint(0, num_classes, labels.shape, generator=g)
    preds = torch.where(torch.rand(labels.shape, generator=g) < 0.6, labels, wrong)
    return embeddings.requires_grad_(), labels, preds


def anchor_features(embeddings, samples):
    flat = embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])
    return F.normalize(flat[samples.index.reshape(-1)], dim=1), samples.anchor_labels()


def filled_bank(num_classes=3, dim=4, seed=1, dtype=torch.float64, pixel_size=7):
    g = torch.Generator().manual_seed(seed)
    bank = PixelMemoryBank(num_classes, dim, pixel_size=pixel_size, segment_size=3, pixels_per_image=3).to(dtype)
    embeddings = torch.randn(3, dim, 4, 4, generator=g)
    bank.enqueue(embeddings, torch.randint(0, num_classes, (3, 4, 4), generator=g), generator=g)
    return bank


# ----------------------------------------------------------------------------- against the formula


@pytest.mark.parametrize("label_scale", [1, 2])  # labels on the embedding grid, or twice as large
def test_self_contrast_matches_loop_reference(label_scale):
    embeddings, labels, preds = make_inputs(label_scale=label_scale)
    loss_fn = PixelContrastLoss(temperature=0.1, base_temperature=0.07, max_samples=40, max_views=3)
    small_labels = resize_labels(labels, embeddings.shape[-2:])
    small_preds = resize_labels(preds, embeddings.shape[-2:])
    samples = loss_fn.sampler(small_labels, small_preds, generator=torch.Generator().manual_seed(0))
    assert samples.num_pairs >= 3 and samples.num_views == 3

    loss = loss_fn(embeddings, labels, preds, samples=samples)
    (grad,) = torch.autograd.grad(loss, embeddings)
    anchors, anchor_labels = anchor_features(embeddings, samples)
    expected = reference_loss(anchors, anchor_labels, anchors, anchor_labels, 0.1, 0.07, exclude_self=True)
    (expected_grad,) = torch.autograd.grad(expected, embeddings)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=0)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("memory_impl", ["streaming", "dense"])
def test_memory_contrast_matches_loop_reference(memory_impl):
    embeddings, labels, preds = make_inputs(seed=3)
    bank = filled_bank()
    loss_fn = PixelContrastLoss(temperature=0.07, max_samples=30, max_views=3, memory=bank,
                                memory_impl=memory_impl, block_size=2)
    samples = loss_fn.sampler(labels, preds, generator=torch.Generator().manual_seed(0))

    loss = loss_fn(embeddings, labels, preds, samples=samples)
    (grad,) = torch.autograd.grad(loss, embeddings)
    anchors, anchor_labels = anchor_features(embeddings, samples)
    bank_feats, bank_labels = bank.contrast_set()
    assert bank_feats.shape[0] == len(bank) > 0
    expected = reference_loss(anchors, anchor_labels, bank_feats, bank_labels, 0.07, 0.07, exclude_self=False)
    (expected_grad,) = torch.autograd.grad(expected, embeddings)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("memory_impl", [None, "streaming", "dense"])
def test_gradcheck(memory_impl):
    embeddings, labels, preds = make_inputs(batch=1, dim=3, h=4, w=4, num_classes=2, seed=4)
    memory = filled_bank(num_classes=2, dim=3) if memory_impl else None
    loss_fn = PixelContrastLoss(temperature=0.5, max_samples=8, max_views=2, memory=memory,
                                memory_impl=memory_impl or "streaming", block_size=3)
    samples = loss_fn.sampler(labels, preds, generator=torch.Generator().manual_seed(0))
    assert samples.index.numel() > 0
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels, preds, samples=samples), (embeddings,))


def test_sampler_path_equals_precomputed_samples_path():
    embeddings, labels, preds = make_inputs(seed=5, label_scale=2)
    loss_fn = PixelContrastLoss(max_samples=20, max_views=4)
    via_sampler = loss_fn(embeddings, labels, preds, generator=torch.Generator().manual_seed(9))
    grid = embeddings.shape[-2:]
    samples = HardAnchorSampler(20, 4)(
        resize_labels(labels, grid), resize_labels(preds, grid), generator=torch.Generator().manual_seed(9)
    )
    assert loss_fn(embeddings, labels, preds, samples=samples) == via_sampler
    other_seed = loss_fn(embeddings, labels, preds, generator=torch.Generator().manual_seed(10))
    assert other_seed != via_sampler


def test_predictions_of_another_size_are_resized():
    embeddings, labels, preds = make_inputs(seed=6)
    loss_fn = PixelContrastLoss(max_samples=20, max_views=3)
    big_preds = preds.repeat_interleave(3, 1).repeat_interleave(3, 2)
    a = loss_fn(embeddings, labels, preds, generator=torch.Generator().manual_seed(0))
    b = loss_fn(embeddings, labels, big_preds, generator=torch.Generator().manual_seed(0))
    assert a == b


def test_loop_sampler_can_be_plugged_in():
    embeddings, labels, preds = make_inputs(seed=7)
    loss_fn = PixelContrastLoss(sampler=LoopAnchorSampler(max_samples=20, max_views=3))
    loss = loss_fn(embeddings, labels, preds, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss > 0


# ----------------------------------------------------------------------------- streaming = dense


def random_bank(num_classes, dim, pixel_size, segment_size, fills, seed, dtype=torch.float64):
    """A bank whose class k holds fills[k] = (pixel, segment) entries, some classes empty.

    Filled by enqueueing one-pixel images (so FIFO wraps where fills exceed the sizes).
    """
    g = torch.Generator().manual_seed(seed)
    bank = PixelMemoryBank(num_classes, dim, pixel_size=pixel_size, segment_size=segment_size,
                           pixels_per_image=1).to(dtype)
    for cls, (pixels, segments) in enumerate(fills):
        for kind, n in (("pixel", pixels), ("segment", segments)):
            if n:
                entries = F.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=1)
                queue, ptr, count = (getattr(bank, f"{kind}_{name}") for name in ("queue", "ptr", "count"))
                bank._push(queue, ptr, count, entries, torch.full((n,), cls))
    return bank


STREAMING_CASES = {
    # name: (bank fills per class (pixel, segment), block size)
    "all classes, wrapped queues": ([(9, 4), (5, 2), (12, 6), (3, 1)], 4),
    "classes with no entries": ([(6, 2), (0, 0), (0, 3), (4, 0)], 3),
    "one class in the bank": ([(0, 0), (7, 3), (0, 0), (0, 0)], 2),
    "one big block": ([(8, 5), (8, 5), (8, 5), (8, 5)], 1000),
}


@pytest.mark.parametrize("case", list(STREAMING_CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_equals_dense_in_float64(case, seed):
    fills, block = STREAMING_CASES[case]
    embeddings, labels, preds = make_inputs(batch=3, dim=5, h=8, w=8, num_classes=4, seed=seed, label_scale=2)
    labels[0, :5] = 255  # ignored pixels are never anchors
    bank = random_bank(4, 5, pixel_size=8, segment_size=5, fills=fills, seed=seed + 10)
    losses, grads = {}, {}
    for impl in ("streaming", "dense"):
        loss_fn = PixelContrastLoss(temperature=0.1, base_temperature=0.07, max_samples=40, max_views=4,
                                    memory=bank, memory_impl=impl, block_size=block)
        losses[impl] = loss_fn(embeddings, labels, preds, generator=torch.Generator().manual_seed(seed))
        (grads[impl],) = torch.autograd.grad(losses[impl], embeddings)
    if case != "one class in the bank":  # there: positives without negatives, loss 0
        assert losses["dense"] != 0 and grads["dense"].abs().sum() > 0
    torch.testing.assert_close(losses["streaming"], losses["dense"], atol=1e-8, rtol=0)
    torch.testing.assert_close(grads["streaming"], grads["dense"], atol=1e-8, rtol=0)


def test_streaming_anchors_without_positives_or_negatives():
    """Anchors of a class absent from the bank are left out; anchors whose class is the
    only one in the bank have loss 0 (no negatives) but still count in the mean."""
    g = torch.Generator().manual_seed(3)
    anchors = F.normalize(torch.randn(9, 4, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    anchor_labels = torch.tensor([0, 1, 2, 2, 1, 0, 3, 3, 2])
    bank = random_bank(4, 4, pixel_size=6, segment_size=3, fills=[(5, 2), (0, 0), (3, 0), (0, 0)], seed=4)
    (queues, counts) = bank.queues()
    loss = memory_contrast(anchors, anchor_labels, queues, counts, 0.2, 0.1, block_size=2)
    feats, feat_labels = bank.contrast_set()
    keep = torch.tensor([label in (0, 2) for label in anchor_labels.tolist()])
    expected = reference_loss(anchors[keep], anchor_labels[keep], feats, feat_labels, 0.2, 0.1, exclude_self=False)
    torch.testing.assert_close(loss, expected, atol=1e-10, rtol=0)
    (grad,) = torch.autograd.grad(loss, anchors)
    (expected_grad,) = torch.autograd.grad(expected, anchors)
    torch.testing.assert_close(grad, expected_grad, atol=1e-10, rtol=0)
    assert torch.equal(grad[~keep], torch.zeros_like(grad[~keep]))

    only = random_bank(4, 4, pixel_size=6, segment_size=3, fills=[(0, 0), (0, 0), (4, 1), (0, 0)], seed=5)
    loss = memory_contrast(anchors, anchor_labels, *only.queues(), 0.2, 0.1)
    assert float(loss.detach()) == 0.0  # positives but no negatives
    assert memory_contrast(anchors, anchor_labels, *random_bank(4, 4, 6, 3, [(0, 0)] * 4, 6).queues(), 0.2, 0.1) is None
    assert memory_contrast(anchors[:0], anchor_labels[:0], queues, counts, 0.2, 0.1) is None
    with pytest.raises(ValueError, match=r"anchor_labels has values in \[0, 4\], outside \[0, 4\) of the queues"):
        memory_contrast(anchors, anchor_labels.clamp(max=3) + (anchor_labels == 3), queues, counts, 0.2, 0.1)
    with pytest.raises(ValueError, match="block_size must be a positive int, got 0"):
        memory_contrast(anchors, anchor_labels, queues, counts, 0.2, 0.1, block_size=0)


def test_streaming_with_a_float32_bank_and_float64_anchors():
    embeddings, labels, preds = make_inputs(seed=11)
    bank = filled_bank(dtype=torch.float32)
    out = [PixelContrastLoss(max_samples=30, max_views=3, memory=bank, memory_impl=impl)(
        embeddings, labels, preds, generator=torch.Generator().manual_seed(0)) for impl in ("streaming", "dense")]
    assert out[0].dtype == torch.float64
    torch.testing.assert_close(out[0], out[1], atol=1e-6, rtol=0)  # the bank's float32 rounding


def test_streaming_detects_a_bank_changed_before_backward_and_enqueue_option_copies():
    embeddings, labels, preds = make_inputs(seed=12)
    bank = filled_bank(pixel_size=50)
    loss_fn = PixelContrastLoss(max_samples=20, max_views=3, memory=bank)
    loss = loss_fn(embeddings, labels, preds, generator=torch.Generator().manual_seed(0))
    bank.enqueue(embeddings.detach(), labels)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()

    reference_bank = filled_bank(pixel_size=50)
    expected = PixelContrastLoss(max_samples=20, max_views=3, memory=reference_bank)(
        embeddings, labels, preds, generator=torch.Generator().manual_seed(0))
    (expected_grad,) = torch.autograd.grad(expected, embeddings)
    enqueued = PixelContrastLoss(max_samples=20, max_views=3, memory=filled_bank(pixel_size=50))(
        embeddings, labels, preds, generator=torch.Generator().manual_seed(0), enqueue=True)
    (grad,) = torch.autograd.grad(enqueued, embeddings)
    assert torch.equal(grad, expected_grad)  # the backward saw the bank as it was


def test_default_block_size_keeps_the_similarity_buffer_near_64_mib():
    assert default_block_size(1024, torch.device("cpu")) == 16384  # 1024 x 16384 float32 = 64 MiB
    assert default_block_size(1024, torch.device("cuda"), element_size=8) == 8192
    assert default_block_size(10**6, torch.device("cpu")) == 256
    assert default_block_size(1, torch.device("cuda")) == 65536


# ----------------------------------------------------------------------------- edge cases


def assert_zero_with_gradient(loss, embeddings):
    assert loss.shape == () and float(loss.detach()) == 0.0
    (grad,) = torch.autograd.grad(loss, embeddings)
    assert torch.equal(grad, torch.zeros_like(embeddings))


def test_all_labels_ignored_gives_zero_with_gradient():
    embeddings, labels, preds = make_inputs()
    loss = PixelContrastLoss(max_views=2)(embeddings, torch.full_like(labels, 255), preds)
    assert_zero_with_gradient(loss, embeddings)


@pytest.mark.parametrize("with_memory", [False, True])
def test_one_class_only_gives_zero(with_memory):
    embeddings, labels, preds = make_inputs()
    one_class = torch.zeros_like(labels)
    memory = None
    if with_memory:
        memory = PixelMemoryBank(3, 4, pixel_size=5, segment_size=5).double()
        memory.enqueue(torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.zeros(2, 3, 3, dtype=torch.long))
    loss_fn = PixelContrastLoss(max_samples=20, max_views=3, memory=memory)
    loss = loss_fn(embeddings, one_class, preds)
    # positives but no negatives: s_ap - log(exp(s_ap)) = 0 for every anchor
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-12)
    (grad,) = torch.autograd.grad(loss, embeddings)
    assert torch.isfinite(grad).all()


def test_a_class_with_one_pixel_is_never_an_anchor():
    embeddings, _, _ = make_inputs()
    labels = torch.zeros(2, 6, 6, dtype=torch.long)
    labels[0, 0, 0] = 1
    labels[1, 5, 5] = 2
    loss_fn = PixelContrastLoss(max_samples=40, max_views=3)
    samples = loss_fn.sampler(labels, labels)
    assert samples.labels.tolist() == [0, 0]
    loss = loss_fn(embeddings, labels, labels, samples=samples)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-12)  # the class-0 anchors have no negative


def test_anchors_without_positives_give_zero_with_gradient():
    embeddings, _, _ = make_inputs()
    labels = torch.zeros(2, 6, 6, dtype=torch.long)
    labels[1] = 1
    samples = AnchorSamples(
        index=torch.tensor([[3], [40]]), labels=torch.tensor([0, 1]), image=torch.tensor([0, 1])
    )
    loss = PixelContrastLoss()(embeddings, labels, labels, samples=samples)
    assert_zero_with_gradient(loss, embeddings)


def test_empty_memory_bank_gives_zero_with_gradient():
    embeddings, labels, preds = make_inputs()
    bank = PixelMemoryBank(3, 4, pixel_size=5, segment_size=5)
    loss = PixelContrastLoss(max_samples=20, max_views=3, memory=bank)(embeddings, labels, preds)
    assert_zero_with_gradient(loss, embeddings)


def test_enqueue_option_adds_the_batch_after_the_loss():
    embeddings, labels, preds = make_inputs()
    bank = filled_bank(pixel_size=50)
    before = PixelContrastLoss(max_samples=20, max_views=3, memory=filled_bank(pixel_size=50))(
        embeddings, labels, preds, generator=torch.Generator().manual_seed(0)
    )
    size = len(bank)
    loss_fn = PixelContrastLoss(max_samples=20, max_views=3, memory=bank)
    loss = loss_fn(embeddings, labels, preds, enqueue=True, generator=torch.Generator().manual_seed(0))
    assert loss == before  # computed against the bank as it was
    assert len(bank) > size


def test_small_temperature_stays_finite():
    embeddings, labels, preds = make_inputs(dtype=torch.float32)
    loss = PixelContrastLoss(temperature=0.005, max_samples=40, max_views=3)(embeddings, labels, preds)
    (grad,) = torch.autograd.grad(loss, embeddings)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("memory_impl", [None, "streaming", "dense"])
def test_bf16_autocast_and_half_inputs_match_float32(memory_impl):
    embeddings, labels, preds = make_inputs(batch=2, dim=16, h=8, w=8, seed=8, dtype=torch.float32)
    embeddings = embeddings.detach()
    memory = filled_bank(dim=16, dtype=torch.float32) if memory_impl else None
    loss_fn = PixelContrastLoss(temperature=0.07, max_samples=64, max_views=8, memory=memory,
                                memory_impl=memory_impl or "streaming", block_size=4)
    samples = loss_fn.sampler(labels, preds, generator=torch.Generator().manual_seed(0))
    reference = loss_fn(embeddings, labels, preds, samples=samples)
    assert reference > 0

    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = loss_fn(embeddings, labels, preds, samples=samples)
    assert autocast.dtype == torch.float32
    assert abs(autocast.item() - reference.item()) < 1e-2

    for dtype in (torch.float16, torch.bfloat16):
        half = embeddings.to(dtype).requires_grad_()
        loss = loss_fn(half, labels, preds, samples=samples)
        assert loss.dtype == torch.float32  # half inputs are contrasted and returned in float32
        assert abs(loss.item() - reference.item()) < 1e-2
        loss.backward()
        assert half.grad.dtype == dtype and torch.isfinite(half.grad).all()


# ----------------------------------------------------------------------------- errors


def test_rejects_bad_input():
    embeddings, labels, preds = make_inputs()
    loss_fn = PixelContrastLoss(max_views=3)
    with pytest.raises(ValueError, match="embeddings must be B x D x h x w"):
        loss_fn(embeddings[0], labels, preds)
    with pytest.raises(ValueError, match="labels has batch size 1 but embeddings have 2"):
        loss_fn(embeddings, labels[:1], preds)
    with pytest.raises(ValueError, match="predictions must be B x H x W"):
        loss_fn(embeddings, labels, torch.zeros(2, 3, 6, 6))
    with pytest.raises(ValueError, match="predictions has batch size 3 but embeddings have 2"):
        loss_fn(embeddings, labels, torch.zeros(3, 6, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="labels contains -2, negative and not ignore_index=255"):
        loss_fn(embeddings, torch.full_like(labels, -2), preds)
    with pytest.raises(ValueError, match="enqueue=True needs a memory bank"):
        loss_fn(embeddings, labels, preds, enqueue=True)


def test_rejects_bad_memory_input():
    embeddings, labels, preds = make_inputs()
    bank = PixelMemoryBank(3, 4, pixel_size=5, segment_size=5)
    loss_fn = PixelContrastLoss(memory=bank)
    with pytest.raises(ValueError, match=r"labels contains 3, outside \[0, 3\)"):
        loss_fn(embeddings, torch.full_like(labels, 3), preds)
    with pytest.raises(ValueError, match="embeddings has dimension 5 but the memory bank has 4"):
        loss_fn(torch.randn(2, 5, 6, 6), labels, preds)
    with pytest.raises(ValueError, match="memory.ignore_index=255 differs from ignore_index=-1"):
        PixelContrastLoss(memory=bank, ignore_index=-1)
    with pytest.raises(TypeError, match="memory must be a PixelMemoryBank"):
        PixelContrastLoss(memory=torch.zeros(3))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        PixelContrastLoss(temperature=0)
    with pytest.raises(ValueError, match="memory_impl must be one of streaming, dense, got 'blocks'"):
        PixelContrastLoss(memory=bank, memory_impl="blocks")
    with pytest.raises(ValueError, match="block_size must be a positive int or None, got 0"):
        PixelContrastLoss(memory=bank, block_size=0)


def test_rejects_bad_samples():
    embeddings, labels, preds = make_inputs()
    loss_fn = PixelContrastLoss()
    label = int(labels[0, 0, 0])
    with pytest.raises(ValueError, match=r"samples.index has values in \[0, 72\], outside the B\*h\*w grid"):
        bad = AnchorSamples(index=torch.tensor([[0, 72]]), labels=torch.tensor([label]), image=torch.tensor([0]))
        loss_fn(embeddings, labels, preds, samples=bad)
    with pytest.raises(ValueError, match=r"samples.labels must have shape \(1,\)"):
        bad = AnchorSamples(
            index=torch.tensor([[0]]), labels=torch.tensor([label, label]), image=torch.tensor([0])
        )
        loss_fn(embeddings, labels, preds, samples=bad)
    with pytest.raises(ValueError, match="samples.labels disagree with labels at samples.index"):
        bad = AnchorSamples(index=torch.tensor([[0]]), labels=torch.tensor([label + 1]), image=torch.tensor([0]))
        loss_fn(embeddings, labels, preds, samples=bad)
    with pytest.raises(TypeError, match="samples must be AnchorSamples, got tuple"):
        loss_fn(embeddings, labels, preds, samples=(torch.tensor([[0]]), torch.tensor([label])))


def test_loss_value_is_sensible_for_separated_classes():
    # embeddings equal to a class direction: positives at cosine 1, negatives at cosine 0
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[:, 2:] = 1
    directions = torch.eye(2, dtype=torch.float64)
    embeddings = directions[labels].permute(0, 3, 1, 2).contiguous()
    loss = PixelContrastLoss(temperature=0.5, base_temperature=0.5, max_views=4)(embeddings, labels, labels)
    # every anchor: 4 views per class, 3 positives at s = 2, 4 negatives at s = 0
    expected = -(2 - math.log(math.exp(2) + 4))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ minimum pixels, empty batches
def test_a_class_needs_more_than_max_views_pixels_in_an_image_and_no_anchor_warns_once():
    import warnings

    from contraseg.losses.pixel_contrast import PixelContrastLoss

    embed = torch.randn(2, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(2, 4, 5, dtype=torch.long)
    labels[:, :, 2:] = 1  # per image: class 0 has 8 pixels, class 1 has 12
    preds = torch.zeros_like(labels)
    loss_fn = PixelContrastLoss(max_samples=64, max_views=12)  # 12 is not more than 12: no class qualifies
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = loss_fn(embed, labels, preds)
        again = loss_fn(embed, labels, preds)
    assert loss.item() == 0.0 and again.item() == 0.0
    assert len(caught) == 1 and "more than max_views=12" in str(caught[0].message)
    assert "4 x 5 embedding grid (the largest has 12)" in str(caught[0].message)
    loss.backward()
    assert torch.equal(embed.grad, torch.zeros_like(embed))
    # max_views 11: class 1 (12 pixels) qualifies in both images, class 0 (8) does not
    assert HardAnchorSampler(64, 11)(labels, preds).anchor_labels().unique().tolist() == [1]
    assert PixelContrastLoss(max_samples=64, max_views=7)(embed, labels, preds).item() > 0  # both classes
    ignored = torch.full_like(labels, 255)  # nothing labelled: zero loss, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PixelContrastLoss(max_views=1)(embed, ignored, preds).item() == 0.0


def test_an_empty_batch_gives_a_zero_loss_with_a_gradient():
    from contraseg.losses.pixel_contrast import PixelContrastLoss
    from contraseg.sampling.memory_bank import PixelMemoryBank

    for memory in (None, PixelMemoryBank(num_classes=3, dim=8, pixel_size=4, segment_size=4)):
        embed = torch.randn(0, 8, 4, 5, requires_grad=True)
        loss = PixelContrastLoss(memory=memory)(embed, torch.zeros(0, 16, 20, dtype=torch.long),
                                               torch.zeros(0, 16, 20, dtype=torch.long))
        assert loss.shape == () and loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert embed.grad.shape == embed.shape
