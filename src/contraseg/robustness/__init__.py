"""Robustness evaluation: ProAC's test-time perturbations (resolution, illumination,
masking) and the dataset wrapper ``contraseg eval --perturb`` uses."""

from .dataset import PerturbedDataset
from .perturbations import (
    SYNTAX,
    Perturbation,
    PerturbationError,
    apply_perturbation,
    brightness,
    gamma,
    night,
    occlusion_mask,
    parse_perturbation,
    rescale,
)

__all__ = [
    "SYNTAX",
    "Perturbation",
    "PerturbationError",
    "PerturbedDataset",
    "apply_perturbation",
    "brightness",
    "gamma",
    "night",
    "occlusion_mask",
    "parse_perturbation",
    "rescale",
]
