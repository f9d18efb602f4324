"""Iteration-based supervised training with a contrastive regulariser.

One step::

    images, labels <- next batch of the (seeded, sharded, endless) training stream
    lr             <- poly(iteration) with warm-up, per parameter group
    out            <- model(images)                       (under autocast if enabled)
    loss           <- seg_loss(upsample(out.logits), labels) + sum of regulariser terms
                      (seg_loss: the loss section, CE by default; contraseg.engine.seg_loss)
    backward (GradScaler for fp16), optional grad-norm clipping, optimiser step
    regulariser.after_step(out, labels)                  (memory enqueue)

Every ``eval_interval`` iterations (and at the end) the model is evaluated on each
``data.val`` set; a better mIoU on the first writes ``best.pth``. Every
``checkpoint_interval`` iterations (and at the end) ``last.pth`` is written, after the
evaluation of that iteration. Both are complete training states (see
:mod:`contraseg.engine.checkpoint`); resuming from one continues bit for bit: the
model, optimiser, GradScaler, regulariser buffers, the RNG states of every rank and
the position in the sample stream (a function of the iteration) are restored.

Resuming with a config that changes training is refused unless ``resume_changed``
(:mod:`contraseg.engine.resume`); then the new values are used (the optimiser's
hyper-parameters included), ``config.yaml`` holds them and ``log.jsonl`` records the
change. SIGINT / SIGTERM during :meth:`Trainer.fit` finish the current step, write
``last.pth`` and raise :class:`~contraseg.engine.interruption.TrainingInterrupted`.

Modules around the loop: :mod:`~contraseg.engine.build` (datasets, model),
:mod:`~contraseg.engine.sampling` (the sample stream), :mod:`~contraseg.engine.step` (one
step), :mod:`~contraseg.engine.regularisers` (the contrastive term),
:mod:`~contraseg.engine.resume` and :mod:`~contraseg.engine.interruption`.

Progress: with a terminal, a tqdm bar; otherwise a plain line (loss terms, lr, it/s,
ETA) every ``log_interval`` iterations and at least every :data:`PRINT_EVERY`.

Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel
(BatchNorm -> SyncBatchNorm with ``model.sync_bn`` on GPUs; torch has no CPU
SyncBatchNorm), each rank reads its shard of the stream, evaluation is sharded and its
confusion matrix all-reduced, and only rank 0 writes logs and checkpoints. Logged
losses are rank 0's.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .build import (build_eval_dataset, build_train_dataset, checked_dataset, checked_model, dataset_label,
                    segmentor_kwargs)
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config
from .config_io import config_to_yaml
from .evaluate import evaluate_dataset, inference_options
from .interruption import StopRequest, TrainingInterrupted
from .metrics import format_metrics_table
from .model_selection import resolve_best_on
from .optim import PolyLR, build_optimizer, split_parameters
from .precision import resolve_precision
from .process_group import ProcessContext, barrier, init_process_group_from_env
from .regularisers import build_regulariser
from .seg_loss import build_segmentation_loss
from .resume import BEST, LAST, checked_config_changes, remove_stale_temporaries, resolve_resume
from .recipe_sections import LossConfig, batch_summary
from .rng import gather_rng_states, restore_rng_state, seed_everything
from .run_log import RunLogger, json_safe, metrics_in_percent
from .sampling import stream_loader
from .step import StepParts, training_step

PRINT_EVERY = 50  # without a terminal, a progress line at least every this many iterations


class Trainer:
    """Builds everything from a :class:`Config` and trains.

    Args:
        cfg: the checked configuration.
        run_dir: where ``last.pth``, ``best.pth``, ``config.yaml``, ``log.jsonl``,
            ``eval/`` and ``tensorboard/`` are written.
        resume: None, ``"auto"`` or a checkpoint path (see :func:`resolve_resume`).
        context: process/device; by default from the torchrun env vars.
        progress: show a progress bar on a terminal.
        resume_changed: accept a resume whose config changes training keys.
    """

    runs_adaptation = False  # subclasses in contraseg.adapt train configs with an adapt: section

    def __init__(self, cfg: Config, run_dir: str | Path, resume: str | None = None,
                 context: ProcessContext | None = None, progress: bool = True, resume_changed: bool = False) -> None:
        if cfg.adapt is not None and not self.runs_adaptation:
            raise ValueError("the config has an adapt: section; train it with contraseg adapt (or python -m contraseg.adapt)")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ctx = context or init_process_group_from_env()
        self.device = self.ctx.device
        if self.ctx.is_main:  # the first line: the total batch, and the recipe's if it differs
            print(batch_summary(cfg, self.ctx.world_size), flush=True)
        if type(self).train_step is not Trainer.train_step and cfg.loss != LossConfig():
            raise ValueError(f"config key loss: adaptation method {getattr(self, 'method', '?')} computes its own "
                             "cross-entropies; the loss section applies to plain training and source_only")
        self.resume_changed = resume_changed
        self.config_changes: dict[str, tuple[Any, Any]] = {}
        if self.ctx.is_main:
            remove_stale_temporaries(self.run_dir)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(cfg.train.seed)

        self.train_set = checked_dataset("data.train", cfg.data.train, lambda: build_train_dataset(cfg.data))
        listing = getattr(self.train_set, "listing", None)
        if listing is not None and listing.labels is None and not cfg.data.train.options.get("pseudo_label_dir"):
            raise ValueError(f"data.train: dataset {dataset_label(cfg.data.train)} under {self.train_set.root} has no "
                             "label folder, so no labelled pixel to train on (check the root's layout)")
        self.info = self.train_set.info
        self.num_classes = len(self.info.classes)
        self.ignore_index = int(self.info.ignore_index)
        self.val_sets = [(dataset_label(v), checked_dataset(f"data.val[{i}]", v,
                                                            lambda v=v: build_eval_dataset(v, cfg.eval.resize)))
                         for i, v in enumerate(cfg.data.val)]
        for label, dataset in self.val_sets:
            if len(dataset.info.classes) != self.num_classes:
                raise ValueError(
                    f"data.val {label} has {len(dataset.info.classes)} classes but data.train has {self.num_classes}"
                )
        self.best_on, self.best_on_note = resolve_best_on(cfg, [label for label, _ in self.val_sets])

        self.model_config = segmentor_kwargs(cfg.model, self.num_classes)
        model = checked_model(self.model_config).to(self.device)
        if self.ctx.distributed and cfg.model.sync_bn:
            if self.device.type == "cpu":  # torch's SyncBatchNorm runs on accelerators only
                if self.ctx.is_main:
                    print("note: SyncBatchNorm needs a GPU; on CPU each process keeps its own BatchNorm statistics")
            else:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.regulariser = build_regulariser(cfg.regulariser, self.num_classes, cfg.model.embed_dim,
                                             self.ignore_index).to(self.device)
        self.seg_loss = build_segmentation_loss(cfg.loss, self.num_classes, self.ignore_index, model).to(self.device)
        self.optimizer = build_optimizer(split_parameters(model), cfg.optim)
        self.precision = resolve_precision(cfg.train.amp, self.device)
        self.schedule = PolyLR(cfg.schedule)
        self.iteration = 0
        self.best: dict[str, Any] = {"mIoU": None, "iteration": None}
        self._start_position = 0  # position in the global sample stream at self._start_iteration

        resume_path = resolve_resume(resume, self.run_dir)
        rng_state = None
        if resume_path is not None:
            rng_state = self._load_training_state(resume_path)
        self.resumed_from = resume_path
        if resume == "auto" and resume_path is None and self.ctx.is_main:
            print(f"--resume auto: no {LAST} in {self.run_dir}, starting from iteration 0")
        self._start_iteration = self.iteration

        if self.ctx.distributed:
            self.ddp: nn.Module = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=not self.regulariser.uses_embedding,
            )
        else:
            self.ddp = model
        if rng_state is not None:
            restore_rng_state(rng_state)
        else:  # the training stream of draws starts fresh on every rank, after model init
            seed_everything(cfg.train.seed + self.ctx.rank)

        self.logger = RunLogger(self.run_dir, enabled=self.ctx.is_main, total_iters=cfg.schedule.max_iters,
                                start_iter=self.iteration, tensorboard=cfg.train.tensorboard, progress=progress)
        if self.ctx.is_main:
            if resume is not None:  # drop what a stopped run logged after its last checkpoint
                self.logger.truncate_after(self.iteration)
            if self.config_changes:
                self.logger.log_record({"type": "config_change", "iteration": self.iteration,
                                        "changes": {k: {"from": a, "to": b} for k, (a, b) in self.config_changes.items()}})
            (self.run_dir / "config.yaml").write_text(config_to_yaml(cfg))

    # ------------------------------------------------------------------ state
    def _load_training_state(self, path: Path) -> dict[str, Any] | None:
        """Restore model, optimiser, scaler, regulariser and counters; return this rank's RNG state."""
        from ..models.segmentor import upgrade_model_config

        state = load_checkpoint(path, map_location="cpu")  # load_state_dict copies to the device
        stored = upgrade_model_config(state["model_config"])  # a ProtoSeg run saved before feat_norm: off
        if stored != self.model_config:
            raise ValueError(f"{path}: checkpoint model {stored} differs from the config's {self.model_config}")
        for key in ("optimizer", "scaler", "regulariser", "rng", "sampler", "best"):
            if key not in state:
                raise ValueError(f"{path}: not a training checkpoint (no {key!r}); use it with eval or predict")
        self._compare_configs(path, state["config"])
        fresh = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        self.model.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise ValueError(f"{path}: its optimiser state does not fit the config's optimiser ({err})") from None
        for group, hyper in zip(self.optimizer.param_groups, fresh):
            group.update(hyper)  # the config's lr / momentum / decay (the same unless resume_changed)
        if state["scaler"]:  # empty when saved without fp16 (e.g. on CPU): keep the fresh scaler
            self.precision.scaler.load_state_dict(state["scaler"])
        self.regulariser.load_state_dict(state["regulariser"])
        self.iteration = int(state["iteration"])
        self.best = dict(state["best"])
        self._start_position = int(state["sampler"]["position"])
        states = state["rng"]
        if len(states) == self.ctx.world_size:
            return states[self.ctx.rank]
        seed_everything(self.cfg.train.seed + 1_000_003 * self.iteration + self.ctx.rank)
        return None

    def _compare_configs(self, path: Path, stored_yaml: str) -> None:
        """Refuse a resume whose config changes training, unless ``resume_changed``."""
        self.config_changes = checked_config_changes(path, stored_yaml, self.cfg, self.resume_changed)
        if self.config_changes and self.ctx.is_main:
            print(f"resuming with changed config keys: {', '.join(self.config_changes)}", flush=True)

    def training_state(self) -> dict[str, Any]:
        """The checkpoint dict of the current state (collective under DDP: all ranks call it)."""
        rng = gather_rng_states(self.ctx.distributed, self.ctx.world_size)
        return {
            "iteration": self.iteration,
            "config": config_to_yaml(self.cfg),
            "model_config": self.model_config,
            "classes": list(self.info.classes),
            "palette": [list(map(int, c)) for c in self.info.palette],
            "ignore_index": self.ignore_index,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "regulariser": self.regulariser.state_dict(),
            "scheduler": {"iteration": self.iteration, "max_iters": self.cfg.schedule.max_iters},
            "sampler": {"seed": self.cfg.train.seed, "position": self._position()},
            "rng": rng,
            "best": dict(self.best),
        }

    def _position(self) -> int:
        """Samples of the global stream consumed so far (all ranks together)."""
        step = self.cfg.data.batch_size * self.ctx.world_size
        return self._start_position + (self.iteration - self._start_iteration) * step

    def _save(self, name: str) -> None:
        state = self.training_state()
        if self.ctx.is_main:
            save_checkpoint(state, self.run_dir / name)
        barrier()

    # ------------------------------------------------------------------ data
    def _loader(self) -> DataLoader:
        return stream_loader(self.train_set, self.cfg.data.batch_size, self.cfg.train.seed, self.ctx.rank,
                             self.ctx.world_size, self._position(), self.cfg.data.num_workers,
                             pin_memory=self.device.type == "cuda")

    # ------------------------------------------------------------------ loop
    def train_step(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """One optimisation step on ``batch``; returns the detached loss terms."""
        parts = StepParts(self.ddp, self.model, self.regulariser, self.optimizer, self.precision,
                          self.ignore_index, self.cfg.optim.grad_clip, self.seg_loss, self.cfg.loss.aux_weight)
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        return training_step(parts, images, labels, self.iteration)

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics): DDP broadcasts them at
        the start of each forward, so after the last step each rank holds its own update."""
        if self.ctx.distributed:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        """Metrics on every ``data.val`` set (all ranks take part, each with rank 0's
        weights and buffers, i.e. the checkpointed model); rank 0 prints and logs."""
        self._sync_buffers()
        results = {}
        options = inference_options(self.cfg)
        for label, dataset in self.val_sets:
            metrics = evaluate_dataset(self.model, dataset, options, self.device, self.cfg.data.eval_classes
                                       or dataset.info.eval_classes, self.cfg.eval.batch_size,
                                       self.cfg.data.num_workers, self.precision.dtype,
                                       progress=self.logger.progress(f"eval {label}") if self.ctx.is_main else None)
            results[label] = metrics
            self.logger.log_eval(self.iteration, label, metrics)
            self.logger.message(f"[{self.iteration}] {label}: mIoU {100 * metrics['mIoU']:.2f}%\n"
                                f"{format_metrics_table(metrics)}")
        if self.ctx.is_main:
            out = self.run_dir / "eval" / f"iter_{self.iteration:08d}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            percent = {label: metrics_in_percent(m) for label, m in results.items()}
            out.write_text(json.dumps(json_safe({"iteration": self.iteration, "unit": "%", "results": percent}),
                                      indent=1))
        return results

    def fit(self) -> dict[str, Any]:
        """Train from the current iteration to ``schedule.max_iters``.

        Returns ``{"iteration", "best", "last_eval"}`` (``last_eval``: the metrics of the
        last evaluation, by dataset label). Raises :class:`TrainingInterrupted` after
        saving ``last.pth`` when SIGINT / SIGTERM arrived.
        """
        with StopRequest() as stop:
            return self._fit(stop)

    def _stop_signal(self, stop: StopRequest) -> int | None:
        """The signal that asks to stop (agreed over all ranks under DDP), or None."""
        signum = stop.signum or 0
        if self.ctx.distributed:
            flag = torch.tensor([signum], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        return signum or None

    def _loss_values(self, sums: dict[str, Tensor], count: int, busy: float) -> tuple[dict[str, float], float]:
        """Mean loss terms and seconds per iteration over the last ``count`` iterations."""
        waited = time.perf_counter()
        values = {name: float(total) / count for name, total in sums.items()}  # waits for the device
        seconds = (busy + time.perf_counter() - waited) / count
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(
                f"the loss became {values['loss']} before iteration {self.iteration} ({values}); a label set whose "
                "pixels are all ignored (a misnamed label folder) or a too high optim.lr are the usual causes")
        values["reg_weight"] = self.regulariser.weight_at(self.iteration - 1)
        return values, seconds

    def _fit(self, stop: StopRequest) -> dict[str, Any]:
        cfg = self.cfg
        max_iters = cfg.schedule.max_iters
        data = iter(self._loader())
        self.ddp.train()
        self.regulariser.train()
        last_eval: dict[str, Any] = {}
        sums: dict[str, Tensor] = {}
        count, busy = 0, 0.0  # iterations and seconds (data + step) since the last log line
        print_every = min(cfg.train.log_interval, PRINT_EVERY)
        if self.ctx.is_main and self.resumed_from is not None:
            self.logger.message(f"resumed from {self.resumed_from} at iteration {self.iteration}")
        if self.ctx.is_main:
            self.logger.message(self.best_on_note)
        saved_last = -1
        while self.iteration < max_iters:
            tick = time.perf_counter()
            lr = self.schedule.apply(self.optimizer, self.iteration)
            terms = self.train_step(next(data))
            self.iteration += 1
            count += 1
            busy += time.perf_counter() - tick
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value
            self.logger.step()
            done = self.iteration == max_iters
            if self.iteration % cfg.train.log_interval == 0 or done:
                values, seconds = self._loss_values(sums, count, busy)
                self.logger.log_train(self.iteration, lr, values, seconds)
                sums, count, busy = {}, 0, 0.0
            elif self.iteration % print_every == 0:  # a line on stdout only, the log keeps its interval
                values, seconds = self._loss_values(sums, count, busy)
                self.logger.print_train(self.iteration, lr, values, seconds)
            if self.iteration % cfg.train.eval_interval == 0 or done:
                last_eval = self.evaluate()
                first = last_eval[self.best_on]["mIoU"] if self.best_on else math.nan
                if not math.isnan(first) and (self.best["mIoU"] is None or first > self.best["mIoU"]):
                    self.best = {"mIoU": first, "iteration": self.iteration}
                    self._save(BEST)
                self.ddp.train()
            if self.iteration % cfg.train.checkpoint_interval == 0 or done:
                self._save(LAST)
                saved_last = self.iteration
            signum = None if done else self._stop_signal(stop)
            if signum is not None:
                if saved_last != self.iteration:
                    self._save(LAST)
                self.logger.close()
                raise TrainingInterrupted(signum, self.iteration, self.run_dir / LAST)
        self.logger.close()
        return {"iteration": self.iteration, "best": dict(self.best), "last_eval": last_eval}
