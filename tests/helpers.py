"""Small shared test utilities: random dense inputs, dense->flat reference flattening,
and the tiny training config the engine, CLI, checkpoint, distributed and adaptation
tests train."""

from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from contraseg.engine.config_io import merge_dicts

TINY_SIZE = (32, 64)  # H x W of the tiny config's synthetic scenes and crops


def random_batch(b=2, d=8, h=5, w=6, k=4, label_size=None, ignore_frac=0.2, dtype=torch.float64, seed=0):
    """Random embeddings B x D x h x w and labels B x H x W with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, d, h, w, generator=g, dtype=dtype)
    hh, ww = label_size or (h, w)
    labels = torch.randint(0, k, (b, hh, ww), generator=g)
    labels[torch.rand(b, hh, ww, generator=g) < ignore_frac] = 255
    return emb.requires_grad_(True), labels


def flat_reference(emb, labels, ignore=255):
    """Resize labels with nearest neighbour and return (normalised feats list, labels list)."""
    b, d, h, w = emb.shape
    lab = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    feats, ys = [], []
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                if lab[bi, y, x] != ignore:
                    f = emb[bi, :, y, x]
                    feats.append(f / f.norm())
                    ys.append(int(lab[bi, y, x]))
    return feats, ys


def tiny_dataset(name: str, split: str, length: int) -> dict:
    """A ``data.train`` / ``data.val`` entry: ``length`` synthetic scenes of :data:`TINY_SIZE`."""
    return {"name": name, "split": split, "options": {"size": list(TINY_SIZE), "length": length}}


def tiny_config(train_scenes: int = 4, val_scenes: int = 2, **sections) -> dict:
    """The tiny training config as a plain mapping: resnet18 + MLP head (16-d embedding)
    on 32 x 64 scenes, ``train_scenes`` synthetic-source training scenes, ``val_scenes``
    synthetic-target validation scenes, 2 images per step, no workers, no tensorboard;
    2 iterations, a log line every iteration, evaluated and saved at iteration 2.

    Each keyword merges into the section of that name as a ``_base_`` include does
    (mappings key by key, anything else, lists included, replaces), e.g.
    ``tiny_config(regulariser={"name": "proac"}, schedule={"max_iters": 3})``.
    """
    raw = {
        "name": "tiny",
        "model": {"backbone": "resnet18", "head": "mlp", "embed_dim": 16, "output_stride": 8},
        "data": {
            "train": tiny_dataset("synthetic-source", "train", train_scenes),
            "val": [tiny_dataset("synthetic-target", "val", val_scenes)],
            "crop_size": list(TINY_SIZE), "batch_size": 2, "num_workers": 0,
        },
        "schedule": {"max_iters": 2},
        "train": {"log_interval": 1, "eval_interval": 2, "checkpoint_interval": 2, "tensorboard": False},
    }
    return merge_dicts(raw, sections)


def write_yaml(path: Path, raw: dict) -> Path:
    """Write ``raw`` (e.g. :func:`tiny_config`) as a YAML config file; returns ``path``."""
    path.write_text(yaml.safe_dump(raw))
    return path
