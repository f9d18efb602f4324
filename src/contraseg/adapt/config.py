"""The ``adapt:`` section of a domain-adaptation config.

An adaptation config is an ordinary training config (:mod:`contraseg.engine.config`:
``data.train`` is the labelled *source* set, ``data.val`` the evaluation sets, the
first of which picks ``best.pth``) plus one more top-level section::

    adapt:
      method: self_training          # self_training | wdass | source_only (contraseg.adapt.methods)
      target: {name: synthetic-target, split: train, options: {...}}
      target_batch_size: null        # per process; null = data.batch_size
      target_base_size: null         # [h, w] the target's random rescale is relative to
      init_checkpoint: runs/src/last.pth   # weights the student starts from (null: fresh)
      rounds: 1                      # self-training: train, re-label, train again ...
      forward: joint                 # or separate: one forward per part (BatchNorm statistics per part)
      pseudo_labels: {dir, checkpoint, threshold, class_percentile, mode, batch_size}
      teacher: {momentum, buffers, warm_start, batch_norm, threshold, ignore_rows}   # WDASS mean teacher
      wdass: {weak_kind, weak_labels, mix, photometric, contrast, weak_weight, image_weight,
              contrast_weight, cross_weight, intra_weight, temperature, base_temperature,
              cross_samples, intra_samples, max_views, cross_threshold, intra_threshold,
              prototype_threshold, prototype_momentum, prototype_temperature, warmup_iters,
              start_iter, edge_weight, prototype_image_loss, mix_normalise}
      fda: {beta, entropy_weight, eta, entropy_start_iter}   # method fda (contraseg.adapt.fda)
      dacs: {teacher, mix, confidence_weight, photometric, rare_class_sampling, rcs_temperature,
             rcs_min_pixels, jitter_strength}                # method dacs (contraseg.adapt.dacs_trainer)

The engine keeps ``adapt`` as a plain mapping (``Config.adapt``; its ``Trainer`` refuses
such configs, ``contraseg train`` says to use ``python -m contraseg.adapt``); this module
checks it with the engine's own config machinery, so a typo or a bad value fails at
once with a one-line :class:`~contraseg.engine.config.ConfigError` naming the
``adapt.*`` key. ``--set adapt.rounds=2`` style overrides work as for any key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml

from ..engine.config import Config, DatasetConfig, InferenceMode
from ..engine.config_io import load_config
from ..engine.config_schema import ConfigError, build_section, config_field, default_of, size_field
from ..losses.wdass_contrast import WDASSContrastLoss
from ..prototypes.estimators import WeakLabelPrototypeEstimator
from ..prototypes.wdass_estimator import WDASSPrototypeEstimator
from .dacs_config import DACSConfig
from .fda_config import FDAConfig
from .methods import method_names

ADAPT_KEY = "adapt"


@dataclass
class PseudoLabelConfig:
    """Offline target pseudo labels for self-training (``contraseg pseudo-label``).

    ``dir``: an existing pseudo-label folder for round 1; null = generate it into the
    run directory with ``checkpoint`` (null = ``adapt.init_checkpoint``). Later rounds
    always re-label with the previous round's model. A pixel keeps its predicted class
    when its max-softmax confidence is at least ``threshold`` or, with
    ``class_percentile`` p, at least the class's p-quantile of confidences (capped at
    ``threshold``). ``mode`` null = the labelling checkpoint's ``eval.mode``.
    """

    dir: str | None = None
    checkpoint: str | None = None
    threshold: float = config_field(0.9, minimum=0.0)
    class_percentile: float | None = config_field(None, minimum=0.0)
    mode: InferenceMode | None = None
    batch_size: int = config_field(8, minimum=1)


@dataclass
class TeacherConfig:
    """Mean teacher of WDASS / DACS: EMA ``momentum`` of the student weights (with the
    warm start ``min(1 - 1/(k+1), momentum)``), BatchNorm ``buffers`` averaged the same
    way (``ema``) or copied from the student (``copy``), and the confidence
    ``threshold`` of its pseudo labels (0.968 in DACS and WDASS). ``warm_start: false``
    blends with ``momentum`` from the first step (WDASS's release); ``batch_norm: batch``
    predicts in train mode, BatchNorm using the statistics of the target batch (WDASS's
    release; ``running``: eval mode). :class:`contraseg.adapt.mean_teacher.MeanTeacher`.

    ``ignore_rows`` [top, bottom]: the first ``top`` and last ``bottom`` rows of the
    teacher's pseudo-label weights are set to 0 (those target pixels of the ClassMix image
    add nothing to its CE); the confident share q is computed before, as released. Released
    WDASS: [15, 120] (anurag-198/WDASS@7276a27d916b train.py:504 ``pseudo_weight[:, :15, :] = 0``,
    :506 ``pseudo_weight[:, -120:, :] = 0``), on pseudo labels of the teacher's logits
    upsampled to the input size (network/deepv2.py:155), i.e. rows of the 512 x 512 training
    crop (arguments.py:71), whatever the random scale. contraseg's pseudo labels are also at
    the training-crop size (``data.crop_size``), so the rows apply unchanged; for another crop
    height the release gives no rule: scale them yourself (15/512 and 120/512 of the height).
    """

    momentum: float = config_field(0.999, minimum=0.0)
    buffers: Literal["ema", "copy"] = "ema"
    warm_start: bool = True
    batch_norm: Literal["running", "batch"] = "running"
    threshold: float = config_field(0.968, minimum=0.0)
    ignore_rows: list[int] = config_field(factory=lambda: [0, 0], minimum=0, length=2)


def _released(argument: str) -> Any:
    """The released default of :class:`~contraseg.losses.WDASSContrastLoss`'s ``argument``."""
    return default_of(WDASSContrastLoss, argument)


@dataclass
class WDASSConfig:
    """Weak target labels and the WDASS loss weights.

    ``weak_kind`` image / point / coarse and ``weak_labels`` the folder written by
    ``contraseg weak-labels`` (PNG labels for point / coarse, ``image_labels.json`` for
    image). Loss = source CE + ClassMix CE (``mix``) + ``weak_weight`` x partial CE on
    the weak pixels (point / coarse) + ramp x (``image_weight`` x image-level loss +
    ``contrast_weight`` x (``cross_weight`` x cross-domain + ``intra_weight`` x
    (intra-source + intra-target) prototype contrast)); the ramp goes linearly from 0
    to 1 over ``warmup_iters``. Defaults are those of the official WDASS code: every
    weight 1, cross 0.5, intra 0.25, temperature 0.1 (the contrast's and the prototype
    estimators' keys read them from :class:`~contraseg.losses.WDASSContrastLoss`,
    :class:`~contraseg.prototypes.WDASSPrototypeEstimator` and
    :class:`~contraseg.prototypes.WeakLabelPrototypeEstimator`).

    ``contrast``: ``released`` (default) is the released code's prototype contrast and
    prototype estimator (:class:`~contraseg.losses.WDASSContrastLoss`,
    :class:`~contraseg.prototypes.WDASSPrototypeEstimator`): sampled anchors (at most
    ``cross_samples`` / ``intra_samples`` anchors, ``max_views`` per (image, class),
    easy pixels above ``cross_threshold`` / ``intra_threshold``), t / ``base_temperature``
    scaling, prototypes from the weak labels and the teacher's pseudo labels of confidence
    >= ``prototype_threshold`` with linear similarity weights, unnormalised, no moving
    average. ``prototype-softmax`` is contraseg's earlier formulation
    (:class:`~contraseg.losses.WDASSSoftmaxContrastLoss`, EMA prototypes of
    :class:`~contraseg.prototypes.WeakLabelPrototypeEstimator` with ``prototype_momentum``
    and ``prototype_temperature``; the sampling keys are unused). ``photometric``: colour
    jitter and blur of the ClassMix images (:mod:`contraseg.adapt.photometric`).

    Released-recipe switches (anurag-198/WDASS@7276a27d916b):

    - ``start_iter``: the image-level and contrast terms have weight 0 for 0-based
      iterations ``i < start_iter``, then ``min(1, (i - start_iter) / warmup_iters)`` (full
      weight at once when ``warmup_iters`` is 0). Released: ``if itern > 10000: cwt = 1.0;
      im_wt = 1.0`` (train.py:483-488) with ``itern`` counting from 0
      (``for itern in range(args.start_iter, ...)``, train.py:345, ``args.start_iter = 0``,
      train.py:165, also with ``--resume``, train.py:193), so the released recipe is ``start_iter: 10001, warmup_iters: 0``.
    - ``edge_weight``: weight of :class:`~contraseg.losses.WDASSEdgeLoss` on the source
      images (released 10, arguments.py:135; always on). 0 = off.
    - ``mix_normalise``: the ClassMix image's weighted CE divided by all its pixels (``all``,
      as DACS) or by its labelled ones (``labelled``, WDASS's release, loss/edgeloss.py:270-273;
      :func:`~contraseg.adapt.losses.weighted_cross_entropy`).
    - ``prototype_image_loss``: the image-level loss also on the pixel-prototype logits of
      the student's target embeddings and the target prototypes
      (:func:`~contraseg.losses.prototype_logits`; ``--improto``, weight 1 inside the image
      term, train.py:473-491).
    """

    weak_kind: Literal["image", "point", "coarse"] = "point"
    weak_labels: str | None = None
    mix: bool = True
    photometric: bool = True
    contrast: Literal["released", "prototype-softmax"] = "released"
    weak_weight: float = config_field(1.0, minimum=0.0)
    image_weight: float = config_field(1.0, minimum=0.0)
    contrast_weight: float = config_field(1.0, minimum=0.0)
    cross_weight: float = config_field(_released("cross_weight"), minimum=0.0)
    intra_weight: float = config_field(_released("intra_weight"), minimum=0.0)
    temperature: float = config_field(_released("temperature"), minimum=0.0, exclusive=True)
    base_temperature: float = config_field(_released("base_temperature"), minimum=0.0, exclusive=True)
    cross_samples: int = config_field(_released("cross_samples"), minimum=1)
    intra_samples: int = config_field(_released("intra_samples"), minimum=1)
    max_views: int = config_field(_released("max_views"), minimum=1)
    cross_threshold: float = config_field(_released("cross_threshold"), minimum=0.0)
    intra_threshold: float = config_field(_released("intra_threshold"), minimum=0.0)
    prototype_threshold: float = config_field(default_of(WDASSPrototypeEstimator, "threshold"), minimum=0.0)
    prototype_momentum: float = config_field(default_of(WeakLabelPrototypeEstimator, "momentum"), minimum=0.0)
    prototype_temperature: float = config_field(default_of(WeakLabelPrototypeEstimator, "temperature"),
                                                minimum=0.05)
    warmup_iters: int = config_field(0, minimum=0)
    start_iter: int = config_field(0, minimum=0)
    edge_weight: float = config_field(0.0, minimum=0.0)
    prototype_image_loss: bool = False
    mix_normalise: Literal["all", "labelled"] = "all"


def _default_target() -> DatasetConfig:
    return DatasetConfig(name="synthetic-target", split="train")


@dataclass
class AdaptConfig:
    """The ``adapt`` section (see the module docstring)."""

    method: str = "self_training"  # a name of the method table (contraseg.adapt.methods)
    target: DatasetConfig = field(default_factory=_default_target)
    target_batch_size: int | None = config_field(None, minimum=1)
    target_base_size: list[int] | None = size_field()
    init_checkpoint: str | None = None
    rounds: int = config_field(1, minimum=1)
    # "joint": one forward on the step's images concatenated (source, mixed, target, ...);
    # "separate": one forward per part, so BatchNorm normalises each with its own batch
    # statistics, as WDASS's release (anurag-198/WDASS@7276a27 train.py:410, 432, 530) and
    # ProAC's (renqinghuaha/ProAC_TCSVT2024@084d77d UDA/models/adaptation_model.py:83, 87) do.
    forward: Literal["joint", "separate"] = "joint"
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    wdass: WDASSConfig = field(default_factory=WDASSConfig)
    fda: FDAConfig = field(default_factory=FDAConfig)
    dacs: DACSConfig = field(default_factory=DACSConfig)

    def target_batch(self, cfg: Config) -> int:
        """Target images per process and step (``data.batch_size`` when not set)."""
        return self.target_batch_size or cfg.data.batch_size


def _check_at_most_one(key: str, value: float | None) -> None:
    if value is not None and value > 1:
        raise ConfigError(f"config key {key}: {value!r} is not allowed; it must be in [0, 1]")


def check_adapt_relations(cfg: Config, adapt: AdaptConfig) -> None:
    """Checks across keys of ``adapt`` and the rest of the config (one-line ConfigError)."""
    from ..data.registry import dataset_names

    if adapt.method not in method_names():
        raise ConfigError(f"config key adapt.method: {adapt.method!r} is not allowed; "
                          f"allowed values: {', '.join(method_names())}")
    if adapt.target.name not in dataset_names():
        raise ConfigError(f"config key adapt.target.name: {adapt.target.name!r} is not allowed; "
                          f"allowed values: {', '.join(dataset_names())}")
    if "pseudo_label_dir" in adapt.target.options:
        raise ConfigError("config key adapt.target.options.pseudo_label_dir: set adapt.pseudo_labels.dir "
                          "(self-training) or adapt.wdass.weak_labels (WDASS) instead")
    _check_at_most_one("adapt.pseudo_labels.threshold", adapt.pseudo_labels.threshold)
    _check_at_most_one("adapt.pseudo_labels.class_percentile", adapt.pseudo_labels.class_percentile)
    _check_at_most_one("adapt.teacher.threshold", adapt.teacher.threshold)
    for key in ("cross_threshold", "intra_threshold", "prototype_threshold"):
        _check_at_most_one(f"adapt.wdass.{key}", getattr(adapt.wdass, key))
    for key, value in (("adapt.teacher.momentum", adapt.teacher.momentum),
                       ("adapt.wdass.prototype_momentum", adapt.wdass.prototype_momentum)):
        if value >= 1:
            raise ConfigError(f"config key {key}: {value!r} is not allowed; it must be in [0, 1)")
    top, bottom = adapt.teacher.ignore_rows
    if top + bottom >= cfg.data.crop_size[0]:
        raise ConfigError(f"config key adapt.teacher.ignore_rows: {top} + {bottom} rows leave nothing of the "
                          f"{cfg.data.crop_size[0]}-row crop (data.crop_size)")
    if adapt.rounds > 1 and adapt.method != "self_training":
        raise ConfigError(f"config key adapt.rounds: {adapt.rounds} rounds need method self_training, "
                          f"got {adapt.method!r}")
    if adapt.method == "self_training":
        labels = adapt.pseudo_labels
        if labels.dir is None and labels.checkpoint is None and adapt.init_checkpoint is None:
            raise ConfigError("config key adapt.pseudo_labels: self_training needs pseudo_labels.dir, "
                              "pseudo_labels.checkpoint or adapt.init_checkpoint to label the target")
    if adapt.fda.beta > 0.5:
        raise ConfigError(f"config key adapt.fda.beta: {adapt.fda.beta!r} is not allowed; it must be in [0, 0.5]")
    if adapt.method == "wdass":
        if adapt.wdass.weak_labels is None:
            raise ConfigError("config key adapt.wdass.weak_labels: method wdass needs the folder written by "
                              "contraseg weak-labels")
        if cfg.regulariser.name != "none":
            raise ConfigError(f"config key regulariser.name: method wdass brings its own contrast; "
                              f"set regulariser.name to none, got {cfg.regulariser.name!r}")


def adapt_config_from_dict(raw: Any) -> AdaptConfig:
    """Build and check an :class:`AdaptConfig` from the mapping under ``adapt:``."""
    return build_section(AdaptConfig, raw, ADAPT_KEY)


def adapt_config_to_dict(adapt: AdaptConfig) -> dict[str, Any]:
    """The section as plain dicts / lists / scalars."""
    return dataclasses.asdict(adapt)


def adapt_config_to_yaml(adapt: AdaptConfig) -> str:
    """The section as YAML (stored in checkpoints and ``adapt.yaml``)."""
    return yaml.safe_dump(adapt_config_to_dict(adapt), sort_keys=False)


def adapt_config_from_yaml(text: str) -> AdaptConfig:
    """Inverse of :func:`adapt_config_to_yaml`."""
    return adapt_config_from_dict(yaml.safe_load(text))


def adapt_section(cfg: Config, where: str = "the config") -> AdaptConfig:
    """The checked :class:`AdaptConfig` of ``cfg.adapt`` (the engine keeps it as a plain mapping).

    Raises:
        ConfigError: one line naming the key; also when ``cfg`` has no ``adapt:`` section.
    """
    if cfg.adapt is None:
        raise ConfigError(f"{where}: no adapt section; a plain training config runs with contraseg train")
    adapt = adapt_config_from_dict(cfg.adapt)
    check_adapt_relations(cfg, adapt)
    return adapt


def load_adapt_config(path: str | Path, overrides: Iterable[str] = ()) -> tuple[Config, AdaptConfig]:
    """Read an adaptation config: ``_base_`` includes, ``--set`` overrides, checks.

    Returns ``(engine config, adapt section)``. The engine config (with ``adapt`` as a
    plain mapping) is what checkpoints store as ``config``, so ``contraseg eval`` /
    ``predict`` / ``pseudo-label`` read adaptation checkpoints like any other.

    Raises:
        ConfigError: one line naming the file or key (also when ``adapt:`` is missing).
    """
    cfg = load_config(path, overrides)
    return cfg, adapt_section(cfg, str(path))
