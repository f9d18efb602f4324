"""Per-anchor example sampling over the memory bank (random, hardest, semi-hard) against a
plain per-anchor loop in float64: value and gradient for the same draws, edge cases, and
peak memory flat in the bank's size."""

import math

import pytest
import torch
import torch.nn.functional as F

from contraseg.losses.memory_sampling import cosine_bins, pair_priorities, sampled_memory_contrast

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
    """The definitions, anchor by anchor (sorting every anchor's similarities)."""
    feats, bank_labels, ids = flat_entries(queues, counts)
    losses = []
    for a in range(anchors.shape[0]):
        s = feats @ anchors[a] / T
        pos, neg = bank_labels == labels[a], bank_labels != labels[a]
        u = pair_priorities(seed, torch.tensor([a]), ids)[0]

        def pick(mask, k, hard_low):
            idx = torch.nonzero(mask).flatten()
            if sampling == "hardest":
                order = torch.argsort(s[idx].detach(), descending=not hard_low)
                return idx[order[:k]]
            if sampling == "semi_hard":
                top = math.ceil(len(idx) * fraction)
                bins = cosine_bins(s[idx].detach(), T)
                order = torch.argsort(bins, descending=not hard_low, stable=True)
                if top == 0:
                    return idx
                edge = bins[order[top - 1]]
                idx = idx[bins <= edge] if hard_low else idx[bins >= edge]
            return idx[torch.argsort(u[idx])[:k]]

        p, n = pick(pos, kp, True), pick(neg, kn, False)
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


def test_priorities_look_independent_and_uniform():
    """The random draws: uniform on [0, 1), and two anchors' K smallest overlap as chance does."""
    u = pair_priorities(7, torch.arange(64), torch.arange(20000))
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005
    picked = torch.zeros_like(u, dtype=torch.bool).scatter_(1, u.topk(2000, dim=1, largest=False).indices, True)
    overlap = (picked[:, None, :] & picked[None, :, :]).sum(-1).double()  # 64 x 64
    off = overlap[~torch.eye(64, dtype=torch.bool)]
    assert abs(float(off.mean()) - 2000 * 0.1) < 10  # chance: K * K / n = 200
    assert float(off.max()) < 260
    assert not torch.equal(pair_priorities(8, torch.arange(3), torch.arange(50)),
                           pair_priorities(7, torch.arange(3), torch.arange(50)))
