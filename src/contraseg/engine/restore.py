"""Rebuild a trained segmentor from a checkpoint (for eval, predict and the demo)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .build import build_model
from .checkpoint import CheckpointError, load_checkpoint
from .config import Config, ConfigError
from .config_io import config_from_yaml


@dataclass
class RestoredModel:
    """A segmentor in eval mode with what a checkpoint says about it.

    Attributes:
        model: the segmentor on the requested device, eval mode.
        config: the training config stored in the checkpoint.
        classes: K class names; palette: K RGB triples; ignore_index: ignored label.
        iteration: training iterations behind the weights.
    """

    model: nn.Module
    config: Config
    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int
    iteration: int


def restore_model(path: str | Path, device: torch.device | str = "cpu") -> RestoredModel:
    """Load checkpoint ``path`` and rebuild its model with ``build_segmentor(**model_config)``.

    Raises:
        CheckpointError: one line naming the file when it is not a usable checkpoint
            (unreadable, no stored config, weights that do not fit the model).
    """
    from ..models.segmentor import upgrade_model_config

    state = load_checkpoint(path, map_location="cpu")
    try:
        config = config_from_yaml(state["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: stored config is invalid ({err})") from None
    try:
        # the checkpoint holds every weight; a model saved by an older contraseg is rebuilt as it was
        kwargs = {**upgrade_model_config(state["model_config"]), "pretrained": None}
        model = build_model(kwargs)
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: weights do not fit the stored model ({first[:200]})") from None
    num_classes = int(state["model_config"]["num_classes"])
    classes = list(state.get("classes") or [str(i) for i in range(num_classes)])
    palette = [tuple(int(c) for c in colour) for colour in state.get("palette") or []]
    if len(palette) != num_classes:
        generator = torch.Generator().manual_seed(0)
        palette = [tuple(int(c) for c in torch.randint(0, 256, (3,), generator=generator)) for _ in range(num_classes)]
    model.to(device).eval()
    return RestoredModel(model, config, classes, palette, int(state.get("ignore_index", 255)), int(state["iteration"]))
