"""The weight-free motion backbone: contract, determinism, and that it measures motion (not the
camera, not appearance) well enough to tell the synthetic action classes apart."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from hamnet.demo.synth import ACTION_CLASSES, SceneConfig, make_plan, render_frames  # noqa: E402
from hamnet.errors import BundleError  # noqa: E402
from hamnet.video.backbone import Backbone, BackboneSpec, load_backbone  # noqa: E402
from hamnet.video.motion import (  # noqa: E402
    _BLOCKS,
    FEATURE_DIM,
    FEATURE_DIMS,
    MotionBackbone,
    default_spec,
)

MOTION = slice(0, FEATURE_DIM - _BLOCKS["appearance"] - _BLOCKS["diff_grid"])


def _snippets(label: str, seed: int, clutter: bool = True, core_only: bool = True):
    """Snippets of a one-instance video, resampled/resized as the default spec does."""
    spec = default_spec()
    cfg = SceneConfig(duration=(12.0, 12.0), classes=(label,), instances=(1, 1), clutter=clutter)
    plan = make_plan(seed, 0, cfg)
    step = int(round(plan.fps / spec.fps))
    frames = [
        cv2.resize(f, (128, 96), interpolation=cv2.INTER_AREA)
        for f in list(render_frames(plan))[::step]
    ]
    n = len(frames) // spec.snippet_frames
    x = np.stack(frames[: n * spec.snippet_frames]).reshape(n, spec.snippet_frames, 96, 128, 3)
    t = (np.arange(n) + 0.5) * spec.snippet_seconds
    inst = plan.instances[0]
    s, e = inst.core_span
    core = (t > s + 0.3) & (t < e - 0.3)
    idle = (t < inst.start - 0.4) | (t > inst.end + 0.4)
    return x, core, idle


def test_contract_and_default_spec():
    b = load_backbone("motion")
    assert isinstance(b, MotionBackbone) and isinstance(b, Backbone)
    assert b.provider == "numpy/opencv"
    # 416 since descriptor version 2 (the ``actor`` block); version 1 was 384
    assert b.feature_dim == FEATURE_DIM == b.spec.feature_dim == 416
    assert b.spec.version == "2"
    assert b.spec.name == "motion" and b.spec.files == {}
    # the spec survives a JSON round trip (it travels inside bundles) and rebuilds the same
    again = load_backbone(BackboneSpec.from_dict(b.spec.to_dict()))
    assert again.spec == b.spec
    with pytest.raises(BundleError, match="feature_dim"):
        MotionBackbone(BackboneSpec.from_dict({**b.spec.to_dict(), "feature_dim": 10}))
    with pytest.raises(BundleError, match="unknown option"):
        MotionBackbone(BackboneSpec.from_dict({**b.spec.to_dict(), "options": {"grid": 3}}))
    with pytest.raises(BundleError, match="version"):
        MotionBackbone(BackboneSpec.from_dict({**b.spec.to_dict(), "version": "9"}))


def test_version_1_bundles_keep_their_384_d_features():
    """A bundle built with descriptor version 1 (384-d) gets exactly version 2 without the
    ``actor`` block: old bundles keep working, with the features they were trained on."""
    x, core, _ = _snippets("spin", seed=3)
    x = x[core][:3]
    v2 = MotionBackbone()
    v1 = MotionBackbone(
        BackboneSpec.from_dict({**v2.spec.to_dict(), "version": "1", "feature_dim": 384})
    )
    assert v1.feature_dim == FEATURE_DIMS["1"] == 384
    with pytest.raises(BundleError, match="feature_dim must be 384"):
        MotionBackbone(BackboneSpec.from_dict({**v2.spec.to_dict(), "version": "1"}))
    names = list(_BLOCKS)
    a0 = sum(_BLOCKS[n] for n in names[: names.index("actor")])
    f1, f2 = v1.encode(x), v2.encode(x)
    assert f1.shape == (3, 384) and f2.shape == (3, 416)
    assert np.array_equal(f1, np.delete(f2, np.s_[a0 : a0 + _BLOCKS["actor"]], axis=1))
    assert np.abs(f2[:, a0 : a0 + _BLOCKS["actor"]]).max() > 0.01  # the actor moves


def test_actor_block_is_zero_without_fast_motion_and_tells_spin_from_slide():
    """The ``actor`` block is exactly 0 on idle clutter (distractors glide slower than the
    actor threshold) and separates rotation in place from translation: spin has the larger
    tangential flow about the actor's centre, slide the larger coherence |mean flow|/speed."""
    names = list(_BLOCKS)
    a0 = sum(_BLOCKS[n] for n in names[: names.index("actor")])
    b = MotionBackbone()
    core_feats = {}
    for label in ("spin", "slide"):
        x, core, idle = _snippets(label, seed=3)
        f = b.encode(np.concatenate([x[core][:4], x[idle][:2]]))[:, a0 : a0 + 32]
        assert np.abs(f[4:]).max() == 0.0
        core_feats[label] = f[:4].mean(0)
    kappa, tau = 0, 3  # coherence mean, |tangential|/speed mean
    assert core_feats["spin"][tau] > core_feats["slide"][tau]
    assert core_feats["slide"][kappa] > core_feats["spin"][kappa]


def test_shape_dtype_determinism_and_batch_independence():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 8, 60, 80, 3), dtype=np.uint8)
    b = MotionBackbone()
    f = b.encode(x)
    assert f.shape == (3, FEATURE_DIM) and f.dtype == np.float32
    assert np.isfinite(f).all()
    assert np.array_equal(f, MotionBackbone().encode(x))
    assert np.allclose(f[1], b.encode(x[1:2])[0])
    with pytest.raises(ValueError):
        b.encode(x[0])


def test_still_video_has_no_motion_and_camera_pan_is_discounted():
    """Identical frames give zero motion features; a pure global translation (camera pan)
    gives far less residual motion than an object moving over a still background."""
    rng = np.random.default_rng(1)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (140, 180, 3), dtype=np.uint8), (5, 5), 0)
    still = np.stack([tex[:96, :128]] * 8)[None]
    pan = np.stack([tex[:96, 3 * k : 3 * k + 128] for k in range(8)])[None]
    obj = []
    for k in range(8):
        img = tex[:96, :128].copy()
        cv2.rectangle(img, (20 + 5 * k, 40), (36 + 5 * k, 52), (255, 40, 40), -1)
        obj.append(img)
    obj = np.stack(obj)[None]
    b = MotionBackbone()
    f_still, f_pan, f_obj = (b.encode(v)[0, MOTION] for v in (still, pan, obj))
    assert np.abs(f_still).max() < 1e-6
    assert np.linalg.norm(f_obj) > 3 * np.linalg.norm(f_pan)


def test_actions_move_more_than_idle_clutter():
    for label in ("slide", "spin"):
        x, core, idle = _snippets(label, seed=3)
        f = MotionBackbone().encode(x)[:, MOTION]
        assert np.linalg.norm(f[core], axis=1).mean() > 1.5 * np.linalg.norm(f[idle], axis=1).mean()


def test_distinguishes_the_motion_patterns():
    """Leave-one-seed-out nearest-centroid classification of core snippets, one video per
    class and seed, with background drift and distractors: far above chance (1/6)."""
    b = MotionBackbone()
    feats, labels, seeds = [], [], []
    for ci, label in enumerate(ACTION_CLASSES):
        for seed in range(4):
            x, core, _ = _snippets(label, seed)
            f = b.encode(x[core])
            feats.append(f)
            labels += [ci] * len(f)
            seeds += [seed] * len(f)
    X, y, s = np.concatenate(feats), np.array(labels), np.array(seeds)
    correct = 0
    for held in range(4):
        tr, te = s != held, s == held
        cent = np.stack([X[tr & (y == c)].mean(0) for c in range(len(ACTION_CLASSES))])
        d = ((X[te][:, None, :] - cent[None]) ** 2).sum(-1)
        correct += int((d.argmin(1) == y[te]).sum())
    acc = correct / len(y)
    assert acc > 0.6, acc
