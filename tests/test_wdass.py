"""WDASS: image-level loss, pixel-to-prototype contrast and the weak-label prototype estimator.

Each vectorised implementation is compared with a slow loop written from the formula.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F

from contraseg.losses import ImageLevelLoss, PrototypeContrastLoss
from contraseg.losses import WDASSSoftmaxContrastLoss
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


def test_wdass_softmax_contrast_is_weighted_sum_of_parts_and_asymmetric() -> None:
    torch.manual_seed(7)
    src = torch.randn(2, 6, 3, 3, requires_grad=True)
    tgt = torch.randn(2, 6, 3, 3, requires_grad=True)
    src_labels = torch.randint(0, 4, (2, 3, 3))
    tgt_labels = torch.full((2, 3, 3), IGNORE)
    tgt_labels[:, 0, :] = torch.randint(0, 4, (2, 3))
    src_protos = torch.randn(4, 6, requires_grad=True)
    tgt_protos = torch.randn(4, 6, requires_grad=True)
    tgt_valid = torch.tensor([True, True, False, True])
    loss_fn = WDASSSoftmaxContrastLoss(temperature=0.1, cross_weight=0.5, intra_weight=2.0)
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


def test_wdass_softmax_contrast_errors() -> None:
    loss_fn = WDASSSoftmaxContrastLoss()
    embed = torch.randn(1, 4, 2, 2)
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"source_prototypes \(3, 4\) and target_prototypes \(2, 4\)"):
        loss_fn(embed, labels, embed, labels, torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="cross_weight"):
        WDASSSoftmaxContrastLoss(cross_weight=-1.0)


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


# ----------------------------------------------------------------------------- released contrast
# References written from the released code (loss/contrast_loss*.py of anurag-198/WDASS):
# plain loops over the sampled A x A pairs, float64.

from contraseg.losses import PixelView, SampledPrototypeContrastLoss, WDASSContrastLoss  # noqa: E402
from contraseg.losses.wdass_contrast import fill_unlabelled  # noqa: E402
from contraseg.losses.wdass_contrast_term import sampled_prototype_contrast  # noqa: E402
from contraseg.prototypes import WDASSPrototypeEstimator  # noqa: E402
from contraseg.sampling import HardAnchorSampler, LoopAnchorSampler  # noqa: E402


def _released_contrast_loop(anchors, labels, prototypes, domains=None, t=0.1, t_base=0.07):
    """The released ``_contrastive``: contrast set = the prototypes of all A sampled anchors."""
    a_num = anchors.shape[0]
    feats = F.normalize(anchors, dim=1)
    total = anchors.new_zeros(())
    for i in range(a_num):
        logits = [feats[i] @ prototypes[int(labels[j])] / t for j in range(a_num)]
        negatives = sum(torch.exp(logits[j]) for j in range(a_num) if labels[j] != labels[i])
        positive_sum, positive_count = anchors.new_zeros(()), 0
        for j in range(a_num):
            if labels[j] != labels[i] or (domains is not None and domains[j] == domains[i]):
                continue
            positive_sum = positive_sum + logits[j] - torch.log(torch.exp(logits[j]) + negatives)
            positive_count += 1
        # Released: mask.sum(1) + 1e-8 with a float32 mask (the 1e-8 vanishes once count >= 1).
        count = (torch.tensor(float(positive_count), dtype=torch.float32) + 1e-8).item()
        total = total - (t / t_base) * positive_sum / count
    return total / a_num


def _released_sampling_loop(labels, preds, probs, max_samples, max_views, threshold, ignore=IGNORE):
    """The released ``_hard_anchor_sampling`` for inputs where the chosen set is unique
    (every kept pair has exactly n_view hard + easy pixels). Returns (flat index, class, image) rows."""
    b = labels.shape[0]
    flat_l, flat_p, flat_q = labels.reshape(b, -1), preds.reshape(b, -1), probs.reshape(b, -1)
    classes = []
    for i in range(b):
        present = [int(c) for c in torch.unique(flat_l[i]) if int(c) != ignore]
        classes.append([c for c in present if int((flat_l[i] == c).sum()) > max_views])
    total = sum(len(c) for c in classes)
    if total == 0:
        return []
    n_view = min(max_samples // total, max_views)
    rows = []
    for i in range(b):
        for c in classes[i]:
            hard = [p for p in range(flat_l.shape[1]) if flat_l[i, p] == c and flat_p[i, p] != c]
            easy = [p for p in range(flat_l.shape[1])
                    if flat_l[i, p] == c and flat_p[i, p] == c and flat_q[i, p] > threshold]
            if len(hard) >= n_view:
                assert len(hard) == n_view, "test input must make the choice unique"
                chosen = hard
            elif len(hard) + len(easy) >= n_view:
                assert len(hard) + len(easy) == n_view, "test input must make the choice unique"
                chosen = hard + easy
            else:
                continue
            rows.append(([i * flat_l.shape[1] + p for p in chosen], c, i))
    return rows


def _designed_batch(threshold=0.95):
    """Two 8 x 8 images (0 = source, 1 = target) whose released anchor choice is unique.

    Per (image, class): 9 pixels; kept pairs have 6 hard + easy pixels and 3 correct pixels
    at exactly ``threshold`` (not easy: the released test is strict); image 0's class 3 has
    only 4 usable pixels (dropped, but it counts in P); class 5 has 5 pixels (no candidate).
    Class 0 is only in the source and class 4 only in the target: positive-less in the cross term.
    """
    specs = {0: [(0, 2), (1, 0), (2, 6), (3, 1), (5, None)], 1: [(1, 3), (2, 1), (4, 2)]}
    labels = torch.full((2, 8, 8), IGNORE)
    preds = torch.full((2, 8, 8), 5)
    probs = torch.full((2, 8, 8), 0.5, dtype=torch.float64)
    for image, pairs in specs.items():
        pos = 0
        for cls, hard in pairs:
            flat_l, flat_p, flat_q = labels[image].view(-1), preds[image].view(-1), probs[image].view(-1)
            if hard is None:  # 5 easy pixels, too few to be a candidate
                flat_l[pos:pos + 5], flat_p[pos:pos + 5], flat_q[pos:pos + 5] = cls, cls, 0.99
                pos += 5
                continue
            usable = 4 if cls == 3 else 6
            for k in range(9):
                flat_l[pos + k] = cls
                if k < hard:
                    flat_p[pos + k] = (cls + 1) % 6
                    flat_q[pos + k] = 0.99
                elif k < usable:
                    flat_p[pos + k], flat_q[pos + k] = cls, 0.99
                else:
                    flat_p[pos + k], flat_q[pos + k] = cls, threshold
            pos += 9
    return labels, preds, probs


def test_released_contrast_end_to_end_matches_released_loops() -> None:
    torch.manual_seed(21)
    labels, preds, probs = _designed_batch()
    embed = torch.randn(2, 5, 8, 8, dtype=torch.float64, requires_grad=True)
    protos = torch.randn(6, 5, dtype=torch.float64) * 0.7  # not normalised, as released
    loss_fn = SampledPrototypeContrastLoss(max_samples=42, max_views=7, easy_threshold=0.95)
    rows = _released_sampling_loop(labels, preds, probs, 42, 7, 0.95)
    assert len(rows) == 6 and all(len(r[0]) == 6 for r in rows)  # n_view 6: the dropped pair counted in P
    flat = embed.permute(0, 2, 3, 1).reshape(-1, 5)
    index = [p for r in rows for p in r[0]]
    anchor_labels = [r[1] for r in rows for _ in r[0]]
    anchor_domains = [r[2] for r in rows for _ in r[0]]
    for domains, ref_domains in ((None, None), (torch.tensor([0, 1]), anchor_domains)):
        value = loss_fn(embed, labels, preds, probs, protos, domains)
        ref = _released_contrast_loop(flat[index], anchor_labels, protos, ref_domains)
        (grad,) = torch.autograd.grad(value, embed)
        (ref_grad,) = torch.autograd.grad(ref, embed)
        assert abs(value.item() - ref.item()) < 1e-8
        assert torch.allclose(grad, ref_grad, atol=1e-8, rtol=0)
    # Positive-less anchors (classes 0 and 4 in the cross term) add 0 but count in the mean.
    cross = loss_fn(embed, labels, preds, probs, protos, torch.tensor([0, 1]))
    per_anchor = sampled_prototype_contrast(F.normalize(flat[index], dim=1), torch.tensor(anchor_labels), protos,
                                            0.1, 0.07, torch.tensor(anchor_domains))
    lonely = torch.tensor([c in (0, 4) for c in anchor_labels])
    assert lonely.sum() == 12 and (per_anchor[lonely] == 0).all() and (per_anchor[~lonely] != 0).all()
    assert abs(cross.item() - per_anchor.sum().item() / len(index)) < 1e-12


@pytest.mark.parametrize("cross", [False, True])
def test_released_contrast_matches_loops_on_sampled_anchors(cross: bool) -> None:
    torch.manual_seed(3 + cross)
    b, d, h, w, k = 4, 6, 12, 12, 5
    embed = torch.randn(b, d, h, w, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, k, (b, 3, 3)).repeat_interleave(4, 1).repeat_interleave(4, 2)
    labels[:, :2] = IGNORE
    logits = torch.randn(b, k, h, w, dtype=torch.float64) * 4
    preds, probs = logits.argmax(1), logits.softmax(1).amax(1)
    protos = torch.randn(k, d, dtype=torch.float64)
    domains = torch.tensor([0, 0, 1, 1]) if cross else None
    loss_fn = SampledPrototypeContrastLoss(max_samples=64, max_views=10, easy_threshold=0.6)
    samples = loss_fn.sample(labels, preds, probs, torch.Generator().manual_seed(0))
    assert samples.num_pairs > 2
    value = loss_fn(embed, labels, preds, probs, protos, domains, torch.Generator().manual_seed(0))
    flat = embed.permute(0, 2, 3, 1).reshape(-1, d)
    anchor_labels = samples.anchor_labels().tolist()
    anchor_domains = None if domains is None else domains[samples.image].repeat_interleave(samples.num_views).tolist()
    ref = _released_contrast_loop(flat[samples.index.reshape(-1)], anchor_labels, protos, anchor_domains)
    (grad,) = torch.autograd.grad(value, embed)
    (ref_grad,) = torch.autograd.grad(ref, embed)
    assert abs(value.item() - ref.item()) < 1e-8
    assert torch.allclose(grad, ref_grad, atol=1e-8, rtol=0)


def test_released_sampler_rules_vectorised_and_loop_agree() -> None:
    torch.manual_seed(5)
    labels = torch.randint(0, 4, (3, 2, 4)).repeat_interleave(5, 1).repeat_interleave(5, 2)
    labels[0, :3] = IGNORE
    preds = torch.where(torch.rand(labels.shape) < 0.3, torch.randint(0, 4, labels.shape), labels)
    probs = torch.rand(labels.shape, dtype=torch.float64)
    for cls in (HardAnchorSampler, LoopAnchorSampler):
        sampler = cls(max_samples=40, max_views=8, quota="hard_first", easy_threshold=0.5)
        samples = sampler(labels, preds, generator=torch.Generator().manual_seed(1), confidence=probs)
        rows = {}
        flat_l, flat_p, flat_q = labels.reshape(-1), preds.reshape(-1), probs.reshape(-1)
        for row, cls_id, image in zip(samples.index, samples.labels, samples.image):
            assert len(set(row.tolist())) == row.numel() and (row // 200 == image).all()
            hard = (flat_p[row] != cls_id) & (flat_l[row] == cls_id)
            easy = (flat_p[row] == cls_id) & (flat_l[row] == cls_id) & (flat_q[row] > 0.5)
            assert (hard | easy).all()
            in_pair = (labels[image].reshape(-1) == cls_id)
            available = int((in_pair & (preds[image].reshape(-1) != cls_id)).sum())
            assert int(hard.sum()) == min(available, samples.num_views)  # hard first
            rows[(int(image), int(cls_id))] = row.numel()
        # Kept pairs: > max_views label pixels and >= n_view hard + easy pixels.
        pairs = [(i, c) for i in range(3) for c in range(4) if int((labels[i] == c).sum()) > 8]
        n_view = min(40 // len(pairs), 8)
        expected = set()
        for i, c in pairs:
            is_c = labels[i] == c
            usable = int((is_c & ((preds[i] != c) | (probs[i] > 0.5))).sum())
            if usable >= n_view:
                expected.add((i, c))
        assert set(rows) == expected and samples.num_views == n_view


def test_released_contrast_edge_cases_give_zero_with_gradient() -> None:
    embed = torch.randn(2, 4, 6, 6, requires_grad=True)
    protos = torch.randn(3, 4)
    preds = torch.zeros(2, 6, 6, dtype=torch.long)
    probs = torch.ones(2, 6, 6)
    loss_fn = SampledPrototypeContrastLoss(max_samples=16, max_views=4)
    cases = {
        "all ignored": torch.full((2, 6, 6), IGNORE),
        "classes too small": torch.full((2, 6, 6), IGNORE).index_fill_(1, torch.tensor([0]), 1),
    }
    for name, labels in cases.items():
        for domains in (None, torch.tensor([0, 1])):
            value = loss_fn(embed, labels, preds, probs, protos, domains)
            value.backward()
            assert value.item() == 0 and embed.grad is not None and embed.grad.abs().sum() == 0, name
            embed.grad = None
    # More (image, class) pairs than max_samples: n_view = 0, nothing sampled (released: shape error).
    many = torch.arange(36).reshape(1, 6, 6).repeat(2, 1, 1) % 3
    tiny = SampledPrototypeContrastLoss(max_samples=5, max_views=1)
    assert tiny(embed, many, preds, probs, protos).item() == 0
    # No easy pixel above the threshold and no hard pixel: every pair dropped.
    labels = torch.zeros(2, 6, 6, dtype=torch.long)
    assert loss_fn(embed, labels, preds, torch.full((2, 6, 6), 0.95), protos).item() == 0
    # The combined loss does not raise when nothing is sampled anywhere.
    view = PixelView(embed, torch.full((2, 6, 6), IGNORE), preds, probs * 0)
    out = WDASSContrastLoss()(view, view, None, protos, protos)
    out["total"].backward()
    assert all(v.item() == 0 for v in out.values()) and embed.grad is not None


def test_wdass_released_contrast_is_the_released_composition() -> None:
    torch.manual_seed(11)
    b, d, h, w, k = 2, 6, 10, 10, 4
    source = torch.randn(b, d, h, w, dtype=torch.float64, requires_grad=True)
    target = torch.randn(b, d, h, w, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(b, d, h, w, dtype=torch.float64)
    src_labels = torch.randint(0, k, (b, 2, 2)).repeat_interleave(5, 1).repeat_interleave(5, 2)
    weak = torch.full((b, h, w), IGNORE)
    weak[:, ::3, ::3] = torch.randint(0, k, (b, 4, 4))

    def view(embed, labels, seed):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(b, k, h, w, generator=g, dtype=torch.float64) * 5
        return PixelView(embed, labels, logits.argmax(1), logits.softmax(1).amax(1))

    s_view, t_view, k_view = view(source, src_labels, 1), view(target, weak, 2), view(teacher, weak, 3)
    k_view = k_view._replace(predictions=torch.where(k_view.confidence >= 0.95, k_view.predictions, IGNORE))
    protos_s, protos_t = torch.randn(k, d, dtype=torch.float64), torch.randn(k, d, dtype=torch.float64)
    loss_fn = WDASSContrastLoss(cross_weight=0.5, intra_weight=0.25, cross_threshold=0.9, intra_threshold=0.8)
    out = loss_fn(s_view, t_view, k_view, protos_s, protos_t, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    cross = loss_fn.cross(torch.cat([source, teacher]), torch.cat([src_labels, fill_unlabelled(weak, k_view[2])]),
                          torch.cat([s_view[2], k_view[2]]), torch.cat([s_view[3], k_view[3]]), protos_t,
                          torch.tensor([0, 0, 1, 1]), g)
    intra_s = loss_fn.intra(source, fill_unlabelled(src_labels, s_view[2]), s_view[2], s_view[3], protos_s, None, g)
    intra_t = loss_fn.intra(target, fill_unlabelled(weak, t_view[2]), t_view[2], t_view[3], protos_t, None, g)
    assert torch.allclose(out["cross"], cross) and torch.allclose(out["intra_source"], intra_s)
    assert torch.allclose(out["intra_target"], intra_t)
    assert torch.allclose(out["total"], 0.5 * cross + 0.25 * (intra_s + intra_t))
    assert out["cross"].item() > 0 and out["intra_target"].item() > 0
    # Target anchors of the cross term are the teacher's: moving them changes the cross term.
    moved = loss_fn(s_view, t_view, k_view._replace(embeddings=-teacher), protos_s, protos_t,
                    torch.Generator().manual_seed(0))
    assert not torch.allclose(moved["cross"], out["cross"])
    out["cross"].backward()
    assert source.grad.abs().sum() > 0 and target.grad is None


def test_released_contrast_errors() -> None:
    loss_fn = SampledPrototypeContrastLoss()
    embed = torch.randn(2, 4, 3, 3)
    labels = torch.zeros(2, 3, 3, dtype=torch.long)
    probs = torch.ones(2, 3, 3)
    with pytest.raises(ValueError, match=r"predictions must be B x h x w = \(2, 3, 3\)"):
        loss_fn(embed, labels, labels[:, :2], probs, torch.randn(3, 4))
    with pytest.raises(ValueError, match="confidence must be floating point"):
        loss_fn(embed, labels, labels, labels, torch.randn(3, 4))
    with pytest.raises(ValueError, match="prototypes must be a floating K x D tensor"):
        loss_fn(embed, labels, labels, probs, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"domains must be an integer tensor of shape \(2,\)"):
        loss_fn(embed, labels, labels, probs, torch.randn(3, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="labels contains 7"):
        loss_fn(embed, labels + 7, labels, probs, torch.randn(3, 4))
    with pytest.raises(ValueError, match="base_temperature must be a positive number"):
        SampledPrototypeContrastLoss(base_temperature=0)
    with pytest.raises(ValueError, match="quota must be one of"):
        HardAnchorSampler(quota="half")
    with pytest.raises(ValueError, match="confidence must be given exactly when"):
        HardAnchorSampler(easy_threshold=0.9)(labels, labels)


# ----------------------------------------------------------------------------- released estimator


def _released_prototypes_loop(embed, grid, pseudo, conf, threshold, num_classes, previous, points=None):
    """``utils/prototypes.py`` of the released code, per class and per pixel, float64.

    grid: B x h x w labels on the embedding grid or None (image-level); pseudo / conf on the
    grid or None; points: full-resolution point labels (released point mode) or None.
    """
    feats = F.normalize(embed, dim=1)
    b, d, h, w = feats.shape
    assigned = torch.full((b, h, w), IGNORE, dtype=torch.long)
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if grid is not None and grid[i, y, x] != IGNORE:
                    assigned[i, y, x] = grid[i, y, x]
                elif pseudo is not None and conf[i, y, x] >= threshold:
                    assigned[i, y, x] = pseudo[i, y, x]
    gt = assigned if grid is None else grid
    if points is not None:
        gt = points
        feats_big = F.interpolate(feats, size=points.shape[-2:], mode="bilinear", align_corners=False)
    protos = previous.clone()
    for cls in torch.unique(gt).tolist():
        if cls == IGNORE:
            continue
        source = feats_big if points is not None else feats
        members = [(i, y, x) for i in range(b) for y in range(gt.shape[1]) for x in range(gt.shape[2])
                   if gt[i, y, x] == cls]
        centre = sum(source[i, :, y, x] for i, y, x in members) / len(members)
        pixels = [feats[i, :, y, x] for i in range(b) for y in range(h) for x in range(w) if assigned[i, y, x] == cls]
        weights = [f @ centre for f in pixels]
        total = sum(weights) if pixels else torch.zeros(())
        if not pixels or total <= 0:
            continue  # fixed: released overwrites with zeros / divides by a non-positive total
        protos[cls] = sum(wt * f for wt, f in zip(weights, pixels)) / total
    return protos


def _estimator_batch(seed=4):
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(2, 5, 6, 6, generator=g, dtype=torch.float64)
    embed[:, 0] += 1.5  # mostly positive similarities, as for trained embeddings
    grid = torch.full((2, 6, 6), IGNORE)
    grid[:, :3, :3] = torch.randint(0, 3, (2, 3, 3), generator=g)
    pseudo = torch.randint(0, 5, (2, 6, 6), generator=g)
    conf = torch.rand(2, 6, 6, generator=g, dtype=torch.float64)
    return embed, grid, pseudo, conf


@pytest.mark.parametrize("mode", ["source", "coarse", "image", "point"])
def test_released_estimator_matches_released_loops(mode: str) -> None:
    embed, grid, pseudo, conf = _estimator_batch()
    est = WDASSPrototypeEstimator(5, 5, threshold=0.5).double()
    previous = torch.randn(5, 5, dtype=torch.float64)
    est.prototypes[1] = previous
    points = None
    if mode == "source":
        args, ref_args = (grid, None, None), (grid, None, None)
    elif mode == "coarse":
        args, ref_args = (grid, pseudo, conf), (grid, pseudo, conf)
    elif mode == "image":
        args, ref_args = (None, pseudo, conf), (None, pseudo, conf)
    else:
        points = torch.full((2, 24, 24), IGNORE)
        points[0, 2, 3], points[0, 13, 20], points[1, 5, 5], points[1, 22, 1] = 1, 2, 1, 4
        grid_points = torch.full((2, 6, 6), IGNORE)
        grid_points[0, 0, 0], grid_points[0, 3, 5], grid_points[1, 1, 1], grid_points[1, 5, 0] = 1, 2, 1, 4
        args, ref_args = (grid_points, pseudo, conf), (grid_points, pseudo, conf)
    updated = est.update("target", embed, *args, point_labels=points)
    ref = _released_prototypes_loop(embed, *ref_args, 0.5, 5, previous, points)
    protos, seen = est.get("target")
    assert torch.allclose(protos, ref, atol=1e-10, rtol=0)
    changed = (ref != previous).any(dim=1)
    assert torch.equal(updated, changed) and torch.equal(seen, changed) and changed.any()
    assert not torch.allclose(protos[changed].norm(dim=1), torch.ones(int(changed.sum()), dtype=torch.float64))  # not normalised


def test_released_estimator_replaces_without_ema_and_keeps_unseen_classes() -> None:
    embed, grid, pseudo, conf = _estimator_batch()
    est = WDASSPrototypeEstimator(5, 5).double()
    est.update("source", embed, grid)
    first, seen = est.get("source")
    assert seen.tolist() == [True, True, True, False, False] and (first[3:] == 0).all()
    other = torch.randn_like(embed)
    other[:, 0] += 1.5
    est.update("source", other, grid)
    second, _ = est.get("source")
    fresh = WDASSPrototypeEstimator(5, 5).double()
    fresh.update("source", other, grid)
    assert torch.allclose(second, fresh.get("source")[0], atol=1e-12)  # no memory of the first batch
    assert est.get("target")[1].sum() == 0


def test_released_estimator_keeps_a_class_with_nonpositive_weight() -> None:
    # Two pixels of class 0 in opposite directions plus a confident pseudo pixel against the centre.
    embed = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    embed[0, :, 0, 0] = torch.tensor([1.0, 0.1])
    embed[0, :, 0, 1] = torch.tensor([1.0, -0.1])
    embed[0, :, 0, 2] = torch.tensor([-1.0, 0.0])
    grid = torch.tensor([[[0, 0, IGNORE]]])
    pseudo = torch.zeros(1, 1, 3, dtype=torch.long)
    est = WDASSPrototypeEstimator(2, 2, threshold=0.5).double()
    est.prototypes[0, 0] = torch.tensor([0.3, 0.4], dtype=torch.float64)
    # Weights: 0.995, 0.995, -0.995 on a centre near (1, 0); total positive -> updated.
    assert est.update("source", embed, grid, pseudo, torch.ones(1, 1, 3, dtype=torch.float64))[0]
    # With three pixels against the centre the total is negative: the old prototype stays.
    est.prototypes[0, 0] = torch.tensor([0.3, 0.4], dtype=torch.float64)
    embed2 = torch.cat([embed, embed[..., 2:].repeat(1, 1, 1, 2)], dim=3)
    grid2 = torch.tensor([[[0, 0, IGNORE, IGNORE, IGNORE]]])
    pseudo2 = torch.zeros(1, 1, 5, dtype=torch.long)
    updated = est.update("source", embed2, grid2, pseudo2, torch.ones(1, 1, 5, dtype=torch.float64))
    assert not updated[0] and est.prototypes[0, 0].tolist() == [0.3, 0.4]


def test_released_estimator_errors() -> None:
    est = WDASSPrototypeEstimator(3, 4)
    embed = torch.randn(1, 4, 2, 2)
    with pytest.raises(ValueError, match="needs labels, pseudo_labels or both"):
        est.estimate(embed)
    with pytest.raises(ValueError, match="pseudo_labels need their confidence"):
        est.estimate(embed, None, torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels contains 5"):
        est.estimate(embed, torch.full((1, 2, 2), 5))
    with pytest.raises(ValueError, match="embeddings has dimension 4 but the estimator has 3"):
        WDASSPrototypeEstimator(3, 3).estimate(embed, torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown domain 'x'"):
        est.get("x")
    with pytest.raises(ValueError, match="threshold must be in"):
        WDASSPrototypeEstimator(3, 4, threshold=2.0)
