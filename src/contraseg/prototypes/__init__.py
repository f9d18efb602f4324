"""Prototype machinery: fixed hyperspherical prototypes, Sinkhorn, multi-prototype banks,
the nearest-prototype head and weak-label prototype estimators."""

from .._lazy import lazy_exports

_EXPORTS = {
    "hyperspherical_prototypes": "hypersphere",
    "simplex_prototypes": "hypersphere",
    "optimise_uniform_prototypes": "hypersphere",
    "prototype_separation": "hypersphere",
    "save_prototypes": "hypersphere",
    "load_prototypes": "hypersphere",
    "sinkhorn": "sinkhorn_knopp",
    "grouped_sinkhorn": "sinkhorn_knopp",
    "PrototypeBank": "bank",
    "NearestPrototypeHead": "head",
    "WeakLabelPrototypeEstimator": "estimators",
    "WDASSPrototypeEstimator": "wdass_estimator",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
