"""Geometry and rasterising layer of the synthetic street scenes (no randomness, no colour).

Holds the scene vocabulary (Cityscapes train ids, :class:`Kind`), the pinhole
:class:`Camera`, the :class:`Canvas` a scene is painted into and the
:class:`SceneLayout` it yields, the street's lateral geometry (:class:`Street`), and
the drawing primitives (ground and plane rectangles, boxes, wheels) used by the
object drawers (:mod:`contraseg.data.synthetic_objects`) and the layout generator
(:mod:`contraseg.data.synthetic_scenes`).

The camera sits one unit (~1.3 m) above flat ground, looking along +z. A point at
lateral offset ``X``, height ``h`` and depth ``z`` (world units) lands on pixel
``x = cx + f X / z``, ``y = horizon + f (1 - h) / z``, so everything is scaled by
perspective and shrinks towards the horizon.

The canvas is an *instance* map: every drawn part gets an id, and per-id tables give
its Cityscapes train id, its *kind* (glass, tyre, lamp, ...), a small integer
*variant* and, for surfaces lying on a plane ``X = const`` (facades, walls, fences),
that plane's ``X``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import cv2

# Cityscapes train ids.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = range(8)
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(8, 19)
NUM_SCENE_CLASSES = 19


class Kind:
    """Material of a drawn part; the appearance model colours each kind its own way."""

    PLAIN = 0  # the class colour
    FACADE = 1  # a building face on a plane X = const (gets windows)
    SLATS = 2  # a fence on a plane X = const (gets vertical slats)
    GLASS = 3
    TYRE = 4
    LAMP = 5  # variant: 0 red, 1 amber, 2 green; +3 when lit; 6 white headlight
    SKIN = 6
    CLOTH = 7  # clothes of people and riders (variant picks the garment, < NUM_PAINTS)
    MARKING = 8  # white paint: lane marks, zebra crossings, sign faces
    TRUNK = 9
    SKYLINE = 10  # a distant building of the skyline
    COUNT = 11


#: Supersampling of cv2 drawing coordinates (``shift`` argument): 1/16 pixel.
_SHIFT = 4
_ONE = 1 << _SHIFT
_MAX_PARTS = 65535  # ids are uint16


@dataclass(frozen=True)
class Camera:
    """Pinhole camera one unit above flat ground, looking along +z.

    ``focal`` and ``cx`` (vanishing-point column) and ``horizon`` (row) are in pixels.
    """

    focal: float
    cx: float
    horizon: float

    def project(self, x_world: np.ndarray | float, height: np.ndarray | float, depth: np.ndarray | float):
        """World ``(X, h, z)`` -> pixel ``(x, y)``; floats or numpy arrays, broadcast together."""
        inverse = self.focal / depth
        x = self.cx + x_world * inverse
        y = self.horizon + (1.0 - height) * inverse
        if np.shape(x) != np.shape(y):
            x, y = x + 0.0 * y, y + 0.0 * x  # broadcast together (cheaper than np.broadcast_arrays)
        return x, y

    def scale(self, depth: float) -> float:
        """Pixels per world unit at ``depth``."""
        return self.focal / depth


@dataclass
class SceneLayout:
    """A painted layout.

    Attributes:
        ids: H x W uint16 instance map (0 is the sky).
        classes: N int64, train id of each instance.
        kinds: N int64, :class:`Kind` of each instance.
        variants: N int64, small per-instance integer (lamp colour, garment, ...).
        planes: N float64, lateral ``X`` of the instance's plane, NaN when it has none.
        camera: the camera that projected the scene.
    """

    ids: np.ndarray
    classes: np.ndarray
    kinds: np.ndarray
    variants: np.ndarray
    planes: np.ndarray
    camera: Camera

    def label(self) -> np.ndarray:
        """H x W uint8 train-id map."""
        return self.classes.astype(np.uint8)[self.ids]


class Canvas:
    """An instance map with one id per drawn part and its per-id tables."""

    def __init__(self, height: int, width: int) -> None:
        self.ids = np.zeros((height, width), dtype=np.uint16)
        self.classes: list[int] = [SKY]
        self.kinds: list[int] = [Kind.PLAIN]
        self.variants: list[int] = [0]
        self.planes: list[float] = [math.nan]

    @property
    def width(self) -> int:
        """W in pixels."""
        return self.ids.shape[1]

    @property
    def height(self) -> int:
        """H in pixels."""
        return self.ids.shape[0]

    def new(self, cls: int, kind: int = Kind.PLAIN, variant: int = 0, plane: float = math.nan) -> int:
        """Register a part and return its id."""
        if len(self.classes) > _MAX_PARTS:
            raise ValueError(f"scene has more than {_MAX_PARTS} parts")
        self.classes.append(cls)
        self.kinds.append(kind)
        self.variants.append(variant)
        self.planes.append(plane)
        return len(self.classes) - 1

    def polygon(self, xs: np.ndarray, ys: np.ndarray, part: int) -> None:
        """Fill the polygon with pixel vertices ``(xs[i], ys[i])``."""
        # Scene coordinates stay far below 2**31 / 16 (|X| <= 400 units at depth >= 0.05).
        pts = np.array((xs, ys)).T * _ONE
        cv2.fillPoly(self.ids, [pts.astype(np.int32)], int(part), lineType=cv2.LINE_8, shift=_SHIFT)

    def polygons(self, xs: np.ndarray, ys: np.ndarray, part: int) -> None:
        """Fill M polygons at once: ``xs``, ``ys`` are M x n pixel vertices (non-overlapping shapes)."""
        # Scene coordinates stay far below 2**31 / 16 (|X| <= 400 units at depth >= 0.05).
        pts = np.empty(xs.shape + (2,), dtype=np.float64)
        pts[..., 0] = xs
        pts[..., 1] = ys
        pts *= _ONE
        cv2.fillPoly(self.ids, list(pts.astype(np.int32)), int(part), lineType=cv2.LINE_8, shift=_SHIFT)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, part: int, angle: float = 0.0) -> None:
        """Fill an ellipse (centre and semi-axes in pixels, ``angle`` in degrees)."""
        centre = (int(round(cx * _ONE)), int(round(cy * _ONE)))
        axes = (max(int(round(rx * _ONE)), 1), max(int(round(ry * _ONE)), 1))
        cv2.ellipse(self.ids, centre, axes, angle, 0, 360, int(part), -1, cv2.LINE_8, _SHIFT)

    def ring(self, cx: float, cy: float, radius: float, thickness: float, part: int) -> None:
        """Draw a circle outline at least one pixel thick."""
        centre = (int(round(cx * _ONE)), int(round(cy * _ONE)))
        cv2.circle(self.ids, centre, max(int(round(radius * _ONE)), 1), int(part),
                   max(int(round(thickness)), 1), cv2.LINE_8, _SHIFT)

    def line(self, x0: float, y0: float, x1: float, y1: float, thickness: float, part: int) -> None:
        """Draw a segment at least one pixel thick."""
        p0 = (int(round(x0 * _ONE)), int(round(y0 * _ONE)))
        p1 = (int(round(x1 * _ONE)), int(round(y1 * _ONE)))
        cv2.line(self.ids, p0, p1, int(part), max(int(round(thickness)), 1), cv2.LINE_8, _SHIFT)

    def finish(self, camera: Camera) -> SceneLayout:
        """The painted map and its per-id tables as a :class:`SceneLayout`."""
        return SceneLayout(
            ids=self.ids,
            classes=np.asarray(self.classes, dtype=np.int64),
            kinds=np.asarray(self.kinds, dtype=np.int64),
            variants=np.asarray(self.variants, dtype=np.int64),
            planes=np.asarray(self.planes, dtype=np.float64),
            camera=camera,
        )


@dataclass(frozen=True)
class Street:
    """Lateral geometry of the street (world units, X grows to the right)."""

    centre: float  # road centre
    road_half: float
    sidewalk: tuple[float, float]  # widths, left and right
    grass: tuple[float, float]  # grass strip widths between sidewalk and facade (0 = none)
    depth_end: float  # where the facades stop

    def kerb(self, side: int) -> float:
        """X of the kerb on ``side`` (-1 left, +1 right)."""
        return self.centre + side * self.road_half

    def sidewalk_outer(self, side: int) -> float:
        """X of the sidewalk's outer edge on ``side``."""
        return self.kerb(side) + side * self.sidewalk[side > 0]

    def facade(self, side: int) -> float:
        """X of the facade plane on ``side`` (beyond the optional grass strip)."""
        return self.sidewalk_outer(side) + side * self.grass[side > 0]


def _ground_quad(canvas: Canvas, cam: Camera, x0, x1, z0, z1, part: int) -> None:
    """Fill the ground rectangle(s) ``x0 <= X <= x1, z0 <= z <= z1`` (scalars or length-M arrays)."""
    x0, x1, z0, z1 = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x0, x1, z0, z1)))
    xs, ys = cam.project(np.stack([x0, x1, x1, x0], -1), 0.0, np.stack([z0, z0, z1, z1], -1))
    canvas.polygons(xs, ys, part)


def _plane_quad(canvas: Canvas, cam: Camera, x_plane: float, z0, z1, h0: float, h1: float, part: int) -> None:
    """Fill the vertical rectangle(s) ``X = x_plane, z0 <= z <= z1, h0 <= h <= h1`` (``z0``, ``z1`` may be arrays)."""
    z0, z1 = np.broadcast_arrays(np.atleast_1d(np.asarray(z0, dtype=np.float64)), np.asarray(z1, dtype=np.float64))
    xs, ys = cam.project(x_plane, np.array([h0, h0, h1, h1]), np.stack([z0, z1, z1, z0], -1))
    canvas.polygons(xs, ys, part)


def _plane_profile(canvas: Canvas, cam: Camera, x_plane: float, zs: np.ndarray, tops: np.ndarray, part: int) -> None:
    """Fill the region of plane ``X = x_plane`` between the ground and a top profile."""
    xs_top, ys_top = cam.project(x_plane, tops, zs)
    xs_bot, ys_bot = cam.project(x_plane, 0.0, zs[::-1])
    canvas.polygon(np.concatenate([xs_top, xs_bot]), np.concatenate([ys_top, ys_bot]), part)


def _box(canvas: Canvas, cam: Camera, x: float, z: float, width: float, height: float, length: float,
         cls: int, paint: int, h0: float = 0.0) -> float | None:
    """A box from depth ``z`` to ``z + length`` centred on ``x``; draws the inner side then the near face.

    ``paint`` is the body's variant (its colour index). Returns the X of the visible
    side, or None when the side is hidden (the box is straight ahead).
    """
    half = width / 2
    side_x = None
    if abs(x) > half:
        side_x = x - math.copysign(half, x)
        _plane_quad(canvas, cam, side_x, z, z + length, h0, height, canvas.new(cls, variant=paint, plane=side_x))
    face = canvas.new(cls, variant=paint)
    xs, ys = cam.project(np.array([x - half, x + half, x + half, x - half]), np.array([h0, h0, height, height]), z)
    canvas.polygon(xs, ys, face)
    return side_x


def _face_rect(canvas: Canvas, cam: Camera, x0: float, x1: float, h0: float, h1: float, z: float, part: int) -> None:
    """Fill a rectangle on the plane facing the camera at depth ``z``."""
    xs, ys = cam.project(np.array([x0, x1, x1, x0]), np.array([h0, h0, h1, h1]), z)
    canvas.polygon(xs, ys, part)


def _wheels(canvas: Canvas, cam: Camera, x: float, z: float, width: float, length: float,
            side_x: float | None, cls: int, radius: float) -> None:
    """Dark tyres under the near face and, when the side shows, along the side."""
    tyre = canvas.new(cls, Kind.TYRE)
    half = width / 2
    for edge in (x - half, x + half - 0.3):
        _face_rect(canvas, cam, edge, edge + 0.3, 0.0, radius * 1.2, z, tyre)
    if side_x is not None:
        for zc in (z + 0.8 * radius + 0.2, z + length - 0.8 * radius - 0.2):
            xs, ys = cam.project(side_x, np.array([0.0, 0.0, 2 * radius, 2 * radius]),
                                 np.array([zc - radius, zc + radius, zc + radius, zc - radius]))
            canvas.polygon(xs, ys, tyre)
