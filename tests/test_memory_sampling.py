"""Per-anchor example sampling over the memory bank (random, hardest, semi-hard) against a
plain per-anchor loop in float64: value and gradient for the same draws, edge cases, and
peak memory flat in the bank's size."""

import math

import pytest
import torch
import torch.nn.functional as F

from contraseg.losses import memory_draws
from contraseg.losses.memory_draws import draw_ranks, sample_ranks
from contraseg.losses.memory_sampling import cosine_bins, sampled_memory_contrast

T, TB = 0.1, 0.07


def make_bank(k, d, sizes, fill, seed=0, dtype=torch.float64):
    """Queues K x S x D (one per size) with class c filled up to ``fill[i][c]``."""
    g = torch.Generator().manual_seed(seed)
    queues = [F.normalize(torch.randn(k, s, d, generator=g, dtype=dtype), dim=-1) for s in sizes]
    counts = [torch.tensor(f) for f in fill]
    return queues, counts


def flat_entries(queues, counts):
    """Every filled entry: (features, class, global id = queue offset + class * S + slot)."""
    feats, labels, ids, offset = [], [], [], 0
    for q, c in zip(queues, counts):
        k, s, _ = q.shape
        for cls in range(k):
            for slot in range(int(c[cls])):
                feats.append(q[cls, slot])
                labels.append(cls)
                ids.append(offset + cls * s + slot)
        offset += k * s
    return torch.stack(feats), torch.tensor(labels), torch.tensor(ids)


def reference(anchors, labels, queues, counts, sampling, kp, kn, seed, fraction=0.1):
    """The definitions, anchor by anchor (sorting every anchor's similarities); the random
    draws are the ranks of :func:`sample_ranks` into each anchor's sets in id order."""
    feats, bank_labels, _ = flat_entries(queues, counts)
    sets = []
    for a in range(anchors.shape[0]):
        s = feats @ anchors[a] / T

        def hard_set(mask, hard_low):
            idx = torch.nonzero(mask).flatten()  # id order
            if sampling == "hardest":
                return idx[torch.argsort(s[idx].detach(), descending=not hard_low)]  # hardest first
            if sampling == "semi_hard" and len(idx):
                top = math.ceil(len(idx) * fraction)
                bins = cosine_bins(s[idx].detach(), T)
                edge = torch.sort(bins, descending=not hard_low).values[top - 1]
                idx = idx[bins <= edge] if hard_low else idx[bins >= edge]
            return idx

        sets.append((s, hard_set(bank_labels == labels[a], True), hard_set(bank_labels != labels[a], False)))
    if sampling != "hardest":
        rank_p, rank_n = sample_ranks(seed, torch.tensor([len(p) for _, p, _ in sets]),
                                      torch.tensor([len(n) for _, _, n in sets]), kp, kn)
    losses = []
    for a, (s, p, n) in enumerate(sets):
        if sampling == "hardest":
            p, n = p[:kp], n[:kn]
        else:
            p, n = p[rank_p[a][rank_p[a] >= 0]], n[rank_n[a][rank_n[a] >= 0]]
        if len(p) == 0:
            continue
        lse = torch.logsumexp(s[n], 0) if len(n) else torch.tensor(-math.inf, dtype=s.dtype)
        losses.append(F.softplus(lse - s[p]).mean())
    if not losses:
        return None
    return T / TB * torch.stack(losses).mean()


def anchors_for(num, d, k, seed=3, classes=None):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(num, d, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, k, (num,), generator=g) if classes is None else torch.tensor(classes)
    return x, labels


@pytest.mark.parametrize("sampling", ["random", "hardest", "semi_hard"])
@pytest.mark.parametrize("block", [7, 1000])
def test_equals_the_per_anchor_loop(sampling, block):
    k, d = 4, 6
    queues, counts = make_bank(k, d, [30, 20], [[30, 12, 0, 25], [20, 20, 3, 0]])
    x, labels = anchors_for(17, d, k)
    kp, kn = 5, 9
    a = x.clone().requires_grad_(True)
    got = sampled_memory_contrast(a, labels, queues, counts, T, TB, sampling, kp, kn, seed=11,
                                  semi_hard_fraction=0.3, block_size=block)
    b = x.clone().requires_grad_(True)
    want = reference(b, labels, queues, counts, sampling, kp, kn, seed=11, fraction=0.3)
    got.backward()
    want.backward()
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-12)


def test_draws_follow_the_seed_not_the_block_size():
    queues, counts = make_bank(3, 5, [40], [[40, 40, 40]])
    x, labels = anchors_for(9, 5, 3)
    runs = [sampled_memory_contrast(x, labels, queues, counts, T, TB, "random", 4, 6, seed=s, block_size=b)
            for s, b in ((1, 5), (1, 64), (2, 64))]
    assert torch.allclose(runs[0], runs[1], rtol=1e-12)
    assert not torch.allclose(runs[1], runs[2])


def test_fewer_entries_than_asked_is_the_whole_bank():
    """K+ and K- above the bank's sizes: every strategy keeps every entry = the all-bank loss."""
    from contraseg.losses.memory_contrast import memory_contrast

    queues, counts = make_bank(3, 5, [8, 4], [[8, 5, 2], [4, 0, 4]])
    x, labels = anchors_for(10, 5, 3)
    whole = memory_contrast(x, labels, queues, counts, T, TB)
    for sampling in ("random", "hardest"):
        got = sampled_memory_contrast(x, labels, queues, counts, T, TB, sampling, 100, 100, seed=0, block_size=3)
        assert torch.allclose(got, whole, rtol=1e-10)
    semi = sampled_memory_contrast(x, labels, queues, counts, T, TB, "semi_hard", 100, 100, seed=0,
                                   semi_hard_fraction=1.0)
    assert torch.allclose(semi, whole, rtol=1e-10)


def test_hardest_picks_the_extremes():
    """One anchor, a hand-made bank: the 2 hardest positives are the least similar ones."""
    e = torch.eye(3, dtype=torch.float64)
    pos = F.normalize(torch.tensor([[1, 0, 0], [1, 1, 0], [1, 3, 0], [0, 1, 0]], dtype=torch.float64), dim=1)
    neg = F.normalize(torch.tensor([[1, 0, 1], [0, 0, 1], [-1, 0, 0], [1, 0, 3]], dtype=torch.float64), dim=1)
    queue = torch.stack([pos, neg])  # class 0: pos, class 1: neg
    counts = [torch.tensor([4, 4])]
    anchor, label = e[:1], torch.tensor([0])
    got = sampled_memory_contrast(anchor, label, [queue], counts, T, TB, "hardest", 2, 2, seed=0)
    s_p, s_n = pos[[2, 3]] @ e[0] / T, neg[[0, 3]] @ e[0] / T  # the lowest positives, highest negatives
    want = T / TB * F.softplus(torch.logsumexp(s_n, 0) - s_p).mean()
    assert torch.allclose(got, want, rtol=1e-12)


def test_semi_hard_keeps_exactly_the_top_fraction_when_no_ties():
    """x = 0.25 of 8 negatives = the 2 most similar, K- = 2: sampling keeps exactly those."""
    d = 2
    angles = torch.linspace(0.1, 3.0, 8, dtype=torch.float64)
    neg = torch.stack([angles.cos(), angles.sin()], 1)
    pos = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(8, 2)
    queue = torch.stack([pos, neg])
    anchor = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    got = sampled_memory_contrast(anchor, torch.tensor([0]), [queue], [torch.tensor([1, 8])], T, TB,
                                  "semi_hard", 1, 2, seed=5, semi_hard_fraction=0.25)
    want = T / TB * F.softplus(torch.logsumexp(neg[:2, 0] / T, 0) - 1 / T)
    assert torch.allclose(got, want, rtol=1e-12)


def test_class_absent_from_the_bank_drops_its_anchors():
    queues, counts = make_bank(3, 5, [10], [[10, 0, 7]])
    x, labels = anchors_for(6, 5, 3, classes=[0, 1, 1, 2, 1, 0])
    for sampling in ("random", "hardest", "semi_hard"):
        got = sampled_memory_contrast(x, labels, queues, counts, T, TB, sampling, 3, 4, seed=2)
        want = reference(x, labels, queues, counts, sampling, 3, 4, seed=2)  # skips anchors without positives
        assert torch.allclose(got, want, rtol=1e-10)
    only_absent = sampled_memory_contrast(x[labels == 1], labels[labels == 1], queues, counts, T, TB,
                                          "random", 3, 4, seed=2)
    assert only_absent is None


def test_all_positives_excluded_and_no_negatives():
    """No anchor keeps a positive: None (the caller returns a zero loss); a bank of the
    anchors' class only: no negatives, L = -inf, loss 0 with a zero (not NaN) gradient."""
    queues, counts = make_bank(2, 4, [6], [[0, 6]])
    x, _ = anchors_for(5, 4, 2)
    assert sampled_memory_contrast(x, torch.zeros(5, dtype=torch.long), queues, counts, T, TB,
                                   "hardest", 2, 2, seed=0) is None
    a = x.clone().requires_grad_(True)
    loss = sampled_memory_contrast(a, torch.ones(5, dtype=torch.long), queues, counts, T, TB,
                                   "semi_hard", 2, 2, seed=0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(a.grad, torch.zeros_like(a))


def test_bad_arguments_name_themselves():
    queues, counts = make_bank(2, 4, [6], [[6, 6]])
    x, labels = anchors_for(3, 4, 2)
    with pytest.raises(ValueError, match="sampling"):
        sampled_memory_contrast(x, labels, queues, counts, T, TB, "hard", 2, 2, seed=0)
    with pytest.raises(ValueError, match="negatives"):
        sampled_memory_contrast(x, labels, queues, counts, T, TB, "random", 2, 0, seed=0)
    with pytest.raises(ValueError, match="semi_hard_fraction"):
        sampled_memory_contrast(x, labels, queues, counts, T, TB, "semi_hard", 2, 2, seed=0, semi_hard_fraction=0)


def _chi_square(picked, n):
    """Counts of every value of [0, n) in ``picked`` against uniform inclusion: sum of
    (count - mean)^2 / variance (about n - 1 for uniform draws)."""
    counts = torch.bincount(picked[picked >= 0].flatten(), minlength=n).double()
    rows, share = picked.shape[0], counts.mean() / picked.shape[0]
    return float(((counts - counts.mean()) ** 2).sum() / (rows * share * (1 - share)))


@pytest.mark.parametrize("n", [50, 1000])  # k = 20: n <= 4k takes the smallest keys, n > 4k rejects repeats
def test_drawn_ranks_are_distinct_uniform_and_seeded(n):
    k, rows = 20, 3000
    ranks = draw_ranks(torch.full((rows,), n), k, torch.Generator().manual_seed(0))
    assert ranks.shape == (rows, k) and int(ranks.min()) >= 0 and int(ranks.max()) < n
    assert all(len(set(row)) == k for row in ranks.tolist())
    df = n - 1  # chi-square of about n - 1 degrees of freedom: mean df, sd sqrt(2 df)
    assert abs(_chi_square(ranks, n) - df) < 5 * math.sqrt(2 * df)
    assert bool((ranks[:, 1:] > ranks[:, :-1]).all())  # each row ascending
    overlap = (torch.zeros(rows, n).scatter_(1, ranks, 1.0)[:-1] * torch.zeros(rows, n).scatter_(1, ranks, 1.0)[1:])
    assert abs(float(overlap.sum(1).mean()) - k * k / n) < 0.1 * k * k / n + 0.1  # rows independent
    a, b = sample_ranks(3, torch.full((5,), n), torch.full((5,), n), k, k)
    assert torch.equal(a, sample_ranks(3, torch.full((5,), n), torch.full((5,), n), k, k)[0])
    assert not torch.equal(a, b) and not torch.equal(a, sample_ranks(4, torch.full((5,), n), torch.full((5,), n), k, k)[0])


def test_drawn_ranks_of_small_sets_and_short_rows(monkeypatch):
    """n < k: every rank, then -1; n = 0: all -1. With no margin most rows end short of k
    distinct after the first draws and draw more: still k distinct ranks in range."""
    ranks = draw_ranks(torch.tensor([3, 0, 7, 500]), 7, torch.Generator().manual_seed(1))
    assert ranks[0, :3].tolist() == [0, 1, 2] and ranks[0, 3:].eq(-1).all() and ranks[1].eq(-1).all()
    assert ranks[2].tolist() == list(range(7)) and len(set(ranks[3].tolist())) == 7
    monkeypatch.setattr(memory_draws, "_MARGIN", -4)  # k + k // 4 - 4 = k - 1 draws: always short at first
    ranks = draw_ranks(torch.full((200,), 100), 20, torch.Generator().manual_seed(2))
    assert int(ranks.min()) >= 0 and int(ranks.max()) < 100
    assert bool((ranks[:, 1:] > ranks[:, :-1]).all())  # distinct, ascending
