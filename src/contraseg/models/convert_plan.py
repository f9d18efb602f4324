"""The vocabulary of a checkpoint conversion (:mod:`.convert`): the error, one :class:`Op`
per contraseg tensor, a format's :class:`Plan`, the :class:`Conversion` it yields, and the
op-list helpers the formats (:mod:`.convert_formats`) share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

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


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """``state`` with ``prefix`` removed from its keys when every key has it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def require(source: Mapping[str, Tensor], key: str, fmt: str) -> Tensor:
    """``source[key]``; ConversionError naming ``fmt`` when the checkpoint lacks it."""
    if key not in source:
        raise ConversionError(f"{fmt}: the checkpoint has no {key!r}; is it a {fmt} checkpoint?")
    return source[key]


def copy_bn(ops: list[Op], source_prefix: str, target_prefix: str) -> None:
    """Append copy ops for the five tensors of one BatchNorm (:data:`BN_KEYS`)."""
    ops.extend(Op(f"{target_prefix}{k}", "copy", (f"{source_prefix}{k}",)) for k in BN_KEYS)


def copy_with_bn_counters(keys: list[str], rename: Callable[[str], str]) -> list[Op]:
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
