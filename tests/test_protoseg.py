import math

import pytest
import torch
import torch.nn.functional as F

from contraseg.losses import PPCLoss, PPDLoss
from contraseg.prototypes import NearestPrototypeHead, PrototypeBank, sinkhorn
from contraseg.prototypes.sinkhorn_knopp import grouped_sinkhorn


def sinkhorn_reference(scores, iterations=3, epsilon=0.05):
    """ProtoSeg's published algorithm, in the exp domain (float64)."""
    q = torch.exp(scores.double() / epsilon).T  # M x N
    m, n = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / m
        q = q / q.sum(dim=0, keepdim=True) / n
    q = (q * n).T
    return q, q.argmax(dim=1)


def test_sinkhorn_matches_published_algorithm():
    scores = torch.rand(50, 4, dtype=torch.float64) * 2 - 1
    q, idx = sinkhorn(scores)
    q_ref, idx_ref = sinkhorn_reference(scores)
    assert torch.allclose(q, q_ref, atol=1e-10)
    assert torch.equal(idx, idx_ref)


def test_sinkhorn_rows_sum_to_one_and_columns_equipartition_when_converged():
    scores = torch.rand(60, 3, dtype=torch.float64) * 2 - 1
    q, _ = sinkhorn(scores, iterations=500, epsilon=0.5)
    assert torch.allclose(q.sum(1), torch.ones(60, dtype=torch.float64))
    assert torch.allclose(q.sum(0), torch.full((3,), 20.0, dtype=torch.float64), atol=1e-6)


def test_sinkhorn_is_safe_for_any_score_scale():
    q, idx = sinkhorn(torch.randn(40, 5) * 1e3)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(1), torch.ones(40), atol=1e-5)
    q, idx = sinkhorn(torch.randn(0, 5))
    assert q.shape == (0, 5) and idx.shape == (0,)


def test_grouped_equals_one_call_per_group():
    scores = torch.rand(80, 4, dtype=torch.float64) * 2 - 1
    groups = torch.randint(0, 3, (80,))
    q, idx = grouped_sinkhorn(scores, groups, 5)
    for g in range(3):
        q_g, idx_g = sinkhorn(scores[groups == g])
        assert torch.allclose(q[groups == g], q_g, atol=1e-10)
        assert torch.equal(idx[groups == g], idx_g)


def test_sinkhorn_errors():
    with pytest.raises(ValueError, match="scores must be N x M"):
        sinkhorn(torch.randn(3))
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(torch.randn(3, 2), epsilon=0)


def bank_assign_reference(bank, feats, labels, ignore=255):
    m = bank.num_prototypes
    targets = torch.full_like(labels, ignore)
    protos = bank.prototypes.double()
    f = F.normalize(feats.double(), dim=1)
    for k in labels.unique().tolist():
        if k == ignore:
            continue
        rows = (labels == k).nonzero().flatten()
        _, idx = sinkhorn_reference(f[rows] @ protos[k].T)
        targets[rows] = k * m + idx
    return targets


def test_bank_assign_matches_per_class_reference():
    bank = PrototypeBank(4, 3, 8)
    feats = torch.randn(200, 8)
    labels = torch.randint(0, 4, (200,))
    labels[::7] = 255
    targets = bank.assign(feats, labels)
    assert torch.equal(targets, bank_assign_reference(bank, feats, labels))
    kept = labels != 255
    assert torch.equal(targets[kept] // 3, labels[kept])


def test_bank_update_follows_momentum_rule_on_correct_pixels_only():
    bank = PrototypeBank(3, 2, 4, momentum=0.9)
    before = bank.prototypes.clone()
    feats = torch.randn(30, 4)
    targets = torch.randint(0, 6, (30,))
    targets[0] = 255
    correct = torch.rand(30) > 0.3
    bank.update(feats, targets, correct)
    expected = before.clone().reshape(6, 4)
    for j in range(6):
        rows = [i for i in range(30) if targets[i] == j and correct[i]]
        if rows:
            mean_dir = F.normalize(sum(F.normalize(feats[i], dim=0) for i in rows), dim=0)
            expected[j] = F.normalize(0.9 * expected[j] + 0.1 * mean_dir, dim=0)
    assert torch.allclose(bank.prototypes.reshape(6, 4), expected, atol=1e-6)
    untouched = PrototypeBank(3, 2, 4)
    snapshot = untouched.prototypes.clone()
    untouched.update(feats, targets, torch.zeros(30, dtype=torch.bool))
    assert torch.equal(untouched.prototypes, snapshot)


def test_diversity_reports_collapse():
    bank = PrototypeBank(2, 4, 8)
    bank.prototypes[0] = F.normalize(torch.ones(8), dim=0)  # class 0 collapsed
    div = bank.diversity()
    assert math.isclose(div[0].item(), 1.0, rel_tol=1e-6) and div[1] < 0.9
    assert torch.isnan(PrototypeBank(2, 1, 8).diversity()).all()


def test_head_forward_is_nearest_prototype_and_assign_updates_only_in_training():
    head = NearestPrototypeHead(4, 3, 8)
    embed = F.normalize(torch.randn(2, 8, 5, 5), dim=1)
    out = head(embed)
    assert out["logits"].shape == (2, 4, 5, 5) and out["prototype_logits"].shape == (2, 12, 5, 5)
    cos = torch.einsum("bdhw,kmd->bkmhw", embed, head.bank.prototypes)
    assert torch.allclose(out["prototype_logits"], cos.reshape(2, 12, 5, 5), atol=1e-6)
    expected = head.mask_norm(cos.amax(2).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.allclose(out["logits"], expected, atol=1e-6)
    labels = torch.randint(0, 4, (2, 10, 10))
    head.eval()
    snapshot = head.bank.prototypes.clone()
    targets = head.assign(embed, labels, out["logits"])
    assert torch.equal(head.bank.prototypes, snapshot) and targets.shape == (2, 5, 5)
    head.train()
    perfect = torch.eye(4)[labels[:, ::2, ::2]].permute(0, 3, 1, 2)  # predicts every label right
    head.assign(embed, labels, perfect)
    assert not torch.equal(head.bank.prototypes, snapshot)


def ppc_reference(logits, targets, t=1.0, ignore=255):
    terms = []
    for i in range(len(targets)):
        if targets[i] == ignore:
            continue
        s = logits[i] / t
        terms.append(torch.log(torch.exp(s).sum()) - s[targets[i]])
    return sum(terms) / len(terms)


def ppd_reference(logits, targets, ignore=255):
    terms = [(1 - logits[i, targets[i]]) ** 2 for i in range(len(targets)) if targets[i] != ignore]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("loss_fn,ref", [(PPCLoss(temperature=0.5), lambda l, t: ppc_reference(l, t, 0.5)), (PPDLoss(), ppd_reference)])
def test_ppc_ppd_match_formula(loss_fn, ref):
    logits = (torch.rand(40, 12, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    targets = torch.randint(0, 12, (40,))
    targets[::5] = 255
    out = loss_fn(logits, targets)
    (g,) = torch.autograd.grad(out, logits)
    l2 = logits.detach().clone().requires_grad_(True)
    r = ref(l2, targets)
    (g_ref,) = torch.autograd.grad(r, l2)
    assert torch.allclose(out, r, atol=1e-5) and torch.allclose(g, g_ref, atol=1e-5)
    small = (torch.rand(4, 3, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, torch.tensor([0, 2, 255, 1])), (small,))


@pytest.mark.parametrize("loss_fn", [PPCLoss(), PPDLoss()])
def test_ppc_ppd_all_ignored_and_errors(loss_fn):
    logits = torch.rand(5, 6, requires_grad=True)
    out = loss_fn(logits, torch.full((5,), 255))
    assert out.item() == 0.0
    out.backward()
    assert torch.all(logits.grad == 0)
    with pytest.raises(ValueError, match=r"targets contains 6, outside \[0, 6\)"):
        loss_fn(logits, torch.tensor([0, 1, 6, 2, 3]))
    with pytest.raises(ValueError, match=r"targets must have shape \(5,\) to match logits \(5, 6\)"):
        loss_fn(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"logits must be N x \(K\*M\) or B x"):
        loss_fn(torch.rand(5), torch.tensor([0, 1, 1, 2, 3]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_protoseg_half_precision(dtype):
    head = NearestPrototypeHead(5, 2, 16)
    embed = F.normalize(torch.randn(2, 16, 6, 6), dim=1)
    labels = torch.randint(0, 5, (2, 6, 6))
    out32 = head(embed)
    targets = head.assign(embed, labels, out32["logits"], update=False)
    flat32 = out32["prototype_logits"].permute(0, 2, 3, 1).reshape(-1, 10)
    head_h = head.to(dtype)
    out_h = head_h(embed.to(dtype))
    flat_h = out_h["prototype_logits"].permute(0, 2, 3, 1).reshape(-1, 10)
    for fn in (PPCLoss(), PPDLoss()):
        assert abs(fn(flat_h, targets.flatten()).item() - fn(flat32, targets.flatten()).item()) < 1e-2


@pytest.mark.parametrize("loss_fn", [PPCLoss(temperature=0.5), PPDLoss()])
def test_dense_logits_equal_flat(loss_fn):
    dense = torch.rand(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (2, 3, 4))
    targets[0, 0, 0] = 255
    flat = dense.permute(0, 2, 3, 1).reshape(-1, 6)
    a, b = loss_fn(dense, targets), loss_fn(flat, targets.flatten())
    assert torch.allclose(a, b, atol=1e-12)
    (ga,) = torch.autograd.grad(a, dense)
    (gb,) = torch.autograd.grad(b, dense)
    assert torch.allclose(ga, gb, atol=1e-12)


def test_assign_reuses_forward_logits_and_matches_flat_bank_assign():
    head = NearestPrototypeHead(4, 3, 8).eval()
    embed = F.normalize(torch.randn(2, 8, 5, 6), dim=1)
    labels = torch.randint(0, 4, (2, 5, 6))
    labels[0, :2] = 255
    out = head(embed)
    a = head.assign(embed, labels, out["logits"])
    b = head.assign(embed, labels, out["logits"], prototype_logits=out["prototype_logits"])
    flat = embed.permute(0, 2, 3, 1).reshape(-1, 8)
    c = head.bank.assign(flat, labels.flatten()).reshape(2, 5, 6)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_head_update_uses_correct_pixels_like_bank_update():
    torch.manual_seed(3)
    head = NearestPrototypeHead(3, 2, 4, momentum=0.5).train()
    ref = PrototypeBank(3, 2, 4, momentum=0.5)
    ref.prototypes = head.bank.prototypes.clone()
    embed = F.normalize(torch.randn(2, 4, 3, 3), dim=1)
    labels = torch.randint(0, 3, (2, 3, 3))
    logits = torch.randn(2, 3, 3, 3)
    targets = head.assign(embed, labels, logits)
    flat = embed.permute(0, 2, 3, 1).reshape(-1, 4)
    correct = logits.argmax(1).flatten() == labels.flatten()
    ref.update(flat, targets.flatten(), correct)
    assert torch.allclose(head.bank.prototypes, ref.prototypes, atol=1e-6)
