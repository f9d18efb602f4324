"""Procedural street-scene layouts for the synthetic benchmark (geometry only, no colour).

A scene is a straight street seen by a pinhole camera one unit (~1.3 m) above the
ground: road in the middle, sidewalks, optional grass strips, facades (buildings,
walls, fences, tree lines) on both sides, a distant skyline, and street objects
(vehicles, people, riders, poles, signs, traffic lights, trees) at random depths.
A point at lateral offset ``X``, height ``h`` and depth ``z`` (world units) lands on
pixel ``x = cx + f X / z``, ``y = horizon + f (1 - h) / z``, so everything is scaled by
perspective and shrinks towards the horizon.

The layout is painted far to near (painter's algorithm) into an *instance* map:
every drawn part gets an id, and per-id tables give its Cityscapes train id, its
*kind* (glass, tyre, lamp, ...), a small integer *variant* and, for surfaces lying on
a plane ``X = const`` (facades, walls, fences), that plane's ``X``. The appearance of a
domain (``contraseg.data.synthetic``) is computed from these tables alone, so the
label statistics of the two domains are the same by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

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


# A deferred drawing call and the depth used to order it (far first).
_Op = tuple[float, Callable[[], None]]


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


#: Number of body paints a vehicle variant indexes (the appearance model's paint tables).
NUM_PAINTS = 8


def _paint(rng: np.random.Generator) -> int:
    """A random paint / garment index in ``[0, NUM_PAINTS)``."""
    return int(rng.integers(0, NUM_PAINTS))


def _draw_car(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, z: float) -> None:
    """A car seen from behind at ``(x, z)``: body box, narrower cabin, windows, tail lights, tyres."""
    width, height, length = rng.uniform(1.25, 1.45), rng.uniform(0.95, 1.2), rng.uniform(2.9, 3.6)
    body = 0.55 * height
    paint = _paint(rng)
    side_x = _box(canvas, cam, x, z, width, body, length, CAR, paint, h0=0.15)
    cabin_back = canvas.new(CAR, variant=paint)
    half = width / 2
    if side_x is not None:
        cabin_side = canvas.new(CAR, variant=paint, plane=side_x)
        zs = np.array([z + 0.1 * length, z + 0.95 * length, z + 0.8 * length, z + 0.3 * length])
        hs = np.array([body, body, height, height])
        xs, ys = cam.project(side_x, hs, zs)
        canvas.polygon(xs, ys, cabin_side)
        glass = canvas.new(CAR, Kind.GLASS, plane=side_x)
        zs = np.array([z + 0.22 * length, z + 0.85 * length, z + 0.76 * length, z + 0.34 * length])
        hs = np.array([body + 0.05, body + 0.05, height - 0.07, height - 0.07])
        xs, ys = cam.project(side_x, hs, zs)
        canvas.polygon(xs, ys, glass)
    xs, ys = cam.project(np.array([x - half * 0.92, x + half * 0.92, x + half * 0.7, x - half * 0.7]),
                         np.array([body, body, height, height]), z + 0.15 * length)
    canvas.polygon(xs, ys, cabin_back)
    rear_glass = canvas.new(CAR, Kind.GLASS)
    xs, ys = cam.project(np.array([x - half * 0.8, x + half * 0.8, x + half * 0.62, x - half * 0.62]),
                         np.array([body + 0.05, body + 0.05, height - 0.08, height - 0.08]), z + 0.15 * length)
    canvas.polygon(xs, ys, rear_glass)
    lamp = canvas.new(CAR, Kind.LAMP, variant=3)
    for edge in (x - half + 0.05, x + half - 0.3):
        _face_rect(canvas, cam, edge, edge + 0.25, body - 0.2, body - 0.08, z, lamp)
    _wheels(canvas, cam, x, z, width, length, side_x, CAR, 0.3)


def _draw_truck(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, z: float) -> None:
    """A truck seen from behind: raised cargo box, and on the visible side a lower cab and chassis."""
    width, height, length = rng.uniform(1.6, 1.85), rng.uniform(2.0, 2.6), rng.uniform(4.5, 7.0)
    cab = 1.7
    paint = _paint(rng)
    side_x = _box(canvas, cam, x, z, width, height, length - cab, TRUCK, paint, h0=0.45)
    if side_x is not None:
        cab_part = canvas.new(TRUCK, variant=_paint(rng), plane=side_x)
        _plane_quad(canvas, cam, side_x, z + length - cab, z + length, 0.4, 0.78 * height, cab_part)
        glass = canvas.new(TRUCK, Kind.GLASS, plane=side_x)
        _plane_quad(canvas, cam, side_x, z + length - cab + 0.2, z + length - 0.6, 0.5 * height, 0.72 * height, glass)
        chassis = canvas.new(TRUCK, Kind.TYRE, plane=side_x)
        _plane_quad(canvas, cam, side_x, z, z + length, 0.3, 0.45, chassis)
    lamp = canvas.new(TRUCK, Kind.LAMP, variant=3)
    half = width / 2
    for edge in (x - half + 0.05, x + half - 0.3):
        _face_rect(canvas, cam, edge, edge + 0.25, 0.5, 0.62, z, lamp)
    _wheels(canvas, cam, x, z, width, length, side_x, TRUCK, 0.38)


def _draw_bus(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, z: float, cls: int = BUS) -> None:
    """A bus (or, ``cls=TRAIN``, a longer tram with a pantograph): tall box with a window band."""
    if cls == TRAIN:
        width, height, length = rng.uniform(1.8, 2.0), rng.uniform(2.4, 2.8), rng.uniform(14.0, 26.0)
        h0 = 0.15
    else:
        width, height, length = rng.uniform(1.75, 1.95), rng.uniform(2.1, 2.5), rng.uniform(7.5, 11.0)
        h0 = 0.25
    paint = _paint(rng)
    side_x = _box(canvas, cam, x, z, width, height, length, cls, paint, h0=h0)
    half = width / 2
    glass = canvas.new(cls, Kind.GLASS)
    _face_rect(canvas, cam, x - half * 0.85, x + half * 0.85, 0.55 * height, 0.88 * height, z, glass)
    if side_x is not None:
        band = canvas.new(cls, Kind.GLASS, plane=side_x)
        _plane_quad(canvas, cam, side_x, z + 0.3, z + length - 0.3, 0.55 * height, 0.86 * height, band)
        pillar = canvas.new(cls, variant=paint, plane=side_x)
        step = rng.uniform(1.2, 2.0)
        zp = np.arange(z + 0.3 + step, z + length - 0.3, step)
        if zp.size:
            _plane_quad(canvas, cam, side_x, zp, zp + 0.15, 0.55 * height, 0.86 * height, pillar)
    if cls == TRAIN:
        pole = canvas.new(TRAIN, variant=paint)
        xs, ys = cam.project(np.array([x - 0.1, x + 0.35]), np.array([height, height + 0.45]), z + 1.5)
        canvas.line(xs[0], ys[0], xs[1], ys[1], max(cam.scale(z) * 0.06, 1.0), pole)
    else:
        _wheels(canvas, cam, x, z, width, length, side_x, cls, 0.38)
    lamp = canvas.new(cls, Kind.LAMP, variant=3 if cls == BUS else 6)
    for edge in (x - half + 0.08, x + half - 0.33):
        _face_rect(canvas, cam, edge, edge + 0.25, h0 + 0.15, h0 + 0.3, z, lamp)


def _draw_person(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, z: float, cls: int = PERSON,
                 foot_height: float = 0.0, seated: bool = False) -> None:
    """A pedestrian (or, ``seated``, a rider's body) standing at ``(x, z)``; side-agnostic silhouette."""
    s = cam.scale(z)
    height = rng.uniform(1.15, 1.4) * s
    fx, fy = cam.project(x, foot_height, z)
    fx, fy = float(fx), float(fy)
    width = rng.uniform(0.26, 0.34) * height
    facing = rng.choice([-1.0, 1.0])
    legs = canvas.new(cls, Kind.CLOTH, variant=_paint(rng))
    torso = canvas.new(cls, Kind.CLOTH, variant=_paint(rng))
    head = canvas.new(cls, Kind.SKIN, variant=int(rng.integers(0, 4)))
    hip = fy - 0.5 * height
    shoulder = fy - 0.82 * height
    limb = max(0.09 * height, 1.0)
    if seated:
        # Thighs forward to the pedals, shins down.
        knee_x, knee_y = fx + facing * 0.22 * height, hip + 0.05 * height
        canvas.line(fx, hip, knee_x, knee_y, limb, legs)
        canvas.line(knee_x, knee_y, knee_x - facing * 0.05 * height, fy, limb, legs)
        lean = facing * 0.12 * height
    else:
        stride = rng.uniform(0.0, 0.14) * height
        canvas.line(fx, hip, fx - stride, fy, limb, legs)
        canvas.line(fx, hip, fx + stride, fy, limb, legs)
        lean = 0.0
    xs = np.array([fx - width / 2, fx + width / 2, fx + width / 2 + lean, fx - width / 2 + lean])
    ys = np.array([hip, hip, shoulder, shoulder])
    canvas.polygon(xs, ys, torso)
    reach = facing * (0.3 if seated else 0.05) * height
    canvas.line(fx + lean, shoulder + 0.03 * height, fx + lean + reach, hip + 0.02 * height, max(0.06 * height, 1.0), torso)
    r = 0.075 * height
    canvas.ellipse(fx + lean, shoulder - 0.9 * r, r * 0.85, r, head)


def _draw_two_wheeler(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, z: float,
                      cls: int, with_rider: bool) -> None:
    """A bicycle or motorcycle in side view at ``(x, z)``, optionally ridden."""
    s = cam.scale(z)
    cx, gy = cam.project(x, 0.0, z)
    cx, gy = float(cx), float(gy)
    facing = rng.choice([-1.0, 1.0])
    radius = (0.27 if cls == BICYCLE else 0.24) * s
    base = (0.5 if cls == BICYCLE else 0.55) * s
    rear_x, front_x, hub_y = cx - facing * base, cx + facing * base, gy - radius
    if cls == BICYCLE:
        frame = canvas.new(BICYCLE, variant=_paint(rng))
        thick = max(0.045 * s, 1.0)
        for wx in (rear_x, front_x):
            canvas.ring(wx, hub_y, radius, thick, frame)
        seat_x, seat_y = cx - facing * 0.18 * s, gy - 0.85 * s
        bar_x, bar_y = front_x - facing * 0.1 * s, gy - 0.95 * s
        crank_x, crank_y = cx, hub_y
        for a, b in (((rear_x, hub_y), (crank_x, crank_y)), ((crank_x, crank_y), (seat_x, seat_y)),
                     ((seat_x, seat_y), (rear_x, hub_y)), ((seat_x, seat_y + 0.1 * s), (bar_x, bar_y + 0.12 * s)),
                     ((crank_x, crank_y), (bar_x, bar_y + 0.12 * s)), ((bar_x, bar_y), (front_x, hub_y))):
            canvas.line(a[0], a[1], b[0], b[1], thick, frame)
        seat_height = 0.85
    else:
        tyre = canvas.new(MOTORCYCLE, Kind.TYRE)
        body = canvas.new(MOTORCYCLE, variant=_paint(rng))
        for wx in (rear_x, front_x):
            canvas.ellipse(wx, hub_y, radius, radius, tyre)
        xs = np.array([rear_x - facing * 0.1 * s, cx - facing * 0.3 * s, front_x - facing * 0.15 * s,
                       front_x - facing * 0.2 * s, cx + facing * 0.1 * s, rear_x + facing * 0.05 * s])
        ys = np.array([gy - 0.6 * s, gy - 0.72 * s, gy - 0.85 * s, gy - 0.45 * s, gy - 0.3 * s, gy - 0.4 * s])
        canvas.polygon(xs, ys, body)
        canvas.line(front_x, hub_y, front_x - facing * 0.2 * s, gy - 1.0 * s, max(0.05 * s, 1.0), body)
        seat_height = 0.72
    if with_rider:
        _draw_person(canvas, cam, rng, x - facing * 0.15, z, cls=RIDER, foot_height=seat_height - 0.6, seated=True)


def _draw_pole(canvas: Canvas, cam: Camera, x: float, z: float, top: float, part: int, width: float = 0.1) -> None:
    xs, ys = cam.project(x, np.array([0.0, top]), z)
    canvas.line(xs[0], ys[0], xs[1], ys[1], max(width * cam.scale(z), 1.0), part)


def _draw_sign_post(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, z: float) -> None:
    """A pole with one or two traffic signs (disc, triangle or plate)."""
    top = rng.uniform(2.0, 2.9)
    _draw_pole(canvas, cam, x, z, top, canvas.new(POLE), width=0.07)
    s = cam.scale(z)
    for k in range(1 if rng.random() < 0.7 else 2):
        size = rng.uniform(0.45, 0.75) * s
        cx, cy = cam.project(x, top - k * 0.8, z)
        cx, cy = float(cx), float(cy) + 0.5 * size
        shape = int(rng.integers(0, 3))
        sign = canvas.new(TRAFFIC_SIGN, variant=shape)
        face = canvas.new(TRAFFIC_SIGN, Kind.MARKING)
        if shape == 0:
            canvas.ellipse(cx, cy, size / 2, size / 2, sign)
            canvas.ellipse(cx, cy, size * 0.33, size * 0.33, face)
        elif shape == 1:
            xs = cx + np.array([-0.55, 0.55, 0.0]) * size
            ys = cy + np.array([0.45, 0.45, -0.5]) * size
            canvas.polygon(xs, ys, sign)
            canvas.polygon(cx + (xs - cx) * 0.55, cy + (ys - cy) * 0.55 + 0.05 * size, face)
        else:
            canvas.polygon(cx + np.array([-0.6, 0.6, 0.6, -0.6]) * size, cy + np.array([-0.4, -0.4, 0.4, 0.4]) * size, sign)
            canvas.polygon(cx + np.array([-0.45, 0.45, 0.45, -0.45]) * size,
                           cy + np.array([-0.25, -0.25, 0.25, 0.25]) * size, face)


def _draw_light_box(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, bottom: float, z: float) -> None:
    """A traffic-light housing with three lamps, one of them lit."""
    box = canvas.new(TRAFFIC_LIGHT)
    width, height = 0.32, 0.85
    _face_rect(canvas, cam, x - width / 2, x + width / 2, bottom, bottom + height, z, box)
    lit = int(rng.integers(0, 3))
    s = cam.scale(z)
    for k in range(3):
        lamp = canvas.new(TRAFFIC_LIGHT, Kind.LAMP, variant=k + (3 if k == lit else 0))
        cx, cy = cam.project(x, bottom + height * (0.8 - 0.3 * k), z)
        canvas.ellipse(float(cx), float(cy), 0.09 * s, 0.09 * s, lamp)


def _draw_traffic_light(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, z: float,
                        street: Street) -> None:
    """A traffic light on a kerb pole, or hanging from a mast arm over the road."""
    pole = canvas.new(POLE)
    if rng.random() < 0.5:
        top = rng.uniform(4.2, 5.2)
        _draw_pole(canvas, cam, x, z, top, pole, width=0.12)
        reach = street.centre + rng.uniform(-0.5, 0.5) * street.road_half
        xs, ys = cam.project(np.array([x, reach]), top - 0.1, z)
        canvas.line(xs[0], ys[0], xs[1], ys[1], max(0.08 * cam.scale(z), 1.0), pole)
        _draw_light_box(canvas, cam, rng, reach, top - 1.0, z)
    else:
        top = rng.uniform(2.6, 3.4)
        _draw_pole(canvas, cam, x, z, top, pole, width=0.1)
        _draw_light_box(canvas, cam, rng, x, top - 0.55, z - 0.05)


def _draw_lamp_post(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, z: float, side: int) -> None:
    """A street lamp: tall pole with a short arm over the road (all pole)."""
    pole = canvas.new(POLE)
    top = rng.uniform(4.5, 6.5)
    _draw_pole(canvas, cam, x, z, top, pole, width=0.1)
    xs, ys = cam.project(np.array([x, x - side * 1.2]), np.array([top, top + 0.2]), z)
    canvas.line(xs[0], ys[0], xs[1], ys[1], max(0.08 * cam.scale(z), 1.0), pole)


def _draw_tree(canvas: Canvas, cam: Camera, rng: np.random.Generator, x: float, z: float) -> None:
    """A street tree: trunk and a crown of overlapping blobs (all vegetation)."""
    s = cam.scale(z)
    trunk = canvas.new(VEGETATION, Kind.TRUNK)
    crown_h = rng.uniform(2.2, 4.0)
    _draw_pole(canvas, cam, x, z, crown_h, trunk, width=0.18)
    crown = canvas.new(VEGETATION, variant=int(rng.integers(0, 4)))
    radius = rng.uniform(0.9, 1.8)
    cx, cy = cam.project(x, crown_h + 0.6 * radius, z)
    blobs = int(rng.integers(3, 6))
    offsets = rng.normal(0, 0.45 * radius * s, size=(blobs, 2))
    radii = rng.uniform(0.5, 0.9, size=blobs) * radius * s
    squash = rng.uniform(0.8, 1.1, size=blobs)
    for (ox, oy), r, q in zip(offsets.tolist(), radii.tolist(), squash.tolist()):
        canvas.ellipse(cx + ox, cy + oy, r, r * q, crown)


def _facade_ops(canvas: Canvas, cam: Camera, rng: np.random.Generator, street: Street, side: int) -> list[_Op]:
    """Buildings, walls, fences, tree lines and side streets along one side of the street."""
    ops: list[_Op] = []
    x_face = street.facade(side)
    z = 0.3
    while z < street.depth_end:
        # Far segments cover few pixels: let them grow with depth to keep the part count low.
        length = rng.uniform(3.0, 14.0) * max(1.0, z / 25.0)
        z1 = min(z + length, street.depth_end)
        r = rng.random()
        if r < 0.5:
            ops.append((z, _building_op(canvas, cam, rng, x_face, z, z1)))
        elif r < 0.66:
            ops.append((z, _treeline_op(canvas, cam, rng, x_face + side * 0.8, z, z1)))
        elif r < 0.8:
            behind = _building_op(canvas, cam, rng, x_face + side * 2.5, z - 1, z1 + 1) if rng.random() < 0.4 else \
                _treeline_op(canvas, cam, rng, x_face + side * 1.0, z, z1)
            ops.append((z + 0.01, behind))
            ops.append((z, _wall_op(canvas, cam, rng, x_face, z, z1, WALL)))
        elif r < 0.94:
            behind = _treeline_op(canvas, cam, rng, x_face + side * 1.5, z, z1)
            ops.append((z + 0.01, behind))
            ops.append((z, _wall_op(canvas, cam, rng, x_face, z, z1, FENCE)))
        else:
            z1 = min(z + rng.uniform(2.5, 5.0), street.depth_end)
            ops.append((z, _side_street_op(canvas, cam, x_face, side, z, z1)))
        z = z1
    return ops


def _building_op(canvas: Canvas, cam: Camera, rng: np.random.Generator, x_face: float, z0: float, z1: float):
    height = rng.uniform(3.0, 16.0)
    part = canvas.new(BUILDING, Kind.FACADE, variant=int(rng.integers(0, 4)), plane=x_face)

    def op() -> None:
        _plane_quad(canvas, cam, x_face, max(z0, 0.3), z1, 0.0, height, part)

    return op


def _treeline_op(canvas: Canvas, cam: Camera, rng: np.random.Generator, x_face: float, z0: float, z1: float):
    n = max(int((z1 - z0) / 1.5), 2)
    zs = np.linspace(max(z0, 0.3), z1, n)
    tops = rng.uniform(2.5, 6.0) + np.cumsum(rng.normal(0, 0.6, size=n))
    tops = np.clip(tops, 1.6, 9.0)
    part = canvas.new(VEGETATION, variant=int(rng.integers(0, 4)), plane=x_face)
    return lambda: _plane_profile(canvas, cam, x_face, zs, tops, part)


def _wall_op(canvas: Canvas, cam: Camera, rng: np.random.Generator, x_face: float, z0: float, z1: float, cls: int):
    height = rng.uniform(0.8, 2.2) if cls == WALL else rng.uniform(0.8, 1.6)
    kind = Kind.SLATS if cls == FENCE else Kind.PLAIN
    part = canvas.new(cls, kind, variant=int(rng.integers(0, 4)), plane=x_face)
    return lambda: _plane_quad(canvas, cam, x_face, max(z0, 0.3), z1, 0.0, height, part)


def _side_street_op(canvas: Canvas, cam: Camera, x_face: float, side: int, z0: float, z1: float):
    part = canvas.new(ROAD)
    return lambda: _ground_quad(canvas, cam, min(x_face, side * 400.0), max(x_face, side * 400.0), z0, z1, part)


def _skyline(canvas: Canvas, cam: Camera, rng: np.random.Generator) -> None:
    """A band of distant buildings and tree clumps sitting on the horizon."""
    x = -rng.uniform(0, 10)
    scale = canvas.height
    while x < canvas.width:
        w = rng.uniform(0.04, 0.16) * canvas.width
        h = rng.uniform(0.02, 0.16) * scale
        if rng.random() < 0.75:
            part = canvas.new(BUILDING, Kind.SKYLINE, variant=int(rng.integers(0, 4)))
            canvas.polygon(np.array([x, x + w, x + w, x]), cam.horizon + np.array([1.0, 1.0, -h, -h]), part)
        else:
            part = canvas.new(VEGETATION, variant=int(rng.integers(0, 4)))
            canvas.ellipse(x + w / 2, cam.horizon, w / 2, h * 0.7, part)
        x += w * rng.uniform(0.7, 1.1)


def _ground(canvas: Canvas, cam: Camera, rng: np.random.Generator, street: Street, with_tracks: bool) -> None:
    """Grass beyond the facades, grass strips, sidewalks, road, markings (all flat, drawn first)."""
    far = 1e4
    below = canvas.new(TERRAIN)
    canvas.polygon(np.array([-1.0, canvas.width + 1.0, canvas.width + 1.0, -1.0]),
                   np.array([cam.horizon, cam.horizon, canvas.height + 1.0, canvas.height + 1.0]), below)
    for side in (-1, 1):
        walk = canvas.new(SIDEWALK, variant=int(rng.integers(0, 4)))
        outer = street.sidewalk_outer(side)
        _ground_quad(canvas, cam, min(street.kerb(side), outer), max(street.kerb(side), outer), 0.05, far, walk)
        if street.grass[side > 0] > 0:
            grass = canvas.new(TERRAIN, variant=int(rng.integers(0, 4)))
            face = street.facade(side)
            _ground_quad(canvas, cam, min(outer, face), max(outer, face), 0.05, far, grass)
    road = canvas.new(ROAD, variant=int(rng.integers(0, 4)))
    _ground_quad(canvas, cam, street.kerb(-1), street.kerb(1), 0.05, far, road)
    if rng.random() < 0.15 and not with_tracks:
        median = canvas.new(TERRAIN)
        _ground_quad(canvas, cam, street.centre - 0.5, street.centre + 0.5, rng.uniform(1.0, 5.0), far, median)
    paint = canvas.new(ROAD, Kind.MARKING)
    dash, gap = rng.uniform(1.0, 2.5), rng.uniform(1.5, 4.0)
    start = rng.uniform(0, dash + gap)
    lines = [street.centre] if street.road_half > 2.6 else []
    for lateral in lines:
        z0 = np.arange(start, 60.0, dash + gap)
        _ground_quad(canvas, cam, lateral - 0.06, lateral + 0.06, z0, z0 + dash, paint)
    if rng.random() < 0.3:
        z0 = rng.uniform(3.0, 25.0)
        lateral = np.arange(street.kerb(-1) + 0.2, street.kerb(1) - 0.4, 0.9)
        _ground_quad(canvas, cam, lateral, lateral + 0.45, z0, z0 + 2.0, paint)
    if with_tracks:
        rail = canvas.new(ROAD, Kind.TYRE)
        lateral = street.centre + np.array([-0.75, 0.7])
        _ground_quad(canvas, cam, lateral, lateral + 0.05, 0.05, far, rail)


class _Lanes:
    """Keeps vehicles in the same lane from overlapping."""

    def __init__(self) -> None:
        self._taken: dict[int, list[tuple[float, float]]] = {}

    def free(self, lane: int, z0: float, z1: float) -> bool:
        """Whether depths ``[z0, z1]`` of ``lane`` are at least 0.8 units from every taken span."""
        return all(z1 + 0.8 < a or z0 > b + 0.8 for a, b in self._taken.get(lane, []))

    def take(self, lane: int, z0: float, z1: float) -> None:
        """Mark depths ``[z0, z1]`` of ``lane`` as occupied."""
        self._taken.setdefault(lane, []).append((z0, z1))


def _depth(rng: np.random.Generator, near: float, far: float) -> float:
    """A depth drawn log-uniformly in ``[near, far]`` (as many objects near as far, per octave)."""
    return float(near * math.exp(rng.uniform(0.0, math.log(far / near))))


def _street_object_ops(canvas: Canvas, cam: Camera, rng: np.random.Generator, street: Street,
                       near: float, with_train: bool) -> list[_Op]:
    """Vehicles, people, riders, poles, signs, lights and trees, each with its depth."""
    ops: list[_Op] = []
    lanes = _Lanes()
    half = street.road_half

    def add(z: float, fn: Callable[..., object], *args: object) -> None:
        ops.append((z, lambda: fn(canvas, cam, rng, *args)))

    def on_sidewalk(side: int, margin: float = 0.3) -> float:
        a, b = street.kerb(side), street.sidewalk_outer(side)
        lo, hi = min(a, b) + margin, max(a, b) - margin
        return float(rng.uniform(lo, hi)) if hi > lo else 0.5 * (a + b)

    if with_train:
        z = _depth(rng, near * 1.5, 40.0)
        lanes.take(0, z, z + 25.0)
        add(z, _draw_bus, street.centre, z, TRAIN)
    lane_offsets = {-2: -half + 0.8, -1: -half / 2, 1: half / 2, 2: half - 0.8}
    fleet = [(CAR, rng.poisson(4.0)), (TRUCK, rng.poisson(0.6)), (BUS, rng.poisson(0.45))]
    draw = {CAR: _draw_car, TRUCK: _draw_truck, BUS: _draw_bus}
    length = {CAR: 3.6, TRUCK: 7.0, BUS: 11.0}
    for cls, count in fleet:
        for _ in range(int(count)):
            for _try in range(4):
                lane = int(rng.choice([-2, -1, 1, 2]))
                z = _depth(rng, near * 1.3, 60.0)
                if lanes.free(lane, z, z + length[cls]) and not (with_train and abs(lane) == 1 and z < 45):
                    lanes.take(lane, z, z + length[cls])
                    x = street.centre + lane_offsets[lane] + rng.normal(0, 0.15)
                    add(z, draw[cls], x, z)
                    break
    for _ in range(int(rng.poisson(0.9))):
        cls = BICYCLE if rng.random() < 0.6 else MOTORCYCLE
        side = int(rng.choice([-1, 1]))
        z = _depth(rng, near, 40.0)
        x = street.kerb(side) - side * rng.uniform(0.4, 0.9)
        add(z, _draw_two_wheeler, x, z, cls, True)
    for _ in range(int(rng.poisson(0.6))):
        cls = BICYCLE if rng.random() < 0.6 else MOTORCYCLE
        side = int(rng.choice([-1, 1]))
        z = _depth(rng, near, 30.0)
        add(z, _draw_two_wheeler, on_sidewalk(side), z, cls, False)
    for _ in range(int(rng.poisson(3.0))):
        z = _depth(rng, near, 45.0)
        if rng.random() < 0.1:
            x = street.centre + rng.uniform(-half, half)
        else:
            x = on_sidewalk(int(rng.choice([-1, 1])))
        add(z, _draw_person, x, z)
    for side in (-1, 1):
        kerb_x = street.kerb(side) + side * 0.3
        if rng.random() < 0.75:
            spacing = rng.uniform(8.0, 20.0)
            for z in np.arange(rng.uniform(near, near + spacing), 55.0, spacing):
                add(float(z), _draw_lamp_post, kerb_x, float(z), side)
        if rng.random() < 0.5:
            spacing = rng.uniform(6.0, 12.0)
            x_tree = street.sidewalk_outer(side) - side * 0.6
            for z in np.arange(rng.uniform(near, near + spacing), 45.0, spacing):
                add(float(z) + 0.02, _draw_tree, x_tree, float(z))
    # Signs and lights hang above the camera: nearer than this, their top leaves the frame.
    above = cam.focal / cam.horizon
    for _ in range(int(rng.poisson(1.6))):
        side = int(rng.choice([-1, 1]))
        z = _depth(rng, max(near * 1.2, 2.2 * above), 35.0)
        add(z, _draw_sign_post, street.kerb(side) + side * 0.25, z)
    if rng.random() < 0.7:
        z = _depth(rng, max(near * 1.5, 3.5 * above), 40.0)
        for side in (-1, 1) if rng.random() < 0.5 else (int(rng.choice([-1, 1])),):
            add(z, _draw_traffic_light, street.kerb(side) + side * 0.3, z, street)
    return ops


def generate_layout(rng: np.random.Generator, size: tuple[int, int]) -> SceneLayout:
    """Draw one random street scene of ``size = (H, W)`` pixels.

    Returns:
        A :class:`SceneLayout` whose ``ids`` is H x W and whose tables describe every part.
    """
    height, width = size
    cam = Camera(
        focal=width * rng.uniform(0.8, 1.1),
        cx=width * rng.uniform(0.4, 0.6),
        horizon=height * rng.uniform(0.36, 0.5),
    )
    grass = tuple(float(rng.uniform(1.0, 4.0)) if rng.random() < 0.45 else 0.0 for _ in range(2))
    street = Street(
        centre=float(rng.uniform(-1.0, 1.0)),
        road_half=float(rng.uniform(2.2, 4.5)),
        sidewalk=(float(rng.uniform(1.2, 3.0)), float(rng.uniform(1.2, 3.0))),
        grass=grass,  # type: ignore[arg-type]
        depth_end=float(rng.uniform(60.0, 160.0)),
    )
    with_train = bool(rng.random() < 0.2)
    # Depth of the ground seen at the bottom row; nearer objects would be cut in half.
    near = cam.focal / (height - cam.horizon)
    canvas = Canvas(height, width)
    _skyline(canvas, cam, rng)
    _ground(canvas, cam, rng, street, with_tracks=with_train)
    ops = _facade_ops(canvas, cam, rng, street, -1) + _facade_ops(canvas, cam, rng, street, 1)
    for _, op in sorted(ops, key=lambda item: -item[0]):
        op()
    objects = _street_object_ops(canvas, cam, rng, street, near * 0.9, with_train)
    for _, op in sorted(objects, key=lambda item: -item[0]):
        op()
    return canvas.finish(cam)
