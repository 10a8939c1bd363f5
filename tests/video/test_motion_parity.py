"""The motion descriptor keeps computing the features existing bundles were trained on.

``motion_golden.npz`` holds features computed by the per-flow implementation of
:mod:`hamnet.video.motion` as released (commit 03f7a61, before the descriptor was vectorised
over the flows of a snippet for the pipelined extractor; regenerated from that commit's file
with ``--write --released``). Bundles record only the spec (version 1 or 2, flow method, work
height), so any change of these numbers would silently change what an old bundle sees. The
inputs are drawn here, deterministically, with numpy and OpenCV primitives (no codec, no
renderer that could change under the test), and cover: descriptor versions 1 and 2, Farneback
and DIS, a 4:3 and a 16:9 frame size whose work width needs rounding, and a still snippet.

Regenerate (only when a deliberate feature change comes with a new spec version)::

    python tests/video/test_motion_parity.py --write [--released]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from hamnet.video.motion import MotionBackbone, default_spec  # noqa: E402

GOLDEN = Path(__file__).with_name("motion_golden.npz")
# Float64 statistics summed in a different order (batched over the flows) may differ in the
# last bits; features are float32 of magnitude <= ~1, so 1e-5 is far below anything a head
# can see and far above reordering noise.
ATOL = 1e-5


def _scene(n_frames: int, w: int, h: int, seed: int) -> np.ndarray:
    """uint8 [n, h, w, 3] at 12.5 fps: a panning textured background with noise, a square
    sliding and reversing, a spinning bar and a pulsing disc (the kinds of motion the
    descriptor's blocks measure), drawn with numpy and OpenCV primitives only."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    texture = (60 + 40 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    frames = []
    for t in range(n_frames):
        bg = np.roll(texture, t // 2, axis=1)  # slow camera pan
        img = np.stack([bg, bg * 0.8 + 20, 120 - bg * 0.5], -1) + rng.normal(0, 3, (h, w, 3))
        img = np.clip(img, 0, 255).astype(np.uint8)
        x = 10 + (t * 4 if (t // 12) % 2 == 0 else 48 - (t % 12) * 4)  # slide, reverse
        cv2.rectangle(img, (x, 20), (x + 12, 32), (240, 220, 30), -1)
        a = t * 0.5  # spin
        cx, cy = w - 30, h // 2
        cv2.line(img, (int(cx - 14 * np.cos(a)), int(cy - 14 * np.sin(a))),
                 (int(cx + 14 * np.cos(a)), int(cy + 14 * np.sin(a))), (30, 230, 240), 3)
        r = int(8 + 5 * np.sin(t * 0.8))  # pulse
        cv2.circle(img, (w // 2, h - 22), r, (230, 40, 200), -1)
        frames.append(img)
    return np.stack(frames)


def _inputs() -> dict[str, np.ndarray]:
    """uint8 [N, 8, H, W, 3] snippets at the default spec's rate (12.5 fps)."""
    out = {}
    for key, (w, h) in (("43", (128, 96)), ("169", (171, 96))):
        out[key] = _scene(6 * 8, w, h, seed=7).reshape(6, 8, h, w, 3)
    out["still"] = np.repeat(out["43"][:1, :1], 8, axis=1)  # one frame repeated: no motion
    return out


def _backbones(module=None) -> dict:  # noqa: ANN001 - a motion module (default: the current)
    cls = module.MotionBackbone if module is not None else MotionBackbone
    spec = default_spec()
    return {
        "v2": cls(spec),
        "v1": cls(replace(spec, version="1", feature_dim=384)),
        "dis": cls(replace(spec, flow_method="dis")),
    }


def _released_module():  # noqa: ANN202
    """hamnet/video/motion.py as released (git show 03f7a61:...), imported under another name."""
    import importlib.util
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[2]
    src = subprocess.run(["git", "-C", str(root), "show",
                          "03f7a61:model/hamnet/video/motion.py"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    path = Path(tempfile.mkdtemp()) / "released_motion.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("released_motion", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _features(module=None) -> dict[str, np.ndarray]:  # noqa: ANN001
    inputs = _inputs()
    out = {}
    for bname, b in _backbones(module).items():
        for iname, x in inputs.items():
            if bname == "dis" and iname != "43":
                continue
            out[f"{bname}_{iname}"] = b.encode(x)
    return out


def test_features_match_the_released_descriptor() -> None:
    golden = dict(np.load(GOLDEN))
    got = _features()
    assert sorted(got) == sorted(golden)
    for key, ref in golden.items():
        assert got[key].shape == ref.shape, key
        diff = float(np.abs(got[key].astype(np.float64) - ref).max())
        assert diff <= ATOL, f"{key}: max |new - released| = {diff:.3g}"
    # The golden set is not trivial: the action snippets move, the still snippet does not.
    assert np.abs(golden["v2_43"]).max() > 0.1
    assert np.abs(golden["v2_still"][:, :348]).max() == 0.0


if __name__ == "__main__":
    if "--write" in sys.argv:
        np.savez_compressed(
            GOLDEN, **_features(_released_module() if "--released" in sys.argv else None))
        print(f"wrote {GOLDEN}")
