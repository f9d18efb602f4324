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
    head = NearestPrototypeHead(4, 3, 8, feat_norm=False)  # the formula before feat_norm existed
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


@pytest.mark.parametrize("feat_norm", [True, False])
def test_assign_reuses_forward_logits_and_matches_flat_bank_assign(feat_norm):
    # float64: the three paths compute the cosines with differently shaped products, and an
    # exact comparison of their assignments must not hinge on a float32 last-bit near-tie
    head = NearestPrototypeHead(4, 3, 8, feat_norm=feat_norm).double().eval()
    embed = F.normalize(torch.randn(2, 8, 5, 6, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 4, (2, 5, 6))
    labels[0, :2] = 255
    out = head(embed)
    a = head.assign(embed, labels, out["logits"])
    b = head.assign(embed, labels, out["logits"], prototype_logits=out["prototype_logits"])
    flat = head.features(embed).transpose(1, 2).reshape(-1, 8)  # the bank sees the head's features
    c = head.bank.assign(flat, labels.flatten()).reshape(2, 5, 6)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_head_update_uses_correct_pixels_like_bank_update():
    torch.manual_seed(3)
    head = NearestPrototypeHead(3, 2, 4, momentum=0.5, feat_norm=False).train()
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


# ------------------------------------------------- the released ProtoSeg step, float64


def layer_norm_reference(x, weight, bias, eps=1e-5):
    """nn.LayerNorm over the last axis, by hand (biased variance, as PyTorch)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def released_protoseg_step(embed, labels, protos, feat_norm, mask_norm, gamma, ignore=255):
    """HRNet_W48_Proto.forward + prototype_learning of tfzhou/ProtoSeg, in plain float64.

    ``feat_norm`` is (weight, bias) or None (no LayerNorm); the update's assignment is the
    argmax one-hot (the release's commented-out line; it samples it by gumbel_softmax).
    Returns (logits B x K x h x w, prototype logits B x KM x h x w, targets B x h x w,
    updated prototypes K x M x D).
    """
    b, d, h, w = embed.shape
    k, m, _ = protos.shape
    c = embed.permute(0, 2, 3, 1).reshape(-1, d)  # '(b h w) c'
    if feat_norm is not None:
        c = layer_norm_reference(c, *feat_norm)
    c = c / c.norm(dim=1, keepdim=True)
    p = protos / protos.norm(dim=-1, keepdim=True)
    masks = torch.einsum("nd,kmd->nmk", c, p)
    out_seg = layer_norm_reference(masks.amax(dim=1), *mask_norm)
    gt = F.interpolate(labels[:, None].double(), size=(h, w), mode="nearest").reshape(-1).long()
    correct = gt == out_seg.argmax(dim=1)
    targets = gt.clone()
    new = p.clone()
    for cls in range(k):
        rows = (gt == cls).nonzero().flatten()
        if len(rows) == 0:
            continue
        _, idx = sinkhorn_reference(masks[rows, :, cls])
        f = torch.zeros(m, d, dtype=c.dtype)
        n = torch.zeros(m, dtype=c.dtype)
        for r, j in zip(rows.tolist(), idx.tolist()):
            if correct[r]:
                f[j] += c[r]
                n[j] += 1
        for j in range(m):
            if n[j] > 0:
                new[cls, j] = gamma * p[cls, j] + (1 - gamma) * f[j] / f[j].norm()
        targets[rows] = idx + m * cls
    new = new / new.norm(dim=-1, keepdim=True)
    logits = out_seg.reshape(b, h, w, k).permute(0, 3, 1, 2)
    proto_logits = (c @ p.reshape(k * m, d).T).reshape(b, h, w, k * m).permute(0, 3, 1, 2)
    return logits, proto_logits, targets.reshape(b, h, w), new


def _random_affine(norm, gen):
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=gen, dtype=torch.float64))
        norm.bias.copy_(0.1 * torch.randn(norm.bias.shape, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize("feat_norm", [True, False])
def test_head_step_equals_released_protoseg_in_float64(feat_norm):
    gen = torch.Generator().manual_seed(7)
    k, m, d = 3, 4, 6
    head = NearestPrototypeHead(k, m, d, momentum=0.7, feat_norm=feat_norm).double().train()
    _random_affine(head.mask_norm, gen)
    if feat_norm:
        _random_affine(head.feat_norm, gen)
    embed = F.normalize(torch.randn(2, d, 5, 6, generator=gen, dtype=torch.float64), dim=1).requires_grad_(True)
    labels = torch.randint(0, k, (2, 10, 12), generator=gen)
    labels[0, :3] = 255
    protos_before = head.bank.prototypes.clone()
    out = head(embed)
    targets = head.assign(embed, labels, out["logits"], prototype_logits=out["prototype_logits"])

    norm_params = (head.feat_norm.weight, head.feat_norm.bias) if feat_norm else None
    ref_logits, ref_proto_logits, ref_targets, ref_protos = released_protoseg_step(
        embed, labels, protos_before, norm_params, (head.mask_norm.weight, head.mask_norm.bias), 0.7
    )
    assert out["logits"].dtype == torch.float64 and head.bank.prototypes.dtype == torch.float64
    assert torch.allclose(out["logits"], ref_logits, atol=1e-8, rtol=0)
    assert torch.allclose(out["prototype_logits"], ref_proto_logits, atol=1e-8, rtol=0)
    assert torch.equal(targets, ref_targets)
    assert not torch.equal(head.bank.prototypes, protos_before)  # some pixels were correct
    assert torch.allclose(head.bank.prototypes, ref_protos, atol=1e-8, rtol=0)
    # gradient of the logits to the embeddings and to both LayerNorms' parameters
    weights = torch.randn(ref_logits.shape, generator=gen, dtype=torch.float64)
    params = [embed, head.mask_norm.weight] + ([head.feat_norm.weight, head.feat_norm.bias] if feat_norm else [])
    grads = torch.autograd.grad((out["logits"] * weights).sum() + out["prototype_logits"].sum(), params)
    grads_ref = torch.autograd.grad((ref_logits * weights).sum() + ref_proto_logits.sum(), params)
    for g, g_ref in zip(grads, grads_ref):
        assert torch.allclose(g, g_ref, atol=1e-8, rtol=0)


def test_feat_norm_is_the_released_layernorm_and_switchable():
    on, off = NearestPrototypeHead(4, 2, 8), NearestPrototypeHead(4, 2, 8, feat_norm=False)
    assert isinstance(on.feat_norm, torch.nn.LayerNorm) and on.feat_norm.normalized_shape == (8,)
    assert on.feat_norm.eps == 1e-5 and on.feat_norm.elementwise_affine and off.feat_norm is None
    assert {n for n, _ in on.named_parameters()} == {"feat_norm.weight", "feat_norm.bias", "mask_norm.weight", "mask_norm.bias"}
    off.load_state_dict({k: v for k, v in on.state_dict().items() if not k.startswith("feat_norm.")})
    embed = F.normalize(torch.randn(2, 8, 3, 3), dim=1)
    # LayerNorm changes the features: the two heads differ on the same prototypes
    assert not torch.allclose(on(embed)["prototype_logits"], off(embed)["prototype_logits"])
    with pytest.raises(ValueError, match="feat_norm must be a bool"):
        NearestPrototypeHead(4, 2, 8, feat_norm="yes")
    with pytest.raises(ValueError, match="embed has dimension 6 but prototypes has 8"):
        on.assign(torch.randn(1, 6, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), torch.randn(1, 4, 3, 3))


def test_state_dict_from_before_feat_norm_loads_or_says_how():
    old = NearestPrototypeHead(3, 2, 8, feat_norm=False)  # what a checkpoint before the change holds
    state = old.state_dict()
    assert not any(k.startswith("feat_norm.") for k in state)
    again = NearestPrototypeHead(3, 2, 8, feat_norm=False)
    again.load_state_dict(state)
    embed = torch.randn(1, 8, 3, 3)
    assert torch.equal(again(embed)["logits"], old(embed)["logits"])
    with pytest.raises(ValueError, match=r"no feat_norm weights .* feat_norm=False .*model.prototype_feat_norm: false"):
        NearestPrototypeHead(3, 2, 8).load_state_dict(state)
    with pytest.raises(ValueError, match=r"^prototype_head: the state dict has no feat_norm"):
        torch.nn.ModuleDict({"prototype_head": NearestPrototypeHead(3, 2, 8)}).load_state_dict(
            {f"prototype_head.{k}": v for k, v in state.items()})
    with pytest.raises(ValueError, match="has feat_norm weights but the head was built with feat_norm=False"):
        again.load_state_dict(NearestPrototypeHead(3, 2, 8).state_dict())


def test_checkpoint_from_before_feat_norm_restores_as_it_was(tmp_path):
    from contraseg.engine.checkpoint import save_checkpoint
    from contraseg.engine.config import Config
    from contraseg.engine.config_io import config_to_yaml
    from contraseg.engine.restore import restore_model
    from contraseg.models import build_segmentor
    from contraseg.models.segmentor import upgrade_model_config

    kwargs = dict(backbone="resnet18", head="mlp", num_classes=3, embed_dim=8, classifier="prototype", num_prototypes=2)
    model = build_segmentor(**kwargs, prototype_feat_norm=False).eval()
    assert model.config["prototype_feat_norm"] is False
    # the model_config of a checkpoint written before the key existed
    old_config = {k: v for k, v in model.config.items() if k != "prototype_feat_norm"}
    assert upgrade_model_config(old_config) == model.config
    assert upgrade_model_config({"classifier": "linear"}) == {"classifier": "linear"}
    path = tmp_path / "old.pth"
    save_checkpoint({"iteration": 1, "config": config_to_yaml(Config()), "model_config": old_config,
                     "model": model.state_dict()}, path)
    restored = restore_model(path).model
    assert restored.prototype_head.feat_norm is None
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(restored(images)["logits"], model(images)["logits"])
    # adaptation may start from it when its config says feat_norm is off, and refuses otherwise
    from contraseg.adapt.trainer import load_initial_weights

    fresh = build_segmentor(**kwargs, prototype_feat_norm=False)
    assert load_initial_weights(fresh, path, fresh.config) == 1
    assert torch.equal(fresh.prototype_head.bank.prototypes, model.prototype_head.bank.prototypes)
    with pytest.raises(ValueError, match="differs from the config's"):
        load_initial_weights(fresh, path, build_segmentor(**kwargs).config)


def test_prototype_feat_norm_config_key_reaches_the_head():
    from contraseg.engine.build import segmentor_kwargs
    from contraseg.engine.config import ConfigError, ModelConfig, config_from_dict

    proto = ModelConfig(classifier="prototype")
    assert proto.prototype_feat_norm is True and segmentor_kwargs(proto, 3)["prototype_feat_norm"] is True
    assert "prototype_feat_norm" not in segmentor_kwargs(ModelConfig(), 3)
    cfg = config_from_dict({"model": {"classifier": "prototype", "prototype_feat_norm": False}})
    assert segmentor_kwargs(cfg.model, 3)["prototype_feat_norm"] is False
    with pytest.raises(ConfigError, match="model.prototype_feat_norm"):
        config_from_dict({"model": {"prototype_feat_norm": "maybe"}})


def test_bank_update_in_float64_is_exact_to_float64_reference():
    gen = torch.Generator().manual_seed(1)
    bank = PrototypeBank(3, 2, 5, momentum=0.9).double()
    before = bank.prototypes.clone()
    before = before / before.norm(dim=-1, keepdim=True)  # float32-initialised: unit in float64 once renormalised
    feats = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 6, (40,), generator=gen)
    targets[:3] = 255
    correct = torch.rand(40, generator=gen) > 0.3
    bank.update(feats, targets, correct)
    expected = before.reshape(6, 5).clone()
    for j in range(6):
        rows = [i for i in range(40) if targets[i] == j and correct[i]]
        if rows:
            total = sum(feats[i] / feats[i].norm() for i in rows)
            moved = 0.9 * expected[j] + 0.1 * total / total.norm()
            expected[j] = moved / moved.norm()
    assert bank.prototypes.dtype == torch.float64
    assert torch.allclose(bank.prototypes.reshape(6, 5), expected, atol=1e-14, rtol=0)  # float64 rounding only
    # float32 storage, float64 features: averaged in float64, stored back in float32
    bank32 = PrototypeBank(3, 2, 5, momentum=0.9)
    bank32.update(feats, targets, correct)
    assert bank32.prototypes.dtype == torch.float32
    assert torch.allclose(bank32.prototypes.double(), bank.prototypes, atol=1e-7, rtol=0)


def test_head_autocast_bfloat16_computes_in_float32():
    head = NearestPrototypeHead(5, 2, 16)
    conv = torch.nn.Conv2d(4, 16, 1)
    x = torch.randn(2, 4, 6, 6)
    ref = head(F.normalize(conv(x), dim=1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embed = F.normalize(conv(x), dim=1)
        out = head(embed)
    assert embed.dtype == torch.bfloat16 and out["logits"].dtype == torch.float32
    assert (out["logits"] - ref["logits"]).abs().max() < 5e-2
