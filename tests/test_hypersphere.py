import math

import pytest
import torch

from contraseg.prototypes import (
    hyperspherical_prototypes,
    load_prototypes,
    prototype_separation,
    save_prototypes,
)
from contraseg.prototypes.hypersphere import optimal_max_cosine, optimise_uniform_prototypes


def pairwise_cosines(p):
    p = p.double()
    c = p @ p.T
    return c[~torch.eye(len(p), dtype=torch.bool)]


@pytest.mark.parametrize("k,d", [(2, 1), (2, 16), (3, 2), (19, 18), (19, 256), (150, 149), (21, 64)])
def test_simplex_regime_is_exact(k, d):
    p = hyperspherical_prototypes(k, d)
    assert p.shape == (k, d) and p.dtype == torch.float32
    assert torch.allclose(p.norm(dim=1), torch.ones(k), atol=1e-6)
    cos = pairwise_cosines(p)
    assert torch.allclose(cos, torch.full_like(cos, -1.0 / (k - 1)), atol=1e-6)


@pytest.mark.parametrize("k,d", [(20, 18), (19, 10), (16, 8)])
def test_cross_polytope_regime_reaches_rankin_bound(k, d):
    p = hyperspherical_prototypes(k, d)
    cos = pairwise_cosines(p)
    assert cos.max() <= 1e-6
    assert optimal_max_cosine(k, d) == 0.0
    # and no two prototypes coincide
    assert cos.max() < 0.5


def test_beyond_2d_is_optimised_and_reported():
    k, d = 40, 8
    p = hyperspherical_prototypes(k, d, steps=300)
    sep = prototype_separation(p)
    assert sep["optimum"] is None
    random = torch.nn.functional.normalize(torch.randn(k, d, generator=torch.Generator().manual_seed(1)), dim=1)
    # clearly better spread than random points
    assert sep["max_cosine"] < prototype_separation(random)["max_cosine"] - 0.1
    _, reached = optimise_uniform_prototypes(k, d, seed=0, steps=300)
    assert math.isclose(sep["max_cosine"], reached, abs_tol=1e-5)


def test_deterministic_for_a_seed_and_seed_changes_rotation():
    a, b = hyperspherical_prototypes(19, 32, seed=3), hyperspherical_prototypes(19, 32, seed=3)
    assert torch.equal(a, b)
    c = hyperspherical_prototypes(19, 32, seed=4)
    assert not torch.allclose(a, c)
    assert torch.allclose(pairwise_cosines(a), pairwise_cosines(c), atol=1e-6)


def test_single_class():
    p = hyperspherical_prototypes(1, 5)
    assert p.shape == (1, 5) and torch.allclose(p.norm(), torch.tensor(1.0))


@pytest.mark.parametrize("k,d,match", [(0, 4, "num_classes"), (3, 0, "dim"), (3, 1, "dim=1")])
def test_bad_sizes(k, d, match):
    with pytest.raises(ValueError, match=match):
        hyperspherical_prototypes(k, d)


def test_save_load_round_trip(tmp_path):
    p = hyperspherical_prototypes(7, 12)
    path = tmp_path / "sub" / "protos.pt"
    save_prototypes(path, p)
    assert torch.equal(load_prototypes(path), p)
    assert not list(path.parent.glob("*.tmp"))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_prototypes(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="bad.pt"):
        load_prototypes(bad)
    wrong = tmp_path / "wrong.pt"
    torch.save({"prototypes": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="K x D"):
        load_prototypes(wrong)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "p.pt"
    good = hyperspherical_prototypes(3, 4)
    save_prototypes(path, good)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_prototypes(path, hyperspherical_prototypes(5, 4))
    monkeypatch.undo()
    assert torch.equal(load_prototypes(path), good)
    assert not list(tmp_path.glob("*.tmp"))
