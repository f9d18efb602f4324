"""WDASS: image-level loss, pixel-to-prototype contrast and the weak-label prototype estimator.

Each vectorised implementation is compared with a slow loop written from the formula.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F

from contraseg.losses import ImageLevelLoss, PrototypeContrastLoss, WDASSContrastLoss
from contraseg.prototypes import WeakLabelPrototypeEstimator
from contraseg.prototypes import estimators as estimators_module

IGNORE = 255


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


# ----------------------------------------------------------------------------- image-level loss


def _image_level_reference(logits: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
    b_size, k_size, h, w = logits.shape
    total = logits.new_zeros(())
    for b in range(b_size):
        for k in range(k_size):
            values = [logits[b, k, y, x] for y in range(h) for x in range(w)]
            top = max(float(v.detach()) for v in values)
            sum_exp = sum(torch.exp(v - top) for v in values)
            pooled = top + torch.log(sum_exp) - math.log(h * w)
            q = 1.0 / (1.0 + torch.exp(-pooled))
            y = float(presence[b, k])
            total = total - (y * torch.log(q) + (1.0 - y) * torch.log(1.0 - q))
    return total / (b_size * k_size)


def test_image_level_loss_matches_loop_forward_and_gradient() -> None:
    torch.manual_seed(0)
    logits = (torch.randn(2, 3, 3, 4, dtype=torch.float64) * 3).requires_grad_()
    presence = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.bool)
    loss = ImageLevelLoss()(logits, presence)
    (grad,) = torch.autograd.grad(loss, logits)
    expected = _image_level_reference(logits, presence)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(grad, expected_grad, atol=1e-5)


def test_image_level_loss_reductions_and_float_presence() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    presence = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    per_item = ImageLevelLoss("none")(logits, presence)
    assert per_item.shape == (2, 4)
    assert torch.allclose(ImageLevelLoss("sum")(logits, presence), per_item.sum())
    assert torch.allclose(ImageLevelLoss()(logits, presence.bool()), per_item.mean())
    assert torch.allclose(ImageLevelLoss()(logits, presence), _image_level_reference(logits, presence), atol=1e-10)


def test_image_level_loss_is_stable_for_large_logits() -> None:
    logits = torch.full((1, 2, 2, 2), 200.0)
    logits[0, 1] = -200.0
    loss = ImageLevelLoss("none")(logits, torch.tensor([[0.0, 1.0]]))
    assert torch.isfinite(loss).all()
    assert torch.allclose(loss, torch.tensor([[200.0, 200.0]]), rtol=1e-4)


def test_image_level_loss_gradcheck() -> None:
    torch.manual_seed(2)
    logits = torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    presence = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: ImageLevelLoss()(x, presence), (logits,))


def test_image_level_loss_errors() -> None:
    loss = ImageLevelLoss()
    logits = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"presence must be B x K = \(2, 3\).*\(2, 4\)"):
        loss(logits, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"presence must be B x K = \(2, 3\).*\(3, 3\)"):
        loss(logits, torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"logits must be a floating B x K x H x W"):
        loss(torch.randn(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"presence must lie in \[0, 1\]"):
        loss(logits, torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="reduction"):
        ImageLevelLoss("max")


# ----------------------------------------------------------------------------- prototype contrast


def _contrast_reference(embeddings, labels, prototypes, valid, temperature, ignore_index=IGNORE):
    """labels are already on the embedding grid."""
    b_size, _, h, w = embeddings.shape
    terms = []
    for b in range(b_size):
        for y in range(h):
            for x in range(w):
                cls = int(labels[b, y, x])
                if cls == ignore_index or not bool(valid[cls]):
                    continue
                f = _unit(embeddings[b, :, y, x])
                scores = {k: f @ _unit(prototypes[k].detach()) / temperature
                          for k in range(prototypes.shape[0]) if bool(valid[k])}
                log_den = torch.log(sum(torch.exp(s) for s in scores.values()))
                terms.append(log_den - scores[cls])
    return torch.stack(terms).mean()


def test_prototype_contrast_matches_loop_with_label_resize_and_invalid_classes() -> None:
    torch.manual_seed(3)
    embed = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    labels_small = torch.randint(0, 4, (2, 3, 3))
    labels_small[0, 0, :] = IGNORE
    labels_small[1, 2, 2] = 2  # class 2 has no prototype: skipped
    labels = labels_small.repeat_interleave(2, 1).repeat_interleave(2, 2)  # 6 x 6, nearest -> [::2, ::2]
    protos = torch.randn(4, 5, dtype=torch.float64)
    valid = torch.tensor([True, True, False, True])
    loss_fn = PrototypeContrastLoss(temperature=0.2)
    loss = loss_fn(embed, labels, protos, valid)
    (grad,) = torch.autograd.grad(loss, embed)
    expected = _contrast_reference(embed, labels_small, protos, valid, 0.2)
    (expected_grad,) = torch.autograd.grad(expected, embed)
    assert torch.allclose(loss, expected, atol=1e-10)
    assert torch.allclose(grad, expected_grad, atol=1e-10)
    # The row of an invalid class does not matter.
    other = protos.clone()
    other[2] = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(loss_fn(embed, labels, other, valid), loss)


def test_prototype_contrast_default_valid_is_all_classes() -> None:
    torch.manual_seed(4)
    embed = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (1, 4, 4))
    protos = torch.randn(3, 4, dtype=torch.float64)
    loss = PrototypeContrastLoss(temperature=0.1)(embed, labels, protos)
    expected = _contrast_reference(embed, labels, protos, torch.ones(3, dtype=torch.bool), 0.1)
    assert torch.allclose(loss, expected, atol=1e-10)


def test_prototype_contrast_gradient_does_not_reach_prototypes() -> None:
    torch.manual_seed(5)
    embed = torch.randn(1, 4, 3, 3, requires_grad=True)
    protos = torch.randn(3, 4, requires_grad=True)
    PrototypeContrastLoss()(embed, torch.randint(0, 3, (1, 3, 3)), protos).backward()
    assert protos.grad is None
    assert embed.grad is not None and embed.grad.abs().sum() > 0


def test_prototype_contrast_nothing_to_contrast_gives_zero_with_gradient() -> None:
    embed = torch.randn(1, 4, 3, 3, requires_grad=True)
    protos = torch.randn(3, 4)
    loss_fn = PrototypeContrastLoss()
    all_ignored = loss_fn(embed, torch.full((1, 3, 3), IGNORE), protos)
    assert all_ignored.item() == 0.0
    all_ignored.backward()
    assert embed.grad is not None and torch.count_nonzero(embed.grad) == 0
    only_invalid = loss_fn(embed, torch.ones(1, 3, 3, dtype=torch.long), protos,
                           torch.tensor([True, False, True]))
    assert only_invalid.item() == 0.0 and only_invalid.requires_grad


def test_prototype_contrast_errors() -> None:
    loss_fn = PrototypeContrastLoss()
    embed = torch.randn(1, 4, 3, 3)
    labels = torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"prototypes must be K x D .*\(1, 4, 3, 3\).*\(3, 5\)"):
        loss_fn(embed, labels, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"labels contains 7, outside \[0, 3\)"):
        loss_fn(embed, torch.full((1, 3, 3), 7), torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"valid must be a bool tensor of shape \(3,\)"):
        loss_fn(embed, labels, torch.randn(3, 4), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        PrototypeContrastLoss(temperature=0.0)


def test_prototype_contrast_bf16_embeddings() -> None:
    torch.manual_seed(6)
    embed = torch.randn(1, 4, 3, 3)
    labels = torch.randint(0, 3, (1, 3, 3))
    protos = torch.randn(3, 4)
    low = embed.bfloat16().requires_grad_()
    loss = PrototypeContrastLoss()(low, labels, protos)
    loss.backward()
    assert torch.isfinite(loss) and low.grad.dtype == torch.bfloat16
    assert torch.allclose(loss, PrototypeContrastLoss()(low.detach().float(), labels, protos), atol=1e-6)


# ----------------------------------------------------------------------------- WDASS contrast


def test_wdass_contrast_is_weighted_sum_of_parts_and_asymmetric() -> None:
    torch.manual_seed(7)
    src = torch.randn(2, 6, 3, 3, requires_grad=True)
    tgt = torch.randn(2, 6, 3, 3, requires_grad=True)
    src_labels = torch.randint(0, 4, (2, 3, 3))
    tgt_labels = torch.full((2, 3, 3), IGNORE)
    tgt_labels[:, 0, :] = torch.randint(0, 4, (2, 3))
    src_protos = torch.randn(4, 6, requires_grad=True)
    tgt_protos = torch.randn(4, 6, requires_grad=True)
    tgt_valid = torch.tensor([True, True, False, True])
    loss_fn = WDASSContrastLoss(temperature=0.1, cross_weight=0.5, intra_weight=2.0)
    out = loss_fn(src, src_labels, tgt, tgt_labels, src_protos, tgt_protos, target_valid=tgt_valid)
    part = PrototypeContrastLoss(temperature=0.1)
    assert torch.allclose(out["cross"], part(src, src_labels, tgt_protos, tgt_valid))
    assert torch.allclose(out["intra_source"], part(src, src_labels, src_protos))
    assert torch.allclose(out["intra_target"], part(tgt, tgt_labels, tgt_protos, tgt_valid))
    expected = 0.5 * out["cross"] + 2.0 * (out["intra_source"] + out["intra_target"])
    assert torch.allclose(out["total"], expected)
    # The cross term moves only source pixels: target features and prototypes stay put.
    out["cross"].backward()
    assert src.grad is not None and src.grad.abs().sum() > 0
    assert tgt.grad is None and tgt_protos.grad is None and src_protos.grad is None


def test_wdass_contrast_errors() -> None:
    loss_fn = WDASSContrastLoss()
    embed = torch.randn(1, 4, 2, 2)
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"source_prototypes \(3, 4\) and target_prototypes \(2, 4\)"):
        loss_fn(embed, labels, embed, labels, torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="cross_weight"):
        WDASSContrastLoss(cross_weight=-1.0)


# ----------------------------------------------------------------------------- estimator


def _estimate_reference(embed, weak, pseudo, conf, threshold, num_classes, temperature, presence=None):
    """Per-class loops; all label maps already on the embedding grid; weak None = image-level."""
    b_size, dim, h, w = embed.shape
    pixels = [(b, y, x) for b in range(b_size) for y in range(h) for x in range(w)]
    protos = torch.zeros(num_classes, dim, dtype=torch.float64)
    valid = torch.zeros(num_classes, dtype=torch.bool)
    for k in range(num_classes):
        weak_feats, assigned_feats = [], []
        for b, y, x in pixels:
            f = _unit(embed[b, :, y, x].double())
            label = None
            if weak is not None and int(weak[b, y, x]) != IGNORE:
                label = int(weak[b, y, x])
                if label == k:
                    weak_feats.append(f)
            elif pseudo is not None and int(pseudo[b, y, x]) != IGNORE:
                confident = conf is None or float(conf[b, y, x]) >= threshold
                allowed = presence is None or bool(presence[b, int(pseudo[b, y, x])])
                if confident and allowed:
                    label = int(pseudo[b, y, x])
            if label == k:
                assigned_feats.append(f)
        if not assigned_feats:
            continue
        centre = _unit(sum(weak_feats if weak_feats else assigned_feats))
        scores = [float(f @ centre) / temperature for f in assigned_feats]
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        mean = sum(e / sum(exps) * f for e, f in zip(exps, assigned_feats))
        protos[k] = _unit(mean)
        valid[k] = True
    return protos, valid


def _weak_batch(seed: int = 8):
    """2 x 6 x 4 x 4 embeddings; labels at 8 x 8 (nearest -> [::2, ::2]).

    Class 0: weak + pseudo pixels; class 1: weak only; class 2: only confident pseudo;
    class 3: only unconfident pseudo (invalid); class 4: nothing (invalid).
    """
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(2, 6, 4, 4, generator=g, dtype=torch.float64)
    weak = torch.full((2, 4, 4), IGNORE)
    weak[0, 0, :3] = 0
    weak[1, 1, 1] = 0
    weak[0, 2, :2] = 1
    weak[1, 3, 3] = 1
    pseudo = torch.randint(0, 4, (2, 4, 4), generator=g)
    pseudo[:, 3, :2] = IGNORE
    pseudo[pseudo == 1] = 0
    conf = torch.rand(2, 4, 4, generator=g, dtype=torch.float64) * 0.4 + 0.6
    conf[pseudo == 3] = 0.2
    conf[0, 0, 0] = 0.1  # weak label wins whatever the pseudo label says
    up = lambda t: t.repeat_interleave(2, 1).repeat_interleave(2, 2)  # noqa: E731
    return embed, weak, pseudo, conf, up


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5])
def test_estimate_matches_per_class_loop(temperature: float) -> None:
    embed, weak, pseudo, conf, up = _weak_batch()
    est = WeakLabelPrototypeEstimator(num_classes=5, dim=6, temperature=temperature)
    protos, valid = est.estimate(embed, up(weak), up(pseudo), up(conf), threshold=0.75)
    ref_protos, ref_valid = _estimate_reference(embed, weak, pseudo, conf, 0.75, 5, temperature)
    assert valid.tolist() == ref_valid.tolist()
    assert valid[:3].all() and not valid[3:].any()
    assert torch.allclose(protos, ref_protos, atol=1e-10)
    assert protos.dtype == torch.float64
    assert torch.allclose(protos[valid].norm(dim=1), torch.ones(3, dtype=torch.float64))
    assert torch.count_nonzero(protos[~valid]) == 0


def test_estimate_weak_only_and_pseudo_without_confidence() -> None:
    embed, weak, pseudo, _, up = _weak_batch(9)
    est = WeakLabelPrototypeEstimator(num_classes=5, dim=6)
    protos, valid = est.estimate(embed, up(weak))
    ref_protos, ref_valid = _estimate_reference(embed, weak, None, None, 0.9, 5, 0.1)
    assert valid.tolist() == [True, True, False, False, False] == ref_valid.tolist()
    assert torch.allclose(protos, ref_protos, atol=1e-10)
    protos, valid = est.estimate(embed, up(weak), up(pseudo))
    ref_protos, ref_valid = _estimate_reference(embed, weak, pseudo, None, 0.9, 5, 0.1)
    assert valid.tolist() == ref_valid.tolist() == [True, True, True, True, False]
    assert torch.allclose(protos, ref_protos, atol=1e-10)


def test_estimate_carries_no_gradient() -> None:
    embed = torch.randn(1, 3, 2, 2, requires_grad=True)
    protos, _ = WeakLabelPrototypeEstimator(2, 3).estimate(embed, torch.zeros(1, 2, 2, dtype=torch.long))
    assert not protos.requires_grad


def test_estimate_from_image_labels_respects_presence() -> None:
    embed, _, pseudo, conf, up = _weak_batch(10)
    presence = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.float32)
    est = WeakLabelPrototypeEstimator(num_classes=5, dim=6, temperature=0.1)
    protos, valid = est.estimate_from_image_labels(embed, presence, up(pseudo), up(conf), threshold=0.7)
    ref_protos, ref_valid = _estimate_reference(embed, None, pseudo, conf, 0.7, 5, 0.1, presence.bool())
    assert valid.tolist() == ref_valid.tolist()
    assert torch.allclose(protos, ref_protos, atol=1e-10)
    # Class 0 is absent from image 1: its pixels there must not count.
    only_first = est.estimate_from_image_labels(embed[:1], presence[:1], up(pseudo)[:1], up(conf)[:1], 0.7)
    assert torch.allclose(protos[0], only_first[0][0], atol=1e-10)
    nothing = est.estimate_from_image_labels(embed, torch.zeros(2, 5), up(pseudo), up(conf), 0.7)
    assert not nothing[1].any()


def test_update_is_an_ema_with_first_time_copy() -> None:
    embed, weak, pseudo, conf, up = _weak_batch(11)
    est = WeakLabelPrototypeEstimator(num_classes=5, dim=6, momentum=0.8).double()
    first, first_valid = est.estimate(embed[:1], up(weak)[:1])
    est.update("target", embed[:1], up(weak)[:1])
    protos, valid = est.get("target")
    assert valid.tolist() == first_valid.tolist() == [True, True, False, False, False]
    assert torch.allclose(protos, first)
    second, second_valid = est.estimate(embed[1:], up(weak)[1:], up(pseudo)[1:], up(conf)[1:], 0.75)
    est.update("target", embed[1:], up(weak)[1:], up(pseudo)[1:], up(conf)[1:], 0.75)
    protos, valid = est.get("target")
    assert valid.tolist() == (first_valid | second_valid).tolist()
    for k in range(5):
        if first_valid[k] and second_valid[k]:
            expected = _unit(0.8 * first[k] + 0.2 * second[k])
        elif second_valid[k]:
            expected = second[k]
        else:
            expected = first[k]
        assert torch.allclose(protos[k], expected, atol=1e-12), k
    assert torch.count_nonzero(est.get("source")[0]) == 0 and not est.get("source")[1].any()


def test_update_from_image_labels_and_get_returns_copies() -> None:
    embed, _, pseudo, conf, up = _weak_batch(12)
    presence = torch.ones(2, 5, dtype=torch.bool)
    est = WeakLabelPrototypeEstimator(num_classes=5, dim=6)
    est.update_from_image_labels("target", embed, presence, up(pseudo), up(conf), 0.7)
    expected, expected_valid = est.estimate_from_image_labels(embed, presence, up(pseudo), up(conf), 0.7)
    protos, valid = est.get("target")
    assert valid.tolist() == expected_valid.tolist()
    assert torch.allclose(protos, expected.float())
    protos.zero_()
    assert est.get("target")[0].abs().sum() > 0


def test_state_dict_round_trip_and_device_dtype_follow() -> None:
    embed, weak, _, _, up = _weak_batch(13)
    est = WeakLabelPrototypeEstimator(num_classes=5, dim=6, domains=("gta", "city"))
    est.update("city", embed, up(weak))
    state = est.state_dict()
    assert set(state) == {"prototypes", "initialised"}
    assert state["prototypes"].shape == (2, 5, 6) and state["initialised"].shape == (2, 5)
    fresh = WeakLabelPrototypeEstimator(num_classes=5, dim=6, domains=("gta", "city"))
    fresh.load_state_dict(state)
    for domain in ("gta", "city"):
        assert torch.equal(fresh.get(domain)[0], est.get(domain)[0])
        assert torch.equal(fresh.get(domain)[1], est.get(domain)[1])
    assert fresh.double().get("city")[0].dtype == torch.float64


def test_bf16_embeddings() -> None:
    embed, weak, pseudo, conf, up = _weak_batch(14)
    low = embed.to(torch.bfloat16)
    est = WeakLabelPrototypeEstimator(num_classes=5, dim=6)
    protos, valid = est.estimate(low, up(weak), up(pseudo), up(conf).to(torch.bfloat16), 0.75)
    assert protos.dtype == torch.float32 and torch.isfinite(protos).all()
    reference, ref_valid = est.estimate(low.float(), up(weak), up(pseudo), up(conf).to(torch.bfloat16), 0.75)
    assert torch.equal(valid, ref_valid) and torch.allclose(protos, reference)
    est.update("source", low, up(weak))
    assert est.get("source")[1].any()


def test_sharded_estimate_with_all_reduce_equals_full_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks (threads) with a summing all-reduce agree with one rank on the whole batch."""
    embed, weak, pseudo, conf, up = _weak_batch(15)
    est = WeakLabelPrototypeEstimator(num_classes=5, dim=6)
    full = est.estimate(embed, up(weak), up(pseudo), up(conf), 0.75)

    barrier = threading.Barrier(2)
    slots: list[torch.Tensor | None] = [None, None]
    local = threading.local()

    def fake_all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
        slots[local.rank] = tensor.clone()
        barrier.wait(timeout=10)
        total = slots[0] + slots[1]
        barrier.wait(timeout=10)
        return tensor.copy_(total)

    monkeypatch.setattr(estimators_module, "all_reduce_sum", fake_all_reduce_sum)
    results: list[tuple[torch.Tensor, torch.Tensor] | None] = [None, None]

    def run(rank: int) -> None:
        local.rank = rank
        part = slice(rank, rank + 1)
        results[rank] = est.estimate(embed[part], up(weak)[part], up(pseudo)[part], up(conf)[part], 0.75)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    for result in results:
        assert result is not None
        assert torch.equal(result[1], full[1])
        assert torch.allclose(result[0], full[0], atol=1e-12)


def test_estimator_errors() -> None:
    est = WeakLabelPrototypeEstimator(num_classes=3, dim=4)
    embed = torch.randn(1, 4, 2, 2)
    weak = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"unknown domain 'val'; domains are source, target"):
        est.get("val")
    with pytest.raises(ValueError, match=r"unknown domain 'val'"):
        est.update("val", embed, weak)
    with pytest.raises(ValueError, match=r"embeddings has dimension 5 but the estimator has 4"):
        est.estimate(torch.randn(1, 5, 2, 2), weak)
    with pytest.raises(ValueError, match=r"weak_labels contains 3, outside \[0, 3\)"):
        est.estimate(embed, torch.full((1, 2, 2), 3))
    with pytest.raises(ValueError, match=r"weak_labels has batch size 2"):
        est.estimate(embed, torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"confidence must have the shape of pseudo_labels \(1, 2, 2\), got \(1, 3, 3\)"):
        est.estimate(embed, weak, weak, torch.ones(1, 3, 3))
    with pytest.raises(ValueError, match="confidence was given without pseudo_labels"):
        est.estimate(embed, weak, None, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match=r"presence must be B x K = \(1, 3\), got \(1, 4\)"):
        est.estimate_from_image_labels(embed, torch.ones(1, 4), weak)
    with pytest.raises(ValueError, match="pseudo_labels is required"):
        est.estimate_from_image_labels(embed, torch.ones(1, 3), None)
    with pytest.raises(ValueError, match=r"temperature must be >= 0.05"):
        WeakLabelPrototypeEstimator(3, 4, temperature=0.01)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        WeakLabelPrototypeEstimator(3, 4, momentum=1.0)
    with pytest.raises(ValueError, match="domains must be distinct strings"):
        WeakLabelPrototypeEstimator(3, 4, domains=("a", "a"))
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        WeakLabelPrototypeEstimator(0, 4)


def test_confidence_threshold_is_inclusive() -> None:
    embed = torch.randn(1, 3, 1, 2, dtype=torch.float64)
    weak = torch.full((1, 1, 2), IGNORE)
    pseudo = torch.tensor([[[0, 1]]])
    conf = torch.tensor([[[0.75, 0.7499]]], dtype=torch.float64)
    est = WeakLabelPrototypeEstimator(num_classes=2, dim=3)
    protos, valid = est.estimate(embed, weak, pseudo, conf, threshold=0.75)
    assert valid.tolist() == [True, False]
    assert torch.allclose(protos[0], _unit(embed[0, :, 0, 0]))
