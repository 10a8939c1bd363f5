"""Closed-form I3D weights and inputs (numpy only) from the shared reference fixtures.

Why: the pretrained pytorch-i3d checkpoints cannot be shipped or downloaded here, yet the
network must be checked number for number. The reference (``shared/reference/i3d/README.md``)
defines deterministic weights and inputs by recipe and stores the reference model's outputs on
them, so a re-implementation that reproduces the recipe and then the outputs is the same
network. The recipe weights are random (He-uniform), **not** pretrained: features computed with
them are meaningless for recognition and are only good for parity tests and smoke tests.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from hamnet.errors import ConfigError
from hamnet.i3d.layout import KeySpec, state_dict_layout

SEED = 1705
STREAM_IDS = {"rgb": 0, "flow": 1}
STREAM_CHANNELS = {"rgb": 3, "flow": 2}


def _stream(stream: str) -> str:
    if stream not in STREAM_IDS:
        raise ConfigError(f"unknown I3D stream {stream!r}; expected 'rgb' or 'flow'")
    return stream


def recipe_constants(spec: KeySpec) -> tuple[float, float]:
    """(offset, bound) of a key: value = offset + bound * (2r - 1), computed in float64."""
    if spec.kind == "conv_weight":
        fan_in = math.prod(spec.shape[1:])
        return 0.0, math.sqrt(6.0 / fan_in)
    table = {
        "logits_weight": (0.0, math.sqrt(3.0 / 1024.0)),
        "logits_bias": (0.0, 0.1),
        "bn_weight": (1.0, 0.5),
        "bn_bias": (0.0, 0.1),
        "bn_running_mean": (0.0, 0.1),
        "bn_running_var": (1.0, 0.5),
    }
    if spec.kind not in table:
        raise ConfigError(f"no recipe for key kind {spec.kind!r} ({spec.key})")
    return table[spec.kind]


def recipe_tensor(stream: str, spec: KeySpec) -> np.ndarray:
    """The recipe value of one key (float32, or the int64 scalar 0 for num_batches_tracked)."""
    sid = STREAM_IDS[_stream(stream)]
    if spec.kind == "bn_num_batches_tracked":
        return np.zeros((), dtype=np.int64)
    offset, bound = recipe_constants(spec)
    # One generator per key, seeded by [SEED, stream, index]: any key can be rebuilt alone.
    r = np.random.default_rng([SEED, sid, spec.index]).random(spec.shape)  # float64, C order
    return (offset + bound * (2.0 * r - 1.0)).astype(np.float32)


def recipe_state_dict(
    stream: str, include_num_batches_tracked: bool = True
) -> dict[str, np.ndarray]:
    """All 344 (or 287 without ``num_batches_tracked``) recipe arrays of a stream, in order."""
    layout = state_dict_layout(STREAM_CHANNELS[_stream(stream)])
    return {
        s.key: recipe_tensor(stream, s)
        for s in layout
        if include_num_batches_tracked or not s.optional
    }


def sha256_le(array: np.ndarray) -> str:
    """SHA-256 of the raw little-endian C-order bytes (the fixture's ``sha256_le_bytes``)."""
    a = np.ascontiguousarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return hashlib.sha256(a.tobytes()).hexdigest()


def recipe_input(stream: str, frames: int = 16, size: int = 224) -> np.ndarray:
    """The deterministic test clip [1, C, T, size, size] float32 in [-1, 1].

    Both patterns move with t, so temporal kernels (and temporal padding) matter.
    """
    c_count = STREAM_CHANNELS[_stream(stream)]
    c = np.arange(c_count, dtype=np.float64)[:, None, None, None]  # [C,1,1,1]
    t = np.arange(frames, dtype=np.float64)[None, :, None, None]  # [1,T,1,1]
    v = (np.arange(size, dtype=np.float64) / 224.0)[None, None, :, None]  # rows  [1,1,H,1]
    u = (np.arange(size, dtype=np.float64) / 224.0)[None, None, None, :]  # cols  [1,1,1,W]
    two_pi = 2.0 * np.pi
    if stream == "rgb":
        x = (
            0.6
            * np.sin(two_pi * (3 * u + 2 * v - 0.05 * t) + 1.3 * c)
            * np.cos(two_pi * (1.5 * v + 0.03 * t) - 0.7 * c)
            + 0.3 * (2 * u - 1) * np.cos(0.2 * t + c)
            + 0.1 * np.sin(two_pi * 7 * u * v + 0.5 * c)
        )
    else:
        g = np.exp(-((u - 0.5 - 0.01 * t) ** 2 + (v - 0.5) ** 2) / 0.08)
        x = 0.8 * np.sin(two_pi * (2 * u - 0.04 * t) + 0.5 * np.pi * c) * g + 0.2 * np.cos(
            two_pi * (u + v) + 0.3 * t + c
        )
    return np.ascontiguousarray(x.astype(np.float32)[None])  # [1,C,T,H,W]
