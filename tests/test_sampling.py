"""Tests for the ContrastiveSeg anchor samplers and the pixel memory bank."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from contraseg.sampling import AnchorSamples, HardAnchorSampler, LoopAnchorSampler, PixelMemoryBank
from contraseg.sampling.sampler_base import view_quotas


def make_batch(
    batch: int, h: int, w: int, num_classes: int, p_correct: float, seed: int, ignore_frac: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky random labels (some ignored) and predictions correct with probability p_correct."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (batch, h // 2, w // 2), generator=g)
    labels = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)
    labels[torch.rand(batch, h, w, generator=g) < ignore_frac] = 255
    wrong = torch.randint(0, num_classes, (batch, h, w), generator=g)
    preds = torch.where(torch.rand(batch, h, w, generator=g) < p_correct, labels, wrong)
    preds[labels == 255] = 0
    return labels, preds


def view_counts(samples: AnchorSamples, labels: torch.Tensor, preds: torch.Tensor) -> dict:
    """{(image, class): (hard views, easy views)}, checking every view on the way."""
    flat_labels, flat_preds = labels.reshape(-1), preds.reshape(-1)
    per_image = labels[0].numel()
    counts = {}
    for row, cls, image in zip(samples.index, samples.labels.tolist(), samples.image.tolist()):
        assert row.unique().numel() == row.numel(), "a pixel is sampled twice in one pair"
        assert (flat_labels[row] == cls).all(), "a view has another label than its pair"
        assert (row // per_image == image).all(), "a view lies in another image than its pair"
        hard = int((flat_preds[row] != cls).sum())
        assert (flat_preds[row[:hard]] != cls).all(), "hard views must come first"
        counts[(image, cls)] = (hard, row.numel() - hard)
    return counts


def expected_quota(num_hard: int, num_easy: int, n_view: int) -> tuple[int, int]:
    """The rule of the paper, written out with scalars."""
    if num_hard >= n_view / 2 and num_easy >= n_view / 2:
        return n_view // 2, n_view - n_view // 2
    if num_hard >= n_view / 2:
        return n_view - num_easy, num_easy
    return num_hard, n_view - num_hard


# ----------------------------------------------------------------------------- samplers


@pytest.mark.parametrize(
    "batch,h,w,num_classes,p_correct,max_samples,max_views,seed",
    [
        (3, 16, 16, 4, 0.5, 200, 10, 0),  # balanced
        (2, 16, 16, 3, 0.97, 200, 20, 1),  # hard pixels short: easy tops up
        (2, 16, 16, 3, 0.03, 200, 20, 2),  # easy pixels short: hard tops up
        (4, 12, 12, 5, 0.6, 37, 9, 3),  # n_view limited by max_samples, odd
        (2, 8, 8, 2, 0.5, 1000, 7, 4),  # odd max_views
    ],
)
def test_vectorised_sampler_matches_loop_reference(batch, h, w, num_classes, p_correct, max_samples, max_views, seed):
    labels, preds = make_batch(batch, h, w, num_classes, p_correct, seed)
    fast = HardAnchorSampler(max_samples, max_views)(labels, preds, generator=torch.Generator().manual_seed(5))
    slow = LoopAnchorSampler(max_samples, max_views)(labels, preds, generator=torch.Generator().manual_seed(5))
    assert fast.num_pairs > 0
    assert fast.index.shape == slow.index.shape
    assert torch.equal(fast.labels, slow.labels) and torch.equal(fast.image, slow.image)
    fast_counts = view_counts(fast, labels, preds)
    assert fast_counts == view_counts(slow, labels, preds)
    # and both follow the rule, pair by pair
    n_view = fast.num_views
    assert n_view == min(max_samples // fast.num_pairs, max_views)
    for (image, cls), got in fast_counts.items():
        is_class = labels[image] == cls
        num_hard = int((is_class & (preds[image] != cls)).sum())
        num_easy = int((is_class & (preds[image] == cls)).sum())
        assert got == expected_quota(num_hard, num_easy, n_view)


def test_candidate_pairs_are_classes_with_more_than_max_views_pixels():
    labels = torch.full((2, 4, 4), 255)
    labels[0, :2] = 0  # 8 pixels
    labels[0, 2, :3] = 1  # 3 pixels: not more than max_views
    labels[1, :3] = 2  # 12 pixels
    labels[1, 3] = 0  # 4 pixels: more than max_views
    preds = torch.zeros_like(labels)
    samples = HardAnchorSampler(max_samples=100, max_views=3)(labels, preds)
    assert samples.labels.tolist() == [0, 0, 2]
    assert samples.image.tolist() == [0, 1, 1]
    assert samples.num_views == 3


def test_view_quotas_follow_the_rule():
    grid = torch.cartesian_prod(torch.arange(0, 13), torch.arange(0, 13))
    for n_view in range(0, 12):
        ok = grid.sum(1) > n_view
        hard, easy = grid[ok, 0], grid[ok, 1]
        hard_keep, easy_keep = view_quotas(hard, easy, n_view)
        expected = [expected_quota(a, b, n_view) for a, b in zip(hard.tolist(), easy.tolist())]
        assert list(zip(hard_keep.tolist(), easy_keep.tolist())) == expected
        assert bool((hard_keep <= hard).all() and (easy_keep <= easy).all())


def test_vectorised_sampler_picks_uniformly_within_a_group():
    # Every image: 12 pixels of class 0, 6 easy and 6 hard; 4 views -> 2 of each kind, so
    # each pixel is kept with probability 1/3. 2000 images are 2000 independent draws.
    draws = 2000
    labels = torch.zeros(draws, 1, 12, dtype=torch.long)
    preds = torch.tensor([0] * 6 + [1] * 6).expand(draws, 1, 12)
    sampler = HardAnchorSampler(max_samples=4 * draws, max_views=4)
    samples = sampler(labels, preds, generator=torch.Generator().manual_seed(0))
    assert samples.index.shape == (draws, 4)
    freq = torch.bincount(samples.index.reshape(-1) % 12, minlength=12) / draws
    # binomial standard deviation sqrt(1/3 * 2/3 / 2000) = 0.0105; 0.045 is over 4 of them
    assert torch.allclose(freq, torch.full((12,), 1 / 3), atol=0.045), freq
    # and the two hard (or easy) views of a pair are a uniform pair: 15 pairs, 1/15 each
    hard = samples.index[:, :2] % 12
    pair_id = torch.minimum(hard[:, 0], hard[:, 1]) * 12 + torch.maximum(hard[:, 0], hard[:, 1])
    pair_freq = torch.bincount(pair_id)[pair_id.unique()] / draws
    assert pair_freq.numel() == 15
    assert torch.allclose(pair_freq, torch.full((15,), 1 / 15), atol=0.025), pair_freq


def test_sampler_is_reproducible_from_a_generator():
    labels, preds = make_batch(2, 16, 16, 3, 0.5, seed=7)
    sampler = HardAnchorSampler(max_samples=60, max_views=10)
    a = sampler(labels, preds, generator=torch.Generator().manual_seed(1))
    b = sampler(labels, preds, generator=torch.Generator().manual_seed(1))
    c = sampler(labels, preds, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.index, b.index)
    assert not torch.equal(a.index, c.index)


@pytest.mark.parametrize("sampler_cls", [HardAnchorSampler, LoopAnchorSampler])
def test_sampler_edge_cases(sampler_cls):
    sampler = sampler_cls(max_samples=2, max_views=2)
    ignored = torch.full((2, 3, 3), 255)
    empty = sampler(ignored, torch.zeros_like(ignored))
    assert empty.index.shape == (0, 0) and empty.labels.shape == (0,) and empty.image.shape == (0,)
    small = torch.zeros(2, 1, 2, dtype=torch.long)  # 2 pixels per image, not more than max_views
    assert sampler(small, small).index.shape == (0, 0)
    # 3 candidate pairs but max_samples 2: n_view = 0
    three = torch.tensor([[[0, 0, 0, 1, 1, 1]], [[2, 2, 2, 255, 255, 255]]])
    zero_views = sampler(three, three)
    assert zero_views.index.shape == (3, 0)
    assert zero_views.labels.tolist() == [0, 1, 2] and zero_views.image.tolist() == [0, 0, 1]


def test_unusual_label_values_match_loop_reference():
    # negative ignore_index and large, sparse class ids take the torch.unique path
    g = torch.Generator().manual_seed(3)
    ids = torch.tensor([-1, 7, 4000, 123456])
    labels = ids[torch.randint(0, 4, (3, 10, 10), generator=g)]
    preds = torch.where(torch.rand(3, 10, 10, generator=g) < 0.5, labels, torch.zeros_like(labels))
    fast = HardAnchorSampler(100, 8, ignore_index=-1)(labels, preds, generator=g)
    slow = LoopAnchorSampler(100, 8, ignore_index=-1)(labels, preds, generator=g)
    assert set(fast.labels.tolist()) <= {7, 4000, 123456}
    assert torch.equal(fast.labels, slow.labels)
    assert view_counts(fast, labels, preds) == view_counts(slow, labels, preds)


def test_sampler_rejects_bad_input():
    sampler = HardAnchorSampler()
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"predictions must have the shape of labels \(2, 4, 4\)"):
        sampler(labels, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="predictions has batch size 1"):
        sampler(labels, torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        sampler(labels.float(), labels)
    with pytest.raises(ValueError, match="labels must be B x H x W"):
        sampler(labels[0], labels[0])
    with pytest.raises(ValueError, match="max_views must be a positive int, got 0"):
        HardAnchorSampler(max_views=0)
    with pytest.raises(ValueError, match="max_samples must be a positive int, got -1"):
        LoopAnchorSampler(max_samples=-1)


# ----------------------------------------------------------------------------- memory bank


def one_pixel_images(vectors: torch.Tensor, label: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """N images of one pixel each, embedding vectors[i], all of class ``label``."""
    return vectors[:, :, None, None], torch.full((vectors.shape[0], 1, 1), label)


def test_fifo_order_and_pointer_wrap_around():
    bank = PixelMemoryBank(num_classes=2, dim=3, pixel_size=4, segment_size=4, pixels_per_image=5)
    vectors = F.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    bank.enqueue(*one_pixel_images(vectors[:3]))
    assert bank.segment_ptr.tolist() == [3, 0] and bank.segment_count.tolist() == [3, 0]
    torch.testing.assert_close(bank.segment_queue[0, :3], vectors[:3])
    bank.enqueue(*one_pixel_images(vectors[3:]))  # slots 3, 0, 1: the oldest (0, 1) overwritten
    assert bank.segment_ptr.tolist() == [2, 0] and bank.segment_count.tolist() == [4, 0]
    assert bank.pixel_ptr.tolist() == [2, 0] and bank.pixel_count.tolist() == [4, 0]
    expected = vectors[[4, 5, 2, 3]]
    torch.testing.assert_close(bank.segment_queue[0], expected)
    torch.testing.assert_close(bank.pixel_queue[0], expected)


def test_one_large_push_equals_pushing_one_by_one():
    vectors = F.normalize(torch.randn(11, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    at_once = PixelMemoryBank(num_classes=1, dim=3, pixel_size=4, segment_size=4)
    at_once.enqueue(*one_pixel_images(vectors[:2]))
    at_once.enqueue(*one_pixel_images(vectors[2:]))  # 9 entries into 4 slots
    one_by_one = PixelMemoryBank(num_classes=1, dim=3, pixel_size=4, segment_size=4)
    for i in range(11):
        one_by_one.enqueue(*one_pixel_images(vectors[i : i + 1]))
    for name, value in one_by_one.state_dict().items():
        assert torch.equal(at_once.state_dict()[name], value), name


def test_enqueue_keeps_class_zero_drops_ignored_and_stores_segment_means():
    g = torch.Generator().manual_seed(2)
    embeddings = torch.randn(2, 5, 4, 4, generator=g)
    labels = torch.randint(0, 3, (2, 4, 4), generator=g)
    labels[:, 0] = 0
    labels[1, 1] = 255
    bank = PixelMemoryBank(num_classes=3, dim=5, pixel_size=50, segment_size=10, pixels_per_image=2)
    bank.enqueue(embeddings, labels, generator=g)
    assert bank.segment_count[0] == 2  # class 0 present in both images
    # segments: per (image, class), in image order, the normalised mean of the unit-norm
    # keys (the released code's _dequeue_and_enqueue averages its normalised keys)
    for cls in range(3):
        expected = [
            F.normalize(F.normalize(embeddings[b].permute(1, 2, 0)[labels[b] == cls], dim=1).mean(0), dim=0)
            for b in range(2)
            if (labels[b] == cls).any()
        ]
        assert int(bank.segment_count[cls]) == len(expected)
        torch.testing.assert_close(bank.segment_queue[cls, : len(expected)], torch.stack(expected))
    # pixels: min(count, 2) per (image, class), each one of that class's normalised embeddings
    for cls in range(3):
        pool = []
        for b in range(2):
            mask = labels[b] == cls
            pool.append(F.normalize(embeddings[b].permute(1, 2, 0)[mask], dim=1))
        expected_count = sum(min(p.shape[0], 2) for p in pool)
        assert int(bank.pixel_count[cls]) == expected_count
        stored = bank.pixel_queue[cls, :expected_count]
        distances = torch.cdist(stored, torch.cat(pool))
        assert bool((distances.min(dim=1).values < 1e-5).all())
    feats, feat_labels = bank.contrast_set()
    assert feats.shape == (len(bank), 5)
    assert torch.bincount(feat_labels, minlength=3).tolist() == (bank.pixel_count + bank.segment_count).tolist()


def test_empty_bank_and_reset():
    bank = PixelMemoryBank(num_classes=3, dim=4, pixel_size=5, segment_size=5)
    feats, labels = bank.contrast_set()
    assert feats.shape == (0, 4) and labels.shape == (0,)
    bank.enqueue(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    assert len(bank) == 1 + 4
    bank.reset()
    assert len(bank) == 0 and bank.pixel_ptr.sum() == 0


def test_state_dict_round_trip_and_dtype_follow():
    bank = PixelMemoryBank(num_classes=2, dim=3, pixel_size=6, segment_size=3)
    bank.enqueue(torch.randn(2, 3, 3, 3), torch.randint(0, 2, (2, 3, 3)))
    state = bank.state_dict()
    assert set(state) == {
        "pixel_queue", "segment_queue", "pixel_ptr", "pixel_count", "segment_ptr", "segment_count"
    }
    restored = PixelMemoryBank(num_classes=2, dim=3, pixel_size=6, segment_size=3)
    restored.load_state_dict(state)
    for a, b in zip(bank.contrast_set(), restored.contrast_set()):
        assert torch.equal(a, b)

    double = restored.to(torch.float64)
    assert double.pixel_queue.dtype == torch.float64 and double.pixel_ptr.dtype == torch.long
    double.enqueue(torch.randn(1, 3, 2, 2, dtype=torch.float16), torch.ones(1, 2, 2, dtype=torch.long))
    feats, _ = double.contrast_set()
    assert feats.dtype == torch.float64 and feats.device == double.pixel_queue.device


def test_enqueue_resizes_labels_to_the_embedding_grid():
    bank = PixelMemoryBank(num_classes=2, dim=3, pixel_size=100, segment_size=4, pixels_per_image=100)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    bank.enqueue(torch.randn(1, 3, 4, 4), labels)
    assert bank.pixel_count.tolist() == [8, 8]


def test_bank_rejects_bad_input():
    bank = PixelMemoryBank(num_classes=3, dim=4, pixel_size=5, segment_size=5)
    with pytest.raises(ValueError, match="labels contains 3, outside"):
        bank.enqueue(torch.randn(1, 4, 2, 2), torch.full((1, 2, 2), 3))
    with pytest.raises(ValueError, match="embeddings has dimension 5 but the memory bank has 4"):
        bank.enqueue(torch.randn(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels has batch size 2"):
        bank.enqueue(torch.randn(1, 4, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="pixel_size must be a positive int, got 0"):
        PixelMemoryBank(num_classes=3, dim=4, pixel_size=0)


def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        g = torch.Generator().manual_seed(10 + rank)
        bank = PixelMemoryBank(num_classes=3, dim=4, pixel_size=20, segment_size=5, pixels_per_image=3)
        # rank 0 sees only class 0, rank 1 only class 2, different sizes
        size = 2 + rank
        bank.enqueue(torch.randn(size, 4, 3, 3, generator=g), torch.full((size, 3, 3), 2 * rank), generator=g)
        torch.save(bank.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_enqueue_gathers_from_all_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name
    assert states[0]["segment_count"].tolist() == [2, 0, 3]
    assert states[0]["pixel_count"].tolist() == [6, 0, 9]
