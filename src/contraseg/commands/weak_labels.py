"""``contraseg weak-labels --kind image|point|coarse --dataset NAME [--root R] [--split train]
[--option KEY=VALUE ...] --out DIR [--seed S] [--overwrite]``

Makes weak labels of a split from its full labels, deterministically (the same seed
gives the same files): ``image`` writes ``DIR/image_labels.json`` (sample name -> class
ids present); ``point`` one random pixel (``--points``) per connected class region of at
least ``--min-size`` pixels; ``coarse`` every class region eroded by ``--radius`` pixels
with the thin classes (``--drop``) removed, or with ``--as-is`` the dataset's own coarse
labels (Cityscapes: ``--option mode=coarse --as-is``). Point and coarse labels are
``DIR/<sample name>.png`` (255 = unlabelled), the layout the WDASS configs read.
"""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from ._common import parse_options, prepare_output_dir
from .pseudo_label import add_dataset_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``weak-labels``."""
    from ..adapt.weak_labels import DEFAULT_THIN_CLASSES

    parser = subparsers.add_parser("weak-labels", help="image / point / coarse weak labels from full labels",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("--kind", required=True, choices=("image", "point", "coarse"), help="weak label kind")
    add_dataset_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out, deleting its earlier PNGs / JSON first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the point draws (default 0)")
    parser.add_argument("--min-size", type=int, default=16, help="point: smallest region that gets a point (px, default 16)")
    parser.add_argument("--points", type=int, default=1, help="point: labelled pixels per region (default 1)")
    parser.add_argument("--connectivity", type=int, choices=(4, 8), default=8, help="point: region connectivity (default 8)")
    parser.add_argument("--radius", type=int, default=2, help="coarse: erosion radius in pixels (default 2)")
    parser.add_argument("--drop", default=",".join(DEFAULT_THIN_CLASSES),
                        help=f"coarse: comma-separated class names to drop (default {','.join(DEFAULT_THIN_CLASSES)}; "
                             "'' keeps all)")
    parser.add_argument("--as-is", action="store_true", help="coarse: write the dataset's own labels unchanged")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the dataset (labels only are read) and write the weak labels."""
    from ..adapt.weak_labels import make_weak_labels
    from ..data import build_dataset

    for name, value, low in (("--seed", args.seed, 0), ("--min-size", args.min_size, 1),
                             ("--points", args.points, 1), ("--radius", args.radius, 0)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    options = parse_options(args.options)
    kwargs = {"split": args.split, **options}
    if args.root is not None:
        kwargs["root"] = args.root
    try:
        dataset = build_dataset(args.dataset, **kwargs)
    except (FileNotFoundError, TypeError, ValueError) as err:
        raise UserError(f"dataset {args.dataset}/{args.split}: {' '.join(str(err).split())}") from None
    drop = [name.strip() for name in args.drop.split(",") if name.strip()]
    prepare_output_dir(args.out, args.overwrite, (".png", ".json"), "weak-label")
    try:
        summary = make_weak_labels(dataset, args.kind, args.out, seed=args.seed, min_size=args.min_size,
                                   points=args.points, connectivity=args.connectivity, radius=args.radius,
                                   drop=drop, as_is=args.as_is)
    except ValueError as err:
        raise UserError(" ".join(str(err).split())) from None
    labelled = summary["labelled"]
    unit = labelled.pop("unit")
    print(f"{args.kind} labels of {summary['images']} images of {args.dataset}/{args.split} in {args.out}; "
          f"labelled {unit} per class:")
    for name, count in labelled.items():
        print(f"  {name:<16}{count:>12}")
    print(json.dumps({"out": args.out, "kind": args.kind, "images": summary["images"]}))
    return 0
