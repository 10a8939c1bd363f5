"""Detection / classification mAP against the official ANETdetection fixtures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hamnet.config import EvalConfig, PostprocessConfig, preset
from hamnet.errors import DataError
from hamnet.evaluation import (
    average_precision_detection,
    build_gt,
    classification_map,
    detection_map,
    interpolated_ap,
    load_gt,
    load_predictions,
    parse_tiou,
    save_gt,
    save_predictions,
    segments_to_results,
)
from hamnet.postprocess import localize_trace, to_segments

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIX = FIXTURES / "hamnet"
CASES = json.loads((FIX / "eval_cases.json").read_text())
THUMOS_TIOU = np.arange(0.1, 0.75, 0.1)
ANET_TIOU = np.arange(0.5, 1, 0.05)


def test_official_threshold_lists() -> None:
    assert EvalConfig().tiou_thresholds.tolist() == CASES["tiou_thresholds"]
    anet = json.loads((FIX / "anet" / "eval_cases_anet.json").read_text())
    want = [float(x) for x in anet["cases"][0]["official"]["tiou_thresholds_repr"]]
    assert preset("ActivityNet1.2").eval.tiou_thresholds.tolist() == want
    assert parse_tiou("0.1:0.7:0.1").tolist() == CASES["tiou_thresholds"]
    assert parse_tiou("0.5:0.95:0.05").tolist() == want
    assert parse_tiou("0.3, 0.5,0.7").tolist() == [0.3, 0.5, 0.7]
    for bad in ("0.1:0.7", "a,b", "0.5:0.1:0.1", "2"):
        with pytest.raises(DataError, match="--tiou"):
            parse_tiou(bad)


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: c["name"])
def test_official_cases(case: dict) -> None:
    off = case["official"]
    r = detection_map(case["gt"], case["pred"], THUMOS_TIOU, subset=CASES["subset"])
    assert r["tiou"] == CASES["tiou_thresholds"]
    assert r["classes"] == list(off["activity_index"])
    np.testing.assert_allclose(r["ap"], off["ap_per_tiou_per_class"], atol=1e-12, rtol=0)
    np.testing.assert_allclose(r["mAP"], off["mAP_per_tiou"], atol=1e-12, rtol=0)
    assert r["average_mAP"] == pytest.approx(off["average_mAP"], abs=1e-12)
    literal = case.get("for_comparison_only_literal_thresholds")
    if literal:  # the same case with literal thresholds: exact 0.3 / 0.7 now pass
        r2 = detection_map(case["gt"], case["pred"], literal["tiou_thresholds"])
        np.testing.assert_allclose(r2["ap"], literal["ap_per_tiou_per_class"], atol=1e-12)
        assert r2["average_mAP"] == pytest.approx(literal["average_mAP"], abs=1e-12)


def test_error_cases_are_clear_data_errors() -> None:
    no_gt, unknown = CASES["error_cases"]
    with pytest.raises(DataError, match=r"'CliffDiving'.*no ground truth in subset 'test'"):
        detection_map(no_gt["gt"], no_gt["pred"], THUMOS_TIOU)
    r = detection_map(no_gt["gt"], no_gt["pred"], THUMOS_TIOU, skip_classes_without_gt=True)
    assert r["classes"] == ["BaseballPitch"] and r["skipped_classes"] == ["CliffDiving"]
    assert r["average_mAP"] == 1.0  # its prediction [1, 5] equals the GT
    with pytest.raises(DataError, match="'Diving'"):
        detection_map(unknown["gt"], unknown["pred"], THUMOS_TIOU)
    r = detection_map(unknown["gt"], unknown["pred"], THUMOS_TIOU, ignore_unknown_labels=True)
    assert r["average_mAP"] == 0.0


def test_anet_threshold_drift_case() -> None:
    case = json.loads((FIX / "anet" / "eval_cases_anet.json").read_text())["cases"][0]
    r = detection_map(case["gt"], case["pred"], ANET_TIOU)
    np.testing.assert_allclose(r["ap"], case["official"]["ap_per_tiou_per_class"], atol=1e-12)
    assert r["average_mAP"] == pytest.approx(0.321, abs=1e-12)
    lin = case["for_comparison_only_linspace_0.5_0.95_10"]
    r = detection_map(case["gt"], case["pred"], np.linspace(0.5, 0.95, 10))
    np.testing.assert_allclose(r["mAP"], lin["mAP_per_tiou"], atol=1e-12)


@pytest.mark.parametrize("ex", CASES["classification_map"], ids=lambda e: e["name"])
def test_classification_map(ex: dict) -> None:
    got = classification_map(np.array(ex["confidence"]), np.array(ex["labels"]))
    if ex["is_nan"]:
        assert math.isnan(got)
        kept = classification_map(ex["confidence"], ex["labels"],
                                   ignore_classes_without_positives=True)
        assert not math.isnan(kept)
    else:
        assert got == pytest.approx(ex["classification_mAP_percent"], abs=1e-12)


def _run_postprocess_fixture() -> tuple[dict, list, list]:
    ref = json.loads((FIX / "postprocess.json").read_text())
    z = np.load(FIX / "postprocess.npz")
    classes = [ref["class_dict"][str(i)] for i in range(len(ref["class_dict"]))]
    results, scores, labels = {}, [], []
    for v in ref["videos"]:
        name = v["name"]
        label = z[f"{name}/label"]
        if label.sum() == 0:  # the official tester skips all-zero labels
            continue
        tr = localize_trace(z[f"{name}/elem"], z[f"{name}/atn"], PostprocessConfig(),
                            int(z[f"{name}/vid_num_seg"]))
        scores.append(tr.video_scores)
        labels.append(label)
        if tr.proposals:
            results[name] = segments_to_results(to_segments(tr.proposals, classes))
    return ref, results, [scores, labels]


def test_end_to_end_thumos_postprocess_fixture() -> None:
    ref, results, (scores, labels) = _run_postprocess_fixture()
    e2e = ref["end_to_end"]
    r = detection_map(ref["ground_truth"], {"results": results}, THUMOS_TIOU)
    np.testing.assert_allclose(r["ap"], e2e["ap_per_tiou_per_class"], atol=1e-12, rtol=0)
    assert r["average_mAP"] == pytest.approx(e2e["average_mAP"], abs=1e-12)
    assert classification_map(np.array(scores), np.array(labels)) == e2e["classification_mAP"]
    correct = sum(
        bool(np.array_equal(s >= 0.2, lab > 0)) for s, lab in zip(scores, labels, strict=True)
    )
    assert (correct, len(scores)) == (e2e["num_correct"], e2e["num_total"])


def test_end_to_end_anet_fixture(tmp_path: Path) -> None:
    ref = json.loads((FIX / "anet" / "predict_e2e_anet.json").read_text())
    z = np.load(FIX / "anet" / "predict_e2e_anet.npz")
    cfg = preset("ActivityNet1.2").postprocess
    results = {
        name: to_segments(localize_trace(z[f"{name}_cas"], z[f"{name}_attention"], cfg).proposals,
                          ref["classes"])
        for name in ref["videos"]
    }
    # through files, as `hamnet evaluate` reads them (string "%.2f" GT segments)
    save_gt(tmp_path / "gt.json", ref["ground_truth"])
    save_predictions(tmp_path / "pred.json", results)
    assert load_predictions(tmp_path / "pred.json")["results"]["vid0"][0]["segment"][1] == 19.2
    r = detection_map(tmp_path / "gt.json", tmp_path / "pred.json", ANET_TIOU)
    e2e = ref["end_to_end"]
    np.testing.assert_allclose(r["ap"], e2e["ap_per_tiou_per_class"], atol=1e-12, rtol=0)
    assert r["average_mAP"] == pytest.approx(e2e["average_mAP"], abs=1e-12)


def test_thumos_gt_file_layout() -> None:
    gt = load_gt(FIXTURES / "thumos14" / "gt.json")
    assert len(gt["class-list"]) == 20
    # a perfect prediction of every test GT has mAP 1 at every threshold
    results: dict[str, list] = {}
    for vid, v in gt["database"].items():
        if v["subset"] == "test":
            results[vid] = [{"label": a["label"], "score": 1.0,
                             "segment": [float(a["segment"][0]), float(a["segment"][1])]}
                            for a in v["annotations"]]
    r = detection_map(gt, results, THUMOS_TIOU)
    assert r["average_mAP"] == pytest.approx(1.0)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.json"):
        load_gt(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_predictions(bad)
    bad.write_text(json.dumps({"results": []}))
    with pytest.raises(DataError, match="bad.json.*results"):
        detection_map(build_gt({}, ["A"]), bad)


# ----------------------------------------------------------------------------- vs a plain loop


def _ap_loop(gt_v, gt_seg, p_v, p_seg, p_score, thr) -> np.ndarray:
    """The per-prediction loop described in the README, one GT at a time."""
    order = np.argsort(p_score, kind="stable")[::-1]
    n, k = len(order), len(thr)
    tp, fp = np.zeros((k, n)), np.zeros((k, n))
    lock = -np.ones((k, len(gt_v)))
    for i, pi in enumerate(order):
        rows = [j for j in range(len(gt_v)) if gt_v[j] == p_v[pi]]
        if not rows:
            fp[:, i] = 1
            continue
        s, e = p_seg[pi]
        tiou = []
        for j in rows:
            inter = max(0.0, min(e, gt_seg[j][1]) - max(s, gt_seg[j][0]))
            union = (gt_seg[j][1] - gt_seg[j][0]) + (e - s) - inter
            tiou.append(inter / union if union != 0 else (math.nan if inter == 0 else math.inf))
        tiou = np.array(tiou)
        srt = np.argsort(tiou, kind="stable")[::-1]
        for t in range(k):
            for jj in srt:
                if tiou[jj] < thr[t]:
                    fp[t, i] = 1
                    break
                if lock[t, rows[jj]] >= 0:
                    continue
                tp[t, i] = 1
                lock[t, rows[jj]] = i
                break
            if tp[t, i] == 0 and fp[t, i] == 0:
                fp[t, i] = 1
    tpc, fpc = np.cumsum(tp, 1), np.cumsum(fp, 1)
    return np.array([interpolated_ap(tpc[t] / (tpc[t] + fpc[t]), tpc[t] / len(gt_v))
                     for t in range(k)])


def test_vectorised_matching_equals_plain_loop() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        n_gt, n_pred = int(rng.integers(1, 30)), int(rng.integers(0, 120))
        gt_v = rng.integers(0, 6, n_gt)
        gs = np.round(rng.uniform(0, 50, n_gt), 1)
        gt_seg = np.stack([gs, gs + np.round(rng.uniform(0, 10, n_gt), 1)], 1)
        p_v = rng.integers(0, 8, n_pred)
        ps = np.round(rng.uniform(0, 50, n_pred), 1)
        p_seg = np.stack([ps, ps + np.round(rng.uniform(0, 10, n_pred), 1)], 1)
        p_score = np.round(rng.uniform(0, 1, n_pred), 1)  # many ties
        gorder, porder = np.argsort(gt_v, kind="stable"), np.argsort(p_v, kind="stable")
        args = (gt_v[gorder], gt_seg[gorder], p_v[porder], p_seg[porder], p_score[porder])
        got = average_precision_detection(*args, THUMOS_TIOU)
        np.testing.assert_allclose(got, _ap_loop(*args, THUMOS_TIOU), atol=1e-12, rtol=0)


def test_malformed_detections_point_at_the_entry() -> None:
    gt = build_gt({"v": {"subset": "test", "annotations": [{"label": "A", "segment": [1, 2]}]}},
                  ["A"])
    bad = {"v": [{"label": "A", "score": 0.5, "segment": [1, 2]},
                 {"label": "A", "score": "high", "segment": [1, 2]}]}
    with pytest.raises(DataError, match=r"results\['v'\]\[1\].*numeric 'score'"):
        detection_map(gt, bad)
    with pytest.raises(DataError, match=r"\[0\]: segment \[1\] is not a \[start, end\] pair"):
        detection_map(gt, {"v": [{"label": "A", "score": 1, "segment": [1]}]})
    # our own {start, end} segments are accepted as well as ActivityNet's "segment"
    r = detection_map(gt, {"v": [{"label": "A", "score": 1, "start": 1.0, "end": 2.0}]})
    assert r["average_mAP"] == 1.0
