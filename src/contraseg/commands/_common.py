"""What the commands share: process-group runs, output folders, dataset options, the
dataset of a checkpoint's evaluation. (Their error type and one-line error reporting are
:mod:`contraseg.errors`.)

* :func:`in_process_group` joins the ``torchrun`` process group (if any), runs a body
  and always leaves the group: the block ``train`` and ``adapt`` used to repeat.
* :func:`prepare_run_dir` and :func:`prepare_output_dir` make a run folder hold one
  run and an output folder one command's output: a non-empty folder is refused unless
  the user resumes (run folders) or passes ``--overwrite``.
* :func:`parse_options` reads the ``--option KEY=VALUE`` dataset options of every
  command that takes a dataset.
* :func:`dataset_for_model` builds the evaluation dataset of ``eval`` and
  ``pseudo-label`` and checks it against the checkpoint's classes.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from ..errors import UserError

T = TypeVar("T")

# What a training run writes into its folder (engine Trainer, adapt trainers, rounds).
RUN_OUTPUTS = ("last.pth", "best.pth", "config.yaml", "adapt.yaml", "log.jsonl", "eval", "tensorboard",
               "pseudo_labels")
RUN_OUTPUT_PATTERNS = ("round_*", ".*.tmp", "*.eval.*.json")


def in_process_group(device: str | None, body: Callable[[Any], T]) -> tuple[Any, T]:
    """Join the torchrun process group on ``device``, return ``(context, body(context))``,
    and leave the group whatever happens."""
    from ..engine.process_group import destroy_process_group, init_process_group_from_env

    try:
        context = init_process_group_from_env(device)
    except ValueError as err:
        raise UserError(str(err)) from None
    try:
        return context, body(context)
    finally:
        destroy_process_group()


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's intra-op CPU threads."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def add_run_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """The arguments ``train`` and ``adapt`` share."""
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. --set {example} or data.val[0].options.length=4 "
                             "(repeatable)")
    parser.add_argument("--resume", metavar="PATH|auto",
                        help="continue from a checkpoint; 'auto' = RUN_DIR/last.pth if it exists")
    parser.add_argument("--resume-changed", action="store_true",
                        help="on resume, accept config changes that alter training (refused otherwise)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in a run folder that holds a run, deleting that run's files")
    parser.add_argument("--run-dir", help="output folder (default runs/<config name>)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device type (default: CUDA if available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.name != ".contraseg.lock")
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        blocker = next((p for p in [folder, *folder.parents] if p.is_file()), folder)
        raise UserError(f"cannot use {folder} as a folder: {blocker} is a file") from None


def check_run_dir_path(run_dir: Path) -> None:
    """One line when ``run_dir`` cannot be a folder (a file in the way)."""
    _entries(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"cannot use {run_dir} as a folder: it is a file")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def prepare_run_dir(run_dir: Path, resume: str | None, overwrite: bool, delete: bool = True) -> None:
    """A run folder holds one run: refuse a non-empty ``run_dir`` unless resuming, or with
    ``overwrite`` delete what a run writes there (other files are kept). Every rank
    checks (so all refuse together); only the one with ``delete`` deletes."""
    if resume is not None and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    entries = _entries(run_dir)
    if not entries or resume is not None:
        return
    if not overwrite:
        names = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise UserError(f"run folder {run_dir} is not empty ({names}): continue it with --resume auto, "
                        f"choose another --run-dir, or start afresh with --overwrite")
    for path in entries if delete else []:
        if path.name in RUN_OUTPUTS or any(path.match(p) for p in RUN_OUTPUT_PATTERNS):
            _remove(path)


def prepare_output_dir(out: str | Path, overwrite: bool, suffixes: Iterable[str], what: str,
                       delete: bool = True) -> Path:
    """An output folder holds one command's output: refuse a non-empty ``out`` unless
    ``overwrite``; then delete every file with one of ``suffixes`` under it (so no stale
    file of an earlier run survives) and the folders left empty (only when ``delete``:
    under torchrun every rank checks, rank 0 deletes)."""
    out = Path(out)
    entries = _entries(out)
    if not entries:
        return out
    if not overwrite:
        raise UserError(f"{what} folder {out} is not empty: choose another --out or pass --overwrite "
                        f"(which deletes its {'/'.join(suffixes)} files first)")
    suffixes = tuple(s.lower() for s in suffixes)
    for path in sorted(out.rglob("*"), reverse=True) if delete else []:  # children before their folders
        if path.is_file() and (path.suffix.lower() in suffixes or path.name.endswith(".tmp")):
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return out


def parse_options(items: Iterable[str], flag: str = "--option") -> dict[str, Any]:
    """``["size=[64,128]", "length=100"]`` -> ``{"size": [64, 128], "length": 100}`` (YAML values)."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad {flag} {item!r}: expected KEY=VALUE, e.g. {flag} length=100")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise UserError(f"bad {flag} {item!r}: the value is not a YAML scalar or list") from None
    return options


def add_option_argument(parser: argparse.ArgumentParser, example: str = "size=[64,128]") -> None:
    """``--option KEY=VALUE`` (repeatable), the one spelling of dataset options."""
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help=f"dataset keyword argument, e.g. --option {example} (repeatable)")


def dataset_for_model(ds_cfg: Any, resize: int | None, num_classes: int) -> Any:
    """The evaluation dataset ``ds_cfg`` (short side resized to ``resize``) for a
    checkpoint's model of ``num_classes`` classes (``eval``, ``pseudo-label``).

    Raises:
        UserError: one line naming the dataset (``name/split``) for a wrong option, a
            missing root or folder, or a class count that differs from the model's.
    """
    from ..engine.build import build_eval_dataset, checked_dataset, dataset_label

    label = dataset_label(ds_cfg)
    try:
        dataset = checked_dataset("--dataset", ds_cfg, lambda: build_eval_dataset(ds_cfg, resize))
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"dataset {label}: {err}") from None
    if len(dataset.info.classes) != num_classes:
        raise UserError(f"dataset {label} has {len(dataset.info.classes)} classes, "
                        f"the checkpoint's model {num_classes}")
    return dataset
