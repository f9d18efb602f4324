"""The adaptation trainer: the engine's :class:`~contraseg.engine.trainer.Trainer` plus a
target-domain stream, initial weights and method state.

Everything else is the engine's: building the source set, evaluation sets, model,
optimiser, schedule, precision and regulariser; the evaluation / ``best.pth`` /
``last.pth`` / log cadence; DDP; and exact resume. An adaptation checkpoint is an engine
training checkpoint with two more keys::

    adapt_config   the adapt section as YAML
    adapt_state    the method's own state (mean teacher, prototype estimator), state dicts

so ``contraseg eval`` / ``predict`` / ``pseudo-label`` read it like any other.

One step reads a pair of batches: the source batch of the engine's stream and a target
batch from a second stream of the same kind (:class:`~contraseg.engine.sampling.InfiniteShardedSampler`
with seed ``train.seed + TARGET_SEED_OFFSET``, starting at ``iteration * target batch *
world size`` on resume), so the pair sequence is a function of the seed and the
iteration, and resuming continues bit for bit.

Subclasses set ``method``, ``target_kind`` (see :mod:`contraseg.adapt.target_data`) and
``has_adapt_state``, and implement :meth:`train_step` on ``(source_batch, target_batch)``; they may build
extra state in :meth:`setup` and expose it through :meth:`adapt_state_dict` /
:meth:`load_adapt_state`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..engine.checkpoint import load_checkpoint
from ..engine.config import Config
from ..engine.process_group import ProcessContext
from ..engine.rng import capture_rng_state, restore_rng_state
from ..engine.sampling import stream_loader
from ..engine.trainer import Trainer
from .config import AdaptConfig, adapt_config_to_yaml
from .target_data import TargetDataset, check_image_labels, check_label_folder

TARGET_SEED_OFFSET = 7919  # the target stream's seed is train.seed + this


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without disturbing the global Python / NumPy / torch generators."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def load_initial_weights(model: nn.Module, path: str | Path, model_config: dict[str, Any]) -> int:
    """Load the weights of checkpoint ``path`` into ``model``; returns its iteration.

    Raises:
        ValueError: one line naming the file when its model differs from ``model_config``
            (``pretrained`` aside: the checkpoint holds every weight).
    """
    from ..models.segmentor import upgrade_model_config

    state = load_checkpoint(path, map_location="cpu")
    theirs = {**upgrade_model_config(state["model_config"]), "pretrained": None}
    mine = {**model_config, "pretrained": None}
    if theirs != mine:
        raise ValueError(f"adapt.init_checkpoint {path}: its model {theirs} differs from the config's {mine}")
    model.load_state_dict(state["model"])
    return int(state["iteration"])


class AdaptTrainer(Trainer):
    """Engine trainer with a target stream (see the module docstring).

    Args:
        cfg: the engine config (``data.train`` = labelled source).
        adapt: the ``adapt`` section.
        run_dir, resume, context, progress, resume_changed: as for the engine's Trainer.

    ``adapt.init_checkpoint`` initialises the model on a fresh start (not on resume).
    """

    method = "source_only"
    target_kind: str | None = None  # None: no target stream; else a TargetDataset kind
    has_adapt_state = False  # True: resuming needs the checkpoint's adapt_state
    runs_adaptation = True  # the engine's Trainer refuses configs with an adapt: section

    def __init__(self, cfg: Config, adapt: AdaptConfig, run_dir: str | Path, resume: str | None = None,
                 context: ProcessContext | None = None, progress: bool = True, resume_changed: bool = False) -> None:
        if adapt.method != self.method:
            raise ValueError(f"{type(self).__name__} runs method {self.method!r}, the config asks for {adapt.method!r}")
        self.adapt = adapt
        self._stored_adapt_state: dict[str, Any] | None = None
        super().__init__(cfg, run_dir, resume, context, progress, resume_changed=resume_changed)
        with preserved_rng():  # a resumed run must draw exactly what the uninterrupted one draws
            self.target_set = self.build_target_set() if self.target_kind is not None else None
            if self.target_set is not None and len(self.target_set.info.classes) != self.num_classes:
                raise ValueError(f"adapt.target {adapt.target.name} has {len(self.target_set.info.classes)} "
                                 f"classes but data.train has {self.num_classes}")
            self.initialised_from = None
            if self.resumed_from is None and adapt.init_checkpoint:
                load_initial_weights(self.model, adapt.init_checkpoint, self.model_config)
                self.initialised_from = adapt.init_checkpoint
            self.setup()
            if self.resumed_from is not None:
                self.load_adapt_state(self._stored_adapt_state or {})
        if self.ctx.is_main:
            (self.run_dir / "adapt.yaml").write_text(adapt_config_to_yaml(adapt))

    # ------------------------------------------------------------------ hooks
    def setup(self) -> None:
        """Build the method's extra parts (called once the model has its initial weights)."""

    def adapt_state_dict(self) -> dict[str, Any]:
        """The method's state for checkpoints (tensors and plain containers)."""
        return {}

    def load_adapt_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`adapt_state_dict` returned."""

    # ------------------------------------------------------------------ target data
    def label_source(self) -> str | None:
        """The label folder (``dense``) or image-label file (``image``) of the target stream."""
        return None

    def build_target_set(self) -> TargetDataset:
        """``adapt.target`` with the training transform, wrapped as a :class:`TargetDataset`."""
        from ..data import build_dataset
        from ..engine.build import train_transform
        from .weak_labels import read_image_labels

        target = self.adapt.target
        transform = train_transform(self.cfg.data, self.adapt.target_base_size or ())
        kwargs: dict[str, Any] = {"split": target.split, "transform": transform, **target.options}
        if target.root is not None:
            kwargs["root"] = target.root
        source = self.label_source()
        if self.target_kind == "dense":
            if source is None:
                raise ValueError(f"method {self.method} needs a target label folder")
            kwargs["pseudo_label_dir"] = source
        dataset = build_dataset(target.name, **kwargs)
        if len(dataset) == 0:
            raise ValueError(f"adapt.target: dataset {target.name}/{target.split} is empty")
        image_labels = None
        if self.target_kind == "dense":
            check_label_folder(dataset, source)
        elif self.target_kind == "image":
            if source is None:
                raise ValueError(f"method {self.method} needs image-level labels")
            image_labels = read_image_labels(source)
            check_image_labels(dataset, image_labels, source)
        return TargetDataset(dataset, self.target_kind, image_labels)

    def _target_loader(self) -> DataLoader:
        assert self.target_set is not None
        batch = self.adapt.target_batch(self.cfg)
        return stream_loader(self.target_set, batch, self.cfg.train.seed + TARGET_SEED_OFFSET, self.ctx.rank,
                             self.ctx.world_size, self.iteration * batch * self.ctx.world_size,
                             self.cfg.data.num_workers, pin_memory=self.device.type == "cuda")

    def _loader(self) -> Any:
        """The engine's source stream, zipped with the target stream when there is one."""
        source = super()._loader()
        if self.target_set is None:
            return source
        return zip(source, self._target_loader())

    # ------------------------------------------------------------------ state
    def _load_training_state(self, path: Path) -> dict[str, Any] | None:
        """The engine's restore, keeping the checkpoint's ``adapt_state`` for :meth:`load_adapt_state`."""
        rng = super()._load_training_state(path)
        state = load_checkpoint(path, map_location="cpu")
        self._stored_adapt_state = state.get("adapt_state")
        if self._stored_adapt_state is None and self.has_adapt_state:
            raise ValueError(f"{path}: not a {self.method} checkpoint (no 'adapt_state'); "
                             f"use it as adapt.init_checkpoint instead")
        return rng

    def training_state(self) -> dict[str, Any]:
        """The engine's checkpoint dict plus ``adapt_config`` (YAML) and ``adapt_state``."""
        state = super().training_state()
        state["adapt_config"] = adapt_config_to_yaml(self.adapt)
        state["adapt_state"] = self.adapt_state_dict()
        return state

    # ------------------------------------------------------------------ step helpers
    def to_device(self, batch: dict[str, Any], key: str) -> Tensor:
        """``batch[key]`` on the training device."""
        return batch[key].to(self.device, non_blocking=True)

    def optimise(self, loss: Tensor) -> None:
        """Backward (scaled for fp16), optional grad-norm clipping, optimiser step."""
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip is not None:
            scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        scaler.step(self.optimizer)
        scaler.update()

    def forward_float(self, images: Tensor) -> dict[str, Tensor]:
        """The (DDP-wrapped) model on ``images`` under autocast; outputs cast to float32."""
        with self.precision.autocast():
            raw = self.ddp(images)
        return {name: value.float() for name, value in raw.items()}

    def forward_parts(self, parts: list[Tensor]) -> dict[str, Tensor]:
        """:meth:`forward_float` on the step's parts (each B_i x 3 x H x W), outputs concatenated
        in the parts' order: one forward on them all (``adapt.forward: joint``) or one per part
        (``separate``: BatchNorm normalises each part with its own batch statistics)."""
        if self.adapt.forward == "joint" or len(parts) == 1:
            return self.forward_float(torch.cat(parts))
        outputs = [self.forward_float(part) for part in parts]
        return {name: torch.cat([out[name] for out in outputs]) for name in outputs[0]}


class SourceOnlyTrainer(AdaptTrainer):
    """Source-only fine-tuning from ``adapt.init_checkpoint``: the engine's step on source
    batches alone. It gives the compute-matched baseline of the adaptation methods
    (same starting weights, same schedule, no target data)."""

    method = "source_only"
    target_kind = None
