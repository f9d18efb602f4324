"""contraseg.viz library: pixel sampling, embedding / prototype numbers, curves, figures."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from contraseg.prototypes import PrototypeBank, simplex_prototypes
from contraseg.viz import (
    BalancedPixelSampler,
    EmbeddingPanel,
    class_mean_prototypes,
    embedding_stats,
    embedding_view,
    figure_pixels,
    gather_pixels,
    plot_curves,
    plot_embedding,
    plot_prototype_similarity,
    project_2d,
    prototype_cosines,
    prototype_similarity,
    read_run_curves,
    sample_pixels,
    silhouette,
    summarise_curves,
)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """t-SNE's OpenMP threads spin on the shared 2-core machine; one thread is much faster."""
    with threadpool_limits(limits=1):
        yield


def _labels(b=3, h=6, w=7, k=4, seed=0, ignore_frac=0.15):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (b, h, w), generator=g)
    labels[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return labels


# --------------------------------------------------------------------------- sampling
def test_sample_pixels_equal_quota_when_every_class_has_enough():
    labels = _labels(b=3, h=10, w=10, k=4)
    counts = torch.bincount(labels[labels != 255], minlength=4)
    assert int(counts.min()) >= 40
    positions = sample_pixels(labels, num_pixels=160, seed=1)
    picked = labels[positions[:, 0], positions[:, 1], positions[:, 2]]
    assert torch.bincount(picked, minlength=4).tolist() == [40, 40, 40, 40]
    assert len({tuple(p) for p in positions.tolist()}) == len(positions)  # without replacement


def test_sample_pixels_takes_all_of_a_small_class_and_never_ignored_pixels():
    labels = torch.full((2, 5, 5), 255)
    labels[0, :, :3] = 0  # 15 pixels
    labels[1, :4, :] = 1  # 20 pixels
    labels[1, 4, 0] = 2  # 1 pixel
    positions = sample_pixels(labels, num_pixels=30, seed=0)  # quota 10
    picked = labels[positions[:, 0], positions[:, 1], positions[:, 2]]
    assert torch.bincount(picked, minlength=3).tolist() == [10, 10, 1]
    assert not bool((picked == 255).any())
    everything = sample_pixels(labels, num_pixels=1000, seed=0)  # quota 333: every labelled pixel
    assert len(everything) == int((labels != 255).sum())


def test_sample_pixels_rejects_bad_input():
    with pytest.raises(ValueError, match=r"labels must be B x h x w, got shape \(5, 5\)"):
        sample_pixels(torch.zeros(5, 5, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        sample_pixels(torch.zeros(1, 5, 5), 10)
    with pytest.raises(ValueError, match="num_pixels must be a positive integer, got 0"):
        sample_pixels(torch.zeros(1, 5, 5, dtype=torch.long), 0)


def test_streaming_sampler_equals_one_shot_sample_and_keeps_the_right_embeddings():
    # classes appear late (class 3 only in the last image), so the per-class cap shrinks mid-stream
    labels = _labels(b=4, h=6, w=7, k=3, seed=2)
    labels[3, :2] = 3
    embeds = torch.randn(4, 5, 6, 7, dtype=torch.float64)
    other = torch.randn(4, 2, 6, 7)
    sampler = BalancedPixelSampler(num_pixels=40, seed=7)
    for i in range(4):
        sampler.add(i, labels[i], [embeds[i], other[i]])
    sample = sampler.result()
    expected = sample_pixels(labels, num_pixels=40, seed=7)
    assert torch.equal(sample.positions, expected)
    assert torch.equal(sample.labels, labels[expected[:, 0], expected[:, 1], expected[:, 2]])
    assert torch.equal(sample.embeddings[0], gather_pixels(embeds, expected))
    assert torch.equal(sample.embeddings[1], gather_pixels(other, expected))
    assert bool((sample.keys[1:] >= sample.keys[:-1]).all())
    assert sample.class_counts() == {c: n for c, n in enumerate(torch.bincount(sample.labels).tolist())}


def test_sampler_is_uniform_within_a_class_across_images():
    # class 0: 4 pixels in image 0 and 6 in image 1; class 1 discovered in image 1; quota 3
    labels = torch.full((2, 2, 5), 255)
    labels[0, 0, :4] = 0
    labels[1, 0, :] = 0
    labels[1, 1, 0] = 0
    labels[1, 1, 1:] = 1
    hits = torch.zeros(2, 2, 5)
    runs = 600
    for seed in range(runs):
        sampler = BalancedPixelSampler(num_pixels=6, seed=seed)
        for i in range(2):
            sampler.add(i, labels[i], [torch.zeros(1, 2, 5)])
        pos = sampler.result().positions
        hits[pos[:, 0], pos[:, 1], pos[:, 2]] += 1
    freq = hits / runs
    class0 = freq[labels == 0]
    assert torch.allclose(class0, torch.full_like(class0, 3 / 10), atol=0.08)  # 3 of 10, wherever they are
    assert torch.allclose(freq[labels == 1], torch.full((4,), 3 / 4), atol=0.08)
    assert float(freq[labels == 255].sum()) == 0.0


def test_sampler_errors_are_one_line_and_name_the_argument():
    sampler = BalancedPixelSampler(10)
    with pytest.raises(ValueError, match=r"embeddings\[0\] must be D x 4 x 4 like the labels, got \(3, 4, 5\)"):
        sampler.add(0, torch.zeros(4, 4, dtype=torch.long), [torch.zeros(3, 4, 5)])
    sampler.add(0, torch.full((4, 4), 255), [torch.zeros(3, 4, 4)])
    with pytest.raises(ValueError, match="image_index 0 was already added"):
        sampler.add(0, torch.zeros(4, 4, dtype=torch.long), [torch.zeros(3, 4, 4)])
    with pytest.raises(ValueError, match=r"no labelled pixel \(label != 255\) among the 1 images added"):
        sampler.result()


# --------------------------------------------------------------------------- embedding numbers
def _loop_cosines(feats, labels, protos, proto_labels):
    """own / nearest-other cosine per pixel, written out with Python loops."""
    own, other, rival = [], [], []
    for f, y in zip(feats, labels.tolist()):
        fn = f / f.norm()
        best_own, best_other, best_class = -math.inf, -math.inf, -1
        for p, c in zip(protos, proto_labels.tolist()):
            cos = float(fn @ (p / p.norm()))
            if c == y:
                best_own = max(best_own, cos)
            elif cos > best_other:
                best_other, best_class = cos, c
        own.append(best_own)
        other.append(best_other)
        rival.append(best_class)
    return own, other, rival


def test_embedding_stats_match_a_loop_with_several_prototypes_per_class():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(60, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (60,), generator=g)
    protos = torch.randn(9, 6, generator=g, dtype=torch.float64)
    proto_labels = torch.arange(3).repeat_interleave(3)
    names = ["road", "car", "sky"]
    stats = embedding_stats(feats, labels, protos, proto_labels, names)
    own, other, rival = _loop_cosines(feats, labels, protos, proto_labels)
    assert stats["num_pixels"] == 60
    for row in stats["per_class"]:
        members = [i for i in range(60) if int(labels[i]) == row["class"]]
        assert row["name"] == names[row["class"]]
        assert row["pixels"] == len(members)
        assert row["own_cosine"] == pytest.approx(np.mean([own[i] for i in members]), abs=1e-12)
        assert row["nearest_other_cosine"] == pytest.approx(np.mean([other[i] for i in members]), abs=1e-12)
        assert row["margin"] == pytest.approx(row["own_cosine"] - row["nearest_other_cosine"], abs=1e-12)
        rivals = [rival[i] for i in members]
        top = max(set(rivals), key=lambda c: (rivals.count(c), -c))
        assert row["nearest_other_class"] == names[top]
    unit = F.normalize(feats, dim=1).numpy()
    assert stats["silhouette_embedding"] == pytest.approx(silhouette_score(unit, labels.numpy(), metric="cosine"))
    assert stats["silhouette_2d"] is None


def test_perfect_clusters_give_own_cosine_one_and_high_silhouette():
    protos = simplex_prototypes(4, 8).float()  # K x D, all pairwise cosines -1/3
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(25)
    feats = F.normalize(protos[labels] + 1e-3 * torch.randn(100, 8, generator=g), dim=1)
    coords = project_2d(torch.cat([feats, protos]), method="pca")[:100]
    stats = embedding_stats(feats, labels, protos, torch.arange(4), coords_2d=coords)
    for row in stats["per_class"]:
        assert row["own_cosine"] == pytest.approx(1.0, abs=1e-4)
        assert row["nearest_other_cosine"] == pytest.approx(-1 / 3, abs=2e-3)
    assert stats["silhouette_embedding"] > 0.99
    assert stats["silhouette_2d"] == pytest.approx(silhouette_score(coords, labels.numpy()), abs=1e-12)
    assert stats["silhouette_2d"] > 0.9


def test_prototype_cosines_edge_cases():
    feats = torch.eye(3)
    own, other, rival = prototype_cosines(feats, torch.tensor([0, 1, 5]), torch.eye(3)[:2], torch.tensor([0, 1]))
    assert own[:2].tolist() == [1.0, 1.0] and math.isnan(float(own[2]))  # class 5 has no prototype
    assert rival.tolist() == [1, 0, 0]
    _, other, rival = prototype_cosines(feats, torch.zeros(3, dtype=torch.long), torch.eye(3)[:1], torch.tensor([0]))
    assert bool(torch.isnan(other).all()) and rival.tolist() == [-1, -1, -1]  # no other class at all
    with pytest.raises(ValueError, match=r"prototypes must be P x 3 like the embeddings, got \(2, 4\)"):
        prototype_cosines(feats, torch.zeros(3, dtype=torch.long), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must be a length-3 vector"):
        embedding_stats(feats, torch.zeros(4, dtype=torch.long), torch.eye(3), torch.arange(3))


def test_silhouette_is_none_when_undefined():
    assert silhouette(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), "cosine") is None
    assert silhouette(torch.randn(3, 3), torch.arange(3), "euclidean") is None


def test_class_mean_prototypes_match_a_loop():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(30, 4, generator=g)
    labels = torch.tensor([2, 5] * 15)
    means, classes = class_mean_prototypes(feats, labels)
    assert classes.tolist() == [2, 5]
    for row, c in zip(means, classes.tolist()):
        members = [feats[i] / feats[i].norm() for i in range(30) if int(labels[i]) == c]
        mean = sum(members) / len(members)
        assert torch.allclose(row, mean / mean.norm(), atol=1e-6)


def test_embedding_view_projects_pixels_and_prototypes_together_with_tsne():
    protos = simplex_prototypes(3, 6).float()
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat_interleave(40)
    feats = F.normalize(protos[labels] + 0.05 * torch.randn(120, 6, generator=g), dim=1)
    from contraseg.viz import PrototypeSet

    view = embedding_view("m", feats, labels, PrototypeSet(protos, torch.arange(3), "proac"), "tsne", seed=0)
    again = embedding_view("m", feats, labels, PrototypeSet(protos, torch.arange(3), "proac"), "tsne", seed=0)
    assert view.coords.shape == (120, 2) and view.prototype_coords.shape == (3, 2)
    assert np.array_equal(view.coords, again.coords)  # fixed random_state
    # each prototype lands inside its own class's cluster of the t-SNE map
    for k in range(3):
        centres = np.stack([view.coords[labels.numpy() == c].mean(0) for c in range(3)])
        assert int(np.argmin(np.linalg.norm(centres - view.prototype_coords[k], axis=1))) == k
    assert view.stats["silhouette_2d"] > 0.5
    assert view.stats["prototypes"] == {"kind": "proac", "count": 3, "per_class": 1}
    fallback = embedding_view("ce", feats, labels, None, "pca")
    assert fallback.prototypes.kind == "class-mean" and len(fallback.prototype_coords) == 3
    with pytest.raises(ValueError, match="m: prototypes have dimension 5 but the embeddings have 6"):
        embedding_view("m", feats, labels, PrototypeSet(torch.randn(3, 5), torch.arange(3), "proac"), "pca")


# --------------------------------------------------------------------------- projection
def test_pca_projection_is_the_top_two_principal_components():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 5, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    coords = project_2d(x, method="pca")
    centred = (x - x.mean(0)).numpy()
    cov = centred.T @ centred
    eigenvalues = np.sort(np.linalg.eigvalsh(cov))[::-1]
    assert np.allclose(np.sort((coords ** 2).sum(0))[::-1], eigenvalues[:2])
    assert np.allclose(coords.T @ coords, np.diag(np.diag(coords.T @ coords)), atol=1e-8)  # uncorrelated


def test_projection_errors(monkeypatch):
    with pytest.raises(ValueError, match="method must be one of tsne, umap, pca, got 'mds'"):
        project_2d(torch.randn(10, 3), method="mds")
    with pytest.raises(ValueError, match=r"points must be N x D with N >= 4, got shape \(3, 2\)"):
        project_2d(torch.randn(3, 2), method="pca")
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(ImportError, match=r"pip install umap-learn \(or contraseg\[umap\]\)"):
        project_2d(torch.randn(10, 3), method="umap")


# --------------------------------------------------------------------------- prototypes
def test_prototype_similarity_of_a_bank_matches_its_diversity_and_a_loop():
    bank = PrototypeBank(num_classes=4, num_prototypes=3, dim=5, seed=2)
    bank.prototypes[1] = bank.prototypes[1, 0].clone()  # class 1 collapsed
    k, m, d = bank.prototypes.shape
    flat = bank.prototypes.reshape(k * m, d)
    labels = torch.arange(k).repeat_interleave(m)
    result = prototype_similarity(flat, labels)
    diversity = result.summary["diversity"]
    assert diversity[1] == pytest.approx(1.0, abs=1e-6)
    assert [diversity[c] for c in range(k)] == pytest.approx(bank.diversity().tolist(), abs=1e-6)
    between = [float(F.cosine_similarity(flat[i], flat[j], dim=0)) for i in range(k * m) for j in range(k * m)
               if labels[i] != labels[j]]
    assert result.summary["max_between_cosine"] == pytest.approx(max(between), abs=1e-6)
    assert result.summary["mean_between_cosine"] == pytest.approx(np.mean(between), abs=1e-6)
    assert result.summary["per_class"] == 3 and result.summary["num_classes"] == 4
    assert result.summary["simplex_optimum"] == pytest.approx(-1 / 3)  # K=4 <= D+1=6


def test_simplex_prototypes_reach_the_simplex_optimum():
    summary = prototype_similarity(simplex_prototypes(5, 8)).summary
    assert summary["max_between_cosine"] == pytest.approx(-0.25, abs=1e-9)
    assert summary["mean_between_cosine"] == pytest.approx(-0.25, abs=1e-9)
    assert summary["simplex_optimum"] == -0.25
    assert summary["diversity"] is None  # one prototype per class
    assert prototype_similarity(torch.randn(12, 4)).summary["simplex_optimum"] is None  # K > D + 1
    with pytest.raises(ValueError, match=r"labels must hold one class id per prototype \(3\), got shape \(2,\)"):
        prototype_similarity(torch.randn(3, 4), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- curves
def _write_log(path, lines):
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_run_curves_sort_dedupe_and_find_the_best_miou(tmp_path):
    _write_log(tmp_path / "log.jsonl", [
        {"type": "train", "iteration": 20, "lr": 0.009, "loss": 1.0, "ce": 0.9, "proac": 0.1, "time": 0.1, "wall": 1},
        {"type": "train", "iteration": 10, "lr": 0.01, "loss": 2.0, "ce": 1.8, "proac": 0.2, "time": 0.1, "wall": 0},
        {"type": "eval", "iteration": 10, "dataset": "a/val", "mIoU": 0.30},
        {"type": "eval", "iteration": 20, "dataset": "a/val", "mIoU": 0.55},
        {"type": "eval", "iteration": 20, "dataset": "b/val", "mIoU": None},
        {"type": "train", "iteration": 30, "lr": 0.008, "loss": 0.5, "ce": 0.45, "proac": None, "time": 0.1},
        {"type": "eval", "iteration": 30, "dataset": "a/val", "mIoU": 0.50},
        {"type": "train", "iteration": 30, "lr": 0.008, "loss": 0.4, "ce": 0.35, "proac": 0.05, "time": 0.1},
    ])
    with open(tmp_path / "log.jsonl", "a") as handle:
        handle.write('{"type": "train", "iter')  # torn last line of a crashed run
    curves = read_run_curves(tmp_path)
    assert curves.iterations == [10, 20, 30]
    assert list(curves.losses) == ["loss", "ce", "proac"]
    assert curves.losses["loss"] == [2.0, 1.0, 0.4]  # the later record of iteration 30 wins
    summary = summarise_curves(curves)
    assert summary["eval"]["a/val"]["best"] == {"iteration": 20, "mIoU": 0.55}
    assert summary["eval"]["a/val"]["last"] == {"iteration": 30, "mIoU": 0.50}
    assert summary["eval"]["b/val"]["best"] is None and summary["eval"]["b/val"]["last"]["mIoU"] is None
    assert summary["final_losses"] == {"loss": 0.4, "ce": 0.35, "proac": 0.05}
    assert summary["final_lr"] == 0.008 and summary["last_iteration"] == 30


def test_run_curves_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"training log not found: {tmp_path / 'log.jsonl'}"):
        read_run_curves(tmp_path)
    (tmp_path / "log.jsonl").write_text('{"note": "no records"}\n')
    with pytest.raises(ValueError, match="log.jsonl: no training or evaluation records"):
        read_run_curves(tmp_path / "log.jsonl")


# --------------------------------------------------------------------------- figures
def test_figures_have_the_documented_sizes(tmp_path):
    labels = np.array([0, 1, 2, 0])
    panel = EmbeddingPanel("a", np.random.rand(4, 2), labels, np.random.rand(3, 2), np.arange(3), "proac", "ProAC")
    palette = [(128, 64, 128), (244, 35, 232), (70, 70, 70)]
    assert figure_pixels(plot_embedding([panel], ["r", "s", "b"], palette, dpi=50)) == (420, 300)
    assert figure_pixels(plot_embedding([panel, panel], ["r", "s", "b"], palette, dpi=50)) == (720, 300)
    bank = prototype_similarity(torch.randn(6, 4), torch.arange(3).repeat_interleave(2))
    assert figure_pixels(plot_prototype_similarity(bank, ["r", "s", "b"], palette, dpi=50)) == (550, 325)
    single = prototype_similarity(torch.randn(3, 4))
    assert figure_pixels(plot_prototype_similarity(single, ["r", "s", "b"], None, dpi=50)) == (350, 325)
    _write_log(tmp_path / "log.jsonl", [{"type": "train", "iteration": 1, "lr": 0.1, "loss": 1.0}])
    assert figure_pixels(plot_curves(read_run_curves(tmp_path), dpi=50)) == (450, 450)
    with pytest.raises(ValueError, match="panel 'a': 4 coordinates but 3 labels"):
        EmbeddingPanel("a", np.zeros((4, 2)), np.zeros(3), np.zeros((1, 2)), np.zeros(1), "proac", "ProAC")


def test_collected_protoseg_pixels_live_in_the_prototype_space():
    """A ProtoSeg model's pixels are taken as normalize(LayerNorm_D(embed)), the space its
    prototypes are compared in; a plain model's as its raw ``embed``."""
    from torch import nn

    from contraseg.prototypes import NearestPrototypeHead
    from contraseg.viz import collect_pixel_sample

    class Tiny(nn.Module):
        def __init__(self, head=None):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 1)
            self.prototype_head = head

        def forward(self, images):
            return {"embed": self.conv(images)}

    torch.manual_seed(0)
    head = NearestPrototypeHead(3, num_prototypes=2, dim=6, feat_norm=True)
    with torch.no_grad():
        head.feat_norm.weight.uniform_(0.5, 2.0)
        head.feat_norm.bias.uniform_(-1.0, 1.0)
    plain, proto = Tiny().eval(), Tiny(head).eval()
    proto.conv.load_state_dict(plain.conv.state_dict())
    dataset = [{"image": torch.randn(3, 4, 5), "label": torch.randint(0, 3, (4, 5))} for _ in range(2)]
    sample = collect_pixel_sample([plain, proto], dataset, num_pixels=30, num_images=2, ignore_index=255)
    raw = sample.embeddings[0]
    expected = F.normalize(F.layer_norm(raw.double(), (6,), head.feat_norm.weight.double(),
                                        head.feat_norm.bias.double()), dim=1)
    assert torch.allclose(sample.embeddings[1].double(), expected, atol=1e-5)
    assert not torch.allclose(sample.embeddings[1], raw, atol=1e-2)
