"""Calibrated confidence: matching, pool-adjacent-violators, the stored map, ECE."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hamnet import calibration as cal_mod
from hamnet.calibration import fit_isotonic, pav, reliability, true_detections
from hamnet.errors import BundleError, DataError


def seg(label: str, score: float, s: float, e: float) -> dict:
    return {"label": label, "score": score, "start": s, "end": e}


def test_true_detections_greedy_by_score_each_gt_once() -> None:
    gt = [{"label": "a", "segment": [10.0, 20.0]}, {"label": "b", "segment": [30.0, 40.0]}]
    segs = [
        seg("a", 0.5, 10.0, 19.0),  # tIoU 0.9, but ranked 2nd: the GT is already taken
        seg("a", 0.9, 11.0, 20.0),  # tIoU 0.9, ranked first: true
        seg("b", 0.7, 30.0, 34.0),  # tIoU 0.4 < 0.5: false
        seg("a", 0.8, 30.0, 40.0),  # wrong class: false
        seg("b", 0.6, 31.0, 40.0),  # tIoU 0.9: true (the 0.4 one did not take the GT)
    ]
    assert true_detections(segs, gt).tolist() == [False, True, False, False, True]
    assert true_detections(segs, []).tolist() == [False] * 5
    # ANet result form ("segment": [s, e]) works the same
    anet = [{"label": s["label"], "score": s["score"], "segment": [s["start"], s["end"]]}
            for s in segs]
    assert true_detections(anet, gt).tolist() == [False, True, False, False, True]


def test_label_results_needs_ground_truth() -> None:
    gt = {"database": {"v": {"annotations": [{"label": "a", "segment": [0, 1]}]}}}
    scores, labels = cal_mod.label_results({"v": [seg("a", 0.3, 0, 1)]}, gt)
    assert scores.tolist() == [0.3] and labels.tolist() == [True]
    with pytest.raises(DataError, match="'w' has no ground truth"):
        cal_mod.label_results({"w": []}, gt)


def _slow_pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Reference isotonic fit: repeatedly pool the first adjacent violating pair."""
    blocks = [[float(v), float(x), 1] for v, x in zip(y, w, strict=True)]
    changed = True
    while changed:
        changed = False
        for i in range(len(blocks) - 1):
            if blocks[i][0] > blocks[i + 1][0]:
                a, b = blocks[i], blocks[i + 1]
                wt = a[1] + b[1]
                blocks[i : i + 2] = [[(a[0] * a[1] + b[0] * b[1]) / wt, wt, a[2] + b[2]]]
                changed = True
                break
    return np.concatenate([[m] * n for m, _, n in blocks])


@pytest.mark.parametrize("seed", range(5))
def test_pav_matches_reference_and_is_monotone(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=40) + np.linspace(0, 2, 40)
    w = rng.uniform(0.5, 2.0, size=40)
    st, en, mean = pav(y, w)
    fitted = np.concatenate([[m] * (e - s) for s, e, m in zip(st, en, mean, strict=True)])
    np.testing.assert_allclose(fitted, _slow_pav(y, w), atol=1e-12)
    assert np.all(np.diff(mean) > 0)


def test_fit_recovers_a_known_monotone_rate() -> None:
    """Segments whose true rate is a known increasing function of the score: the fitted map
    is monotone, within a few points of the truth, and calibrated on fresh draws."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        s = rng.uniform(0, 2, n)
        return s, rng.random(n) < np.clip(0.45 * s, 0, 1)

    s, t = draw(4000)
    cal = fit_isotonic(s, t, "fixed")
    assert np.all(np.diff(cal.x) > 0) and np.all(np.diff(cal.y) >= 0)
    grid = np.linspace(0.2, 1.8, 9)
    assert np.max(np.abs(cal(grid) - 0.45 * grid)) < 0.08
    s2, t2 = draw(4000)
    ece, table = reliability(cal(s2), t2, bins=10)
    assert ece < 0.03
    assert sum(r["n"] for r in table) == 4000
    # the raw score read as a probability (about twice the true rate) has a large ECE
    ece_raw, _ = reliability(np.clip(s2, 0, 1), t2, bins=10)
    assert ece_raw > 0.1


def test_min_block_keeps_small_groups_from_extremes() -> None:
    s = np.array([0.1, 0.2, 0.3, 5.0, 6.0])
    t = np.array([0, 0, 0, 1, 1])
    assert fit_isotonic(s, t, "fixed", min_block=1)(6.0) == 1.0
    merged = fit_isotonic(s, t, "fixed", min_block=3)  # the 2 true ones are too few alone
    assert merged.info["blocks"] == 1 and merged(0.1) == merged(6.0) == pytest.approx(0.4)
    two = fit_isotonic(s, t, "fixed", min_block=2)
    assert two.info["blocks"] == 2 and two(0.2) == 0.0 and two(5.5) == 1.0
    tied = fit_isotonic([1.0, 1.0, 2.0], [0, 1, 1], "fixed", min_block=1)
    assert tied(1.0) == pytest.approx(0.5)  # equal scores, equal confidence


def test_serialisation_and_validation() -> None:
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 3, 500)
    cal = fit_isotonic(s, rng.random(500) < s / 3, "fixed")
    d = json.loads(json.dumps(cal.to_dict()))
    back = cal_mod.from_dict(d)
    np.testing.assert_allclose(back(s), cal(s), atol=1e-5)
    assert back.profile == "fixed" and back.info["segments"] == 500
    for bad, msg in [
        ({**d, "y": d["y"][::-1]}, "non-decreasing"),
        ({**d, "y": [2.0] * len(d["y"])}, r"\[0, 1\]"),
        ({**d, "x": d["x"][:-1]}, "knots"),
        ({**d, "format": "x"}, "format"),
        ({**d, "profile": ""}, "profile"),
        ({**d, "x": ["a"] * len(d["x"])}, "lists of numbers"),
    ]:
        with pytest.raises(BundleError, match=msg):
            cal_mod.from_dict(bad)


def test_reliability_table_and_errors() -> None:
    ece, table = reliability([0.05, 0.05, 0.95, 1.0], [0, 0, 1, 1], bins=10)
    assert ece == pytest.approx((2 * 0.05 + 0.05 + 0.0) / 4)
    assert [r["n"] for r in table] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table[9]["true"] == 1.0 and table[1]["confidence"] is None
    with pytest.raises(DataError):
        reliability([0.1], [1, 0])
    with pytest.raises(DataError):
        fit_isotonic([], [], "fixed")
