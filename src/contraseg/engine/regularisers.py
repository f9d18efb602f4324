"""The regulariser table: every contrastive term the trainer can add to cross-entropy.

One row per name (:class:`RegulariserSpec`): the loss it computes, its default weight
(used when ``regulariser.weight`` is null), the keys under ``regulariser:`` it reads
(:class:`RegulariserOption`; defaults read from the constructor they configure, so the
released values live in the loss), the classifier it needs, and how it is built.
Everything that knows regulariser names reads this table, :data:`REGULARISERS`:

- config validation (:mod:`contraseg.engine.config`): the allowed ``regulariser.name``
  values, the keys of the section (:class:`RegulariserConfig` has ``name``, ``weight``,
  ``warmup_iters`` and one field per option of the table), the classifier check;
- the trainer and the train-step benchmark: :func:`build_regulariser`;
- the mmseg integration (:mod:`contraseg.integrations.mmseg.losses`): default loss
  weights.

=========================  ============================================  ======  =====================================
name                       terms                                         weight  its keys (besides weight, warmup_iters,
                                                                                 start_iter)
=========================  ============================================  ======  =====================================
none                       (none)                                        -
proac                      ProAC against K fixed hyperspherical          0.1     temperature, prototypes_file,
                           prototypes                                            prototype_seed
pixel_contrast             ContrastiveSeg pixel-pixel contrast in the    0.1     temperature, base_temperature,
                           batch                                                 max_samples, max_views
pixel_contrast_memory      the same against a pixel + segment memory     0.1     the same + memory_pixel_size,
                           bank, streamed in blocks (all of it, or           memory_segment_size,
                           per-anchor sampled examples)                      memory_pixels_per_update,
                                                                                 memory_enqueue_ranks,
                                                                                 memory_sampling, memory_positives,
                                                                                 memory_negatives,
                                                                                 memory_semi_hard_fraction
protoseg                   PPC (x ppc_weight) and PPD (x ppd_weight)     1       ppc_weight, ppd_weight,
                                                                                 prototype_momentum, sinkhorn_iters,
                                                                                 sinkhorn_epsilon
=========================  ============================================  ======  =====================================

Adding a regulariser is its loss (``contraseg/losses/<name>.py``, ``loss(embeddings,
labels) -> scalar`` with an ``ignore_index`` argument) and one :func:`register_regulariser`
call: without ``build``, the table builds ``loss(**options, ignore_index=...)`` and wraps it
in :class:`~contraseg.engine.regulariser_terms.LossRegulariser`; a term that needs more
than the embedding and labels brings its own class (:mod:`contraseg.engine.regulariser_terms`).
See docs/architecture.md for a worked example.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Literal

from ..losses.memory_sampling import SAMPLINGS
from ..losses.pixel_contrast import PixelContrastLoss
from ..losses.proac import ProACLoss
from ..losses.protoseg import PPCLoss
from ..prototypes.bank import PrototypeBank
from ..prototypes.hypersphere import hyperspherical_prototypes
from ..sampling.memory_bank import PixelMemoryBank
from .config_schema import config_field, default_of
from .regulariser_terms import (LossRegulariser, MemoryPixelContrastRegulariser, PixelContrastRegulariser,
                                ProACRegulariser, ProtoSegRegulariser, Regulariser, RegulariserContext)

__all__ = ["REGULARISERS", "RegulariserConfig", "RegulariserOption", "RegulariserSpec", "Regulariser",
           "build_regulariser", "register_regulariser", "unregister_regulariser"]

Builder = Callable[[Any, RegulariserContext, float], Regulariser]


@dataclass(frozen=True)
class RegulariserOption:
    """A key under ``regulariser:``: its type, default and lower bound (``minimum``,
    excluded with ``exclusive``). ``argument``: the keyword argument of the row's loss it
    sets when the table builds the loss itself (null: the row's builder reads it)."""

    key: str
    type: Any
    default: Any
    minimum: float | None = None
    exclusive: bool = False
    argument: str | None = None


@dataclass(frozen=True)
class RegulariserSpec:
    """One row of the regulariser table.

    Attributes:
        name: the value of ``regulariser.name``.
        loss: the loss the regulariser computes (a ``contraseg.losses`` class).
        weight: the default weight (``regulariser.weight: null``).
        options: the keys under ``regulariser:`` it reads.
        build: ``build(cfg, context, weight) -> Regulariser``; null: ``LossRegulariser(name,
            loss(**options, ignore_index=...), weight, warmup_iters)``.
        classifier: the ``model.classifier`` it needs (null: any).
    """

    name: str
    loss: Callable[..., Any] | None
    weight: float
    options: tuple[RegulariserOption, ...] = ()
    build: Builder | None = None
    classifier: str | None = None

    def option(self, key: str) -> RegulariserOption:
        """The option named ``key`` (KeyError if the row has none)."""
        for option in self.options:
            if option.key == key:
                return option
        raise KeyError(f"regulariser {self.name} has no option {key!r}")


# --------------------------------------------------------------------------- the section

class RegulariserConfig:
    """The ``regulariser:`` section, a dataclass whose fields the table makes
    (:func:`register_regulariser`): the keys of every regulariser (:data:`_COMMON`), then
    one field per option of every row, so a config may set keys a method ignores.

    ``name`` is a row of :data:`REGULARISERS`; ``weight: null`` is that row's default
    weight (0.1 for ProAC and pixel contrast, 1 for ProtoSeg, whose terms are further
    scaled by ``ppc_weight`` and ``ppd_weight``). The weight is 0 before the 0-based
    iteration ``start_iter`` (a hard start; ContrastiveSeg released 5000) and ramps
    linearly from 0 over ``warmup_iters`` from there (0: full weight at once); see
    :class:`~contraseg.engine.regulariser_terms.Regulariser`."""


# The keys of every regulariser: type, default, bounds (name's type becomes the table's names).
_COMMON = {"name": (str, "none", {}), "weight": (float | None, None, {"minimum": 0.0}),
           "warmup_iters": (int, 0, {"minimum": 0}), "start_iter": (int, 0, {"minimum": 0})}

REGULARISERS: dict[str, RegulariserSpec] = {}


def _declare_fields() -> None:
    """(Re-)make :class:`RegulariserConfig` a dataclass in place from the table: the
    common keys, ``name`` taking the table's names, then each option as a field (in table
    order). The class object stays the same, so every module that imported it sees the
    new keys; the dataclass methods are generated afresh each time."""
    cls = RegulariserConfig
    options = {o.key: o for spec in REGULARISERS.values() for o in spec.options}
    for stale in set(cls.__dict__.get("__dataclass_fields__", {})) - set(_COMMON) - set(options):
        if stale in cls.__dict__:
            delattr(cls, stale)
    annotations: dict[str, Any] = {}
    for key, (tp, default, bounds) in _COMMON.items():
        annotations[key] = tp
        setattr(cls, key, config_field(default, **bounds))
    annotations["name"] = Literal[tuple(REGULARISERS)] if REGULARISERS else str
    for option in options.values():
        annotations[option.key] = option.type
        setattr(cls, option.key, config_field(option.default, minimum=option.minimum, exclusive=option.exclusive))
    cls.__annotations__ = annotations
    for generated in ("__init__", "__repr__", "__eq__", "__hash__", "__match_args__", "__replace__"):
        if generated in cls.__dict__:
            delattr(cls, generated)
    dataclasses.dataclass(cls)


def register_regulariser(spec: RegulariserSpec) -> RegulariserSpec:
    """Add a row to the table (and its options to :class:`RegulariserConfig`).

    Raises:
        ValueError: the name is taken, or an option clashes with a common key or with
            another row's option of the same key (type, default or bounds differ).
    """
    if spec.name in REGULARISERS:
        raise ValueError(f"regulariser {spec.name!r} is already registered")
    for option in spec.options:
        if option.key in _COMMON:
            raise ValueError(f"regulariser {spec.name}: option {option.key!r} is a key of every regulariser")
        for other in REGULARISERS.values():
            theirs = next((o for o in other.options if o.key == option.key), None)
            if theirs is not None and (theirs.type, theirs.default, theirs.minimum, theirs.exclusive) != (
                    option.type, option.default, option.minimum, option.exclusive):
                raise ValueError(f"regulariser {spec.name}: option {option.key!r} differs from regulariser "
                                 f"{other.name}'s ({option} vs {theirs})")
    REGULARISERS[spec.name] = spec
    _declare_fields()
    return spec


def unregister_regulariser(name: str) -> None:
    """Remove a row (and the options only it declared) from the table."""
    del REGULARISERS[name]
    _declare_fields()


def build_regulariser(cfg: RegulariserConfig, num_classes: int, embed_dim: int,
                      ignore_index: int = 255) -> Regulariser:
    """The regulariser named by ``cfg.name`` for K classes and D-dimensional embeddings,
    with ``cfg.weight`` (or the row's default weight)."""
    spec = REGULARISERS.get(cfg.name)
    if spec is None:
        raise ValueError(f"regulariser.name: unknown {cfg.name!r}; allowed: {', '.join(REGULARISERS)}")
    weight = spec.weight if cfg.weight is None else cfg.weight
    context = RegulariserContext(num_classes, embed_dim, ignore_index)
    if spec.build is not None:
        return spec.build(cfg, context, weight)
    arguments = {o.argument: getattr(cfg, o.key) for o in spec.options if o.argument is not None}
    return LossRegulariser(spec.name, spec.loss(**arguments, ignore_index=ignore_index), weight, cfg.warmup_iters,
                           cfg.start_iter)


# --------------------------------------------------------------------------- the built-in rows

def _no_regulariser(cfg: Any, context: RegulariserContext, weight: float) -> Regulariser:
    return Regulariser(0.0, 0)


_TEMPERATURE = RegulariserOption("temperature", float, default_of(ProACLoss, "temperature"), 0.0, True)
_PIXEL_CONTRAST = (
    RegulariserOption("temperature", float, default_of(PixelContrastLoss, "temperature"), 0.0, True),
    RegulariserOption("base_temperature", float, default_of(PixelContrastLoss, "base_temperature"), 0.0, True),
    RegulariserOption("max_samples", int, default_of(PixelContrastLoss, "max_samples"), 1),
    RegulariserOption("max_views", int, default_of(PixelContrastLoss, "max_views"), 1),
)
# pixels enqueued per (image, class) and step, released 10: tfzhou/ContrastiveSeg@287e5d3,
# configs/cityscapes/H_48_D_4_MEM.json:149 ("pixel_update_freq": 10), read by segmentor/trainer_contrastive.py:126-137.
_MEMORY = (
    RegulariserOption("memory_pixel_size", int, default_of(PixelMemoryBank, "pixel_size"), 1),
    RegulariserOption("memory_segment_size", int, default_of(PixelMemoryBank, "segment_size"), 1),
    RegulariserOption("memory_pixels_per_update", int, default_of(PixelMemoryBank, "pixels_per_image"), 1),
    # "first": only rank 0's batch is enqueued, as ContrastiveSeg's release in effect (PixelMemoryBank's docstring).
    RegulariserOption("memory_enqueue_ranks", Literal["all", "first"], default_of(PixelMemoryBank, "enqueue_ranks")),
    # Per-anchor example sampling over the bank (ContrastiveSeg's hard example sampling, never
    # released: its README lists "[ ] Hard Example Mining"); "all" = the whole bank, as released.
    # x = 0.1 ("top 10 %") as the paper's Sec. 3.3 (quoted in tfzhou/ContrastiveSeg issues 17, 31);
    # K+ / K- = 1024 / 2048 recalled from the paper, not checked against its text; none released.
    RegulariserOption("memory_sampling", Literal[SAMPLINGS], default_of(PixelContrastLoss, "memory_sampling")),
    RegulariserOption("memory_positives", int, default_of(PixelContrastLoss, "memory_positives"), 1),
    RegulariserOption("memory_negatives", int, default_of(PixelContrastLoss, "memory_negatives"), 1),
    RegulariserOption("memory_semi_hard_fraction", float, default_of(PixelContrastLoss, "memory_semi_hard_fraction"),
                      0.0, True),
)
# ProtoSeg's loss weights as released: tfzhou/ProtoSeg@1c4a778, configs/cityscapes/H_48_D_4_proto.json
# lines 138-139 ("loss_ppc_weight": 0.01, "loss_ppd_weight": 0.001), read by lib/loss/loss_proto.py:62-63.
# The prototype bank's momentum and Sinkhorn settings as released (PrototypeBank's defaults):
# gamma 0.999, tfzhou/ProtoSeg@1c4a778 configs/cityscapes/H_48_D_4_proto.json:137 ("gamma": 0.999);
# 3 iterations and epsilon 0.05, lib/models/modules/sinkhorn.py:5 (distributed_sinkhorn's defaults,
# called without arguments at lib/models/nets/hrnet.py:103).
_PROTOSEG = (RegulariserOption("ppc_weight", float, 0.01, 0.0), RegulariserOption("ppd_weight", float, 0.001, 0.0),
             RegulariserOption("prototype_momentum", float, default_of(PrototypeBank, "momentum"), 0.0),
             RegulariserOption("sinkhorn_iters", int, default_of(PrototypeBank, "sinkhorn_iterations"), 1),
             RegulariserOption("sinkhorn_epsilon", float, default_of(PrototypeBank, "sinkhorn_epsilon"), 0.0, True))

register_regulariser(RegulariserSpec("none", None, 0.0, build=_no_regulariser))
register_regulariser(RegulariserSpec("proac", ProACLoss, 0.1, (
    _TEMPERATURE, RegulariserOption("prototypes_file", str | None, None),
    RegulariserOption("prototype_seed", int, default_of(hyperspherical_prototypes, "seed"))), ProACRegulariser))
# ContrastiveSeg's loss weight as released: tfzhou/ContrastiveSeg@287e5d3, configs/cityscapes/H_48_D_4.json
# line 144 ("loss_weight": 0.1), read by lib/loss/loss_contrast.py:161.
register_regulariser(RegulariserSpec("pixel_contrast", PixelContrastLoss, 0.1, _PIXEL_CONTRAST,
                                     PixelContrastRegulariser))
register_regulariser(RegulariserSpec("pixel_contrast_memory", PixelContrastLoss, 0.1, _PIXEL_CONTRAST + _MEMORY,
                                     MemoryPixelContrastRegulariser))
register_regulariser(RegulariserSpec("protoseg", PPCLoss, 1.0, _PROTOSEG, ProtoSegRegulariser,  # and PPDLoss
                                     classifier="prototype"))
