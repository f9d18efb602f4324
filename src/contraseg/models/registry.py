"""Name -> builder tables of the backbones and decode heads, filled by decorators.

A backbone file registers each of its names on a builder ``(output_stride) -> Backbone``::

    @register_backbone("hrnet_w48_openseg", "HRNetV2-W48 fused as openseg, stride 4")
    def hrnet_w48_openseg(output_stride: int = 8) -> OpensegHRNetBackbone:
        return OpensegHRNetBackbone("hrnet_w48", output_stride)

or, for the sizes of one network, registers the class under each size name::

    register_backbone_family(ResNetBackbone, {"resnet18": "torchvision ResNet-18", ...})

A head file registers its :class:`~.head_base.SegHead` subclass, which ``build_head``
builds with the class's ``from_options``::

    @register_head("fcn")
    class FCNHead(LinearClassifierHead): ...

This module imports no plug-in: the built-in backbones and heads register themselves when
:mod:`.backbones` and :mod:`.heads` import them, which every factory
(``build_backbone``, ``build_head``, ``build_segmentor``) does. Register your own after
importing ``contraseg.models`` names, e.g. ``from contraseg.models import register_head``
(that import loads the built-ins first). Tables keep registration order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from .backbone_base import Backbone
from .head_base import SegHead

BackboneBuilder = Callable[..., Backbone]
_Builder = TypeVar("_Builder", bound=Callable[..., Backbone])
_HeadClass = TypeVar("_HeadClass", bound=type)


@dataclass(frozen=True)
class BackboneEntry:
    """One registered backbone: ``build(output_stride) -> Backbone`` and a one-line description."""

    build: BackboneBuilder
    description: str


_BACKBONES: dict[str, BackboneEntry] = {}
_HEADS: dict[str, type[SegHead]] = {}


def unknown_name(kind: str, name: object, known: list[str]) -> str:
    """The one-line error for a name that is not registered, listing the known ones."""
    return f"unknown {kind} {name!r}; choose one of {', '.join(known)}"


def _claim(table: dict[str, Any], kind: str, name: str, owner: Any, registered: Any) -> None:
    """ValueError when ``name`` is already taken by another builder (the same one, e.g. a
    reloaded module, may register again)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} name must be a non-empty string, got {name!r}")
    if name in table and _qualified(registered(table[name])) != _qualified(owner):
        raise ValueError(f"{kind} {name!r} is already registered by {_qualified(registered(table[name]))}")


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def register_backbone(name: str, description: str = "") -> Callable[[_Builder], _Builder]:
    """Decorator: make ``build_backbone(name, output_stride)`` call the decorated builder.

    The builder takes ``output_stride`` (8, 16 or 32, checked by the caller only for
    ``timm:NAME``) and returns a :class:`~.backbone_base.Backbone` without weights.

    Raises:
        ValueError: ``name`` is already registered by another builder.
    """

    def wrap(build: _Builder) -> _Builder:
        _claim(_BACKBONES, "backbone", name, build, lambda entry: entry.build)
        _BACKBONES[name] = BackboneEntry(build, description)
        return build

    return wrap


def register_backbone_family(build: Callable[..., Backbone], descriptions: Mapping[str, str]) -> None:
    """Register one backbone class under several names (sizes of one network, e.g.
    ResNet-18 / 50 / 101): each ``name -> description`` entry builds ``build(name, output_stride)``.

    Raises:
        ValueError: a name is already registered by another builder.
    """
    for name, description in descriptions.items():
        register_backbone(name, description)(partial(build, name))


def register_head(name: str) -> Callable[[_HeadClass], _HeadClass]:
    """Class decorator: make ``build_head(name, ...)`` build the decorated
    :class:`~.head_base.SegHead` subclass through its ``from_options``.

    Raises:
        TypeError: the decorated object is not a SegHead subclass.
        ValueError: ``name`` is already registered by another class.
    """

    def wrap(cls: _HeadClass) -> _HeadClass:
        if not (isinstance(cls, type) and issubclass(cls, SegHead)):
            raise TypeError(f"register_head({name!r}) decorates a SegHead subclass, got {cls!r}")
        _claim(_HEADS, "head", name, cls, lambda registered: registered)
        _HEADS[name] = cls
        return cls

    return wrap


def backbone_names() -> list[str]:
    """Registered backbone names, in registration order."""
    return list(_BACKBONES)


def head_names() -> list[str]:
    """Registered head names, in registration order."""
    return list(_HEADS)


def backbone_entry(name: str) -> BackboneEntry:
    """The entry registered as ``name``; ValueError listing the known names otherwise."""
    if not isinstance(name, str) or name not in _BACKBONES:
        raise ValueError(unknown_name("backbone", name, backbone_names()))
    return _BACKBONES[name]


def head_class(name: str) -> type[SegHead]:
    """The head class registered as ``name``; ValueError listing the known names otherwise."""
    if not isinstance(name, str) or name not in _HEADS:
        raise ValueError(unknown_name("head", name, head_names()))
    return _HEADS[name]
