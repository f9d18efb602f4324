"""The two domains of the synthetic benchmark and how each one paints a layout.

:class:`DomainStyle` holds a domain's colour tables, textures and facade / fence
patterns; :data:`SOURCE_STYLE` (clean, game-like) and :data:`TARGET_STYLE`
(camera-like) are the two instances, :data:`STYLES` maps :data:`DOMAINS` to them.
:class:`CameraEffects` are the per-image lighting, lens and sensor factors of the
target domain, drawn by :func:`_target_effects`. Plain data: the renderer
(:mod:`contraseg.data.synthetic_render`) applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .palettes import CITYSCAPES_CLASSES
from .synthetic_canvas import NUM_SCENE_CLASSES

DOMAINS = ("source", "target")

if len(CITYSCAPES_CLASSES) != NUM_SCENE_CLASSES:  # pragma: no cover - guards the class table
    raise ImportError(f"synthetic scenes draw {NUM_SCENE_CLASSES} classes but Cityscapes has {len(CITYSCAPES_CLASSES)}")


def _rgb(rows: Sequence[Sequence[int]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32) / 255.0


@dataclass(frozen=True)
class DomainStyle:
    """How a domain paints a layout. Colours are float32 RGB in [0, 1].

    Attributes:
        class_colours: K x 3 base colour of each class.
        variant_shade: per-variant brightness factors (a variant picks one), for classes
            whose colour is not taken from ``paints``.
        paints: P x 3 body colours of vehicles, indexed by variant, shared by all vehicle classes.
        clothes: P x 3 garment colours (``Kind.CLOTH``), shared by persons and riders.
        shared_from: vehicles and garments whose variant is at least this take ``paints`` /
            ``clothes``; the others take their class colour (P = always the class colour).
        skins: S x 3 skin tones indexed by variant.
        glass, tyre, marking, trunk: colours of those kinds.
        lamps: 7 x 3 lamp colours (dim red/amber/green, lit red/amber/green, white).
        sign_colours: 3 x 3 sign colour per shape (disc, triangle, plate); ``None`` -> class colour.
        building_tones: T x 3 facade colours indexed by variant; ``None`` -> class colour.
        jitter: std of the per-instance additive colour jitter.
        side_shade: brightness of surfaces on a plane X = const (vehicle sides, facades).
        texture: K amplitudes of the multiplicative texture of each class.
        texture_cell: size of a texture noise cell, as a fraction of the image width.
        coarse: K amplitudes of a second, coarse texture (cell ``coarse_cell``).
        window_period: (along the street, vertical) window spacing on facades, world units.
        window_size: fraction of a period that is glass, (along, vertical).
        slat_period: fence slat spacing, world units.
        skyline_stripe: every this many rows, distant skyline buildings are darker (floors).
        exposure: (low, high) of a uniform per-image brightness factor.
    """

    class_colours: np.ndarray
    variant_shade: np.ndarray
    paints: np.ndarray
    clothes: np.ndarray
    shared_from: int
    skins: np.ndarray
    glass: np.ndarray
    tyre: np.ndarray
    marking: np.ndarray
    trunk: np.ndarray
    lamps: np.ndarray
    sign_colours: np.ndarray | None
    building_tones: np.ndarray | None
    jitter: float
    side_shade: float
    texture: np.ndarray
    texture_cell: float
    coarse: np.ndarray
    coarse_cell: float
    window_period: tuple[float, float]
    window_size: tuple[float, float]
    slat_period: float
    skyline_stripe: int
    exposure: tuple[float, float]


def _per_class(default: float, **values: float) -> np.ndarray:
    table = np.full(NUM_SCENE_CLASSES, default, dtype=np.float32)
    names = {name.replace(" ", "_"): k for k, name in enumerate(CITYSCAPES_CLASSES)}
    for name, value in values.items():
        table[names[name]] = value
    return table


_LAMPS_COMMON = [(90, 25, 25), (90, 70, 15), (20, 80, 35), (255, 45, 40), (255, 190, 40), (50, 255, 110),
                 (255, 250, 225)]

SOURCE_STYLE = DomainStyle(
    class_colours=_rgb([
        (95, 90, 120),  # road
        (220, 150, 195),  # sidewalk
        (205, 120, 75),  # building
        (190, 190, 115),  # wall
        (175, 130, 80),  # fence
        (220, 220, 70),  # pole
        (60, 60, 70),  # traffic light
        (245, 205, 0),  # traffic sign
        (45, 170, 55),  # vegetation
        (165, 220, 75),  # terrain
        (95, 165, 250),  # sky
        (225, 45, 70),  # person
        (250, 130, 20),  # rider
        (35, 70, 215),  # car
        (20, 150, 160),  # truck
        (135, 65, 220),  # bus
        (205, 40, 160),  # train
        (140, 20, 50),  # motorcycle
        (110, 235, 205),  # bicycle
    ]),
    variant_shade=np.array([0.9, 0.96, 1.02, 1.08, 0.93, 0.99, 1.05, 1.1], dtype=np.float32),
    # Game-like: most vehicles / clothes in their class colour, 3 variants in 8 in shared loud paints.
    paints=_rgb([(0, 0, 0)] * 5 + [(230, 30, 30), (245, 245, 245), (30, 30, 35)]),
    clothes=_rgb([(0, 0, 0)] * 5 + [(40, 40, 200), (30, 30, 35), (240, 240, 240)]),
    shared_from=5,
    skins=_rgb([(245, 195, 160), (240, 185, 150), (235, 190, 155), (245, 200, 170)]),
    glass=_rgb([(80, 120, 180)])[0],
    tyre=_rgb([(28, 28, 30)])[0],
    marking=_rgb([(245, 245, 245)])[0],
    trunk=_rgb([(125, 80, 40)])[0],
    lamps=_rgb(_LAMPS_COMMON),
    sign_colours=None,
    building_tones=None,
    jitter=0.02,
    side_shade=0.85,
    texture=_per_class(0.02, vegetation=0.12, terrain=0.06, road=0.03, sidewalk=0.04, sky=0.0),
    texture_cell=1 / 40,
    coarse=_per_class(0.0),
    coarse_cell=1 / 8,
    window_period=(2.2, 1.5),
    window_size=(0.55, 0.5),
    slat_period=0.5,
    skyline_stripe=4,
    exposure=(0.9, 1.1),
)

TARGET_STYLE = DomainStyle(
    # Muted, camera-like colours: the stuff classes keep a hint of their source hue, the
    # thin things (pole, fence, sign) are re-mapped, and most vehicles and garments take
    # colours from tables shared across classes, so colour alone does not transfer.
    class_colours=_rgb([
        (110, 105, 120),  # road
        (185, 150, 170),  # sidewalk
        (165, 125, 100),  # building (tones below)
        (200, 180, 150),  # wall
        (110, 110, 95),  # fence
        (90, 90, 95),  # pole
        (38, 42, 38),  # traffic light
        (30, 75, 180),  # traffic sign (per shape below)
        (60, 130, 50),  # vegetation
        (150, 170, 85),  # terrain
        (140, 180, 230),  # sky
        (180, 60, 70),  # person (3 variants in 8; clothes otherwise)
        (200, 120, 50),  # rider
        (60, 80, 160),  # car (3 variants in 8; paints otherwise)
        (60, 130, 135),  # truck
        (120, 80, 170),  # bus
        (170, 70, 140),  # train
        (110, 40, 55),  # motorcycle
        (110, 170, 150),  # bicycle
    ]),
    variant_shade=np.array([0.82, 0.9, 0.98, 1.06, 0.86, 0.94, 1.02, 1.1], dtype=np.float32),
    paints=_rgb([(200, 200, 205), (30, 30, 35), (150, 25, 30), (40, 60, 120), (120, 122, 128), (232, 232, 228),
                 (60, 85, 60), (175, 155, 115)]),
    clothes=_rgb([(30, 30, 40), (60, 60, 70), (40, 50, 90), (120, 30, 35), (200, 195, 185), (90, 75, 55),
                  (55, 80, 55), (150, 150, 160)]),
    shared_from=3,
    skins=_rgb([(225, 180, 150), (190, 140, 110), (140, 95, 70), (95, 65, 50)]),
    glass=_rgb([(35, 45, 55)])[0],
    tyre=_rgb([(18, 18, 18)])[0],
    marking=_rgb([(215, 215, 205)])[0],
    trunk=_rgb([(80, 65, 50)])[0],
    lamps=_rgb([(70, 30, 30), (70, 60, 25), (30, 65, 40), (255, 70, 50), (255, 170, 50), (90, 255, 160),
                (255, 255, 240)]),
    sign_colours=_rgb([(30, 75, 180), (200, 40, 40), (230, 190, 40)]),
    building_tones=_rgb([(180, 125, 95), (150, 115, 100), (190, 150, 120), (125, 95, 85)]),
    jitter=0.05,
    side_shade=0.75,
    texture=_per_class(0.05, vegetation=0.2, terrain=0.15, road=0.06, sidewalk=0.1, building=0.06, sky=0.0),
    texture_cell=1 / 160,
    coarse=_per_class(0.0, road=0.1, sidewalk=0.08, building=0.08, sky=0.07, vegetation=0.15, terrain=0.12),
    coarse_cell=1 / 10,
    window_period=(1.4, 1.15),
    window_size=(0.45, 0.55),
    slat_period=0.22,
    skyline_stripe=3,
    exposure=(1.0, 1.0),  # lighting comes from CameraEffects
)

STYLES = {"source": SOURCE_STYLE, "target": TARGET_STYLE}


@dataclass(frozen=True)
class CameraEffects:
    """Per-image lens, lighting and sensor of the target domain (factors multiply [0, 1] RGB)."""

    gain: float
    gamma: float
    cast: np.ndarray  # 3 channel factors
    vignette: float
    shadow: tuple[int, float, float] | None  # (side, lateral threshold X, darkening factor)
    haze: float
    haze_colour: np.ndarray
    blur_sigma: float
    noise_sigma: float


def _target_effects(rng: np.random.Generator, width: int) -> CameraEffects:
    """Draw one image's :class:`CameraEffects` (blur scales with the image width)."""
    return CameraEffects(
        gain=float(rng.uniform(0.8, 1.2)),
        gamma=float(rng.uniform(0.8, 1.25)),
        cast=rng.uniform(0.9, 1.1, size=3).astype(np.float32),
        vignette=float(rng.uniform(0.1, 0.35)),
        shadow=(int(rng.choice([-1, 1])), float(rng.uniform(-2.0, 4.0)), float(rng.uniform(0.5, 0.75)))
        if rng.random() < 0.6 else None,
        haze=float(rng.uniform(0.15, 0.4)) if rng.random() < 0.35 else 0.0,
        haze_colour=rng.uniform(0.75, 0.9, size=1).astype(np.float32) * np.array([1.0, 1.0, 1.02], np.float32),
        blur_sigma=float(rng.uniform(0.4, 0.9)) * width / 256,
        noise_sigma=float(rng.uniform(0.005, 0.02)),
    )
