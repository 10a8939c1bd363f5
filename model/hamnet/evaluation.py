"""ActivityNet-style detection mAP and classification mAP (numpy only), as HAM-Net reports them.

Why a restatement: the official ``eval/eval_detection.py`` (ANETdetection) needs pandas and
joblib, crashes under pandas >= 2 and numpy >= 1.24, and crashes on a class without test ground
truth or on an unknown predicted label. This module reproduces its numbers exactly (fixtures
README, "Evaluation (ANETdetection)") including its tie rules:

* ground truth from subset ``subset`` only; every prediction counts, so predictions for videos
  missing from the database or in another subset are false positives;
* both tables are stably sorted by video id; predictions are ranked by a reversed stable
  argsort of the score, so among equal scores the *later* row ranks first;
* ground truths are visited in reversed stable argsort of tIoU (NaN first, later GT first on
  ties); the first GT below the threshold ends the search; a zero-length prediction against a
  zero-length GT gives 0/0 = NaN, which counts as a match (``NaN < thr`` is False);
* AP uses VOC-2011 interpolation; mAP averages over every class of ``class-list``.

(For more than 16 tied rows the official tie order depended on numpy's unstable introsort; we
use the stable order, which is what it gave on small inputs.)

Instead of crashing, a class without test ground truth or an unknown label raises a
:class:`~hamnet.errors.DataError` naming the file and the label; ``skip_classes_without_gt`` /
``ignore_unknown_labels`` turn those into documented skips.

The greedy matching is sequential only *within* a video (a GT can only be locked by predictions
of its own video), so it runs in rounds: round r matches the r-th ranked prediction of every
video at once, vectorised over videos, thresholds and ground truths.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.errors import DataError

__all__ = [
    "tiou_thresholds",
    "parse_tiou",
    "load_gt",
    "save_gt",
    "build_gt",
    "load_predictions",
    "save_predictions",
    "segments_to_results",
    "detection_map",
    "average_precision_detection",
    "interpolated_ap",
    "classification_map",
]


# ----------------------------------------------------------------------------- thresholds


def tiou_thresholds(start: float, stop: float, step: float) -> np.ndarray:
    """``np.arange(start, stop, step)``: the official list (values drift up, e.g. 0.3 -> 0.30..04).

    ``arange`` builds ``start + i*step`` in float64, which is what LightningSystem used; an exact
    tIoU equal to a drifted nominal value is therefore a miss, as officially.
    """
    if step <= 0 or stop <= start:
        raise DataError(f"tIoU thresholds: need start < stop and step > 0, got {start}:{stop}:{step}")
    return np.arange(start, stop, step)


def parse_tiou(text: str) -> np.ndarray:
    """Parse ``START:STOP:STEP`` (stop inclusive) or a comma list ``0.3,0.5,0.7``.

    ``0.1:0.7:0.1`` is built as ``np.arange(0.1, 0.7 + 0.1/2, 0.1)`` = the official THUMOS list
    ``arange(0.1, 0.75, 0.1)`` (0.1, 0.2, 0.30000000000000004, ..., 0.7000000000000001); the
    half-step margin makes the stop inclusive without ever adding an extra value.
    """
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(x) for x in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise ValueError
            return tiou_thresholds(start, stop + step / 2, step)
        values = np.array([float(x) for x in text.split(",") if x.strip()], dtype=np.float64)
    except ValueError:
        raise DataError(
            f"--tiou {text!r}: expected START:STOP:STEP (e.g. 0.1:0.7:0.1) or a comma list "
            f"(e.g. 0.3,0.5,0.7)"
        ) from None
    if values.size == 0 or not np.all((values >= 0) & (values <= 1)):
        raise DataError(f"--tiou {text!r}: thresholds must be in [0, 1]")
    return values


# ----------------------------------------------------------------------------- file formats


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def _validate_gt(data: Any, name: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataError(f"{name}: not a gt.json file (expected a top-level 'database' mapping)")
    for vid, v in data["database"].items():
        if not isinstance(v, dict) or "annotations" not in v or "subset" not in v:
            raise DataError(f"{name}: video {vid!r} needs 'subset' and 'annotations'")
        for i, ann in enumerate(v["annotations"]):
            seg = ann.get("segment") if isinstance(ann, dict) else None
            if not isinstance(seg, list | tuple) or len(seg) != 2 or "label" not in ann:
                raise DataError(
                    f"{name}: video {vid!r} annotation {i} needs 'label' and a 2-value 'segment'"
                )
    cl = data.get("class-list")
    if cl is not None and not isinstance(cl, dict | list):
        raise DataError(f"{name}: 'class-list' must map index -> label")
    return data


def load_gt(path: str | Path) -> dict[str, Any]:
    """Read a gt.json: ``{"class-list": {"0": label, ...}, "database": {vid: {"subset",
    "annotations": [{"label", "segment": [s, e]}]}}}``. Segments may be strings ("%.2f")."""
    return _validate_gt(_read_json(path, "ground-truth"), str(path))


def build_gt(
    database: Mapping[str, Mapping[str, Any]],
    classes: Sequence[str] | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Assemble a gt.json dict; ``classes`` becomes ``class-list`` (index -> label)."""
    out: dict[str, Any] = {}
    if version is not None:
        out["version"] = version
    if classes is not None:
        out["class-list"] = {str(i): c for i, c in enumerate(classes)}
    out["database"] = {k: dict(v) for k, v in database.items()}
    return _validate_gt(out, "ground truth")


def save_gt(path: str | Path, gt: Mapping[str, Any]) -> None:
    _validate_gt(dict(gt), str(path))
    Path(path).write_text(json.dumps(gt, indent=1))


def load_predictions(path: str | Path) -> dict[str, Any]:
    """Read an ActivityNet-format prediction file ``{"results": {vid: [{label, score,
    segment}]}}``."""
    data = _read_json(path, "prediction")
    return _validate_predictions(data, str(path))


def _validate_predictions(data: Any, name: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise DataError(f"{name}: not a prediction file (expected a top-level 'results' mapping)")
    return data


def segments_to_results(segments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Our ``{label, start, end, score}`` segments as ActivityNet entries."""
    return [
        {"label": s["label"], "score": float(s["score"]),
         "segment": [float(s["start"]), float(s["end"])]}
        for s in segments
    ]


def save_predictions(
    path: str | Path, results: Mapping[str, Sequence[Mapping[str, Any]]], version: str = "1.3"
) -> None:
    """Write ``{"version", "results", "external_data"}``; entries may be ours or ANet ones."""
    conv = {
        vid: [dict(e) if "segment" in e else segments_to_results([e])[0] for e in entries]
        for vid, entries in results.items()
    }
    Path(path).write_text(json.dumps({"version": version, "results": conv, "external_data": {}}))


# ----------------------------------------------------------------------------- AP maths


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC-2011 interpolated AP (official ``interpolated_prec_rec``)."""
    mprec = np.concatenate(([0.0], precision, [0.0]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _greedy_match(
    tp: np.ndarray,
    rows: np.ndarray,
    vrow: np.ndarray,
    seg: np.ndarray,
    g_s: np.ndarray,
    g_e: np.ndarray,
    valid: np.ndarray,
    thr: np.ndarray,
) -> None:
    """Fill ``tp[:, rows]`` with the official greedy matching (rows are in rank order).

    GTs are visited in reversed stable argsort of tIoU (NaN first), so the GTs a prediction may
    take at threshold ``k`` form a prefix of that order of length ``L[i, k]`` (entries that are
    NaN or >= thr); it takes the first unlocked one. Predictions with an empty prefix at every
    threshold are false positives without touching any lock, which removes most rows from the
    sequential part. The rest run in rounds: round r holds the r-th remaining prediction of each
    video, so no two rows of a round compete for the same GT lock.
    """
    n_thr = thr.size
    g = g_s.shape[1]
    prefix = np.zeros((rows.size, n_thr), dtype=np.int64)
    gorder = np.zeros((rows.size, g), dtype=np.int64)
    chunk = max(1, 4_000_000 // max(1, g * n_thr))
    for a in range(0, rows.size, chunk):
        b = min(rows.size, a + chunk)
        v = vrow[a:b]
        s0, e0 = seg[a:b, 0:1], seg[a:b, 1:2]
        gs, ge = g_s[v], g_e[v]
        inter = np.clip(np.minimum(e0, ge) - np.maximum(s0, gs), 0, None)
        union = (ge - gs) + (e0 - s0) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            tiou = inter / union
        tiou = np.where(valid[v], tiou, -np.inf)
        order = np.argsort(tiou, axis=1, kind="stable")[:, ::-1]
        ts = np.take_along_axis(tiou, order, axis=1)
        gorder[a:b] = order
        # NaN < thr is False, so NaN entries (sorted first) belong to every prefix
        prefix[a:b] = (~(ts[:, None, :] < thr[None, :, None])).sum(axis=2)
    live = np.flatnonzero(prefix.max(axis=1) > 0)
    if live.size == 0:
        return
    v_live = vrow[live]
    srt = np.argsort(v_live, kind="stable")
    first = np.concatenate(([True], v_live[srt][1:] != v_live[srt][:-1]))
    grp_start = np.maximum.accumulate(np.where(first, np.arange(srt.size), 0))
    rank = np.empty(srt.size, dtype=np.int64)
    rank[srt] = np.arange(srt.size) - grp_start
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.flatnonzero(np.diff(rank[by_rank])) + 1
    lock = np.zeros((g_s.shape[0], n_thr, g), dtype=bool)
    k_idx = np.arange(n_thr)[None, :, None]
    j_idx = np.arange(g)[None, None, :]
    for sel in np.split(by_rank, bounds):
        idx = live[sel]
        v = vrow[idx]
        go = gorder[idx][:, None, :]
        avail = ~lock[v[:, None, None], k_idx, go] & (j_idx < prefix[idx][:, :, None])
        firstj = np.argmax(avail, axis=2)
        hit = avail.any(axis=2)
        mi, ki = np.nonzero(hit)
        lock[v[mi], ki, gorder[idx[mi], firstj[mi, ki]]] = True
        tp[:, rows[idx]] = hit.T


def average_precision_detection(
    gt_video: np.ndarray,
    gt_seg: np.ndarray,
    pred_video: np.ndarray,
    pred_seg: np.ndarray,
    pred_score: np.ndarray,
    thresholds: np.ndarray,
) -> np.ndarray:
    """AP per threshold of one class (official ``compute_average_precision_detection``).

    ``gt_video``/``pred_video`` are integer video ids; rows must already be in the official
    order (stably sorted by video id). Returns ``ap`` [n_thresholds].
    """
    thr = np.asarray(thresholds, dtype=np.float64)
    n_thr = thr.size
    n_pred = int(pred_score.size)
    ap = np.zeros(n_thr)
    if n_pred == 0:
        return ap
    npos = float(gt_video.size)
    order = np.argsort(pred_score, kind="stable")[::-1]
    pv = pred_video[order]
    ps = pred_seg[order]

    # Padded per-video GT tables: only videos that have GT of this class can give a TP.
    gvids, ginv = np.unique(gt_video, return_inverse=True)
    counts = np.bincount(ginv, minlength=gvids.size)
    gmax = int(counts.max()) if counts.size else 0
    gpos = np.zeros(gt_video.size, dtype=np.int64)  # position of each GT inside its video
    gsort = np.argsort(ginv, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    gpos[gsort] = np.arange(gt_video.size) - starts[ginv[gsort]]
    g_s = np.zeros((gvids.size, max(gmax, 1)))
    g_e = np.zeros_like(g_s)
    valid = np.zeros(g_s.shape, dtype=bool)
    g_s[ginv, gpos] = gt_seg[:, 0]
    g_e[ginv, gpos] = gt_seg[:, 1]
    valid[ginv, gpos] = True

    tp = np.zeros((n_thr, n_pred), dtype=bool)
    if gvids.size:
        loc = np.minimum(np.searchsorted(gvids, pv), gvids.size - 1)
        rows = np.flatnonzero(gvids[loc] == pv)  # predictions whose video has GT of the class
    else:
        rows = np.zeros(0, dtype=np.int64)
    if rows.size:
        _greedy_match(tp, rows, loc[rows], ps[rows], g_s, g_e, valid, thr)
    tp_c = np.cumsum(tp, axis=1).astype(np.float64)
    fp_c = np.cumsum(~tp, axis=1).astype(np.float64)
    recall = tp_c / npos
    precision = tp_c / (tp_c + fp_c)
    for k in range(n_thr):
        ap[k] = interpolated_ap(precision[k], recall[k])
    return ap


# ----------------------------------------------------------------------------- detection mAP


def _class_index(gt: Mapping[str, Any], subset: str, name: str) -> dict[str, int]:
    cl = gt.get("class-list")
    if cl is None:  # plain ActivityNet layout: classes in order of first test appearance
        index: dict[str, int] = {}
        for v in gt["database"].values():
            if v["subset"] == subset:
                for ann in v["annotations"]:
                    index.setdefault(ann["label"], len(index))
        return index
    items = cl.items() if isinstance(cl, dict) else enumerate(cl)
    try:
        index = {str(label): int(i) for i, label in items}
    except (TypeError, ValueError):
        raise DataError(f"{name}: 'class-list' keys must be integer indices") from None
    if sorted(index.values()) != list(range(len(index))):
        raise DataError(f"{name}: 'class-list' indices must be 0..{len(index) - 1} without gaps")
    return index


def _seg(value: Any, where: str) -> tuple[float, float]:
    try:
        s, e = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise DataError(f"{where}: segment {value!r} is not a [start, end] pair") from None
    return s, e


def _raise_bad_entry(entries: list[Any], where: str) -> None:
    """Find the first malformed detection and raise a DataError that points at it."""
    for i, r in enumerate(entries):
        try:
            float(r["score"])
            seg = r["segment"] if "segment" in r else (r["start"], r["end"])
            r["label"]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}[{i}]: needs 'label', numeric 'score' and 'segment'") from None
        _seg(seg, f"{where}[{i}]")
        if len(seg) != 2:
            raise DataError(f"{where}[{i}]: segment {seg!r} is not a [start, end] pair")
    raise DataError(f"{where}: malformed detections")


def _parse_entries(
    entries: list[Any], index: dict[str, int], where: str, gt_name: str, ignore_unknown: bool
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Columns of one video's detections; a fast bulk path, and a per-entry one for errors."""
    try:
        labels = [r["label"] for r in entries]
        scores = [float(r["score"]) for r in entries]
        segs = [r["segment"] if "segment" in r else (r["start"], r["end"]) for r in entries]
        starts = [float(x[0]) for x in segs]
        ends = [float(x[1]) for x in segs]
        if any(len(x) != 2 for x in segs):
            raise ValueError
    except (KeyError, TypeError, ValueError, IndexError):
        labels = []
    if len(labels) != len(entries):
        _raise_bad_entry(entries, where)
    ids = [index.get(lb, -1) if isinstance(lb, str) else -1 for lb in labels]
    if -1 in ids:
        if not ignore_unknown:
            i = ids.index(-1)
            known = ", ".join(sorted(index)[:10]) + (", ..." if len(index) > 10 else "")
            raise DataError(
                f"{where}[{i}]: label {labels[i]!r} is not a class of {gt_name} (known: {known})"
            )
        keep = [i for i, c in enumerate(ids) if c >= 0]
        ids = [ids[i] for i in keep]
        starts, ends, scores = ([x[i] for i in keep] for x in (starts, ends, scores))
    return ids, starts, ends, scores


def detection_map(
    gt: Mapping[str, Any] | str | Path,
    predictions: Mapping[str, Any] | str | Path,
    tiou_thresholds: Sequence[float] | np.ndarray | None = None,
    subset: str = "test",
    *,
    skip_classes_without_gt: bool = False,
    ignore_unknown_labels: bool = False,
) -> dict[str, Any]:
    """Official ANETdetection mAP. Returns JSON-ready ``{"tiou", "mAP", "average_mAP", "ap",
    "classes", "skipped_classes"}`` with ``ap`` [n_tiou][n_class] over ``classes``.

    ``gt``/``predictions`` are dicts or paths (gt.json and ``{"results": ...}``). Errors name
    the file: a class of ``class-list`` without GT in ``subset`` (unless
    ``skip_classes_without_gt``, which leaves it out of the mAP) and a predicted label outside
    the class list (unless ``ignore_unknown_labels``, which drops those predictions).
    """
    if isinstance(gt, str | Path):
        gt_name, gt = str(gt), load_gt(gt)
    else:
        gt_name, gt = "ground truth", _validate_gt(gt, "ground truth")
    if isinstance(predictions, str | Path):
        pred_name, predictions = str(predictions), load_predictions(predictions)
    else:
        pred_name = "predictions"
        if "results" not in predictions:  # a bare {vid: [...]} mapping
            predictions = {"results": predictions}
        predictions = _validate_predictions(predictions, pred_name)
    if tiou_thresholds is None:
        from hamnet.config import EvalConfig

        tiou_thresholds = EvalConfig().tiou_thresholds
    thr = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    if thr.size == 0:
        raise DataError("detection_map: no tIoU thresholds given")

    index = _class_index(gt, subset, gt_name)
    videos: dict[str, int] = {}
    gt_rows: list[tuple[int, int, float, float]] = []  # (class, video, start, end)
    for vid, v in gt["database"].items():
        if v["subset"] != subset:
            continue
        for ann in v["annotations"]:
            if ann["label"] not in index:
                raise DataError(
                    f"{gt_name}: video {vid!r} has label {ann['label']!r}, which is not in "
                    f"'class-list'"
                )
            s, e = _seg(ann["segment"], f"{gt_name}: video {vid!r}")
            gt_rows.append((index[ann["label"]], videos.setdefault(vid, len(videos)), s, e))
    cols: list[list[float]] = [[], [], [], [], []]  # class, video, start, end, score
    for vid, entries in predictions["results"].items():
        if not isinstance(entries, list):
            raise DataError(f"{pred_name}: results[{vid!r}] must be a list of detections")
        vidx = videos.setdefault(vid, len(videos))
        lab, st, en, sc = _parse_entries(entries, index, f"{pred_name}: results[{vid!r}]",
                                             gt_name, ignore_unknown_labels)
        for col, part in zip(cols, (lab, [vidx] * len(lab), st, en, sc), strict=True):
            col.extend(part)

    # Official order: both tables stably sorted by video id (string order).
    names = np.array(list(videos), dtype=object)
    rank_of_video = np.empty(len(names), dtype=np.int64)
    rank_of_video[np.argsort(names.astype(str), kind="stable")] = np.arange(len(names))
    g = np.array(gt_rows, dtype=np.float64).reshape(-1, 4)
    p = np.array(cols, dtype=np.float64).T.reshape(-1, 5)
    g = g[np.argsort(rank_of_video[g[:, 1].astype(np.int64)], kind="stable")]
    p = p[np.argsort(rank_of_video[p[:, 1].astype(np.int64)], kind="stable")]

    classes = [c for c, _ in sorted(index.items(), key=lambda kv: kv[1])]
    kept, skipped = [], []
    for cidx, cname in enumerate(classes):
        if np.any(g[:, 0] == cidx):
            kept.append(cidx)
        elif skip_classes_without_gt:
            skipped.append(cname)
        else:
            raise DataError(
                f"{gt_name}: class {cname!r} (class-list index {cidx}) has no ground truth in "
                f"subset {subset!r}, so its AP is undefined (the official evaluator crashes "
                f"here); use skip_classes_without_gt / --skip-classes-without-gt to leave it out"
            )
    ap = np.zeros((thr.size, len(kept)))
    for col, cidx in enumerate(kept):
        gm = g[g[:, 0] == cidx]
        pm = p[p[:, 0] == cidx]
        ap[:, col] = average_precision_detection(
            gm[:, 1].astype(np.int64), gm[:, 2:4], pm[:, 1].astype(np.int64), pm[:, 2:4],
            pm[:, 4], thr,
        )
    if kept:
        m_ap = ap.mean(axis=1)
        avg = float(m_ap.mean())
    else:
        m_ap = np.full(thr.size, math.nan)
        avg = math.nan
    return {
        "tiou": thr.tolist(),
        "mAP": m_ap.tolist(),
        "average_mAP": avg,
        "ap": ap.tolist(),
        "classes": [classes[c] for c in kept],
        "skipped_classes": skipped,
    }


# ----------------------------------------------------------------------------- classification


def classification_map(
    scores: Any, labels: Any, *, ignore_classes_without_positives: bool = False
) -> float:
    """Official ``getClassificationMAP`` in percent: mean over classes of the float32 AP.

    Rows are ranked by ``argsort(-score)`` with a stable sort (earlier row first on ties, as the
    official numpy 1.19 did). A class column without positives gives 0/0 = NaN and, as
    officially, a NaN mean, unless ``ignore_classes_without_positives``.
    """
    conf = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels, dtype=np.float64)
    if conf.ndim != 2 or conf.shape != lab.shape:
        raise DataError(
            f"classification_map: scores {conf.shape} and labels {lab.shape} must both be "
            f"[videos, classes]"
        )
    aps = []
    for i in range(lab.shape[1]):
        c, y = conf[:, i], lab[:, i]
        order = np.argsort(-c, kind="stable")
        pos = y[order] == 1
        npos = np.sum(y)
        if npos == 0 and ignore_classes_without_positives:
            continue
        tp = np.cumsum(pos).astype(np.float32)
        fp = np.cumsum(~pos).astype(np.float32)
        prec = tp / (fp + tp)
        with np.errstate(invalid="ignore", divide="ignore"):
            aps.append(np.sum(pos.astype(np.float32) * prec) / npos)
    if not aps:
        return math.nan
    return float(100 * sum(aps) / len(aps))
