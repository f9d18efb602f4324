"""``contraseg viz embed|prototypes|curves ...``

Pictures of a checkpoint's embedding space and of a training run, each a PNG with the
numbers behind it printed and written as JSON next to it (FILE.json). ``embed``: a t-SNE
(or UMAP / PCA) map of class-balanced pixel embeddings coloured by class, with the
model's prototypes (ProAC, ProtoSeg bank, or class means) in the same map, a per-class
cosine table and silhouette scores; ``--compare`` puts a second checkpoint beside it on
the same pixels. ``prototypes``: the prototype cosine matrix and ProtoSeg's per-class
diversity. ``curves``: loss terms, learning rate and validation mIoU of RUN_DIR/log.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ._common import parse_options

VIZ_INSTALL_HINT = "contraseg viz needs matplotlib and scikit-learn: pip install contraseg[viz]"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``viz`` with its ``embed``, ``prototypes`` and ``curves`` actions."""
    parser = subparsers.add_parser("viz", help="pictures of the embedding space, prototypes and training curves",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    embed = actions.add_parser("embed", help="2-D map of pixel embeddings with the prototypes")
    embed.add_argument("checkpoint", help="a .pth written by contraseg train")
    embed.add_argument("--dataset", help="dataset name (default: the checkpoint config's first data.val entry)")
    embed.add_argument("--root", help="dataset root folder")
    embed.add_argument("--split", help="dataset split (default: val, or the config's)")
    embed.add_argument("--option", "--dataset-option", dest="dataset_option", action="append", default=[],
                       metavar="KEY=VALUE",
                       help="dataset keyword argument, VALUE read as YAML (repeatable), e.g. --option size=[64,128]")
    embed.add_argument("--pixels", type=int, default=20000, help="pixel budget, shared equally by classes (default 20000)")
    embed.add_argument("--images", type=int, default=10, help="images used from the start of the split (default 10)")
    embed.add_argument("--method", choices=("tsne", "umap", "pca"), default="tsne", help="2-D projection (default tsne)")
    embed.add_argument("--compare", metavar="CHECKPOINT2", help="a second checkpoint drawn beside, on the same pixels")
    embed.add_argument("--seed", type=int, default=0, help="pixel sampling and projection seed (default 0)")
    embed.add_argument("--resize", type=int, help="resize images to this short side (default: the config's eval.resize)")
    embed.add_argument("--device", choices=("cpu", "cuda"), help="device (default: CUDA if available)")
    embed.add_argument("--save-sample", metavar="FILE.npz", help="also save the sampled pixels, embeddings and coordinates")
    embed.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    embed.add_argument("--out", required=True, help="output PNG (the numbers go to the same name with .json)")
    embed.set_defaults(func=run_embed)

    protos = actions.add_parser("prototypes", help="prototype cosine heatmap and per-class diversity")
    protos.add_argument("source", help="a checkpoint, or a prototype file written by 'contraseg prototypes make'")
    protos.add_argument("--images", type=int, default=10,
                        help="checkpoint: images of its first data.val set over which each prototype's won pixels "
                             "are counted (default 10; 0 = skip)")
    protos.add_argument("--device", choices=("cpu", "cuda"), help="device of that pass (default: CUDA if available)")
    protos.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    protos.add_argument("--out", required=True, help="output PNG (the numbers go to the same name with .json)")
    protos.set_defaults(func=run_prototypes, dataset=None, root=None, split=None, dataset_option=[], resize=None)

    curves = actions.add_parser("curves", help="loss terms, learning rate and validation mIoU of a run")
    curves.add_argument("run", help="a run folder holding log.jsonl (or the log file itself)")
    curves.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    curves.add_argument("--out", required=True, help="output PNG (the numbers go to the same name with .json)")
    curves.set_defaults(func=run_curves)


# --------------------------------------------------------------------------- shared
def _require_plotting() -> None:
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        raise UserError(VIZ_INSTALL_HINT) from None


def _png_path(out: str, dpi: int) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file, got {out}")
    if dpi < 10:
        raise UserError(f"--dpi must be >= 10, got {dpi}")
    return path


def _write_outputs(fig: Any, png: Path, numbers: dict[str, Any]) -> Path:
    """Save the PNG and FILE.json; return the JSON path."""
    from ..engine.run_log import json_safe
    from ..viz import save_png

    save_png(fig, png)
    report = png.with_suffix(".json")
    report.write_text(json.dumps(json_safe(numbers), indent=1) + "\n")
    print(f"wrote {png} and {report}")
    return report


# --------------------------------------------------------------------------- embed
def _device(name: str | None) -> Any:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _load_model(path: str, device: Any) -> tuple[Any, Any]:
    """``(RestoredModel, PrototypeSet or None)`` of a checkpoint; UserError naming the file."""
    from ..engine.checkpoint import CheckpointError, load_checkpoint
    from ..engine.restore import restore_model
    from ..viz import prototypes_from_state

    try:
        restored = restore_model(path, device)
        prototypes = prototypes_from_state(load_checkpoint(path))
    except (CheckpointError, ValueError) as err:
        raise UserError(str(err)) from None
    return restored, prototypes


def _build_dataset(args: argparse.Namespace, config: Any, num_classes: int) -> tuple[Any, str]:
    """The dataset to sample and its ``name/split`` label."""
    from ..data import EvalTransform, build_dataset

    if args.dataset:
        name, root, split, options = args.dataset, args.root, args.split or "val", {}
    else:
        first = config.data.val[0]
        name, root, split, options = first.name, args.root or first.root, args.split or first.split, dict(first.options)
    options.update(parse_options(args.dataset_option, flag="--dataset-option"))
    resize = args.resize if args.resize is not None else config.eval.resize
    if resize is not None and resize < 1:
        raise UserError(f"--resize must be >= 1, got {resize}")
    kwargs: dict[str, Any] = {"split": split, "transform": EvalTransform(resize=resize), **options}
    if root is not None:
        kwargs["root"] = root
    try:
        dataset = build_dataset(name, **kwargs)
    except (ValueError, TypeError, OSError) as err:
        raise UserError(f"dataset {name}/{split}: {str(err).strip().splitlines()[0]}") from None
    if len(dataset) == 0:
        raise UserError(f"dataset {name}/{split} is empty")
    if len(dataset.info.classes) != num_classes:
        raise UserError(f"dataset {name} has {len(dataset.info.classes)} classes but the checkpoint's model "
                        f"predicts {num_classes}")
    return dataset, f"{name}/{split}"


def _title(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _save_sample(path: str, sample: Any, views: list[Any]) -> None:
    import numpy as np

    arrays: dict[str, Any] = {"positions": sample.positions.numpy(), "labels": sample.labels.numpy()}
    for j, (embeddings, view) in enumerate(zip(sample.embeddings, views)):
        arrays[f"embeddings_{j}"] = embeddings.numpy()
        arrays[f"coords_{j}"] = view.coords
        arrays[f"prototypes_{j}"] = view.prototypes.vectors.numpy()
        arrays[f"prototype_labels_{j}"] = view.prototypes.labels.numpy()
        arrays[f"prototype_coords_{j}"] = view.prototype_coords
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    print(f"wrote {path}")


def run_embed(args: argparse.Namespace) -> int:
    """Sample pixels, project them with the prototypes, draw, print and save the numbers."""
    _require_plotting()
    png = _png_path(args.out, args.dpi)
    for flag, value in (("--pixels", args.pixels), ("--images", args.images)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    from ..viz import class_name, collect_pixel_sample, embedding_view, format_embedding_stats, plot_embedding
    from ..viz.projection2d import check_method

    try:
        check_method(args.method)
    except ImportError as err:  # umap-learn missing
        raise UserError(str(err)) from None

    device = _device(args.device)
    paths = [args.checkpoint] + ([args.compare] if args.compare else [])
    loaded = [_load_model(path, device) for path in paths]
    num_classes = len(loaded[0][0].classes)
    for path, (restored, _) in zip(paths[1:], loaded[1:]):
        if len(restored.classes) != num_classes:
            raise UserError(f"{path} has {len(restored.classes)} classes but {paths[0]} has {num_classes}")
    dataset, dataset_label = _build_dataset(args, loaded[0][0].config, num_classes)
    classes, palette = list(dataset.info.classes), list(dataset.info.palette)
    try:
        sample = collect_pixel_sample([r.model for r, _ in loaded], dataset, args.pixels, args.images, args.seed)
    except ValueError as err:
        raise UserError(f"{dataset_label}: {err}") from None
    if len(sample) < 4:
        raise UserError(f"{dataset_label}: only {len(sample)} labelled pixels in {args.images} images; "
                        "need at least 4 (use more --images)")
    print(f"sampled {len(sample)} pixels from {min(args.images, len(dataset))} images of {dataset_label}; "
          f"projecting with {args.method}", flush=True)
    try:
        views = [embedding_view(_title(path), embeddings, sample.labels, prototypes, args.method, args.seed, classes)
                 for path, embeddings, (_, prototypes) in zip(paths, sample.embeddings, loaded)]
    except ValueError as err:
        raise UserError(str(err)) from None
    for view in views:
        print(format_embedding_stats(view.stats, view.title, args.method))
        print()
    fig = plot_embedding([view.panel(args.method) for view in views], classes, palette, dpi=args.dpi)
    counts = sample.class_counts()
    _write_outputs(fig, png, {
        "command": "embed",
        "dataset": dataset_label,
        "images": min(args.images, len(dataset)),
        "pixels_requested": args.pixels,
        "method": args.method,
        "seed": args.seed,
        "sample": {"num_pixels": len(sample), "class_counts": {class_name(k, classes): n for k, n in counts.items()}},
        "panels": [{"checkpoint": str(path), "title": view.title, **view.stats} for path, view in zip(paths, views)],
    })
    if args.save_sample:
        _save_sample(args.save_sample, sample, views)
    return 0


# --------------------------------------------------------------------------- prototypes
def _prototype_source(path: Path) -> tuple[Any, list[str] | None, list[Any] | None]:
    """``(PrototypeSet, class names or None, palette or None)`` of a checkpoint or prototype file."""
    from ..engine.checkpoint import CheckpointError, load_checkpoint
    from ..viz import prototypes_from_file, prototypes_from_state

    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        state = load_checkpoint(path)
    except CheckpointError:
        try:
            return prototypes_from_file(path), None, None
        except (ValueError, FileNotFoundError) as err:
            raise UserError(f"{path}: neither a contraseg checkpoint nor a prototype file ({err})") from None
    try:
        protos = prototypes_from_state(state)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    if protos is None:
        raise UserError(f"{path}: the model has no prototypes (linear classifier, no ProAC regulariser); "
                        "'contraseg viz embed' shows its class means")
    return protos, list(state.get("classes") or []) or None, list(state.get("palette") or []) or None


def _diversity(args: argparse.Namespace, source: Path, protos: Any, is_checkpoint: bool) -> dict[int, Any]:
    """Per-class within-class cosines, plus (checkpoint, ``--images`` > 0) the pixels each prototype wins."""
    from ..viz import prototype_diversity, prototype_usage

    if args.images < 0:
        raise UserError(f"--images must be >= 0, got {args.images}")
    counts = None
    if is_checkpoint and args.images > 0:
        restored, _ = _load_model(str(source), _device(args.device))
        dataset, label = _build_dataset(args, restored.config, len(restored.classes))
        restored.model.eval()
        counts = prototype_usage(restored.model, dataset, protos.vectors, protos.labels, args.images).counts
        print(f"prototype use: pixels of {label}, first {min(args.images, len(dataset))} images")
    return prototype_diversity(protos.vectors, protos.labels, counts)


def run_prototypes(args: argparse.Namespace) -> int:
    """Cosine heatmap (+ diversity bars), separation summary, JSON."""
    _require_plotting()
    png = _png_path(args.out, args.dpi)
    from ..viz import (class_name, format_prototype_diversity, format_prototype_summary, plot_prototype_similarity,
                       prototype_similarity)

    source = Path(args.source)
    protos, classes, palette = _prototype_source(source)
    similarity = prototype_similarity(protos.vectors, protos.labels)
    summary = dict(similarity.summary)
    names = classes or [str(k) for k in range(int(protos.labels.max()) + 1)]
    print(format_prototype_summary(summary, names))
    diversity = _diversity(args, source, protos, protos.kind != "file")
    print(format_prototype_diversity(diversity, names))
    summary["prototype_diversity"] = {class_name(k, names): row for k, row in diversity.items()}
    if summary["diversity"] is not None:
        summary["diversity"] = {class_name(k, names): v for k, v in summary["diversity"].items()}
    fig = plot_prototype_similarity(similarity, names, palette, title=source.name, dpi=args.dpi)
    _write_outputs(fig, png, {"command": "prototypes", "source": str(source), "kind": protos.kind,
                              "classes": names, **summary})
    return 0


# --------------------------------------------------------------------------- curves
def run_curves(args: argparse.Namespace) -> int:
    """Loss / lr / mIoU plots and the summary of a run's log."""
    _require_plotting()
    png = _png_path(args.out, args.dpi)
    from ..viz import format_curves_summary, plot_curves, read_run_curves, summarise_curves

    try:
        curves = read_run_curves(args.run)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    summary = summarise_curves(curves)
    print(format_curves_summary(summary))
    fig = plot_curves(curves, title=str(curves.path.parent.name or curves.path.name), dpi=args.dpi)
    _write_outputs(fig, png, {"command": "curves", **summary})
    return 0
