import math

import pytest
import torch

from contraseg.losses import ProACLoss
from contraseg.prototypes import hyperspherical_prototypes

from helpers import flat_reference, random_batch


def proac_reference(emb, labels, protos, t, ignore=255):
    """ProAC written from the formula with Python loops."""
    feats, ys = flat_reference(emb, labels, ignore)
    protos = protos / protos.norm(dim=1, keepdim=True)
    total, classes = 0.0, sorted(set(ys))
    for k in classes:
        s = [protos[k] @ f / t for f in feats]
        terms = []
        for i, y in enumerate(ys):
            if y != k:
                continue
            neg = sum(torch.exp(s[j]) for j, yj in enumerate(ys) if yj != k)
            terms.append(torch.log(torch.exp(s[i]) + neg) - s[i])
        total = total + sum(terms) / len(terms)
    return total / len(classes)


def pixel_anchor_reference(emb, labels, protos, t, ignore=255):
    feats, ys = flat_reference(emb, labels, ignore)
    protos = protos / protos.norm(dim=1, keepdim=True)
    terms = []
    for f, y in zip(feats, ys):
        s = [p @ f / t for p in protos]
        others = sum(torch.exp(s[k]) for k in range(len(protos)) if k != y)
        terms.append(torch.log(torch.exp(s[y]) + others) - s[y])
    return sum(terms) / len(terms)


@pytest.mark.parametrize("label_size", [None, (10, 12), (7, 9)])
def test_matches_formula_forward_and_gradient(label_size):
    emb, labels = random_batch(label_size=label_size)
    protos = torch.randn(4, 8, dtype=torch.float64)
    loss = ProACLoss(protos, temperature=0.1)(emb, labels)
    (grad,) = torch.autograd.grad(loss, emb)
    emb_ref = emb.detach().clone().requires_grad_(True)
    ref = proac_reference(emb_ref, labels, protos.double(), 0.1)
    (grad_ref,) = torch.autograd.grad(ref, emb_ref)
    assert loss.dtype == torch.float64
    # float64 prototypes are stored and used in float64: no float32 rounding anywhere.
    assert torch.allclose(loss, ref, atol=1e-10, rtol=0)
    assert torch.allclose(grad, grad_ref, atol=1e-10, rtol=0)


def test_pixel_anchor_ablation_matches_formula():
    emb, labels = random_batch(k=3, d=6)
    protos = torch.randn(3, 6, dtype=torch.float64)
    loss = ProACLoss(protos, temperature=0.2, anchor="pixel")(emb, labels)
    (grad,) = torch.autograd.grad(loss, emb)
    emb_ref = emb.detach().clone().requires_grad_(True)
    ref = pixel_anchor_reference(emb_ref, labels, protos, 0.2)
    (grad_ref,) = torch.autograd.grad(ref, emb_ref)
    assert torch.allclose(loss, ref, atol=1e-10, rtol=0) and torch.allclose(grad, grad_ref, atol=1e-10, rtol=0)


def test_gradcheck():
    emb, labels = random_batch(b=1, d=3, h=2, w=3, k=2, ignore_frac=0.0)
    protos = torch.randn(2, 3, dtype=torch.float64)
    loss_fn = ProACLoss(protos, temperature=0.5)
    loss_fn.prototypes = loss_fn.prototypes.double()
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels), (emb,))


def test_prototypes_are_a_fixed_buffer():
    loss_fn = ProACLoss(hyperspherical_prototypes(4, 8))
    assert "prototypes" in dict(loss_fn.named_buffers()) and not list(loss_fn.parameters())
    assert "prototypes" in loss_fn.state_dict()


def _assert_zero_with_grad(loss, emb):
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert emb.grad is not None and torch.all(emb.grad == 0)


def test_all_pixels_ignored_gives_zero_with_gradient():
    emb, labels = random_batch()
    labels[:] = 255
    e = emb.detach().float().requires_grad_(True)
    _assert_zero_with_grad(ProACLoss(torch.randn(4, 8))(e, labels), e)


def test_one_class_present_gives_zero_with_gradient():
    e = torch.randn(2, 8, 4, 4, requires_grad=True)
    labels = torch.full((2, 4, 4), 2)
    labels[0, 0, 0] = 255
    _assert_zero_with_grad(ProACLoss(torch.randn(4, 8))(e, labels), e)


def test_class_with_one_pixel_counts_as_one_class():
    e = torch.randn(1, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(1, 3, 3, dtype=torch.long)
    labels[0, 1, 1] = 3
    protos = torch.randn(4, 8, dtype=torch.float64)
    loss = ProACLoss(protos)(e, labels)
    ref = proac_reference(e, labels, protos, 0.1)
    assert torch.allclose(loss, ref, atol=1e-8)
    loss.backward()
    assert torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0


def test_well_separated_embeddings_give_small_loss():
    protos = hyperspherical_prototypes(3, 8)
    labels = torch.randint(0, 3, (2, 6, 6))
    e = protos[labels].permute(0, 3, 1, 2).contiguous()
    loss = ProACLoss(protos, temperature=0.1)(e, labels)
    assert loss < 0.05
    noisy = ProACLoss(protos, temperature=0.1)(torch.randn_like(e), labels)
    assert noisy > 1.0


def test_errors_name_the_argument():
    loss_fn = ProACLoss(torch.randn(4, 8))
    with pytest.raises(ValueError, match="embeddings has dimension 6 but prototypes has 8"):
        loss_fn(torch.randn(1, 6, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels contains 7, outside \[0, 4\)"):
        loss_fn(torch.randn(1, 8, 3, 3), torch.full((1, 3, 3), 7))
    with pytest.raises(ValueError, match="labels must be B x H x W"):
        loss_fn(torch.randn(1, 8, 3, 3), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="embeddings must be B x D x h x w"):
        loss_fn(torch.randn(8, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size 2"):
        loss_fn(torch.randn(1, 8, 3, 3), torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        loss_fn(torch.randn(1, 8, 3, 3), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="prototypes must be a K x D"):
        ProACLoss(torch.randn(8))
    with pytest.raises(ValueError, match="anchor"):
        ProACLoss(torch.randn(4, 8), anchor="both")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_match_float32(dtype):
    protos = hyperspherical_prototypes(19, 32)
    e = torch.randn(2, 32, 9, 9) * 50  # large activations must not overflow
    labels = torch.randint(0, 19, (2, 18, 18))
    ref = ProACLoss(protos, temperature=0.05)(e.to(dtype).float(), labels)
    half = e.to(dtype).requires_grad_(True)
    out = ProACLoss(protos, temperature=0.05)(half, labels)
    assert torch.isfinite(out) and abs(out.item() - ref.item()) < 1e-2
    out.backward()
    assert torch.isfinite(half.grad.float()).all()


def test_autocast_bfloat16_matches_float32():
    protos = hyperspherical_prototypes(19, 32)
    conv = torch.nn.Conv2d(16, 32, 1)
    x = torch.randn(2, 16, 9, 9)
    labels = torch.randint(0, 19, (2, 9, 9))
    loss_fn = ProACLoss(protos)
    ref = loss_fn(conv(x), labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = conv(x)
        assert emb.dtype == torch.bfloat16
        out = loss_fn(emb, labels)
    assert torch.isfinite(out) and abs(out.item() - ref.item()) < 1e-2


def test_prototype_storage_keeps_the_given_precision():
    p64 = torch.randn(4, 8, dtype=torch.float64)
    assert ProACLoss(p64).prototypes.dtype == torch.float64
    assert torch.equal(ProACLoss(p64).prototypes, p64 / p64.norm(dim=1, keepdim=True))
    assert ProACLoss(p64.float()).prototypes.dtype == torch.float32
    assert ProACLoss(p64.half()).prototypes.dtype == torch.float32  # never stored below float32
    # float32 prototypes with float64 embeddings: computed in float64 from the stored values.
    emb, labels = random_batch()
    p32 = p64.float()
    loss = ProACLoss(p32)(emb, labels)
    ref = proac_reference(emb, labels, ProACLoss(p32).prototypes.double(), 0.1)
    assert loss.dtype == torch.float64 and abs(loss.item() - ref.item()) < 1e-10


def test_follows_module_device_and_dtype_moves():
    loss_fn = ProACLoss(torch.randn(4, 8)).double()
    assert loss_fn.prototypes.dtype == torch.float64
    e, labels = random_batch()
    assert math.isfinite(loss_fn(e, labels).item())
