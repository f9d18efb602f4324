"""Domain adaptation pipelines: self-training with ProAC, and weakly-supervised DA (WDASS).

=============================  =========================================================
``load_adapt_config``          training config + ``adapt:`` section -> (Config, AdaptConfig)
``run_adaptation``             train an adaptation config (all self-training rounds)
``build_adapt_trainer``        the trainer of ``adapt.method`` for one round
``register_method``            class decorator adding an adaptation method (a trainer)
``SelfTrainingTrainer``        source CE + target pseudo-label CE (+ ProAC over both domains)
``WDASSTrainer``               mean teacher, ClassMix, weak-label losses, prototype contrast
``SourceOnlyTrainer``          source-only fine-tuning (the compute-matched baseline)
``generate_pseudo_labels``     confidence-filtered pseudo-label PNGs + summary
``ConfidenceHistogram``        streaming per-class confidence histogram (class percentiles)
``make_weak_labels``           image / point / coarse weak labels from full labels
``read_image_labels``          ``image_labels.json`` -> {name: [class ids]}
``point_labels``               random pixels per connected class region
``coarse_labels``              eroded class regions, thin classes dropped
``MeanTeacher``                EMA copy of a student
``class_mix_masks``            ClassMix masks of half the source classes
=============================  =========================================================

Command line: ``contraseg pseudo-label``, ``contraseg weak-labels`` and
``python -m contraseg.adapt CONFIG`` (training).
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "AdaptConfig": "config",
    "load_adapt_config": "config",
    "run_adaptation": "run",
    "build_adapt_trainer": "run",
    "register_method": "methods",
    "method_names": "methods",
    "AdaptTrainer": "trainer",
    "SourceOnlyTrainer": "trainer",
    "SelfTrainingTrainer": "self_training",
    "WDASSTrainer": "wdass_trainer",
    "generate_pseudo_labels": "pseudo_labels",
    "ConfidenceHistogram": "pseudo_labels",
    "make_weak_labels": "weak_labels",
    "read_image_labels": "weak_labels",
    "point_labels": "weak_labels",
    "coarse_labels": "weak_labels",
    "image_level_classes": "weak_labels",
    "MeanTeacher": "mean_teacher",
    "class_mix_masks": "mixing",
    "mix": "mixing",
    "TargetDataset": "target_data",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
