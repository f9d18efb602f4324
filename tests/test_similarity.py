import pytest
import torch
import torch.nn.functional as F

from contraseg._labels import nearest_indices, resize_labels
from contraseg.losses import similarity
from contraseg.losses.similarity import normalised_similarity


def test_matches_autograd_through_normalize_including_zero_vectors():
    feats = torch.randn(2, 5, 7, dtype=torch.float64)
    feats[0, :, 3] = 0.0  # a zero embedding: the norm is clamped as in F.normalize
    feats[1, :, 0] = 1e-14
    feats.requires_grad_(True)
    protos = F.normalize(torch.randn(4, 5, dtype=torch.float64), dim=1)
    grad_out = torch.randn(2, 4, 7, dtype=torch.float64)
    out = normalised_similarity(feats, protos, 0.1)
    (g,) = torch.autograd.grad(out, feats, grad_out)
    ref_in = feats.detach().clone().requires_grad_(True)
    ref = torch.einsum("kd,bdn->bkn", protos, F.normalize(ref_in, dim=1)) / 0.1
    (g_ref,) = torch.autograd.grad(ref, ref_in, grad_out)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(g, g_ref, atol=1e-8)


def test_gradcheck():
    feats = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    protos = torch.randn(5, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: normalised_similarity(x, protos, 0.5), (feats,))


def test_chunk_rows_changes_the_block_for_a_with_block_only():
    feats = torch.randn(2, 37, 11, dtype=torch.float64, requires_grad=True)
    protos = F.normalize(torch.randn(4, 37, dtype=torch.float64), dim=1)
    default = similarity.CHUNK_ROWS
    out = normalised_similarity(feats, protos, 0.1)
    (grad,) = torch.autograd.grad(out.sum(), feats)
    for rows in (1, 5, 64):
        with similarity.chunk_rows(rows):
            assert similarity.CHUNK_ROWS == rows
            chunked = normalised_similarity(feats, protos, 0.1)
            (chunked_grad,) = torch.autograd.grad(chunked.sum(), feats)
        torch.testing.assert_close(chunked, out)
        torch.testing.assert_close(chunked_grad, grad)
    assert similarity.CHUNK_ROWS == default
    with pytest.raises(ValueError, match="rows must be a positive int, got 0"):
        with similarity.chunk_rows(0):
            pass


def test_nearest_resize_equals_interpolate():
    for size_in in (1, 7, 64, 513, 1024, 1025):
        for size_out in (1, 3, 17, 65, 129, 257):
            ref = F.interpolate(torch.arange(size_in).float()[None, None, :, None], size=(size_out, 1), mode="nearest")
            assert torch.equal(nearest_indices(size_in, size_out), ref[0, 0, :, 0].long())
    labels = torch.randint(0, 255, (2, 37, 61))
    ref = F.interpolate(labels[:, None].float(), size=(9, 17), mode="nearest")[:, 0].long()
    assert torch.equal(resize_labels(labels, (9, 17)), ref)
