"""Procedural street-scene layouts for the synthetic benchmark (geometry only, no colour).

A scene is a straight street seen by a pinhole camera one unit (~1.3 m) above the
ground: road in the middle, sidewalks, optional grass strips, facades (buildings,
walls, fences, tree lines) on both sides, a distant skyline, and street objects
(vehicles, people, riders, poles, signs, traffic lights, trees) at random depths.

This module draws the random layout -- the street, its ground, facades and skyline,
where each street object stands -- and paints it far to near (painter's algorithm)
into an instance map. The camera, the instance map and the drawing primitives live in
:mod:`contraseg.data.synthetic_canvas`, the drawers of single street objects in
:mod:`contraseg.data.synthetic_objects`; the names of both that describe a layout
(train ids, :class:`Kind`, :class:`Camera`, :class:`SceneLayout`, ...) are re-exported
here. The appearance of a domain (``contraseg.data.synthetic``) is computed from the
layout's per-id tables alone, so the label statistics of the two domains are the same
by construction.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .synthetic_canvas import (
    BICYCLE, BUILDING, BUS, CAR, FENCE, MOTORCYCLE, NUM_SCENE_CLASSES, PERSON, POLE, RIDER, ROAD, SIDEWALK, SKY,
    TERRAIN, TRAFFIC_LIGHT, TRAFFIC_SIGN, TRAIN, TRUCK, VEGETATION, WALL, Camera, Canvas, Kind, SceneLayout, Street,
    _ground_quad, _plane_profile, _plane_quad,
)
from .synthetic_objects import (
    NUM_PAINTS, _draw_bus, _draw_car, _draw_lamp_post, _draw_person, _draw_sign_post, _draw_traffic_light, _draw_tree,
    _draw_truck, _draw_two_wheeler,
)

__all__ = [
    "ROAD", "SIDEWALK", "BUILDING", "WALL", "FENCE", "POLE", "TRAFFIC_LIGHT", "TRAFFIC_SIGN", "VEGETATION", "TERRAIN",
    "SKY", "PERSON", "RIDER", "CAR", "TRUCK", "BUS", "TRAIN", "MOTORCYCLE", "BICYCLE", "NUM_SCENE_CLASSES",
    "NUM_PAINTS", "Kind", "Camera", "SceneLayout", "Canvas", "Street", "generate_layout",
]

# A deferred drawing call and the depth used to order it (far first).
_Op = tuple[float, Callable[[], None]]


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
