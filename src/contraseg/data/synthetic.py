"""The built-in synthetic two-domain street-scene benchmark (nothing to download).

Every sample is drawn on the fly from its seed: a random street layout with the 19
Cityscapes train ids (:mod:`contraseg.data.synthetic_scenes`), then painted in the
style of one of two domains that share the layout distribution (hence the label
statistics) but not the appearance:

* ``source`` -- clean, game-like: flat saturated colours per class with mild
  per-instance variation (3 vehicles / garments in 8 wear loud shared paints instead),
  faint low-frequency textures, sharp edges, a mild per-image exposure.
* ``target`` -- camera-like: a muted palette in which the stuff classes keep a hint of
  their source hue, thin things (pole, fence, sign) are re-mapped and 5 vehicles /
  garments in 8 take colours from tables shared across classes (colour no longer tells
  a car from a bus); textures at another frequency; cast shadows, global gain / gamma /
  colour cast, vignetting, haze near the horizon, lens blur and sensor noise.

Shape and context transfer between the domains, colour only partly. Measured with
``benchmarks/synthetic_domain_gap.py`` (a small conv net trained from scratch on CPU,
64 x 128 images, 1000 iterations): trained on source 15.4 mIoU on target val, trained
on target 48.6, a gap of 33 points.

Sample ``i`` of a split is a pure function of ``(seed, domain, split, i)`` and the
image size; train and val use disjoint scene seeds by construction.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import DatasetInfo, JointTransform, SegmentationDataset
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from .pseudo_labels import PseudoLabelDir
from .synthetic_scenes import (
    BICYCLE, BUILDING, BUS, CAR, MOTORCYCLE, NUM_PAINTS, NUM_SCENE_CLASSES, SKY, TRAFFIC_SIGN, TRAIN, TRUCK, Kind,
    SceneLayout, cv2, generate_layout,  # cv2: imported there with an install hint when missing
)

__all__ = [
    "DOMAINS",
    "SCENE_CACHE",
    "SceneCache",
    "SPLITS",
    "DEFAULT_LENGTHS",
    "SyntheticStreetDataset",
    "SyntheticSourceDataset",
    "SyntheticTargetDataset",
    "render_scene",
    "scene_seed",
]

DOMAINS = ("source", "target")
SPLITS = ("train", "val")
#: Samples per split when ``length`` is None: enough variety for a few thousand
#: iterations at batch 8 without repeats mattering, and a quick but stable validation.
DEFAULT_LENGTHS = {"train": 2000, "val": 200}
#: Scene index bits in a scene seed; the index must stay below ``2**_INDEX_BITS``.
_INDEX_BITS = 40

if len(CITYSCAPES_CLASSES) != NUM_SCENE_CLASSES:  # pragma: no cover - guards the class table
    raise ImportError(f"synthetic scenes draw {NUM_SCENE_CLASSES} classes but Cityscapes has {len(CITYSCAPES_CLASSES)}")


def _rgb(rows: Sequence[Sequence[int]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------- styles
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


# ------------------------------------------------------------------------ painting
@lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre column and row coordinates, float32 1 x W and H x 1 (read-only)."""
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


@lru_cache(maxsize=8)
def _vignette_falloff(height: int, width: int) -> np.ndarray:
    """H x W float32 squared distance to the image centre, 1 at the middle of each edge (read-only)."""
    xs, ys = _pixel_grid(height, width)
    radius2 = ((xs - width / 2) / (width / 2)) ** 2 + ((ys - height / 2) / (height / 2)) ** 2
    radius2.flags.writeable = False
    return radius2


#: Margin of the cached sensor-noise tile: a random crop of it is each image's noise.
_NOISE_MARGIN = 32


@lru_cache(maxsize=4)
def _noise_tile(height: int, width: int) -> np.ndarray:
    """(H + m) x (W + m) x 3 float32 standard normal field, fixed per size (read-only).

    Drawing 3 H W normal numbers per image costs as much as the whole layout; a random
    crop (and flip) of one fixed, larger field is cheap and varied enough for sensor noise.
    """
    rng = np.random.default_rng(np.random.SeedSequence([height, width, 7]))
    tile = rng.standard_normal((height + _NOISE_MARGIN, width + _NOISE_MARGIN, 3), dtype=np.float32)
    tile.flags.writeable = False
    return tile


def _sensor_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """H x W x 3 float32 unit noise: a random crop of :func:`_noise_tile`, randomly flipped."""
    top, left = (int(v) for v in rng.integers(0, _NOISE_MARGIN + 1, size=2))
    crop = _noise_tile(height, width)[top:top + height, left:left + width]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _value_noise(rng: np.random.Generator, size: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth zero-mean unit-ish noise, H x W float32, one random value per ``cell`` px (bilinear)."""
    height, width = size
    cell = max(cell, 1.0)
    grid = rng.standard_normal((max(int(height / cell) + 2, 2), max(int(width / cell) + 2, 2)), dtype=np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)


def _instance_colours(layout: SceneLayout, style: DomainStyle, rng: np.random.Generator) -> np.ndarray:
    """N x 3 float32 base colour of every instance of ``layout`` in ``style``."""
    classes, kinds, variants = layout.classes, layout.kinds, layout.variants
    count = classes.shape[0]
    shade = style.variant_shade[variants % style.variant_shade.shape[0]]
    colours = style.class_colours[classes] * shade[:, None]
    shared = variants >= style.shared_from
    painted = np.isin(classes, (CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE)) & (kinds == Kind.PLAIN) & shared
    colours[painted] = style.paints[variants[painted] % NUM_PAINTS]
    if style.building_tones is not None:
        toned = (classes == BUILDING) & np.isin(kinds, (Kind.FACADE, Kind.SKYLINE))
        colours[toned] = style.building_tones[variants[toned] % style.building_tones.shape[0]]
    if style.sign_colours is not None:
        signs = (classes == TRAFFIC_SIGN) & (kinds == Kind.PLAIN)
        colours[signs] = style.sign_colours[variants[signs] % 3]
    cloth = (kinds == Kind.CLOTH) & shared
    colours[cloth] = style.clothes[variants[cloth] % NUM_PAINTS]
    colours[kinds == Kind.SKIN] = style.skins[variants[kinds == Kind.SKIN] % style.skins.shape[0]]
    colours[kinds == Kind.GLASS] = style.glass
    colours[kinds == Kind.TYRE] = style.tyre
    colours[kinds == Kind.MARKING] = style.marking
    colours[kinds == Kind.TRUNK] = style.trunk
    lamps = kinds == Kind.LAMP
    colours[lamps] = style.lamps[variants[lamps] % style.lamps.shape[0]]
    colours = colours + rng.normal(0.0, style.jitter, size=(count, 3)).astype(np.float32)
    on_plane = ~np.isnan(layout.planes)
    colours[on_plane] *= style.side_shade
    return np.clip(colours, 0.0, 1.0).astype(np.float32)


def _plane_coordinates(layout: SceneLayout, pixels: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """World depth ``z`` and height ``h`` of the given pixels on their instance's plane ``X = const``."""
    rows, cols = pixels
    cam = layout.camera
    plane = layout.planes[layout.ids[rows, cols]]
    dx = cols + 0.5 - cam.cx
    dx = np.where(np.abs(dx) < 1e-3, 1e-3, dx)
    depth = np.abs(cam.focal * plane / dx)
    height = 1.0 - (rows + 0.5 - cam.horizon) * depth / cam.focal
    return depth, height


def _apply_patterns(image: np.ndarray, layout: SceneLayout, style: DomainStyle) -> None:
    """Windows on facades and slats on fences, in world units on their planes (in place)."""
    kinds = layout.kinds.astype(np.uint8)[layout.ids]
    facade = np.nonzero(kinds == Kind.FACADE)
    if facade[0].size:
        depth, height = _plane_coordinates(layout, facade)
        variant = layout.variants[layout.ids[facade]]
        period_z = style.window_period[0] * (1.0 + 0.15 * (variant % 4))
        along = np.mod(depth / period_z, 1.0) < style.window_size[0]
        up = np.mod(height / style.window_period[1], 1.0)
        window = along & (up > 0.5 - style.window_size[1] / 2) & (up < 0.5 + style.window_size[1] / 2) & (height > 1.2)
        image[facade[0][window], facade[1][window]] = style.glass * 1.3
    fence = np.nonzero(kinds == Kind.SLATS)
    if fence[0].size:
        depth, _ = _plane_coordinates(layout, fence)
        gap = np.mod(depth / style.slat_period, 1.0) < 0.4
        image[fence[0][gap], fence[1][gap]] *= 0.55
    skyline = np.nonzero(kinds == Kind.SKYLINE)
    if skyline[0].size:
        rows = skyline[0]
        stripes = np.mod(rows, style.skyline_stripe) == 0
        image[rows[stripes], skyline[1][stripes]] *= 0.8


def _shading(layout: SceneLayout, label: np.ndarray, style: DomainStyle, rng: np.random.Generator) -> np.ndarray:
    """H x W float32 multiplicative shading: texture ``1 + a_fine(class) n_fine + a_coarse(class) n_coarse``,
    and on the sky a vertical gradient that brightens towards the horizon."""
    height, width = label.shape
    fine = _value_noise(rng, (height, width), style.texture_cell * width)
    shading = 1.0 + style.texture[label] * fine
    if np.any(style.coarse > 0):
        coarse = _value_noise(rng, (height, width), style.coarse_cell * width)
        shading += style.coarse[label] * coarse
    _, ys = _pixel_grid(height, width)
    gradient = 0.8 + 0.3 * np.clip(ys / max(layout.camera.horizon, 1.0), 0.0, 1.0)
    return np.where(label == SKY, shading * gradient, shading)


def _shadow_mask(layout: SceneLayout, label: np.ndarray, side: int, lateral: float) -> np.ndarray:
    """H x W bool: the ground beyond ``X = lateral`` on ``side`` and that side's upright surfaces.

    A ground pixel lies at ``X = (x - cx) / (y - horizon)`` (world units), so the ground
    part is ``side (x - cx) > side X_s (y - horizon)``; above the horizon the same line
    bounds the shaded facades. The sky is never shaded.
    """
    height, width = layout.ids.shape
    xs, ys = _pixel_grid(height, width)
    cam = layout.camera
    beyond = side * (xs - cam.cx) > side * lateral * (ys - cam.horizon)
    return beyond & ((ys > cam.horizon) | (side * (xs - cam.cx) > 0)) & (label != SKY)


def _light_map(layout: SceneLayout, label: np.ndarray, camera: CameraEffects) -> np.ndarray:
    """H x W float32 per-pixel light of the target camera: vignetting ``1 - v r^2 / 2`` times the cast shadow."""
    height, width = label.shape
    light = 1.0 - np.float32(camera.vignette * 0.5) * _vignette_falloff(height, width)
    if camera.shadow is not None:
        side, lateral, factor = camera.shadow
        light = np.where(_shadow_mask(layout, label, side, lateral), light * np.float32(factor), light)
    return light


def _lens_and_sensor(image: np.ndarray, layout: SceneLayout, camera: CameraEffects,
                     rng: np.random.Generator) -> np.ndarray:
    """Haze near the horizon, lens blur and sensor noise on a float32 H x W x 3 image in [0, 255]."""
    height, width = layout.ids.shape
    if camera.haze > 0:
        _, ys = _pixel_grid(height, width)
        weight = camera.haze * np.exp(-np.abs(ys - layout.camera.horizon) / (0.12 * height))  # H x 1
        image *= 1.0 - weight[..., None]
        image += (255.0 * camera.haze_colour * weight[..., None]).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), camera.blur_sigma)
    image += _sensor_noise(rng, height, width) * np.float32(255.0 * camera.noise_sigma)
    return image


def render_scene(domain: str, seed: int, size: tuple[int, int] = (128, 256)) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic street scene.

    The layout depends on ``seed`` alone, so ``render_scene("source", s)`` and
    ``render_scene("target", s)`` are the same scene (same label) painted in the two
    styles; the appearance randomness also depends on ``domain``.

    Args:
        domain: ``"source"`` or ``"target"``.
        seed: any non-negative integer.
        size: ``(H, W)`` in pixels, each at least 8.

    Returns:
        ``(image, label)``: uint8 H x W x 3 RGB and uint8 H x W Cityscapes train ids (0..18).
    """
    if domain not in STYLES:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    height, width = _check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    layout_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    paint_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, DOMAINS.index(domain)]))
    layout = generate_layout(layout_rng, (height, width))
    label = layout.label()
    style = STYLES[domain]
    image = _instance_colours(layout, style, paint_rng)[layout.ids]
    _apply_patterns(image, layout, style)
    shading = _shading(layout, label, style, paint_rng)
    # Global factors go into one 3-vector and per-pixel ones into the H x W shading, so the
    # H x W x 3 image is multiplied twice only.
    scale = np.full(3, 255.0 * paint_rng.uniform(*style.exposure), dtype=np.float32)
    effects = _target_effects(paint_rng, width) if domain == "target" else None
    if effects is not None:
        shading *= _light_map(layout, label, effects)
        scale *= effects.gain * effects.cast
    image *= shading[..., None]
    image *= scale
    if effects is not None:
        image = _lens_and_sensor(image, layout, effects, paint_rng)
    image += 0.5
    np.clip(image, 0.0, 255.0, out=image)
    gamma = 1.0 if effects is None else round(effects.gamma, 3)
    return _gamma_table(gamma)[image.astype(np.uint8)], label


@lru_cache(maxsize=64)
def _gamma_table(gamma: float) -> np.ndarray:
    """256-entry uint8 lookup table of ``255 (v / 255) ** gamma`` (read-only)."""
    table = np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    table.flags.writeable = False
    return table


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if height < 8 or width < 8 or (height, width) != tuple(size):
        raise ValueError(f"size must be two integers >= 8, got {tuple(size)}")
    return height, width


def scene_seed(seed: int, domain: str, split: str, index: int) -> int:
    """The :func:`render_scene` seed of sample ``index`` of ``(seed, domain, split)``.

    An injective packing of the four values, so distinct samples (train vs val, source
    vs target, two base seeds) never share a scene seed.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= index < 2**_INDEX_BITS:
        raise ValueError(f"index must be in [0, 2**{_INDEX_BITS}), got {index}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    tag = (seed * len(DOMAINS) + DOMAINS.index(domain)) * len(SPLITS) + SPLITS.index(split)
    return (tag << _INDEX_BITS) + index


# ------------------------------------------------------------------------- datasets
SYNTHETIC_INFOS = {
    domain: DatasetInfo(f"synthetic-{domain}", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE) for domain in DOMAINS
}


class SceneCache:
    """A process-wide LRU memory cache of drawn scenes, at most ``max_bytes`` of arrays.

    ``render(domain, seed, size)`` equals :func:`render_scene` (a pure function of its
    arguments) and returns fresh copies, so a transform that writes into its input cannot
    alter the cache.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._scenes: OrderedDict[tuple[str, int, tuple[int, int]], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scenes)

    def render(self, domain: str, seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        key = (domain, seed, tuple(size))
        scene = self._scenes.get(key)
        if scene is None:
            scene = render_scene(domain, seed, size)
            self._scenes[key] = scene
            self.bytes += scene[0].nbytes + scene[1].nbytes
            while self.bytes > self.max_bytes and len(self._scenes) > 1:
                _, (image, label) = self._scenes.popitem(last=False)
                self.bytes -= image.nbytes + label.nbytes
        else:
            self._scenes.move_to_end(key)
        return scene[0].copy(), scene[1].copy()

    def clear(self) -> None:
        self._scenes.clear()
        self.bytes = 0


#: The cache used by datasets built with ``cache=True`` (1 GiB: 30,000 scenes at 64 x 128).
SCENE_CACHE = SceneCache()


class SyntheticStreetDataset(SegmentationDataset):
    """Synthetic street scenes of one domain, drawn on the fly (nothing stored).

    Args:
        domain: ``"source"`` or ``"target"``.
        split: ``"train"`` or ``"val"`` (disjoint scene seeds).
        length: number of samples; None -> :data:`DEFAULT_LENGTHS` (train 2000, val 200).
        size: ``(H, W)`` of the images, default (128, 256).
        seed: base seed; sample ``i`` is ``render_scene(domain, scene_seed(seed, domain, split, i), size)``.
        transform: joint transform ``(image uint8 H x W x 3, label uint8 H x W) -> (image, label)``;
            None -> ImageNet normalisation only (``EvalTransform``).
        pseudo_label_dir: optional ``<name>.png`` pseudo labels replacing the label
            (the drawn label is then returned as ``"gt_label"``).
        cache: keep drawn scenes in a process-wide memory cache (:data:`SCENE_CACHE`,
            bounded in bytes), so that later epochs and other datasets of the same scenes
            (the demo's two runs) do not draw them again. Use it with ``num_workers: 0``:
            a DataLoader worker's cache dies with the worker.

    Sample: ``{"image": float32 3 x H x W, "label": int64 H x W (0..18),
    "name": "synthetic-target_val_000012"}`` (no ``/`` in names: pseudo-label files use them).
    """

    def __init__(
        self,
        domain: str,
        split: str = "train",
        length: int | None = None,
        size: Sequence[int] = (128, 256),
        seed: int = 0,
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
        cache: bool = False,
    ) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        if split not in SPLITS:
            raise ValueError(f"synthetic-{domain}: split must be one of {SPLITS}, got {split!r}")
        if length is None:
            length = DEFAULT_LENGTHS[split]
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 0 < length < 2**_INDEX_BITS:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        super().__init__(SYNTHETIC_INFOS[domain], transform, pseudo_label_dir)
        self.domain = domain
        self.split = split
        self.length = int(length)
        self.size = _check_size(size)
        self.seed = int(seed)
        if not isinstance(cache, bool):
            raise ValueError(f"cache must be true or false, got {cache!r}")
        self.cache = cache
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.length

    def scene_seed(self, index: int) -> int:
        """The :func:`render_scene` seed of sample ``index``."""
        return scene_seed(self.seed, self.domain, self.split, index)

    def sample_name(self, index: int) -> str:
        """``synthetic-<domain>_<split>_<index, zero-padded to 6 digits>``."""
        width = max(6, len(str(self.length - 1)))
        return f"synthetic-{self.domain}_{self.split}_{index:0{width}d}"

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # load_image and load_ground_truth are called back to back: draw the scene once.
        if self._cache is None or self._cache[0] != index:
            draw = SCENE_CACHE.render if self.cache else render_scene
            image, label = draw(self.domain, self.scene_seed(index), self.size)
            self._cache = (index, image, label)
        return self._cache[1], self._cache[2]

    def load_image(self, index: int) -> np.ndarray:
        """Sample ``index``'s image, uint8 H x W x 3 RGB."""
        return self._render(index)[0]

    def load_ground_truth(self, index: int) -> np.ndarray:
        """Sample ``index``'s label, uint8 H x W train ids."""
        return self._render(index)[1]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(domain={self.domain!r}, split={self.split!r}, length={self.length}, "
                f"size={self.size}, seed={self.seed})")


class SyntheticSourceDataset(SyntheticStreetDataset):
    """``synthetic-source``: the clean, game-like domain (see :class:`SyntheticStreetDataset`)."""

    def __init__(self, split: str = "train", length: int | None = None, size: Sequence[int] = (128, 256),
                 seed: int = 0, transform: JointTransform | None = None,
                 pseudo_label_dir: str | Path | PseudoLabelDir | None = None, cache: bool = False) -> None:
        super().__init__("source", split, length, size, seed, transform, pseudo_label_dir, cache)


class SyntheticTargetDataset(SyntheticStreetDataset):
    """``synthetic-target``: the camera-like domain (see :class:`SyntheticStreetDataset`)."""

    def __init__(self, split: str = "train", length: int | None = None, size: Sequence[int] = (128, 256),
                 seed: int = 0, transform: JointTransform | None = None,
                 pseudo_label_dir: str | Path | PseudoLabelDir | None = None, cache: bool = False) -> None:
        super().__init__("target", split, length, size, seed, transform, pseudo_label_dir, cache)
