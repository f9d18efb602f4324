"""The ``adapt.fda`` section: FDA's released training values (see :mod:`contraseg.adapt.fda`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.config_schema import config_field

# Released values, github:YanchaoYang/FDA @ b9a0cdf: README.md:29 (--LB=0.01 --entW=0.005 --ita=2.0
# --switch2entropy=0), options/train_options.py:8-12. Kept here as literals (equal to contraseg.adapt.fda's
# RELEASED_* constants, which a test checks) so that reading a config never imports torch.fft code.


@dataclass
class FDAConfig:
    """``adapt.fda``: ``beta`` the low-frequency window (fraction of min(H, W), in [0, 0.5]),
    ``entropy_weight`` the weight of the robust entropy on target images, ``eta`` its
    Charbonnier exponent, ``entropy_start_iter`` the 0-based iteration from which the
    entropy term is on (released ``switch2entropy``: 0 in the README's command, 50000 the
    option's default)."""

    beta: float = config_field(0.01, minimum=0.0)
    entropy_weight: float = config_field(0.005, minimum=0.0)
    eta: float = config_field(2.0, minimum=0.0, exclusive=True)
    entropy_start_iter: int = config_field(0, minimum=0)
