"""Released checkpoints of the seed methods -> contraseg state dicts.

Three released layouts are understood (``FORMATS``); for each, the key map below was
written from the parameter names and shapes of the released models (listed in
``tests/fixtures/released_*.txt``):

``openseg-hrnet-w48``  openseg / ContrastiveSeg / ProtoSeg ``HRNet_W48`` (cross-entropy),
                       ``HRNet_W48_CONTRAST`` (+ ``proj_head``) and ``HRNet_W48_MEM``
                       (``encoder_q.`` prefix, memory queues)
``protoseg-hrnet-w48`` ProtoSeg ``HRNet_W48_Proto`` (prototype classifier)
``deeplabv2-r101``     DeepLab-v2 ResNet-101 with the ASPP classifier of the UDA line
                       (AdaptSegNet ``layer5`` / multi-level ``layer5`` + ``layer6``
                       ``conv2d_list``), as AdaptSegNet, CAG-UDA, ProAC release it

Key map (released -> contraseg):

=====================================  =============================================  ===========
released                               contraseg                                      how
=====================================  =============================================  ===========
``backbone.<k>`` (HRNet)               ``backbone.body.<k>`` (``hrnet_w48_openseg``)  copy
``cls_head.0.{weight,bias}``           ``head.conv.0.{weight,bias}`` (head ``hrnet``)  copy
``cls_head.1.0.<bn>``                  ``head.conv.1.<bn>``                           copy
``cls_head.3.weight``                  ``head.classifier.1.weight``                   copy
(no bias in the release)               ``head.classifier.1.bias``                     zeros
``proj_head.proj.0.weight`` (contrast) ``projection.proj.0.weight`` (``convmlp``)     copy
``proj_head.proj.0.bias``              folded: ``projection.proj.1.running_mean`` =   fold
                                       ``proj_head.proj.1.0.running_mean - bias``
``proj_head.proj.1.0.<bn>``            ``projection.proj.1.<bn>``                     copy
``proj_head.proj.2.*``                 ``projection.proj.3.*``                        copy
``proj_head.proj.{0,2}.*`` (proto)     ``projection.proj.{0,2}.*`` (``mlp``)          copy
``proj_head.mlp2.*`` (proto)           the same module as ``proj.*``: checked equal   dropped
``prototypes`` K x M x D (proto)       ``prototype_head.bank.prototypes``             copy
``feat_norm.*`` / ``mask_norm.*``      ``prototype_head.feat_norm.*`` / ``mask_norm.*`` copy
``segment_queue``, ``pixel_queue``...  (ContrastiveSeg memory, not needed to predict) dropped
``conv1``, ``bn1``, ``layer1..4.*``    ``backbone.body.*`` (``resnet101_deeplabv2``)  copy
``layerN.conv2d_list.i.*`` (last N)    ``head.branches.i.*`` (head ``deeplabv2``)     copy
``layer5.*`` when ``layer6`` exists    (multi-level auxiliary classifier on layer3)   dropped
=====================================  =============================================  ===========

Folding a conv bias into the following BatchNorm's running mean is exact: in eval mode
``BN(Wx + b)`` with mean ``m`` equals ``BN'(Wx)`` with mean ``m - b``; in training mode the
batch mean absorbs any constant. A BatchNorm's ``num_batches_tracked`` missing from an old
checkpoint is filled with 0. A leading ``module.`` (DataParallel / DDP) is removed first.

What the converted model does not reproduce (parameter-free differences; see README):
HRNet inputs whose sides are not multiples of 32 are padded (:mod:`.hrnet_openseg`);
ProtoSeg's ``proj_head`` L2-normalises over the image width (``dim=-1`` of B x C x H x W;
contraseg: over channels, before ``feat_norm``); AdaptSegNet's ``Classifier_Module``
returns inside its loop and so sums only its first two ASPP branches
(``aspp_branches=2`` reproduces that by zeroing the other two).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "FORMATS",
    "Conversion",
    "ConversionError",
    "Op",
    "convert_state_dict",
    "load_released_state_dict",
    "plan_conversion",
]

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class ConversionError(ValueError):
    """A released checkpoint does not have the layout of the format it was given as."""


@dataclass(frozen=True)
class Op:
    """How one contraseg tensor is made.

    Attributes:
        target: the contraseg state-dict key.
        kind: ``"copy"`` (``sources[0]``), ``"fold"`` (``sources[0] - sources[1]``: a BN
            running mean minus the preceding conv's bias), ``"fill"`` (zeros: nothing in the
            release) or ``"zero"`` (a released tensor deliberately zeroed, ``sources[0]``).
        sources: released keys read.
    """

    target: str
    kind: str
    sources: tuple[str, ...] = ()


@dataclass
class Plan:
    """What a format makes of one released state dict (before any tensor is touched)."""

    model_config: dict[str, Any]
    ops: list[Op]
    dropped: dict[str, str] = field(default_factory=dict)  # released key -> why it is not used
    notes: list[str] = field(default_factory=list)


@dataclass
class Conversion:
    """A converted state dict with its provenance.

    Attributes:
        state_dict: contraseg keys -> tensors; loads with ``strict=True`` into
            ``build_segmentor(**model_config)``.
        model_config: the ``build_segmentor`` keyword arguments.
        ops: one :class:`Op` per contraseg tensor.
        dropped: released key -> reason, for every released tensor no op reads.
        notes: what the converted model does differently from the released one.
    """

    state_dict: dict[str, Tensor]
    model_config: dict[str, Any]
    ops: list[Op]
    dropped: dict[str, str]
    notes: list[str]

    def summary(self) -> str:
        """One line: counts of copied / folded / filled / zeroed / dropped tensors."""
        counts = {kind: sum(op.kind == kind for op in self.ops) for kind in ("copy", "fold", "fill", "zero")}
        return (f"{counts['copy']} tensors copied, {counts['fold']} conv biases folded into BN, "
                f"{counts['fill']} filled with zeros, {counts['zero']} zeroed, "
                f"{len(self.dropped)} released tensors dropped")


# -- reading ------------------------------------------------------------------------------------


def load_released_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, Tensor]:
    """The tensors of a released checkpoint file, ``module.`` prefixes removed.

    Accepts a bare state dict or a dict holding it under ``state_dict`` / ``model``
    (openseg saves ``{"config_dict": ..., "state_dict": ...}``). Loaded with
    ``weights_only=True`` unless ``allow_pickle`` (only for files you trust).

    Raises:
        ConversionError: one line naming the file when it is missing, unreadable or holds
            no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means an unusable file here
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        hint = "" if allow_pickle else " (a file that needs code to load: re-run with --allow-pickle if you trust it)"
        raise ConversionError(f"{path}: not a readable checkpoint ({type(err).__name__}: {first}){hint}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return strip_prefix(dict(obj), "module.")


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """``state`` with ``prefix`` removed from its keys when every key has it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _require(source: Mapping[str, Tensor], key: str, fmt: str) -> Tensor:
    if key not in source:
        raise ConversionError(f"{fmt}: the checkpoint has no {key!r}; is it a {fmt} checkpoint?")
    return source[key]


def _bn(ops: list[Op], source_prefix: str, target_prefix: str) -> None:
    ops.extend(Op(f"{target_prefix}{k}", "copy", (f"{source_prefix}{k}",)) for k in BN_KEYS)


# -- formats ------------------------------------------------------------------------------------------


def _copy_with_bn_counters(keys: list[str], rename: Callable[[str], str]) -> list[Op]:
    """Copy ops for ``keys``, plus one for each BatchNorm's ``num_batches_tracked`` that an
    old checkpoint lacks (``convert_state_dict`` fills those with 0)."""
    ops = [Op(rename(k), "copy", (k,)) for k in keys]
    present = set(keys)
    for k in keys:
        if k.endswith(".running_mean"):
            counter = k[: -len("running_mean")] + "num_batches_tracked"
            if counter not in present:
                ops.append(Op(rename(counter), "copy", (counter,)))
    return ops


def _hrnet_backbone(source: Mapping[str, Tensor], fmt: str) -> list[Op]:
    keys = [k for k in source if k.startswith("backbone.")]
    if not keys:
        raise ConversionError(f"{fmt}: the checkpoint has no 'backbone.*' tensors; is it a {fmt} checkpoint?")
    return _copy_with_bn_counters(keys, lambda k: f"backbone.body.{k[len('backbone.'):]}")


def _hrnet_head(ops: list[Op], source: Mapping[str, Tensor], fmt: str) -> None:
    _require(source, "cls_head.0.weight", fmt)
    ops += [Op(f"head.conv.0.{k}", "copy", (f"cls_head.0.{k}",)) for k in ("weight", "bias")]
    _bn(ops, "cls_head.1.0.", "head.conv.1.")


def plan_openseg_hrnet(source: Mapping[str, Tensor]) -> Plan:
    fmt = "openseg-hrnet-w48"
    dropped = {}
    classifier = _require(source, "cls_head.3.weight", fmt)
    ops = _hrnet_backbone(source, fmt)
    _hrnet_head(ops, source, fmt)
    ops += [Op("head.classifier.1.weight", "copy", ("cls_head.3.weight",)), Op("head.classifier.1.bias", "fill")]
    num_classes = int(classifier.shape[0])
    projection, embed_dim = None, 256
    if "proj_head.proj.0.weight" in source:
        if "proj_head.proj.1.0.weight" not in source:
            raise ConversionError(f"{fmt}: proj_head has no BatchNorm ('proj_head.proj.1.0.*'): only ContrastiveSeg's "
                                  f"'convmlp' projection is supported")
        projection, embed_dim = "convmlp", int(_require(source, "proj_head.proj.2.weight", fmt).shape[0])
        ops.append(Op("projection.proj.0.weight", "copy", ("proj_head.proj.0.weight",)))
        for k in BN_KEYS:
            if k == "running_mean":
                ops.append(Op("projection.proj.1.running_mean", "fold",
                              ("proj_head.proj.1.0.running_mean", "proj_head.proj.0.bias")))
            else:
                ops.append(Op(f"projection.proj.1.{k}", "copy", (f"proj_head.proj.1.0.{k}",)))
        ops += [Op("projection.proj.3.weight", "copy", ("proj_head.proj.2.weight",)),
                Op("projection.proj.3.bias", "copy", ("proj_head.proj.2.bias",))]
    for key in source:
        if key.endswith("_queue") or key.endswith("_queue_ptr"):
            dropped[key] = "ContrastiveSeg memory bank (training state, not needed to predict)"
    config = dict(backbone="hrnet_w48_openseg", head="hrnet", num_classes=num_classes, embed_dim=embed_dim,
                  projection=projection, classifier="linear", num_prototypes=10, output_stride=8, pretrained=None)
    return Plan(config, ops, dropped, _HRNET_NOTES[:])


def plan_protoseg_hrnet(source: Mapping[str, Tensor]) -> Plan:
    fmt = "protoseg-hrnet-w48"
    prototypes = _require(source, "prototypes", fmt)
    if prototypes.dim() != 3:
        raise ConversionError(f"{fmt}: 'prototypes' must be K x M x D, got shape {tuple(prototypes.shape)}")
    num_classes, num_prototypes, dim = (int(s) for s in prototypes.shape)
    ops = _hrnet_backbone(source, fmt)
    _hrnet_head(ops, source, fmt)
    ops.append(Op("prototype_head.bank.prototypes", "copy", ("prototypes",)))
    for i in (0, 2):
        for k in ("weight", "bias"):
            ops.append(Op(f"projection.proj.{i}.{k}", "copy", (f"proj_head.proj.{i}.{k}",)))
    for norm in ("feat_norm", "mask_norm"):
        ops += [Op(f"prototype_head.{norm}.{k}", "copy", (f"{norm}.{k}",)) for k in ("weight", "bias")]
    dropped = {}
    for key in source:
        if key.startswith("proj_head.mlp2."):
            twin = "proj_head.proj." + key[len("proj_head.mlp2."):]
            if twin not in source or not torch.equal(source[twin], source[key]):
                raise ConversionError(f"{fmt}: {key!r} differs from {twin!r} (they are one module in ProtoSeg)")
            dropped[key] = f"alias of {twin} (ProtoSeg's ProjectionHead sets self.proj = self.mlp2)"
    config = dict(backbone="hrnet_w48_openseg", head="hrnet", num_classes=num_classes, embed_dim=dim, projection="mlp",
                  classifier="prototype", num_prototypes=num_prototypes, output_stride=8, pretrained=None,
                  prototype_feat_norm=True)
    notes = _HRNET_NOTES + [
        "ProtoSeg's proj_head output is L2-normalised over the image width (F.normalize(x, dim=-1) on "
        "B x C x H x W) before feat_norm; contraseg normalises over channels, so the embeddings differ."
    ]
    return Plan(config, ops, dropped, notes)


_HRNET_NOTES = [
    "hrnet_w48_openseg computes the released backbone exactly when both image sides are multiples of 32; "
    "other sizes are zero-padded to a multiple of 32 and cropped back (openseg interpolates between them)."
]


def _aspp_layer(source: Mapping[str, Tensor], fmt: str) -> tuple[str, str | None]:
    """(the classifier layer used, the auxiliary one dropped or None)."""
    if any(k.startswith("layer6.conv2d_list.") for k in source):
        return "layer6", "layer5"
    if any(k.startswith("layer5.conv2d_list.") for k in source):
        return "layer5", None
    raise ConversionError(f"{fmt}: the checkpoint has no 'layer5.conv2d_list.*' (ASPP classifier); "
                          f"only the AdaptSegNet-style DeepLab-v2 classifier is supported")


def plan_deeplabv2(source: Mapping[str, Tensor], aspp_branches: int | None = None) -> Plan:
    fmt = "deeplabv2-r101"
    _require(source, "conv1.weight", fmt)
    layer, aux = _aspp_layer(source, fmt)
    branches = sorted({int(m.group(1)) for k in source if (m := re.match(rf"{layer}\.conv2d_list\.(\d+)\.", k))})
    if branches != list(range(4)):
        raise ConversionError(f"{fmt}: {layer}.conv2d_list has branches {branches}, "
                              f"expected 0..3 (rates 6, 12, 18, 24)")
    keep = 4 if aspp_branches is None else int(aspp_branches)
    if not 1 <= keep <= 4:
        raise ConversionError(f"aspp_branches must be 1..4, got {aspp_branches!r}")
    ops = _copy_with_bn_counters([k for k in source if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3",
                                                                         "layer4")], lambda k: f"backbone.body.{k}")
    for i in range(4):
        for k in ("weight", "bias"):
            src = f"{layer}.conv2d_list.{i}.{k}"
            ops.append(Op(f"head.branches.{i}.{k}", "copy" if i < keep else "zero", (src,)))
    dropped = {}
    if aux is not None:
        dropped.update({k: "multi-level auxiliary classifier on layer3 (not used to predict)"
                        for k in source if k.startswith(f"{aux}.")})
    num_classes = int(_require(source, f"{layer}.conv2d_list.0.weight", fmt).shape[0])
    config = dict(backbone="resnet101_deeplabv2", head="deeplabv2", num_classes=num_classes, embed_dim=256,
                  projection=None, classifier="linear", num_prototypes=10, output_stride=8, pretrained=None)
    notes = ["The output grid is ceil(H/8) x ceil(W/8): the extra row/column of the released ceil-mode "
             "max-pool grid is cropped."]
    if keep < 4:
        notes.append(f"ASPP branches {keep}..3 are zeroed, so the logits sum branches 0..{keep - 1} "
                     f"as AdaptSegNet's Classifier_Module does (it returns inside its loop).")
    return Plan(config, ops, dropped, notes)


FORMATS: dict[str, tuple[Callable[..., Plan], str]] = {
    "openseg-hrnet-w48": (plan_openseg_hrnet,
                          "openseg / ContrastiveSeg / ProtoSeg HRNet_W48, HRNet_W48_CONTRAST, HRNet_W48_MEM"),
    "protoseg-hrnet-w48": (plan_protoseg_hrnet, "ProtoSeg HRNet_W48_Proto (prototype classifier)"),
    "deeplabv2-r101": (plan_deeplabv2, "DeepLab-v2 ResNet-101, AdaptSegNet-style layer5/layer6 ASPP classifier"),
}


def plan_conversion(fmt: str, source: Mapping[str, Tensor], **options: Any) -> Plan:
    """The :class:`Plan` of format ``fmt`` for a released state dict (``module.`` removed).

    ``options``: ``aspp_branches`` (deeplabv2-r101 only). Raises ConversionError.
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown checkpoint format {fmt!r}; choose one of {', '.join(FORMATS)}")
    unknown = sorted(set(options) - ({"aspp_branches"} if fmt == "deeplabv2-r101" else set()))
    given = [k for k in unknown if options[k] is not None]
    if given:
        raise ConversionError(f"option {given[0]!r} does not apply to {fmt}")
    options = {k: v for k, v in options.items() if k not in unknown}
    return FORMATS[fmt][0](_normalised_source(fmt, source), **options)


def _normalised_source(fmt: str, source: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``source`` without ``module.``; for openseg also without HRNet_W48_MEM's ``encoder_q.``
    (the network sits under it, the memory queues beside it)."""
    state = strip_prefix(dict(source), "module.")
    if fmt == "openseg-hrnet-w48":
        state = {k[len("encoder_q."):] if k.startswith("encoder_q.") else k: v for k, v in state.items()}
    return state


def convert_state_dict(fmt: str, source: Mapping[str, Tensor], template: Mapping[str, Tensor] | None = None,
                       **options: Any) -> Conversion:
    """Convert a released state dict of format ``fmt`` into a contraseg one.

    Args:
        fmt: a key of :data:`FORMATS`.
        source: the released tensors (``module.`` / ``encoder_q.`` prefixes allowed).
        template: the state dict of ``build_segmentor(**plan.model_config)``; built here
            when None. Every template key must be produced and every shape must match.
        options: ``aspp_branches`` for ``deeplabv2-r101``.

    Raises:
        ConversionError: one line naming the first missing, unexpected or mis-shaped key.
    """
    plan = plan_conversion(fmt, source, **options)
    source = _normalised_source(fmt, source)
    if template is None:
        from .segmentor import build_segmentor

        template = build_segmentor(**plan.model_config).state_dict()
    # Old checkpoints (PyTorch < 0.4.1) have no num_batches_tracked.
    ops = [Op(op.target, "fill") if op.target.endswith(".num_batches_tracked") and op.sources
           and op.sources[0] not in source else op for op in plan.ops]
    targets = {op.target for op in ops}
    missing = [k for k in template if k not in targets]
    if missing:
        raise ConversionError(f"{fmt}: nothing in the map produces {missing[0]!r} "
                              f"({len(missing)} contraseg tensors unmapped)")
    extra = [op.target for op in ops if op.target not in template]
    if extra:
        raise ConversionError(f"{fmt}: the map produces {extra[0]!r}, which the contraseg model does not have "
                              f"(is it a different network size?)")
    used = {s for op in ops for s in op.sources}
    unused = [k for k in source if k not in used and k not in plan.dropped]
    if unused:
        raise ConversionError(f"{fmt}: released tensor {unused[0]!r} is not part of the map ({len(unused)} unused); "
                              f"is it a {fmt} checkpoint?")
    state: dict[str, Tensor] = {}
    for op in ops:
        like = template[op.target]
        for key in op.sources:
            if key not in source:
                raise ConversionError(f"{fmt}: the checkpoint has no {key!r}; is it a {fmt} checkpoint?")
        if op.kind in ("fill", "zero"):
            value = torch.zeros_like(like)
        elif op.kind == "fold":
            value = source[op.sources[0]] - source[op.sources[1]]
        else:
            value = source[op.sources[0]]
        if tuple(value.shape) != tuple(like.shape):
            raise ConversionError(f"{fmt}: {op.sources[0]!r} has shape {tuple(value.shape)} but contraseg's "
                                  f"{op.target!r} has {tuple(like.shape)}")
        state[op.target] = value.detach().to(like.dtype)  # shares the released tensor's storage
    return Conversion(state, plan.model_config, ops, dict(plan.dropped), list(plan.notes))
