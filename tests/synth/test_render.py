"""The synthetic renderer: its ground truth must agree with the pixels it writes, and a seed
must fully determine the videos."""

from __future__ import annotations

import json

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("cv2")

from hamnet.demo.synth import (  # noqa: E402
    ACTION_CLASSES,
    SceneConfig,
    actor_tracks,
    make_plan,
    render_dataset,
    render_frames,
)


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _motion_energy(frames: np.ndarray, box=None) -> np.ndarray:
    """Mean absolute difference between consecutive frames (optionally inside a box),
    assigned to the later frame; frame 0 gets 0."""
    f = frames.astype(np.float32)
    if box is not None:
        x0, y0, x1, y1 = box
        f = f[:, y0:y1, x0:x1]
    e = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
    return np.concatenate([[0.0], e])


def _mask(times: np.ndarray, spans) -> np.ndarray:
    m = np.zeros(len(times), bool)
    for s, e in spans:
        m |= (times >= s) & (times <= e)
    return m


def test_gt_matches_pixels_without_clutter(tmp_path):
    """Without background drift and distractors, everything that moves is an actor: the
    decoded MP4 must move inside the annotated segments (strongly in their cores) and stay
    still outside them."""
    cfg = SceneConfig(duration=(14.0, 14.0), clutter=False, instances=(2, 3))
    gt = render_dataset(tmp_path, count=2, seed=11, cfg=cfg, subset="test")
    for name, entry in gt["database"].items():
        frames = _decode(tmp_path / "videos" / f"{name}.mp4")
        plan = make_plan(11, int(name.rsplit("_", 1)[1]), cfg)
        assert len(frames) == plan.num_frames
        assert frames.shape[1:] == (cfg.height, cfg.width, 3)
        assert entry["duration"] == pytest.approx(plan.duration, abs=1e-3)
        times = np.arange(len(frames)) / cfg.fps
        energy = _motion_energy(frames)
        segs = [a["segment"] for a in entry["annotations"]]
        inside = _mask(times, segs)
        cores = _mask(times, [i.core_span for i in plan.instances])
        # Leave 2 frames of slack at the annotated boundaries (rounding to 0.01 s).
        outside = ~_mask(times, [(s - 0.1, e + 0.1) for s, e in segs])
        assert outside.sum() > 25 and cores.sum() > 50
        assert energy[outside].max() < 0.2  # only compression noise
        assert energy[cores].mean() > 10 * max(energy[outside].mean(), 0.01)
        # every annotated instance moves, and its core moves more than its onset
        for inst in plan.instances:
            seg = _mask(times, [(inst.start, inst.end)])
            onset = _mask(times, [(inst.start, inst.start + inst.onset / 2)])
            core = _mask(times, [inst.core_span])
            assert energy[seg].mean() > 0.3
            assert energy[core].mean() > 1.5 * energy[onset].mean()
        assert inside.any()


def test_gt_matches_pixels_with_clutter(tmp_path):
    """With drift, flicker and distractors, the actor's own neighbourhood still moves much
    more during its annotated instances than between them."""
    cfg = SceneConfig(
        duration=(20.0, 20.0), classes_per_video=(1, 1), instances=(2, 2), distractors=(2, 2)
    )
    gt = render_dataset(tmp_path, count=1, seed=5, cfg=cfg)
    name = next(iter(gt["database"]))
    frames = _decode(tmp_path / "videos" / f"{name}.mp4")
    plan = make_plan(5, 0, cfg)
    (tr,) = actor_tracks(plan)
    pad = int(plan.actors[0].size * 2.5)
    box = (
        max(0, int(tr["x"].min()) - pad),
        max(0, int(tr["y"].min()) - pad),
        min(cfg.width, int(tr["x"].max()) + pad),
        min(cfg.height, int(tr["y"].max()) + pad),
    )
    times = np.arange(len(frames)) / cfg.fps
    energy = _motion_energy(frames, box)
    cores = _mask(times, [i.core_span for i in plan.instances])
    segs = [a["segment"] for a in gt["database"][name]["annotations"]]
    outside = ~_mask(times, segs)
    assert energy[cores].mean() > 2.0 * energy[outside].mean()
    assert energy[outside].mean() > 0  # the background really drifts / flickers


def test_outputs_and_labels_are_consistent(tmp_path):
    gt = render_dataset(tmp_path, count=3, seed=2, cfg=SceneConfig(duration=(12.0, 16.0)))
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels["classes"] == list(ACTION_CLASSES)
    assert json.loads((tmp_path / "gt.json").read_text()) == gt
    csv_rows = (tmp_path / "labels.csv").read_text().strip().splitlines()
    assert csv_rows[0] == "video,label"
    assert len(csv_rows) - 1 == sum(len(v) for v in labels["videos"].values())
    for name, entry in gt["database"].items():
        assert name.startswith("synth_2_")
        assert entry["subset"] == "test"
        anns = entry["annotations"]
        assert 1 <= len({a["label"] for a in anns}) <= 2
        assert sorted({a["label"] for a in anns}) == labels["videos"][name]
        bounds = [a["segment"] for a in anns]
        for (s, e), nxt in zip(bounds, bounds[1:] + [None], strict=True):
            assert 0 <= s < e <= entry["duration"]
            if nxt is not None:
                assert e < nxt[0]  # non-overlapping, sorted
    assert json.loads((tmp_path / "render.json").read_text())["seed"] == 2


def test_same_seed_same_frames_other_seed_other_frames(tmp_path):
    cfg = SceneConfig(duration=(6.0, 8.0), instances=(1, 2))
    gt_a = render_dataset(tmp_path / "a", count=2, seed=7, cfg=cfg)
    gt_b = render_dataset(tmp_path / "b", count=2, seed=7, cfg=cfg, workers=2)
    assert gt_a == gt_b
    for name in gt_a["database"]:
        fa = _decode(tmp_path / "a" / "videos" / f"{name}.mp4")
        fb = _decode(tmp_path / "b" / "videos" / f"{name}.mp4")
        assert np.array_equal(fa, fb)
    gt_c = render_dataset(tmp_path / "c", count=2, seed=8, cfg=cfg)
    assert not set(gt_c["database"]) & set(gt_a["database"])
    a0 = next(render_frames(make_plan(7, 0, cfg)))
    c0 = next(render_frames(make_plan(8, 0, cfg)))
    assert not np.array_equal(a0, c0)


@pytest.mark.parametrize("label", ACTION_CLASSES)
def test_each_class_has_its_own_motion(label):
    """The pose tracks realise the documented pattern of each class during its core."""
    cfg = SceneConfig(duration=(12.0, 12.0), classes=(label,), instances=(1, 1), clutter=False)
    plan = make_plan(0, 0, cfg)
    (tr,) = actor_tracks(plan)
    t = plan.times()
    core = _mask(t, [plan.instances[0].core_span])
    idle = tr["moving"] == 0
    dx, dy = np.ptp(tr["x"][core]), np.ptp(tr["y"][core])
    dang, dscale = np.ptp(tr["angle"][core]), np.ptp(tr["scale"][core])
    for key in ("x", "y", "scale"):
        assert np.ptp(tr[key][idle & (t < plan.instances[0].start)]) < 1e-9
    expect = {
        "bounce": dy > 10 and dx < 1e-6 and dang == 0,
        "spin": dang > 360 and dx < 1e-6 and dy < 1e-6,
        "slide": dx > 20 and dy < 1e-6,
        "orbit": dx > 10 and dy > 10 and dang == 0,
        "pulse": dscale > 0.4 and dx < 1e-6 and dy < 1e-6,
        "zigzag": dx > 20 and dy > 8 and dang == 0,
    }
    assert expect[label], (label, dx, dy, dang, dscale)
    # the actor stays inside the frame
    assert tr["x"].min() > 0 and tr["x"].max() < cfg.width
    assert tr["y"].min() > 0 and tr["y"].max() < cfg.height
