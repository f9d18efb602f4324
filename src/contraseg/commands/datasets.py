"""``contraseg datasets``: list the registered datasets, check a dataset on disk.

    contraseg datasets list
    contraseg datasets check ROOT --dataset NAME [--split S] [--option KEY=VALUE ...] [--limit N]

``check`` prints the file counts, every problem (one line each, naming the file) and
the class histogram; it exits 0 when the split is clean and 2 otherwise (a one-line
error on stderr naming the first problem's file).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run_check", "run_list"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``datasets`` with its ``list`` and ``check`` sub-commands."""
    parser = subparsers.add_parser("datasets", help="list registered datasets; check a dataset on disk",
                                   description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    lister = actions.add_parser("list", help="print the registered dataset names")
    lister.set_defaults(func=run_list)

    checker = actions.add_parser("check", help="check images, labels and label values of a dataset split")
    checker.add_argument("root", metavar="ROOT", help="dataset root folder")
    checker.add_argument("--dataset", required=True, help="registered dataset name (see `contraseg datasets list`)")
    checker.add_argument("--split", default=None, help="split to check (default: the dataset's default split)")
    checker.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                         help="dataset keyword argument, VALUE read as YAML, e.g. mode=coarse (Cityscapes), "
                              "num_classes=13 (SYNTHIA) (repeatable)")
    checker.add_argument("--limit", type=int, default=None, help="read at most N samples (listing covers all)")
    checker.set_defaults(func=run_check)
    return parser


def run_list(args: argparse.Namespace) -> int:
    """Print the registered dataset names, one per line."""
    from contraseg.data.registry import dataset_names

    for name in dataset_names():
        print(name)
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Check ``args.root`` as dataset ``args.dataset``; 0 when clean, UserError (exit 2) otherwise."""
    from ..data.check import check_dataset
    from ..errors import UserError
    from ._common import parse_options

    options = parse_options(args.options)
    if args.limit is not None and args.limit < 0:
        raise UserError(f"--limit must be >= 0, got {args.limit}")
    try:
        report = check_dataset(args.dataset, args.root, split=args.split, limit=args.limit, **options)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(" ".join(str(err).split())) from None

    print(f"dataset {report.dataset}, split {report.split}, root {report.root}")
    labels = "no label folder (unlabeled)" if report.unlabeled else f"{report.num_labels} labels"
    print(f"{report.num_images} images, {labels}, {report.checked} samples read")
    if report.checked:
        print(report.histogram_table())
    for problem in report.problems:
        print(f"problem: {problem}")
    if not report.clean:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise UserError(f"{report.problems[0]}{more}")
    print("ok: no problems found")
    return 0
