"""Prototype diversity (contraseg.viz.diversity) against plain loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contraseg.viz import PrototypeUsage, prototype_diversity


def _loop_diversity(protos, labels):
    out = {}
    for k in sorted(set(labels.tolist())):
        idx = [j for j in range(len(labels)) if labels[j] == k]
        cos = [float(F.cosine_similarity(protos[a], protos[b], dim=0)) for a in idx for b in idx if a != b]
        out[k] = (len(idx), sum(cos) / len(cos) if cos else math.nan, max(cos) if cos else math.nan)
    return out


def _loop_counts(protos, labels, feats, pixel_labels):
    counts = [0] * len(labels)
    for f, y in zip(feats, pixel_labels.tolist()):
        best, best_j = -2.0, None
        for j in range(len(labels)):
            if labels[j] == y:
                c = float(F.cosine_similarity(f, protos[j], dim=0))
                if c > best:
                    best, best_j = c, j
        if best_j is not None:
            counts[best_j] += 1
    return counts


def test_within_class_cosines_and_usage_match_plain_loops():
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(3 * 4 + 1, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor([0] * 4 + [1] * 4 + [2] * 4 + [3])  # class 3: one prototype
    protos[5] = 3 * protos[4] + 0.1  # class 1: two prototypes nearly coincide (no exact tie)
    feats = torch.randn(200, 6, generator=g, dtype=torch.float64)
    pixel_labels = torch.randint(0, 5, (200,), generator=g)  # class 4 has no prototype: skipped
    usage = PrototypeUsage(protos, labels)
    usage.update(feats[:120], pixel_labels[:120])
    usage.update(feats[120:], pixel_labels[120:])
    assert usage.counts.tolist() == _loop_counts(protos, labels, feats, pixel_labels)
    rows = prototype_diversity(protos, labels, usage.counts)
    for k, (m, mean, mx) in _loop_diversity(protos, labels).items():
        assert rows[k]["prototypes"] == m
        if m > 1:
            assert rows[k]["mean_cosine"] == pytest.approx(mean, abs=1e-9)
            assert rows[k]["max_cosine"] == pytest.approx(mx, abs=1e-9)
        else:
            assert math.isnan(rows[k]["mean_cosine"]) and math.isnan(rows[k]["max_cosine"])
        assert rows[k]["used"] == sum(c > 0 for c in rows[k]["pixels"])
    assert rows[1]["max_cosine"] > 0.95
    assert "used" not in prototype_diversity(protos, labels)[0]


def test_a_collapsed_class_uses_one_prototype():
    protos = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    usage = PrototypeUsage(protos, labels)
    usage.update(torch.tensor([[1.0, 0.1], [0.5, -1.0], [0.0, 1.0], [1.0, 0.2]]), torch.tensor([0, 0, 1, 1]))
    rows = prototype_diversity(protos, labels, usage.counts)
    assert rows[0] == {"prototypes": 3, "mean_cosine": pytest.approx(1.0), "max_cosine": pytest.approx(1.0),
                       "pixels": [2, 0, 0], "used": 1}  # ties go to the first prototype
    assert rows[1]["pixels"] == [1, 1] and rows[1]["used"] == 2 and rows[1]["max_cosine"] == pytest.approx(0.8)


def test_bad_shapes():
    with pytest.raises(ValueError, match="P x D prototypes and P labels"):
        prototype_diversity(torch.zeros(3, 2), torch.zeros(2))
