"""``contraseg prototypes make --classes K --dim D [--seed S] --out FILE`` and
``contraseg prototypes inspect FILE``

Makes, saves and inspects ProAC's fixed hyperspherical prototypes for any K and D,
printing how well they are spread: the largest and mean pairwise cosine, the smallest
angle, and the known optimum (the regular simplex's -1/(K-1) when K <= D + 1, 0 when
K <= 2D). The file is read by ``regulariser.prototypes_file`` in a training config.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``prototypes`` with its ``make`` and ``inspect`` actions."""
    parser = subparsers.add_parser("prototypes", help="make / inspect hyperspherical class prototypes (ProAC)",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = actions.add_parser("make", help="make K x D prototypes and save them")
    make.add_argument("--classes", type=int, required=True, help="K, the number of classes")
    make.add_argument("--dim", type=int, required=True, help="D, the embedding dimension")
    make.add_argument("--seed", type=int, default=0, help="random rotation / optimiser seed (default 0)")
    make.add_argument("--out", required=True, help="output file (.pt)")
    make.set_defaults(func=run_make)
    inspect = actions.add_parser("inspect", help="print the separation of saved prototypes")
    inspect.add_argument("file", help="a prototype file written by 'prototypes make'")
    inspect.set_defaults(func=run_inspect)


def format_separation(separation: dict[str, Any], num_classes: int, dim: int) -> str:
    """A few lines describing ``prototype_separation``'s result."""
    optimum = separation.get("optimum")
    if optimum is None:
        where = "no closed-form optimum is known for K > 2D" if num_classes > 1 else "a single prototype"
        optimum_text = f"optimum: n/a ({where})"
    else:
        rule = "regular simplex, -1/(K-1)" if num_classes <= dim + 1 else "cross-polytope bound, K <= 2D"
        gap = separation["max_cosine"] - optimum
        optimum_text = f"optimum max cosine: {optimum:+.6f} ({rule}); gap {gap:+.2e}"
    return "\n".join([
        f"prototypes: K={num_classes} classes x D={dim} dims",
        f"max pairwise cosine:  {separation['max_cosine']:+.6f}",
        f"mean pairwise cosine: {separation['mean_cosine']:+.6f}",
        f"min pairwise angle:   {separation['min_angle_deg']:.3f} deg",
        optimum_text,
    ])


def run_make(args: argparse.Namespace) -> int:
    """Make, save and describe prototypes."""
    from ..prototypes import hyperspherical_prototypes, prototype_separation, save_prototypes

    if args.classes < 1:
        raise UserError(f"--classes must be >= 1, got {args.classes}")
    if args.dim < 1:
        raise UserError(f"--dim must be >= 1, got {args.dim}")
    from ..engine.run_log import Heartbeat

    if args.classes > 2 * args.dim:
        print(f"optimising {args.classes} x {args.dim} prototypes (K > 2D: this can take minutes)", flush=True)
    with Heartbeat(f"prototypes make K={args.classes} D={args.dim}"):
        protos = hyperspherical_prototypes(args.classes, args.dim, seed=args.seed)
    save_prototypes(args.out, protos)
    print(format_separation(prototype_separation(protos), args.classes, args.dim))
    print(f"saved to {args.out}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    """Load prototypes and describe them."""
    from ..prototypes import load_prototypes, prototype_separation

    try:
        protos = load_prototypes(args.file)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    k, d = protos.shape
    norms = protos.double().norm(dim=1)
    print(format_separation(prototype_separation(protos), k, d))
    if k and not all(math.isclose(float(n), 1.0, abs_tol=1e-4) for n in norms):
        print(f"note: rows are not unit vectors (norms {float(norms.min()):.4f}..{float(norms.max()):.4f}); "
              "they are normalised when used")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to ``make`` or ``inspect`` (the module contract of contraseg.cli)."""
    return run_make(args) if args.action == "make" else run_inspect(args)
