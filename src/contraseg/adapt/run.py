"""Running an adaptation config end to end, including self-training rounds.

``source_only`` and ``wdass`` train once. ``self_training`` runs ``adapt.rounds`` rounds;
round r (1-based) works in ``run_dir`` when there is one round, else ``run_dir/round_<r>``:

1. pseudo labels of the target training set (``<round dir>/pseudo_labels``) from the
   labelling model: round 1 ``adapt.pseudo_labels.checkpoint`` (default
   ``adapt.init_checkpoint``), later rounds the previous round's ``last.pth``; round 1
   uses ``adapt.pseudo_labels.dir`` as it is when that is set;
2. training on source labels + those pseudo labels, the student starting from
   ``adapt.init_checkpoint`` (round 1) or the previous round's weights.

With ``resume="auto"`` finished pseudo-label folders (their ``summary.json`` exists) are
kept and each round resumes from its own ``last.pth``, so an interrupted multi-round
run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..engine.config import Config
from ..engine.process_group import ProcessContext, barrier, init_process_group_from_env
from .config import AdaptConfig
from .methods import trainer_class
from .pseudo_labels import LabellingOptions, format_summary, generate_pseudo_labels, is_complete
from .trainer import AdaptTrainer


def build_adapt_trainer(cfg: Config, adapt: AdaptConfig, run_dir: str | Path, resume: str | None = None,
                        context: ProcessContext | None = None, progress: bool = True,
                        resume_changed: bool = False) -> AdaptTrainer:
    """The trainer of ``adapt.method`` (the method table, :mod:`contraseg.adapt.methods`)
    for one round; see :func:`run_adaptation` for rounds."""
    return trainer_class(adapt.method)(cfg, adapt, run_dir, resume=resume, context=context, progress=progress,
                                       resume_changed=resume_changed)


def round_directory(run_dir: str | Path, index: int, rounds: int) -> Path:
    """``run_dir`` for a single round, else ``run_dir/round_<index>`` (1-based)."""
    return Path(run_dir) if rounds == 1 else Path(run_dir) / f"round_{index}"


def label_target(checkpoint: str | Path, adapt: AdaptConfig, out: str | Path, device: torch.device,
                 num_workers: int = 0) -> dict[str, Any]:
    """Pseudo labels of ``adapt.target`` by ``checkpoint`` with ``adapt.pseudo_labels``'s settings."""
    from ..engine.build import build_eval_dataset
    from ..engine.evaluate import inference_options
    from ..engine.restore import restore_model

    settings = adapt.pseudo_labels
    restored = restore_model(checkpoint, device)
    if settings.mode is not None:
        restored.config.eval.mode = settings.mode
    dataset = build_eval_dataset(adapt.target, restored.config.eval.resize)
    if len(dataset.info.classes) != len(restored.classes):
        raise ValueError(f"adapt.target {adapt.target.name} has {len(dataset.info.classes)} classes, "
                         f"the labelling checkpoint {checkpoint} {len(restored.classes)}")
    options = LabellingOptions(inference=inference_options(restored.config).kwargs(),
                               batch_size=settings.batch_size, num_workers=num_workers)
    return generate_pseudo_labels(restored.model, dataset, out, threshold=settings.threshold,
                                  class_percentile=settings.class_percentile, options=options, device=device)


def run_adaptation(cfg: Config, adapt: AdaptConfig, run_dir: str | Path, resume: str | None = None,
                   context: ProcessContext | None = None, progress: bool = True,
                   resume_changed: bool = False) -> dict[str, Any]:
    """Train ``adapt.method`` (all rounds); returns the last round's ``fit`` summary plus
    ``"rounds"`` (every round's summary) and ``"run_dir"`` (the last round's folder).
    ``resume_changed`` lets a resumed round accept a changed training setting."""
    context = context or init_process_group_from_env()
    if adapt.method != "self_training":
        summary = build_adapt_trainer(cfg, adapt, run_dir, resume, context, progress, resume_changed).fit()
        return {**summary, "rounds": [summary], "run_dir": str(run_dir)}
    if resume not in (None, "auto") and adapt.rounds > 1:
        raise ValueError("--resume with a checkpoint path needs a single round; use --resume auto for rounds")
    summaries: list[dict[str, Any]] = []
    previous: Path | None = None
    directory = Path(run_dir)
    for index in range(1, adapt.rounds + 1):
        directory = round_directory(run_dir, index, adapt.rounds)
        given = adapt.pseudo_labels.dir if index == 1 else None
        labels = Path(given) if given else directory / "pseudo_labels"
        if not given and not (resume is not None and is_complete(labels)):
            labeller = previous if previous is not None else (adapt.pseudo_labels.checkpoint or adapt.init_checkpoint)
            if context.is_main:
                print(f"round {index}/{adapt.rounds}: pseudo-labelling {adapt.target.name}/{adapt.target.split} "
                      f"with {labeller} into {labels}", flush=True)
            summary = label_target(labeller, adapt, labels, context.device, cfg.data.num_workers)
            if context.is_main:
                print(format_summary(summary), flush=True)
            barrier()
        init = adapt.init_checkpoint if previous is None else str(previous)
        round_adapt = dataclasses.replace(
            adapt, init_checkpoint=init, pseudo_labels=dataclasses.replace(adapt.pseudo_labels, dir=str(labels)))
        round_resume = resume if adapt.rounds == 1 else ("auto" if resume is not None else None)
        trainer = build_adapt_trainer(cfg, round_adapt, directory, round_resume, context, progress, resume_changed)
        summaries.append(trainer.fit())
        previous = directory / "last.pth"
    return {**summaries[-1], "rounds": summaries, "run_dir": str(directory)}
