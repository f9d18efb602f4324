"""Where the prototypes of a plot come from.

* ProtoSeg (``classifier="prototype"``): the K x M x D bank, a model buffer stored in the
  checkpoint under ``...prototype_head.bank.prototypes``; K*M prototypes.
* ProAC: the K x D fixed prototypes, a buffer of the regulariser's loss
  (``state["regulariser"]["loss.prototypes"]``); for a checkpoint saved without the
  regulariser state they are rebuilt from its config (``prototypes_file`` or
  ``hyperspherical_prototypes(K, D, prototype_seed)``).
* A prototype file written by :func:`contraseg.prototypes.save_prototypes`: K x D.
* Anything else (plain cross-entropy, pixel contrast): no prototypes in the model; the
  plots then use the class means of the sampled embeddings (:func:`class_mean_set`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .cosine_stats import class_mean_prototypes

__all__ = ["PrototypeSet", "KIND_LABELS", "prototypes_from_state", "prototypes_from_file", "class_mean_set"]

BANK_KEY = "prototype_head.bank.prototypes"
PROAC_KEY = "prototypes"

#: How each kind of prototype is named in legends and tables.
KIND_LABELS = {
    "proac": "ProAC fixed prototype",
    "protoseg": "ProtoSeg bank prototype",
    "class-mean": "class mean of the sampled pixels (model has no prototypes)",
    "file": "prototype",
}


@dataclass
class PrototypeSet:
    """Prototypes with their classes.

    Attributes:
        vectors: P x D float32 unit vectors.
        labels: P class ids (ProtoSeg: ``k`` repeated M times, class-major).
        kind: ``"proac"``, ``"protoseg"``, ``"class-mean"`` or ``"file"``.
    """

    vectors: Tensor
    labels: Tensor
    kind: str

    def __post_init__(self) -> None:
        if self.vectors.dim() != 2 or self.labels.dim() != 1 or len(self.labels) != len(self.vectors):
            raise ValueError(f"PrototypeSet needs P x D vectors and P labels, got {tuple(self.vectors.shape)} "
                             f"and {tuple(self.labels.shape)}")
        if self.kind not in KIND_LABELS:
            raise ValueError(f"PrototypeSet kind must be one of {', '.join(KIND_LABELS)}, got {self.kind!r}")
        self.vectors = torch.nn.functional.normalize(self.vectors.detach().float(), dim=1)

    @property
    def legend(self) -> str:
        """The legend entry of these prototypes."""
        return KIND_LABELS[self.kind]

    @property
    def per_class(self) -> int:
        """M, prototypes per class (the largest count of any class)."""
        return int(torch.bincount(self.labels).max()) if len(self.labels) else 0


def _find(state: Any, suffix: str, dims: int) -> Tensor | None:
    if not isinstance(state, dict):
        return None
    for key, value in state.items():
        if (key == suffix or key.endswith("." + suffix)) and isinstance(value, Tensor) and value.dim() == dims:
            return value
    return None


def _proac_from_config(state: dict[str, Any]) -> Tensor | None:
    from ..engine.config_io import config_from_yaml
    from ..prototypes import hyperspherical_prototypes, load_prototypes

    try:
        cfg = config_from_yaml(state["config"])
    except (ValueError, TypeError):
        return None
    if cfg.regulariser.name != "proac":
        return None
    num_classes = int(state["model_config"]["num_classes"])
    if cfg.regulariser.prototypes_file:
        if not os.path.isfile(cfg.regulariser.prototypes_file):
            raise ValueError(f"the checkpoint has no ProAC prototypes and its prototypes_file "
                             f"{cfg.regulariser.prototypes_file} does not exist")
        return load_prototypes(cfg.regulariser.prototypes_file)
    return hyperspherical_prototypes(num_classes, cfg.model.embed_dim, seed=cfg.regulariser.prototype_seed)


def prototypes_from_state(state: dict[str, Any]) -> PrototypeSet | None:
    """The prototypes of a loaded checkpoint dict, or None when the model has none.

    Raises:
        ValueError: a ProAC checkpoint without stored prototypes whose prototypes file is gone.
    """
    bank = _find(state.get("model"), BANK_KEY, 3)
    if bank is not None:
        k, m, d = bank.shape
        return PrototypeSet(bank.reshape(k * m, d), torch.arange(k).repeat_interleave(m), "protoseg")
    fixed = _find(state.get("regulariser"), PROAC_KEY, 2)
    if fixed is None and "config" in state and "model_config" in state:
        fixed = _proac_from_config(state)
    if fixed is not None:
        return PrototypeSet(fixed, torch.arange(fixed.shape[0]), "proac")
    return None


def prototypes_from_file(path: str | os.PathLike) -> PrototypeSet:
    """K x D prototypes from a file written by ``save_prototypes`` (class k = row k)."""
    from ..prototypes import load_prototypes

    protos = load_prototypes(path)
    return PrototypeSet(protos, torch.arange(protos.shape[0]), "file")


def class_mean_set(embeddings: Tensor, labels: Tensor) -> PrototypeSet:
    """Class means of sampled N x D embeddings (classes present only), as prototypes."""
    means, classes = class_mean_prototypes(embeddings, labels)
    return PrototypeSet(means, classes.cpu(), "class-mean")
