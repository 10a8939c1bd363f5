"""Action classes of the synthetic videos: each class is a motion pattern of one foreground
object (the "actor"), not an appearance.

Why motion and not appearance: the point of the synthetic data set is to exercise weakly
supervised *temporal* localization. If a class could be recognised from a single frame (a red
square is always "spin"), HAM-Net would learn a colour detector and the temporal boundaries
would be trivial. So every class draws its actor from the same pool of shapes, colours and
sizes, and the actor is visible, idle, for the whole video; only *how it moves* tells the
classes apart.

An instance has three phases, like a real action:

* onset: a class-agnostic "wind-up" wobble fades in while the class motion starts slowly and
  with a small amplitude (weakly distinctive: it is motion, but not yet the class's motion);
* core: the class motion at full speed and amplitude (distinctive);
* offset: the mirror image of the onset.

The motion is driven by two smooth signals, the envelope ``env(t)`` in [0, 1] and the phase
``phi(t) = integral(env) / period``, so a slow onset means both a small amplitude and a low
speed. The annotated segment is the whole instance (onset start to offset end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ACTION_CLASSES: tuple[str, ...] = ("bounce", "spin", "slide", "orbit", "pulse", "zigzag")

# One line per class, for model cards: what class_pose below renders.
CLASS_DESCRIPTIONS = {
    "bounce": "the shape hops: repeated vertical arcs above where it rests",
    "spin": "the shape rotates in place",
    "slide": "the shape moves left and right at constant speed",
    "orbit": "the shape travels round a circle through where it rests",
    "pulse": "the shape grows and shrinks in place",
    "zigzag": "diagonal strokes: a slow sideways sweep with a fast up-and-down motion",
}

# Wind-up wobble of the onset/offset: frequency (Hz) and amplitude as a fraction of the frame
# height. Shared by all classes, so it signals "something starts" but not "what".
WOBBLE_HZ = 2.0
WOBBLE_FRAC = 0.03


@dataclass(frozen=True)
class Pose:
    """Offset of the actor from its rest pose: translation (px), rotation (deg), scale."""

    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class Instance:
    """One action instance: class, timing (seconds) and motion parameters."""

    label: str
    start: float  # onset start = annotated segment start
    onset: float  # seconds
    core: float
    offset: float
    period: float  # seconds per motion cycle at full speed
    amplitude: float  # px (translation classes) or relative scale change (pulse)
    direction: int  # +1 / -1: mirror or reverse the pattern
    actor: int  # index of the actor performing it

    @property
    def end(self) -> float:
        return self.start + self.onset + self.core + self.offset

    @property
    def core_span(self) -> tuple[float, float]:
        s = self.start + self.onset
        return s, s + self.core


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def envelope(inst: Instance, t: np.ndarray) -> np.ndarray:
    """Class-motion envelope: 0 outside the instance, smooth ramps over onset/offset."""
    u = t - inst.start
    up = _smoothstep(u / inst.onset)
    down = _smoothstep((inst.end - t) / inst.offset)
    return np.where((u >= 0) & (t <= inst.end), np.minimum(up, down), 0.0)


def wobble_envelope(inst: Instance, t: np.ndarray) -> np.ndarray:
    """Wind-up wobble: rises quickly at the onset start, gone by the core; mirrored at the end.

    It starts fast (0.25 s) so that the annotated start is where motion becomes visible."""
    u = t - inst.start
    v = inst.end - t
    rise_in = _smoothstep(u / 0.25)
    fall_in = 1.0 - _smoothstep((u - 0.25) / max(inst.onset - 0.25, 1e-3))
    rise_out = _smoothstep(v / 0.25)
    fall_out = 1.0 - _smoothstep((v - 0.25) / max(inst.offset - 0.25, 1e-3))
    w = np.maximum(np.minimum(rise_in, fall_in), np.minimum(rise_out, fall_out))
    return np.where((u >= 0) & (v >= 0), w, 0.0)


def _tri(x: np.ndarray) -> np.ndarray:
    """Triangle wave with period 1, range [-1, 1], tri(0) = 0 (constant speed back and forth)."""
    return 2.0 / math.pi * np.arcsin(np.sin(2.0 * math.pi * x))


def class_pose(label: str, phi: np.ndarray, env: np.ndarray, amp: float, direction: int):
    """Vectorised class motion: arrays ``(dx, dy, angle, scale)`` for phase ``phi`` (cycles)
    and envelope ``env``. At ``env = 0`` every class is at its rest pose except ``spin``,
    whose angle is accumulated (a spinning object does not snap back)."""
    a = env * amp
    zero = np.zeros_like(phi)
    one = np.ones_like(phi)
    tau = 2.0 * math.pi
    if label == "bounce":  # hops: vertical |sin| arcs above the rest position
        return zero, -a * np.abs(np.sin(math.pi * phi * 2.0)), zero, one
    if label == "spin":  # rotation in place; env scales angular speed through phi
        return zero, zero, direction * 360.0 * phi, one
    if label == "slide":  # constant-speed horizontal back and forth
        return 1.4 * a * _tri(phi) * direction, zero, zero, one
    if label == "orbit":  # circle through the rest position
        th = tau * phi
        return a * np.sin(th) * direction, -a * (1.0 - np.cos(th)), zero, one
    if label == "pulse":  # grow and shrink in place (amp is a relative scale change)
        return zero, zero, zero, 1.0 + env * amp * 0.5 * (1.0 - np.cos(tau * phi))
    if label == "zigzag":  # diagonal strokes: slow horizontal sweep, fast vertical triangle
        return (
            1.4 * a * _tri(phi / 4.0) * direction,
            0.5 * a * _tri(phi),
            zero,
            one,
        )
    raise ValueError(f"unknown action class {label!r}")


def sample_motion(label: str, rng: np.random.Generator, size: float) -> tuple[float, float]:
    """Random ``(period, amplitude)`` for a class; ``size`` = frame height in px."""
    period = float(rng.uniform(0.8, 1.3))
    if label == "pulse":
        return period, float(rng.uniform(0.6, 0.9))
    if label == "spin":
        return float(rng.uniform(0.7, 1.1)), 0.0
    return period, float(rng.uniform(0.16, 0.22) * size)


def extent(label: str, amp: float, wobble: float) -> tuple[float, float, float, float, float]:
    """Bounding box of the class motion at full envelope plus the wobble (px): ``(min dx,
    max dx, min dy, max dy, max scale)``; used to place the actor's rest pose so that the
    whole motion stays inside the frame."""
    phi = np.linspace(0.0, 4.0, 401)
    env = np.ones_like(phi)
    xs, ys, scales = [], [], []
    for d in (1, -1):
        dx, dy, _, sc = class_pose(label, phi, env, amp, d)
        xs.append(dx)
        ys.append(dy)
        scales.append(sc)
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    w = wobble
    return (
        float(x.min()) - w,
        float(x.max()) + w,
        float(y.min()),
        float(y.max()),
        float(np.concatenate(scales).max()),
    )
