"""The renderer of the synthetic benchmark: a layout painted in a domain's style.

:func:`render_scene` draws a layout (:mod:`contraseg.data.synthetic_scenes`) from the
seed, colours every instance from its per-id tables (:func:`_instance_colours`), adds
windows, fence slats and skyline floors (:func:`_apply_patterns`), multiplies by a
texture / sky-gradient shading, by the exposure and, in the target domain, by the
camera's light (vignetting, cast shadow), gain and colour cast, then applies haze,
lens blur, sensor noise and gamma. The styles and camera effects it applies live in
:mod:`contraseg.data.synthetic_styles`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

import cv2

from .synthetic_canvas import (
    BICYCLE, BUILDING, BUS, CAR, MOTORCYCLE, SKY, TRAFFIC_SIGN, TRAIN, TRUCK, Kind, SceneLayout,
)
from .synthetic_objects import NUM_PAINTS
from .synthetic_scenes import generate_layout
from .synthetic_styles import DOMAINS, STYLES, CameraEffects, DomainStyle, _target_effects


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
