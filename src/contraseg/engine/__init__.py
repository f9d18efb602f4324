"""Training engine: config, training loop, evaluation, checkpoints, distributed set-up.

=========================  =======================================================
``Config``                 the nested-dataclass training configuration
``load_config``            YAML file + ``_base_`` includes + ``--set`` overrides
``Trainer``                builds everything from a config and trains (DDP-aware)
``training_step``          one CE + regulariser optimisation step
``restore_model``          rebuild a trained segmentor from a checkpoint
``evaluate_dataset``       sharded evaluation -> metrics dict
``confusion_matrix``       K x K counts of (label, prediction)
``compute_metrics``        per-class IoU / accuracy, mIoU, mAcc, pixel accuracy
``save_checkpoint``        atomic, pickle-free checkpoint
``load_checkpoint``        read and check one (one-line error naming the file)
``build_regulariser``      none / proac / pixel_contrast(_memory) / protoseg
``register_regulariser``   add a row (``RegulariserSpec``) to the regulariser table
``predict_logits``         whole / slide, multi-scale, flip inference
=========================  =======================================================
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "Config": "config",
    "ConfigError": "config",
    "config_from_dict": "config",
    "config_to_dict": "config",
    "load_config": "config_io",
    "config_to_yaml": "config_io",
    "config_from_yaml": "config_io",
    "Trainer": "trainer",
    "training_step": "step",
    "restore_model": "restore",
    "evaluate_dataset": "evaluate",
    "evaluate_confusion": "evaluate",
    "InferenceOptions": "evaluate",
    "confusion_matrix": "metrics",
    "compute_metrics": "metrics",
    "format_metrics_table": "metrics",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    "build_regulariser": "regularisers",
    "Regulariser": "regulariser_terms",
    "REGULARISERS": "regularisers",
    "RegulariserSpec": "regularisers",
    "RegulariserOption": "regularisers",
    "register_regulariser": "regularisers",
    "PolyLR": "optim",
    "build_optimizer": "optim",
    "InfiniteShardedSampler": "sampling",
    "predict_logits": "inference",
    "predict_labels": "inference",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
