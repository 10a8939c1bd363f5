"""Scene planning and frame drawing for the synthetic action videos.

A video is fully described by a :class:`VideoPlan` (timeline, actors, distractors, background
seed), sampled from one ``numpy`` generator. Rendering is a pure function of the plan, so the
same seed gives bit-identical frames, whichever process renders it.

What makes the task non-trivial (and closer to real video than moving dots on black):

* a textured background that drifts slowly (global motion the features must discount);
* distractor objects of the same shapes and colours as the actors, gliding at constant
  velocity with a slow turn the whole video long (motion that is never an action);
* a global brightness flicker (appearance change without motion);
* actors visible and idle between their instances (presence is not actionness);
* slow, class-agnostic onsets and offsets around the distinctive core (see ``actions``).

``clutter=False`` switches the background drift, distractors and flicker off: used by tests
that check the ground truth against raw frame differences.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from hamnet.demo.synth.actions import (
    ACTION_CLASSES,
    WOBBLE_FRAC,
    WOBBLE_HZ,
    Instance,
    class_pose,
    envelope,
    extent,
    sample_motion,
    wobble_envelope,
)

SHAPES = ("rect", "ellipse", "triangle", "cross", "diamond")
_SUBPIX = 4  # cv2 drawing with 4 fractional bits: smooth sub-pixel motion


@dataclass(frozen=True)
class SceneConfig:
    """How videos are sampled. Ranges are inclusive ``(low, high)``."""

    width: int = 160
    height: int = 120
    fps: float = 25.0
    duration: tuple[float, float] = (20.0, 40.0)
    classes: tuple[str, ...] = ACTION_CLASSES
    classes_per_video: tuple[int, int] = (1, 2)
    instances: tuple[int, int] = (2, 5)
    onset: tuple[float, float] = (0.8, 1.6)
    core: tuple[float, float] = (2.5, 6.0)
    offset: tuple[float, float] = (0.8, 1.6)
    min_gap: float = 1.5  # seconds between instances (and before the first / after the last)
    distractors: tuple[int, int] = (1, 3)
    clutter: bool = True

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in ACTION_CLASSES]
        if unknown or not self.classes:
            raise ValueError(f"unknown action classes {unknown}; known: {ACTION_CLASSES}")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"frame size {self.width}x{self.height} is too small (min 32x32)")
        if self.width % 2 or self.height % 2:
            raise ValueError("frame width and height must be even (yuv420p)")
        if not (0 < self.duration[0] <= self.duration[1]):
            raise ValueError(f"bad duration range {self.duration}")


@dataclass(frozen=True)
class Actor:
    shape: str
    color: tuple[int, int, int]
    accent: tuple[int, int, int]
    size: float  # half extent in px
    aspect: float  # width / height of the shape
    x: float  # rest position (px)
    y: float
    angle: float  # rest rotation (deg)


@dataclass(frozen=True)
class Distractor:
    shape: str
    color: tuple[int, int, int]
    accent: tuple[int, int, int]
    size: float
    aspect: float
    x: float
    y: float
    vx: float  # px/s, reflected at the frame border
    vy: float
    omega: float  # deg/s, slow
    angle: float


@dataclass(frozen=True)
class VideoPlan:
    name: str
    width: int
    height: int
    fps: float
    num_frames: int
    instances: tuple[Instance, ...]
    actors: tuple[Actor, ...]
    distractors: tuple[Distractor, ...] = ()
    background_seed: int = 0
    drift: tuple[float, float] = (0.0, 0.0)  # background velocity px/s
    sway: tuple[float, float, float] = (0.0, 20.0, 0.0)  # amplitude px, period s, phase
    flicker: tuple[float, float, float] = (0.0, 10.0, 0.0)  # amplitude, period s, phase
    clutter: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def labels(self) -> list[str]:
        return sorted({i.label for i in self.instances})

    def times(self) -> np.ndarray:
        return np.arange(self.num_frames, dtype=np.float64) / self.fps


# ----------------------------------------------------------------------------- planning


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated colour (HSV with random hue), so objects stand out from the duller
    background without any colour being tied to a class."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(float(rng.uniform()), float(rng.uniform(0.6, 1.0)), 1.0)
    v = float(rng.uniform(0.75, 1.0))
    return int(255 * r * v), int(255 * g * v), int(255 * b * v)


def _timeline(
    rng: np.random.Generator, cfg: SceneConfig, duration: float, labels: list[str]
) -> list[tuple[str, float, float, float, float]]:
    """Non-overlapping ``(label, start, onset, core, offset)`` with every label at least once."""
    n = int(rng.integers(cfg.instances[0], cfg.instances[1] + 1))
    n = max(n, len(labels))
    parts = [
        [
            float(rng.uniform(*cfg.onset)),
            float(rng.uniform(*cfg.core)),
            float(rng.uniform(*cfg.offset)),
        ]
        for _ in range(n)
    ]

    def room() -> float:
        return duration - sum(sum(p) for p in parts) - (len(parts) + 1) * cfg.min_gap

    while room() < 0 and len(parts) > len(labels):
        parts.pop()
    if room() < 0:  # too short for one instance per label at the sampled lengths: compress
        avail = duration - (len(parts) + 1) * cfg.min_gap
        factor = avail / sum(sum(p) for p in parts)
        if factor < 0.35:
            raise ValueError(
                f"a {duration:.1f} s video cannot hold {len(labels)} action instance(s); "
                "use longer videos or fewer classes per video"
            )
        parts = [[v * factor * (1 - 1e-9) for v in p] for p in parts]
    slack = rng.dirichlet(np.ones(len(parts) + 1)) * room()
    names = list(labels) + [str(rng.choice(labels)) for _ in range(len(parts) - len(labels))]
    order = rng.permutation(len(names))
    out = []
    t = 0.0
    for i, p in enumerate(parts):
        t += cfg.min_gap + float(slack[i])
        out.append((names[int(order[i])], t, p[0], p[1], p[2]))
        t += sum(p)
    return out


def plan_video(rng: np.random.Generator, cfg: SceneConfig, name: str) -> VideoPlan:
    """Sample one video: duration, classes, instance timeline, actors and clutter."""
    W, H = cfg.width, cfg.height
    num_frames = int(round(float(rng.uniform(*cfg.duration)) * cfg.fps))
    duration = num_frames / cfg.fps
    k = int(rng.integers(cfg.classes_per_video[0], cfg.classes_per_video[1] + 1))
    k = max(1, min(k, len(cfg.classes)))
    # A second class needs room for a second instance (~7 s with gaps at typical lengths).
    while k > 1 and duration < k * (sum(cfg.onset) + sum(cfg.core) + sum(cfg.offset)) / 2 * 0.6:
        k -= 1
    labels = [str(c) for c in rng.choice(cfg.classes, size=k, replace=False)]
    wobble = WOBBLE_FRAC * H

    actors: list[Actor] = []
    motion: dict[str, tuple[float, float]] = {}
    for label in labels:
        period, amp = sample_motion(label, rng, H)
        motion[label] = (period, amp)
        size = float(rng.uniform(0.09, 0.12) * H)
        x0, x1, y0, y1, smax = extent(label, amp, wobble)
        r = size * smax * 1.25 + 2.0
        best = None
        for _ in range(8):  # keep two actors apart: best of a few random rest positions
            lo_x, hi_x = r - x0, W - r - x1
            lo_y, hi_y = r - y0, H - r - y1
            x = float(rng.uniform(lo_x, hi_x)) if hi_x > lo_x else W / 2 - (x0 + x1) / 2
            y = float(rng.uniform(lo_y, hi_y)) if hi_y > lo_y else H / 2 - (y0 + y1) / 2
            d = min((math.hypot(x - a.x, y - a.y) for a in actors), default=1e9)
            if best is None or d > best[0]:
                best = (d, x, y)
        assert best is not None
        actors.append(
            Actor(
                shape=str(rng.choice(SHAPES)),
                color=_colour(rng),
                accent=_colour(rng),
                size=size,
                aspect=float(rng.uniform(1.5, 2.2)),  # elongated: rotation is visible
                x=best[1],
                y=best[2],
                angle=float(rng.uniform(0, 180)),
            )
        )

    instances = []
    for label, start, on, core, off in _timeline(rng, cfg, duration, labels):
        period, amp = motion[label]
        instances.append(
            Instance(
                label=label,
                start=start,
                onset=on,
                core=core,
                offset=off,
                period=period,
                amplitude=amp,
                direction=int(rng.choice([-1, 1])),
                actor=labels.index(label),
            )
        )

    distractors: list[Distractor] = []
    if cfg.clutter:
        for _ in range(int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))):
            speed = float(rng.uniform(0.04, 0.12) * H)  # px/s: slower than any action core
            th = float(rng.uniform(0, 2 * math.pi))
            distractors.append(
                Distractor(
                    shape=str(rng.choice(SHAPES)),
                    color=_colour(rng),
                    accent=_colour(rng),
                    size=float(rng.uniform(0.06, 0.1) * H),
                    aspect=float(rng.uniform(1.0, 2.0)),
                    x=float(rng.uniform(0, W)),
                    y=float(rng.uniform(0, H)),
                    vx=speed * math.cos(th),
                    vy=speed * math.sin(th),
                    omega=float(rng.uniform(-25, 25)),
                    angle=float(rng.uniform(0, 180)),
                )
            )
    th = float(rng.uniform(0, 2 * math.pi))
    drift_speed = float(rng.uniform(0.01, 0.05) * H) if cfg.clutter else 0.0
    return VideoPlan(
        name=name,
        width=W,
        height=H,
        fps=float(cfg.fps),
        num_frames=num_frames,
        instances=tuple(instances),
        actors=tuple(actors),
        distractors=tuple(distractors),
        background_seed=int(rng.integers(0, 2**31 - 1)),
        drift=(drift_speed * math.cos(th), drift_speed * math.sin(th)),
        sway=(
            float(rng.uniform(0, 0.04) * H) if cfg.clutter else 0.0,
            float(rng.uniform(8, 16)),
            float(rng.uniform(0, 2 * math.pi)),
        ),
        flicker=(
            float(rng.uniform(0.02, 0.06)) if cfg.clutter else 0.0,
            float(rng.uniform(3, 9)),
            float(rng.uniform(0, 2 * math.pi)),
        ),
        clutter=cfg.clutter,
    )


# ----------------------------------------------------------------------------- tracks


def actor_tracks(plan: VideoPlan) -> list[dict[str, np.ndarray]]:
    """Per-actor arrays over frames: ``x, y, angle, scale`` (absolute pose) and ``moving``
    (1 inside an instance of that actor). Vectorised over the whole video."""
    t = plan.times()
    dt = 1.0 / plan.fps
    wob = WOBBLE_FRAC * plan.height
    tracks = []
    for a_idx, actor in enumerate(plan.actors):
        dx = np.zeros_like(t)
        dy = np.zeros_like(t)
        ang = np.full_like(t, actor.angle)
        sc = np.ones_like(t)
        moving = np.zeros_like(t)
        for inst in plan.instances:
            if inst.actor != a_idx:
                continue
            env = envelope(inst, t)
            phi = np.cumsum(env) * dt / inst.period
            px, py, pa, ps = class_pose(inst.label, phi, env, inst.amplitude, inst.direction)
            w = wobble_envelope(inst, t) * wob
            dx += px + w * np.sin(2 * math.pi * WOBBLE_HZ * (t - inst.start))
            dy += py
            ang += pa
            sc *= ps
            moving = np.maximum(moving, ((t >= inst.start) & (t <= inst.end)).astype(float))
        tracks.append(
            {"x": actor.x + dx, "y": actor.y + dy, "angle": ang, "scale": sc, "moving": moving}
        )
    return tracks


def _reflect(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Position of a point gliding in [lo, hi] and bouncing elastically off both ends."""
    span = hi - lo
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


# ----------------------------------------------------------------------------- drawing


def _unit_polygon(shape: str, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Outline (unit half-height, x stretched by aspect) and the accent dot centre."""
    if shape == "rect":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    elif shape == "ellipse":
        th = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        pts = np.stack([np.cos(th), np.sin(th)], 1)
    elif shape == "triangle":
        pts = np.array([[-1, 1], [1, 0.0], [-1, -1]], float)
    elif shape == "cross":
        a, b = 1.0, 0.38
        pts = np.array(
            [
                [-a, -b],
                [-b, -b],
                [-b, -a],
                [b, -a],
                [b, -b],
                [a, -b],
                [a, b],
                [b, b],
                [b, a],
                [-b, a],
                [-b, b],
                [-a, b],
            ],
            float,
        )
    elif shape == "diamond":
        pts = np.array([[-1, 0], [0, -1], [1, 0], [0, 1]], float)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    pts = pts * np.array([aspect, 1.0])
    return pts, np.array([0.55 * aspect, 0.0])


def _draw(
    img: np.ndarray,
    shape: str,
    aspect: float,
    size: float,
    color,
    accent,
    x: float,
    y: float,
    angle: float,
    scale: float,
) -> None:
    import cv2

    pts, dot = _unit_polygon(shape, aspect)
    th = math.radians(angle)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    s = size * scale / max(aspect, 1.0) * 1.3
    poly = (pts * s) @ rot.T + np.array([x, y])
    c = (dot * s) @ rot.T + np.array([x, y])
    f = 1 << _SUBPIX
    cv2.fillPoly(img, [np.round(poly * f).astype(np.int32)], color, cv2.LINE_AA, _SUBPIX)
    cv2.circle(
        img,
        (int(round(c[0] * f)), int(round(c[1] * f))),
        int(round(0.35 * s * f)),
        accent,
        -1,
        cv2.LINE_AA,
        _SUBPIX,
    )


def _texture(plan: VideoPlan, margin: int) -> np.ndarray:
    """Background: multi-scale coloured noise plus a few soft strokes, muted so that the
    objects stand out. Generated from ``background_seed`` only."""
    import cv2

    rng = np.random.default_rng(plan.background_seed)
    h, w = plan.height + 2 * margin, plan.width + 2 * margin
    base = np.array(_colour(rng), float) * 0.35 + 60
    tex = np.zeros((h, w, 3), np.float32)
    for cell, amp in ((24, 40.0), (8, 22.0), (3, 10.0)):
        small = rng.normal(0, 1, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        tex += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    tex = tex.mean(axis=2, keepdims=True) * 0.7 + tex * 0.3 + base.astype(np.float32)
    if plan.clutter:
        for _ in range(int(h * w / 1500)):
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (p1[0] + int(rng.integers(-20, 21)), p1[1] + int(rng.integers(-20, 21)))
            cv2.line(
                tex,
                p1,
                p2,
                tuple(float(v) for v in base * rng.uniform(0.6, 1.5, 3)),
                1,
                cv2.LINE_AA,
            )
    return np.clip(tex, 0, 255).astype(np.uint8)


def render_frames(plan: VideoPlan) -> Iterator[np.ndarray]:
    """Yield the plan's frames, uint8 RGB ``[H, W, 3]``, one per ``1/fps`` second."""
    import cv2

    W, H = plan.width, plan.height
    t = plan.times()
    bx = plan.drift[0] * t + plan.sway[0] * np.sin(2 * math.pi * t / plan.sway[1] + plan.sway[2])
    by = plan.drift[1] * t + plan.sway[0] * np.cos(2 * math.pi * t / plan.sway[1] + plan.sway[2])
    margin = int(math.ceil(max(np.abs(bx).max(), np.abs(by).max()))) + 4
    tex = _texture(plan, margin)
    gain = 1.0 + plan.flicker[0] * np.sin(2 * math.pi * t / plan.flicker[1] + plan.flicker[2])
    tracks = actor_tracks(plan)
    dis = []
    for d in plan.distractors:
        dis.append(
            (
                _reflect(d.x + d.vx * t, -d.size, W + d.size),
                _reflect(d.y + d.vy * t, -d.size, H + d.size),
                d.angle + d.omega * t,
            )
        )
    cx0, cy0 = margin + (W - 1) / 2.0, margin + (H - 1) / 2.0
    for i in range(plan.num_frames):
        if plan.clutter:
            img = cv2.getRectSubPix(tex, (W, H), (cx0 + bx[i], cy0 + by[i]))
        else:
            img = tex[margin : margin + H, margin : margin + W].copy()
        for d, (xs, ys, angs) in zip(plan.distractors, dis, strict=True):
            _draw(img, d.shape, d.aspect, d.size, d.color, d.accent, xs[i], ys[i], angs[i], 1.0)
        for a, tr in zip(plan.actors, tracks, strict=True):
            _draw(
                img,
                a.shape,
                a.aspect,
                a.size,
                a.color,
                a.accent,
                tr["x"][i],
                tr["y"][i],
                tr["angle"][i],
                tr["scale"][i],
            )
        if gain[i] != 1.0:
            img = cv2.convertScaleAbs(img, alpha=float(gain[i]))
        yield img
