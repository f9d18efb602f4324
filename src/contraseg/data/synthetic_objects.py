"""Object drawers of the synthetic street scenes: one function per kind of street object.

Vehicles (car, truck, bus, tram), people, riders on bicycles and motorcycles, poles,
traffic signs, traffic lights, street lamps and trees. Each ``_draw_*`` function
registers its parts on a :class:`~contraseg.data.synthetic_canvas.Canvas` and paints
them at a world position, drawing its own random sizes, paints and poses from the
generator it is given. :mod:`contraseg.data.synthetic_scenes` decides where objects
go and in which order they are painted.
"""

from __future__ import annotations

import numpy as np

from .synthetic_canvas import (
    BICYCLE, BUS, CAR, MOTORCYCLE, PERSON, POLE, RIDER, TRAFFIC_LIGHT, TRAFFIC_SIGN, TRAIN, TRUCK, VEGETATION,
    Camera, Canvas, Kind, Street, _box, _face_rect, _plane_quad, _wheels,
)

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
