"""``contraseg eval --perturb SPEC [--perturb-seed N]``: the arguments, their parsing and
the perturbed dataset (the perturbations are :mod:`contraseg.robustness`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError


def add_perturb_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--perturb`` and ``--perturb-seed``."""
    from ..robustness import SYNTAX

    parser.add_argument("--perturb", metavar="SPEC",
                        help="evaluate on perturbed images (ProAC's robustness cases): " + SYNTAX
                             + "; e.g. --perturb resolution:0.5, --perturb illumination:night:0.5, "
                               "--perturb mask:0.25. Illumination acts on de-normalised pixels in [0, 1]; "
                               "labels stay at full size. Recorded in the JSON under 'perturbation'")
    parser.add_argument("--perturb-seed", type=int, default=0, metavar="N",
                        help="seed of the perturbation noise / masks; image i uses (N, i) (default 0)")


def perturbation_of(args: argparse.Namespace) -> Any:
    """The :class:`~contraseg.robustness.Perturbation` of ``--perturb`` (None without it)."""
    if getattr(args, "perturb", None) is None:
        return None
    from ..robustness import PerturbationError, parse_perturbation

    try:
        return parse_perturbation(args.perturb, args.perturb_seed)
    except PerturbationError as err:
        raise UserError(str(err)) from None


def perturbed(dataset: Any, perturbation: Any) -> Any:
    """``dataset`` wrapped in a :class:`~contraseg.robustness.PerturbedDataset` (as is without one)."""
    if perturbation is None:
        return dataset
    from ..robustness import PerturbedDataset

    return PerturbedDataset(dataset, perturbation)


def perturbed_name(path: Path, perturbation: Any) -> Path:
    """The default JSON name with ``.perturb-<spec>-seed<N>`` before ``.json``, so perturbed
    results never replace the clean one."""
    if perturbation is None:
        return path
    tag = perturbation.spec.replace(":", "-")
    return path.with_name(f"{path.stem}.perturb-{tag}-seed{perturbation.seed}{path.suffix}")


def perturbed_note(perturbation: Any) -> str:
    """``", perturbed illumination:night:0.5 seed 0"`` for the eval line ("" without one)."""
    return "" if perturbation is None else f", perturbed {perturbation.spec} seed {perturbation.seed}"
