"""``contraseg adapt CONFIG``: domain adaptation (self-training, WDASS), see :mod:`contraseg.adapt`."""

from ..adapt.command import add_parser, run

__all__ = ["add_parser", "run"]
