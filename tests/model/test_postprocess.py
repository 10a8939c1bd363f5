"""Post-processing against the official traces (tests/fixtures/hamnet/postprocess.*,
predict_e2e*.*) plus the behaviour of each quirk fix."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hamnet.config import PostprocessConfig, preset
from hamnet.errors import ConfigError, DataError
from hamnet.postprocess import (
    attention_runs,
    compute_t_factor,
    localize,
    localize_trace,
    oic_scores,
    predict_from_outputs,
    resolve_profile,
    soft_nms,
    to_segments,
    video_scores,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "hamnet"
PP_JSON = json.loads((FIX / "postprocess.json").read_text())
PP_NPZ = np.load(FIX / "postprocess.npz")
CLASSES = [PP_JSON["class_dict"][str(i)] for i in range(len(PP_JSON["class_dict"]))]
VIDEOS = {v["name"]: v for v in PP_JSON["videos"]}


def _inputs(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    return PP_NPZ[f"{name}/elem"], PP_NPZ[f"{name}/atn"], int(PP_NPZ[f"{name}/vid_num_seg"])


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_official_trace_per_video(name: str) -> None:
    ref = VIDEOS[name]
    elem, atn, vns = _inputs(name)
    tr = localize_trace(elem, atn, PostprocessConfig(), vid_num_seg=vns)
    assert tr.t_factor == ref["t_factor"]  # exact: same formula, same evaluation order
    assert tr.k == ref["topk_k"]
    np.testing.assert_allclose(tr.video_scores, ref["pred_vid_score"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(tr.video_scores, PP_NPZ[f"{name}/pred_vid_score"], atol=1e-6)
    assert tr.pred_classes.tolist() == ref["pred_classes"]
    if ref["skipped_label_sum_zero"]:
        return  # the official tester never localizes a video with an all-zero label
    assert bool(tr.proposals) == ref["has_results_entry"]
    if not ref["has_results_entry"]:
        return
    for step, rstep in zip(tr.steps, ref["per_act_thresh"], strict=True):
        assert step.threshold == rstep["act_thresh"]
        assert step.indices.tolist() == rstep["above_idx"]
        mine = [
            [[int(c), float(step.scores[ci, j]), *step.segments[j].tolist()]
             for j in range(step.starts.size)]
            for ci, c in enumerate(tr.pred_classes)
        ] if step.starts.size else []
        assert len(mine) == len(rstep["proposals_per_class"])
        for got, want in zip(mine, rstep["proposals_per_class"], strict=True):
            assert [g[0] for g in got] == [w[0] for w in want]
            assert [g[2:] for g in got] == [w[2:] for w in want]  # segments exact
            np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-6)
    results = ref["results"]
    assert len(tr.proposals) == len(results)
    segs = to_segments(tr.proposals, CLASSES)
    assert [s["label"] for s in segs] == [r["label"] for r in results]
    assert [[s["start"], s["end"]] for s in segs] == [r["segment"] for r in results]
    np.testing.assert_allclose([s["score"] for s in segs], [r["score"] for r in results],
                               atol=1e-6, rtol=0)
    # classes come out ascending, in the order the official soft-NMS saw them
    seen = list(dict.fromkeys(p[0] for p in tr.proposals))
    assert seen == ref["soft_nms_class_order"]


def test_t_factor_general_formula_and_feature_settings() -> None:
    cfg = PostprocessConfig()
    assert compute_t_factor(50, cfg, 80) == 1.024
    assert compute_t_factor(37, cfg) == 0.64
    # 330 * t_factor, not 330 * 16 / 25: the official float is 211.20000000000002
    elem, atn, _ = _inputs("video_test_0000003")
    segs = {s for p in localize(elem, atn, cfg) for s in p[2:]}
    assert 211.20000000000002 in segs and 211.2 not in segs
    # seconds per snippet come from the feature settings, never from constants
    cfg30 = replace(cfg, fps=30.0, snippet_frames=8)
    base = localize_trace(elem, atn, cfg)
    other = localize_trace(elem, atn, cfg30)
    assert len(base.proposals) == len(other.proposals)
    assert other.t_factor == (8 * 513) / (1.0 * 513 * 30.0)
    ratio = (8 / 30) / 0.64
    for a, b in zip(base.steps, other.steps, strict=True):  # before soft-NMS (which uses +1 s)
        np.testing.assert_allclose(b.segments, a.segments * ratio, rtol=1e-12)


@pytest.mark.parametrize(
    "fixture,npz,cfg",
    [
        ("predict_e2e.json", "predict_e2e.npz", PostprocessConfig()),
        ("anet/predict_e2e_anet.json", "anet/predict_e2e_anet.npz",
         preset("ActivityNet1.2").postprocess),
    ],
)
def test_predict_e2e_from_stored_outputs(fixture: str, npz: str, cfg: PostprocessConfig) -> None:
    ref = json.loads((FIX / fixture).read_text())
    z = np.load(FIX / npz)
    assert cfg.fps == ref["fps"] and cfg.snippet_frames == ref["snippet_frames"]
    for name, v in ref["videos"].items():
        out = predict_from_outputs(z[f"{name}_cas"], z[f"{name}_attention"], ref["classes"], cfg)
        segs, want = out["segments"], v["proposals"]
        assert len(segs) == len(want), name
        assert [s["label"] for s in segs] == [w["label"] for w in want]
        np.testing.assert_allclose([[s["start"], s["end"]] for s in segs],
                                   [w["segment"] for w in want], atol=1e-9, rtol=0)
        np.testing.assert_allclose([s["score"] for s in segs], [w["score"] for w in want],
                                   atol=1e-6, rtol=0)
        if "pred_vid_score" in v:
            got = [c["score"] for c in out["video_scores"]]
            np.testing.assert_allclose(got, v["pred_vid_score"], atol=1e-6, rtol=0)
            assert sorted(c["label_id"] for c in out["classes"]) == v["pred_classes"]
            scores = [c["score"] for c in out["classes"]]
            assert scores == sorted(scores, reverse=True)


# ----------------------------------------------------------------------------- quirks and fixes


def test_snippet0_quirk_and_fix() -> None:
    elem, atn, vns = _inputs("video_test_0000001")
    off = localize_trace(elem, atn, PostprocessConfig())
    last = off.steps[-1]
    assert last.indices.tolist() == [0] and last.starts.size == 0  # dropped officially
    fixed = localize_trace(elem, atn, PostprocessConfig(profile="custom", fix_snippet0=True))
    assert fixed.steps[-1].starts.tolist() == [0] and fixed.steps[-1].ends.tolist() == [0]
    assert len(fixed.proposals) == len(off.proposals) + 1
    # the flag is ignored under the official profile: "official" always means official
    forced = localize(elem, atn, PostprocessConfig(fix_snippet0=True))
    assert forced == off.proposals


def test_attention_runs_float32_comparison() -> None:
    atn = np.array([0.1, 0.2, 0.3, 0.3, 0.05, 0.5], dtype=np.float32)
    # float32(0.1) == atn[0]: not strictly above, although 0.1 (float64) < float32(0.1)
    idx, st, en = attention_runs(atn, 0.1)
    assert idx.tolist() == [1, 2, 3, 5]
    assert st.tolist() == [1, 5] and en.tolist() == [3, 5]


def _oic_one(cas: np.ndarray, s: int, e: int, cfg: PostprocessConfig) -> float:
    prefix = np.concatenate(([[0.0]], np.cumsum(cas.astype(np.float64))[:, None]))
    out = oic_scores(prefix, np.array([s]), np.array([e]), np.zeros(1, np.float32), cfg)
    return float(out[0, 0])


def test_outer_region_asymmetric_vs_symmetric() -> None:
    # L = 10 at [10..19]: officially 3 snippets on the left, 2 on the right.
    cas = np.zeros(40, np.float32)
    cas[7], cas[22] = 3.0, 2.0  # only the 3rd-left / 3rd-right outer snippets carry mass
    off = _oic_one(cas, 10, 19, PostprocessConfig())
    assert off == pytest.approx(-3.0 / 5)  # outer = [7, 10) U (19, 21]: 3 + 2 snippets
    sym = _oic_one(cas, 10, 19, PostprocessConfig(profile="custom", fix_symmetric_outer=True))
    assert sym == pytest.approx(-5.0 / 6)  # ceil(2.5) = 3 on both sides
    # L = 1: one snippet on the left and none on the right; at index 0 the outer set is empty
    cas1 = np.array([4.0, 1.0, 2.0], np.float32)
    assert _oic_one(cas1, 1, 1, PostprocessConfig()) == pytest.approx(1.0 - 4.0)
    assert _oic_one(cas1, 0, 0, PostprocessConfig()) == pytest.approx(4.0)


def _soft_nms_loop(rows: list[list[float]], sigma: float, plus_one: bool) -> list[list[float]]:
    """Direct transcription of the described algorithm, one row at a time."""
    dets = [list(r) + [r[2] - r[1] + (1 if plus_one else 0)] for r in rows]
    out = []
    while dets:
        m = max(range(len(dets)), key=lambda i: (dets[i][0], -i))
        dets[0], dets[m] = dets[m], dets[0]
        top = dets[0]
        out.append(top[:3])
        rest = dets[1:]
        for d in rest:
            inter = max(min(top[2], d[2]) - max(top[1], d[1]) + (1 if plus_one else 0), 0.0)
            union = top[3] + d[3] - inter
            iou = inter / union if union > 0 else 0.0
            d[0] *= float(np.exp(-(iou * iou) / sigma))
        dets = rest
    return out


@pytest.mark.parametrize("plus_one", [True, False])
def test_soft_nms_matches_row_by_row_reference(plus_one: bool) -> None:
    rng = np.random.default_rng(3)
    st = np.round(rng.uniform(0, 60, 80), 2)
    en = st + np.round(rng.uniform(0.2, 8, 80), 2)
    sc = rng.normal(0.5, 1, 80)
    sc[10:14] = sc[3]  # ties: first argmax wins, the swap decides later ties
    order, rescored = soft_nms(sc, st, en, 0.3, plus_one=plus_one)
    ref = _soft_nms_loop([[a, b, c] for a, b, c in zip(sc, st, en, strict=True)], 0.3, plus_one)
    assert len(order) == 80  # nothing is ever removed
    np.testing.assert_allclose(rescored, [r[0] for r in ref], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(np.stack([st[order], en[order]], 1), [r[1:] for r in ref])


def test_soft_nms_matrix_and_row_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short lists use a precomputed decay matrix, long ones one decay row per pick."""
    import hamnet.postprocess as pp

    rng = np.random.default_rng(11)
    st = np.round(rng.uniform(0, 300, 400), 2)
    en = st + np.round(rng.uniform(0.6, 12, 400), 2)
    sc = np.repeat(rng.normal(0.5, 1, 100), 4)  # 4-fold duplicates, as the 10 thresholds give
    monkeypatch.setattr(pp, "_NMS_MATRIX_MAX", 10_000)
    matrix = soft_nms(sc, st, en, 0.3)
    monkeypatch.setattr(pp, "_NMS_MATRIX_MAX", 10)
    rows = soft_nms(sc, st, en, 0.3)
    np.testing.assert_array_equal(matrix[0], rows[0])
    np.testing.assert_array_equal(matrix[1], rows[1])


def test_soft_nms_plus_one_decays_disjoint_neighbours() -> None:
    sc, st, en = np.array([1.0, 0.9]), np.array([0.0, 1.5]), np.array([1.0, 2.5])
    _, official = soft_nms(sc, st, en, 0.3, plus_one=True)
    _, fixed = soft_nms(sc, st, en, 0.3, plus_one=False)
    assert official[1] < 0.9  # 0.5 s apart, yet decayed by the +1 s convention
    assert fixed[1] == 0.9


def test_fixed_profile_floor_and_cap() -> None:
    elem, atn, _ = _inputs("video_test_0000003")
    res = resolve_profile(PostprocessConfig(profile="fixed"))
    assert res.fix_snippet0 and res.fix_symmetric_outer and res.fix_nms_seconds
    assert res.nms_score_floor is not None and res.max_proposals_per_class is not None
    official = localize(elem, atn, PostprocessConfig())
    cfg = PostprocessConfig(profile="fixed", nms_score_floor=0.05, max_proposals_per_class=20)
    fixed = localize(elem, atn, cfg)
    assert 0 < len(fixed) < len(official)
    for c in {p[0] for p in fixed}:
        rows = [p for p in fixed if p[0] == c]
        assert len(rows) <= 20
        assert all(p[1] >= 0.05 for p in rows)
        assert [p[1] for p in rows] == sorted((p[1] for p in rows), reverse=True)


def test_unknown_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="profile"):
        resolve_profile(PostprocessConfig(profile="best"))


def test_video_scores_topk_includes_background() -> None:
    t = 25
    elem = np.zeros((t, 3), np.float32)
    elem[:, 2] = 5.0  # strong background: the softmax over C+1 must include it
    atn = np.ones((t, 1), np.float32)
    p = video_scores(elem, atn, rat=10)
    z = np.exp([0.0, 0.0, 5.0])
    np.testing.assert_allclose(p, (z / z.sum())[:2], rtol=1e-6)
    assert p.dtype == np.float32 and p.shape == (2,)


def test_invalid_inputs_raise_data_errors() -> None:
    elem, atn, _ = _inputs("video_test_0000002")
    bad = elem.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        localize(bad, atn)
    with pytest.raises(DataError, match="attention"):
        localize(elem, atn[:-1])
    with pytest.raises(DataError, match="class names"):
        predict_from_outputs(elem, atn, CLASSES[:3])
    with pytest.raises(DataError, match="outside the class list"):
        to_segments([(7, 1.0, 0.0, 1.0)], CLASSES)


def test_modules_do_not_import_torch() -> None:
    code = (
        "import sys, hamnet.postprocess, hamnet.evaluation; "
        "sys.exit(1 if 'torch' in sys.modules or 'onnxruntime' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
