"""``contraseg viz embed|prototypes|curves`` end to end on tiny checkpoints and datasets."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from contraseg.cli import main
from contraseg.data import DatasetInfo, register_dataset
from contraseg.engine.build import segmentor_kwargs
from contraseg.engine.checkpoint import save_checkpoint
from contraseg.engine.config import Config, DatasetConfig, ModelConfig, RegulariserConfig
from contraseg.engine.config_io import config_to_yaml
from contraseg.engine.regularisers import build_regulariser
from contraseg.models import build_segmentor
from contraseg.prototypes import hyperspherical_prototypes, save_prototypes

TINY = "viz-tiny-test"
TINY_CLASSES = ("road", "car", "sky")
TINY_PALETTE = ((128, 64, 128), (0, 0, 142), (70, 130, 180))
SIZE = 64  # images are SIZE x SIZE; the segmentors' grid is 8 x 8


@register_dataset(TINY)
class TinyDataset:
    """3 vertical class bands (columns 0-20, 21-42, 43-63) under an ignored top band (rows 0-7).

    On the 8 x 8 embedding grid (nearest: grid column j <- label column 8j) an image has
    7 labelled rows x (3, 3, 2) columns: 21, 21 and 14 pixels of classes 0, 1, 2.
    """

    info = DatasetInfo(TINY, TINY_CLASSES, TINY_PALETTE)

    def __init__(self, split: str = "val", length: int = 4, transform=None) -> None:
        self.length = length
        self.split = split

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(100 + index)
        label = torch.zeros(SIZE, SIZE, dtype=torch.long)
        label[:, 21:43] = 1
        label[:, 43:] = 2
        label[:8] = 255
        image = torch.randn(3, SIZE, SIZE, generator=g) + label.clamp(max=2)[None].float()
        return {"image": image, "label": label, "name": f"tiny_{index}"}


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def _checkpoint(path, regulariser="none", classifier="linear", num_classes=3, classes=TINY_CLASSES,
                palette=TINY_PALETTE, dataset=TINY, edit=None):
    """Build a tiny segmentor and save it in the engine's checkpoint format; return the model."""
    cfg = Config(name="tiny")
    cfg.model = ModelConfig(backbone="resnet18", head="fcn", embed_dim=8, classifier=classifier, num_prototypes=4,
                            output_stride=8)
    cfg.regulariser = RegulariserConfig(name=regulariser)
    cfg.data.val = [DatasetConfig(name=dataset, split="val")]
    model_config = segmentor_kwargs(cfg.model, num_classes)
    torch.manual_seed(0)
    model = build_segmentor(**model_config).eval()
    if edit is not None:
        edit(model)
    reg = build_regulariser(cfg.regulariser, num_classes, 8)
    save_checkpoint({"iteration": 5, "config": config_to_yaml(cfg), "model_config": model_config,
                     "classes": list(classes), "palette": [list(c) for c in palette], "ignore_index": 255,
                     "model": model.state_dict(), "regulariser": reg.state_dict()}, path)
    return model, reg


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz_ckpts")
    made = {"dir": root}
    for name, reg, classifier in (("ce", "none", "linear"), ("proac", "proac", "linear"),
                                  ("protoseg", "protoseg", "prototype")):
        made[name] = root / f"{name}.pth"
        made[name + "_objects"] = _checkpoint(made[name], reg, classifier)
    return made


def _grid_labels(index: int) -> torch.Tensor:
    label = TinyDataset()[index]["label"]
    return F.interpolate(label[None, None].float(), size=(8, 8), mode="nearest")[0, 0].long()


def _read_json(png):
    return json.loads(png.with_suffix(".json").read_text())


# --------------------------------------------------------------------------- embed
def test_embed_compare_reports_the_numbers_of_its_sample(ckpts, tmp_path, capsys):
    out = tmp_path / "embed.png"
    rc = main(["viz", "embed", str(ckpts["proac"]), "--compare", str(ckpts["protoseg"]), "--dataset", TINY,
               "--images", "4", "--pixels", "150", "--method", "tsne", "--seed", "3", "--dpi", "50",
               "--out", str(out), "--save-sample", str(tmp_path / "sample.npz")])
    assert rc == 0
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (720, 300)  # two 6-inch panels + legend at dpi 50
    report = _read_json(out)
    sample = np.load(tmp_path / "sample.npz")
    positions, labels = torch.from_numpy(sample["positions"]), torch.from_numpy(sample["labels"])
    # class-balanced: 150 // 3 = 50 each, every class has >= 56 pixels in 4 images
    assert report["sample"] == {"num_pixels": 150, "class_counts": {"road": 50, "car": 50, "sky": 50}}
    assert torch.bincount(labels).tolist() == [50, 50, 50]
    # the sample is what the models see at those pixels, with the nearest-resized labels;
    # the ProtoSeg model's pixels in its prototype space (LayerNorm over D, L2 normalised)
    models = [ckpts["proac_objects"][0], ckpts["protoseg_objects"][0]]

    def prototype_space(model, embed):
        if model.prototype_head is None:
            return embed
        b, d, h, w = embed.shape
        return F.normalize(model.prototype_head.features(embed), dim=1).reshape(b, d, h, w)

    with torch.no_grad():
        dense = [torch.cat([prototype_space(m, m(TinyDataset()[i]["image"][None])["embed"]) for i in range(4)])
                 for m in models]
    grid_labels = torch.stack([_grid_labels(i) for i in range(4)])
    assert torch.equal(labels, grid_labels[positions[:, 0], positions[:, 1], positions[:, 2]])
    for j in range(2):
        at = dense[j][positions[:, 0], :, positions[:, 1], positions[:, 2]]
        assert torch.allclose(torch.from_numpy(sample[f"embeddings_{j}"]), at, atol=1e-5)
    # ProAC: the stored fixed prototypes; ProtoSeg: the K*M bank
    fixed = ckpts["proac_objects"][1].loss.prototypes
    assert torch.allclose(torch.from_numpy(sample["prototypes_0"]), fixed, atol=1e-6)
    assert torch.allclose(fixed, hyperspherical_prototypes(3, 8, seed=0), atol=1e-6)
    bank = models[1].prototype_head.bank.prototypes.reshape(12, 8)
    assert torch.allclose(torch.from_numpy(sample["prototypes_1"]), bank, atol=1e-6)
    assert sample["prototype_coords_1"].shape == (12, 2)
    kinds = [(p["prototypes"]["kind"], p["prototypes"]["count"]) for p in report["panels"]]
    assert kinds == [("proac", 3), ("protoseg", 12)]
    # per-class cosines against a loop over the sampled embeddings
    for j, panel in enumerate(report["panels"]):
        feats = torch.from_numpy(sample[f"embeddings_{j}"]).double()
        protos = torch.from_numpy(sample[f"prototypes_{j}"]).double()
        proto_labels = sample[f"prototype_labels_{j}"].tolist()
        for row in panel["per_class"]:
            own, other = [], []
            for f, y in zip(feats, labels.tolist()):
                if y != row["class"]:
                    continue
                cos = [float(f @ p / (f.norm() * p.norm())) for p in protos]
                own.append(max(c for c, l in zip(cos, proto_labels) if l == y))
                other.append(max(c for c, l in zip(cos, proto_labels) if l != y))
            assert row["pixels"] == 50
            assert row["own_cosine"] == pytest.approx(np.mean(own), abs=1e-5)
            assert row["nearest_other_cosine"] == pytest.approx(np.mean(other), abs=1e-5)
        unit = F.normalize(feats, dim=1).numpy()
        assert panel["silhouette_embedding"] == pytest.approx(silhouette_score(unit, labels.numpy(), metric="cosine"),
                                                              abs=1e-6)
        assert panel["silhouette_2d"] == pytest.approx(silhouette_score(sample[f"coords_{j}"], labels.numpy()),
                                                       abs=1e-6)
    printed = capsys.readouterr().out
    assert "own cos" in printed and printed.count("silhouette:") == 2


def test_embed_of_a_plain_model_uses_class_means_and_fewer_pixels_for_a_small_class(ckpts, tmp_path):
    out = tmp_path / "ce.png"
    rc = main(["viz", "embed", str(ckpts["ce"]), "--dataset", TINY, "--images", "4", "--pixels", "240",
               "--method", "pca", "--dpi", "50", "--out", str(out), "--save-sample", str(tmp_path / "s.npz")])
    assert rc == 0
    with Image.open(out) as image:
        assert image.size == (420, 300)
    report = _read_json(out)
    # quota 80: classes 0 and 1 have 84 pixels, class 2 only 56 (all of them)
    assert report["sample"]["class_counts"] == {"road": 80, "car": 80, "sky": 56}
    panel = report["panels"][0]
    assert panel["prototypes"] == {"kind": "class-mean", "count": 3, "per_class": 1}
    sample = np.load(tmp_path / "s.npz")
    feats, labels = torch.from_numpy(sample["embeddings_0"]), torch.from_numpy(sample["labels"])
    for row, proto in zip(panel["per_class"], torch.from_numpy(sample["prototypes_0"])):
        members = F.normalize(feats[labels == row["class"]], dim=1)
        mean = members.mean(0)
        assert torch.allclose(proto, mean / mean.norm(), atol=1e-5)
        assert row["own_cosine"] == pytest.approx(float((members @ (mean / mean.norm())).mean()), abs=1e-5)


def test_embed_on_the_synthetic_dataset_with_dataset_options(tmp_path):
    from contraseg.data.palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    ckpt = tmp_path / "city.pth"
    _checkpoint(ckpt, "proac", num_classes=19, classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE,
                dataset="synthetic-target")
    out = tmp_path / "syn.png"
    # no --dataset: the checkpoint config's data.val (synthetic-target / val), made small by options
    rc = main(["viz", "embed", str(ckpt), "--dataset-option", "size=[64,128]", "--dataset-option", "length=2",
               "--images", "2", "--pixels", "300", "--method", "pca", "--dpi", "50", "--out", str(out)])
    assert rc == 0
    report = _read_json(out)
    assert report["dataset"] == "synthetic-target/val" and report["images"] == 2
    counts = report["sample"]["class_counts"]
    quota = 300 // len(counts)
    assert set(counts) <= set(CITYSCAPES_CLASSES)
    assert all(0 < n <= quota for n in counts.values()) and max(counts.values()) == quota
    assert [r["name"] for r in report["panels"][0]["per_class"]] == [c for c in CITYSCAPES_CLASSES if c in counts]


def test_embed_errors_exit_2_with_one_line(ckpts, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nope.pth"
    assert main(["viz", "embed", str(missing), "--dataset", TINY, "--out", str(tmp_path / "a.png")]) == 2
    assert f"checkpoint not found: {missing}" in capsys.readouterr().err
    assert main(["viz", "embed", str(ckpts["ce"]), "--dataset", TINY, "--out", str(tmp_path / "a.jpg")]) == 2
    assert "--out must be a .png file" in capsys.readouterr().err
    assert main(["viz", "embed", str(ckpts["ce"]), "--dataset", "synthetic-target", "--dataset-option",
                 "length=1", "--out", str(tmp_path / "a.png")]) == 2
    assert "dataset synthetic-target has 19 classes but the checkpoint's model predicts 3" in capsys.readouterr().err
    assert main(["viz", "embed", str(ckpts["ce"]), "--dataset", TINY, "--dataset-option", "length",
                 "--out", str(tmp_path / "a.png")]) == 2
    assert "bad --dataset-option 'length': expected KEY=VALUE" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "umap", None)
    assert main(["viz", "embed", str(ckpts["ce"]), "--dataset", TINY, "--method", "umap",
                 "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install umap-learn" in err
    assert not (tmp_path / "a.png").exists()


# --------------------------------------------------------------------------- prototypes
def test_prototypes_of_a_collapsed_protoseg_bank(tmp_path, capsys):
    def collapse(model):
        bank = model.prototype_head.bank
        bank.prototypes[0] = bank.prototypes[0, 0].clone()

    ckpt = tmp_path / "collapsed.pth"
    model, _ = _checkpoint(ckpt, "protoseg", "prototype", edit=collapse)
    out = tmp_path / "protos.png"
    assert main(["viz", "prototypes", str(ckpt), "--dpi", "50", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (550, 325)  # heatmap + diversity bars
    report = _read_json(out)
    expected = model.prototype_head.bank.diversity().tolist()
    assert report["kind"] == "protoseg" and report["num_prototypes"] == 12 and report["per_class"] == 4
    assert report["diversity"]["road"] == pytest.approx(1.0, abs=1e-6)
    assert [report["diversity"][c] for c in TINY_CLASSES] == pytest.approx(expected, abs=1e-6)
    flat = model.prototype_head.bank.prototypes.reshape(12, 8)
    labels = torch.arange(3).repeat_interleave(4)
    between = [float(F.cosine_similarity(flat[i], flat[j], dim=0)) for i in range(12) for j in range(12)
               if labels[i] != labels[j]]
    assert report["max_between_cosine"] == pytest.approx(max(between), abs=1e-6)
    assert report["mean_between_cosine"] == pytest.approx(np.mean(between), abs=1e-6)
    printed = capsys.readouterr().out
    assert "road" in printed and "<- collapsed" in printed
    rows = report["prototype_diversity"]
    assert rows["road"]["max_cosine"] == pytest.approx(1.0, abs=1e-6) and rows["road"]["used"] == 1
    # the pass: 4 images, 7 x 3 labelled road / car and 7 x 2 sky grid pixels each
    assert [sum(rows[c]["pixels"]) for c in TINY_CLASSES] == [84, 84, 56]
    assert "prototype use: pixels of viz-tiny-test/val, first 4 images" in printed
    assert main(["viz", "prototypes", str(ckpt), "--images", "0", "--out", str(out)]) == 0
    assert "used" not in _read_json(out)["prototype_diversity"]["car"]


def test_prototypes_of_a_proac_checkpoint_and_of_a_prototype_file(ckpts, tmp_path, capsys):
    out = tmp_path / "proac.png"
    assert main(["viz", "prototypes", str(ckpts["proac"]), "--dpi", "50", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (350, 325)  # heatmap only
    report = _read_json(out)
    assert report["kind"] == "proac" and report["classes"] == list(TINY_CLASSES)
    assert report["max_between_cosine"] == pytest.approx(-0.5, abs=1e-5)  # regular simplex, K=3
    assert report["simplex_optimum"] == pytest.approx(-0.5) and report["diversity"] is None
    file = tmp_path / "p.pt"
    save_prototypes(file, hyperspherical_prototypes(12, 4, seed=1))  # K > D + 1: no simplex optimum
    assert main(["viz", "prototypes", str(file), "--dpi", "50", "--out", str(tmp_path / "file.png")]) == 0
    report = _read_json(tmp_path / "file.png")
    assert report["kind"] == "file" and report["num_prototypes"] == 12 and report["simplex_optimum"] is None
    assert report["classes"] == [str(k) for k in range(12)]
    assert "simplex optimum -1/(K-1):  -0.5000" in capsys.readouterr().out


def test_prototypes_errors_name_the_file(ckpts, tmp_path, capsys):
    assert main(["viz", "prototypes", str(ckpts["ce"]), "--out", str(tmp_path / "x.png")]) == 2
    assert f"{ckpts['ce']}: the model has no prototypes" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a tensor file")
    assert main(["viz", "prototypes", str(junk), "--out", str(tmp_path / "x.png")]) == 2
    assert f"{junk}: neither a contraseg checkpoint nor a prototype file" in capsys.readouterr().err
    assert main(["viz", "prototypes", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.png")]) == 2
    assert f"file not found: {tmp_path / 'missing.pt'}" in capsys.readouterr().err


# --------------------------------------------------------------------------- curves
def test_curves_from_a_hand_written_log(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    records = []
    for it in range(10, 101, 10):
        records.append({"type": "train", "iteration": it, "lr": 0.01 * (1 - it / 100) ** 0.9, "loss": 3.0 / it,
                        "ce": 2.5 / it, "proac": 0.5 / it, "time": 0.1, "wall": 0.0, "reg_weight": 0.1})
        if it % 20 == 0:
            records.append({"type": "eval", "iteration": it, "dataset": "tiny/val",
                            "mIoU": [0.21, 0.47, 0.45, 0.40, 0.33][it // 20 - 1], "IoU": {}})
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "curves.png"
    assert main(["viz", "curves", str(run), "--dpi", "50", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (450, 450)
    report = _read_json(out)
    assert report["eval"]["tiny/val"]["best"] == {"iteration": 40, "mIoU": 0.47}
    assert report["eval"]["tiny/val"]["last"] == {"iteration": 100, "mIoU": 0.33}
    assert report["final_losses"] == pytest.approx({"loss": 0.03, "ce": 0.025, "proac": 0.005})
    assert report["train_records"] == 10 and math.isclose(report["final_lr"], 0.0, abs_tol=1e-12)
    assert "best mIoU 47.00% at iteration 40" in capsys.readouterr().out


def test_curves_errors_exit_2_naming_the_log(tmp_path, capsys):
    assert main(["viz", "curves", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    assert f"training log not found: {tmp_path / 'log.jsonl'}" in capsys.readouterr().err
    (tmp_path / "log.jsonl").write_text("")
    assert main(["viz", "curves", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'log.jsonl'}: no training or evaluation records" in err and err.count("\n") == 1
    assert not (tmp_path / "c.png").exists()
