"""The ``adapt.dacs`` section: which parts of DACS / DAFormer self-training are on
(see :mod:`contraseg.adapt.dacs_trainer`); the teacher's momentum and confidence threshold
are ``adapt.teacher``'s."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.config_schema import config_field

# Released values (kept as literals so reading a config imports no trainer; a test checks them
# against contraseg.adapt.rare_class / dacs_trainer): DAFormer class_temp 0.01, min_pixels 3000
# (configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py:35-36), colour
# jitter strength 0.2 (configs/_base_/uda/dacs.py:18).


@dataclass
class DACSConfig:
    """``adapt.dacs``: ``teacher`` (pseudo labels from the EMA teacher; off: from the student
    itself, without gradient), ``mix`` (ClassMix of source onto target; off: the target image
    itself), ``confidence_weight`` (pseudo-labelled pixels weighted by the batch's fraction of
    confident pixels; off: weight 1), ``photometric`` (colour jitter + blur of the mixed
    images), ``rare_class_sampling`` with ``rcs_temperature`` and ``rcs_min_pixels``,
    ``jitter_strength`` of the photometric augmentation."""

    teacher: bool = True
    mix: bool = True
    confidence_weight: bool = True
    photometric: bool = True
    rare_class_sampling: bool = True
    rcs_temperature: float = config_field(0.01, minimum=0.0, exclusive=True)
    rcs_min_pixels: int = config_field(3000, minimum=0)
    jitter_strength: float = config_field(0.2, minimum=0.0)
