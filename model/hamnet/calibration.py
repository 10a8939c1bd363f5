"""Calibrated confidence: turn HAM-Net's raw OIC score into "how often is such a segment right".

Why: the raw score (inner minus outer CAS contrast plus 0.2 x the video-level class
probability, then decayed by soft-NMS) ranks segments well but has no unit; 0.3 may be a sure
hit in one model and noise in another. A person needs a number that means what it says:
among segments with ``confidence`` near p, a fraction near p are *true detections*.

True detection (the matching the detection mAP uses): tIoU >= 0.5 with a ground-truth
instance of the same class in the same video, each instance matched at most once, segments
taken greedily by descending raw score, each to the unmatched instance it overlaps most
(:func:`true_detections`).

The map is isotonic regression (pool-adjacent-violators, numpy) of the true/false labels on
the raw score, fitted on a calibration split that neither training nor the reported
evaluation uses, and stored as knots ``(x, y)``: confidence is ``y`` linearly interpolated at
the raw score, constant beyond the end knots. Isotonic, not Platt: Platt scaling assumes the
log-odds are linear in the raw score, and nothing in an OIC contrast decayed by soft-NMS makes
them so; isotonic regression only assumes that a higher score is never worse, which is what
the score is built for. Blocks are merged until each holds at least ``min_block`` segments so
that a handful of segments cannot produce a confidence of exactly 0 or 1.

The map is fitted for one post-processing profile (the bundle's); with another profile the
raw scores mean something else, and the pipeline reports ``confidence: null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hamnet.errors import BundleError, DataError

FORMAT = "hamnet-calibration/1"
MATCH_TIOU = 0.5
DEFAULT_MIN_BLOCK = 20
DEFAULT_BINS = 10


# ----------------------------------------------------------------------------- labels


def _tiou(seg: tuple[float, float], gts: np.ndarray) -> np.ndarray:
    inter = np.clip(np.minimum(gts[:, 1], seg[1]) - np.maximum(gts[:, 0], seg[0]), 0.0, None)
    union = (gts[:, 1] - gts[:, 0]) + (seg[1] - seg[0]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def true_detections(
    segments: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    tiou: float = MATCH_TIOU,
) -> np.ndarray:
    """bool [N]: is each segment of one video a true detection (see module doc)?

    ``segments``: ``{label, score, start, end}`` (or ``segment: [s, e]``); ``annotations``:
    gt.json entries ``{label, segment: [s, e]}``."""
    n = len(segments)
    out = np.zeros(n, dtype=bool)
    if n == 0 or not annotations:
        return out
    order = sorted(range(n), key=lambda i: -float(segments[i]["score"]))  # stable on ties
    by_label: dict[str, list[Any]] = {}
    for a in annotations:
        by_label.setdefault(a["label"], []).append(a["segment"])
    gts = {k: np.asarray(v, dtype=np.float64).reshape(-1, 2) for k, v in by_label.items()}
    used = {k: np.zeros(len(v), dtype=bool) for k, v in gts.items()}
    for i in order:
        s = segments[i]
        g = gts.get(s["label"])
        if g is None:
            continue
        seg = (float(s["start"]), float(s["end"])) if "start" in s else tuple(s["segment"])
        iou = np.where(used[s["label"]], -1.0, _tiou(seg, g))
        j = int(np.argmax(iou))
        if iou[j] >= tiou:
            used[s["label"]][j] = True
            out[i] = True
    return out


def label_results(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    gt: Mapping[str, Any],
    tiou: float = MATCH_TIOU,
) -> tuple[np.ndarray, np.ndarray]:
    """``(raw scores [N], true [N])`` over every segment of every video in ``results``
    (``{video: [segments]}``) against a gt.json ``gt``; a video missing from ``gt`` is an
    error (its segments could not be judged)."""
    scores, labels = [], []
    db = gt["database"]
    for vid, segs in results.items():
        if vid not in db:
            raise DataError(f"calibration: video {vid!r} has no ground truth")
        labels.append(true_detections(segs, db[vid]["annotations"], tiou))
        scores.append(np.array([float(s["score"]) for s in segs], dtype=np.float64))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return np.concatenate(scores), np.concatenate(labels)


# ----------------------------------------------------------------------------- isotonic fit


def pav(y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool-adjacent-violators on ``y`` (already in x order) with weights ``w``.

    Returns blocks ``(start index, end index (exclusive), mean)``; the means are
    non-decreasing and each is the weighted mean of its rows (least squares)."""
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    means: list[float] = []
    weights: list[float] = []
    starts: list[int] = []
    for i in range(y.size):
        means.append(float(y[i]))
        weights.append(float(w[i]))
        starts.append(i)
        while len(means) > 1 and means[-2] > means[-1]:
            wt = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / wt
            weights[-2] = wt
            del means[-1], weights[-1], starts[-1]
    st = np.asarray(starts, dtype=np.int64)
    en = np.append(st[1:], y.size)
    return st, en, np.asarray(means)


def _merge_small(st: np.ndarray, en: np.ndarray, mean: np.ndarray, w: np.ndarray,
                 min_block: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge blocks lighter than ``min_block`` into their closer-valued neighbour (merging
    neighbours of a monotone sequence keeps it monotone)."""
    blocks = [[int(s), int(e), float(m), float(w[s:e].sum())]
              for s, e, m in zip(st, en, mean, strict=True)]
    while len(blocks) > 1:
        light = [i for i, b in enumerate(blocks) if b[3] < min_block]
        if not light:
            break
        i = min(light, key=lambda k: blocks[k][3])
        if i == 0:
            j = 1
        elif i == len(blocks) - 1:
            j = i - 1
        else:
            left, right = blocks[i - 1][2], blocks[i + 1][2]
            j = i - 1 if abs(blocks[i][2] - left) <= abs(right - blocks[i][2]) else i + 1
        a, b = sorted((i, j))
        wt = blocks[a][3] + blocks[b][3]
        merged = [blocks[a][0], blocks[b][1],
                  (blocks[a][2] * blocks[a][3] + blocks[b][2] * blocks[b][3]) / wt, wt]
        blocks[a:b + 1] = [merged]
    arr = np.asarray(blocks, dtype=np.float64).reshape(-1, 4)
    return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2]


@dataclass(frozen=True, eq=False)
class Calibration:
    """A monotone map raw score -> confidence, stored as knots."""

    x: np.ndarray  # [K] non-decreasing raw scores
    y: np.ndarray  # [K] non-decreasing confidences in [0, 1]
    profile: str  # post-processing profile the raw scores came from
    method: str = "isotonic"
    tiou: float = MATCH_TIOU
    info: dict[str, Any] = field(default_factory=dict)

    def __call__(self, scores: Any) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        return np.clip(np.interp(s, self.x, self.y), 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": self.method,
            "profile": self.profile,
            "tiou": self.tiou,
            "x": [float(v) for v in self.x],  # exact: a sample on a knot must map the same
            "y": [float(v) for v in self.y],
            "info": dict(self.info),
        }


def fit_isotonic(
    scores: Any, labels: Any, profile: str, min_block: int = DEFAULT_MIN_BLOCK,
    tiou: float = MATCH_TIOU,
) -> Calibration:
    """Isotonic regression of ``labels`` (true detection, bool) on raw ``scores``."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(labels, dtype=np.float64).reshape(-1)
    if s.size != t.size or s.size == 0:
        raise DataError(f"calibration: {s.size} scores and {t.size} labels (need >= 1 each)")
    if not np.all(np.isfinite(s)):
        raise DataError("calibration: scores contain NaN or inf")
    order = np.argsort(s, kind="stable")
    s, t = s[order], t[order]
    ux, inv = np.unique(s, return_inverse=True)  # equal scores must get equal confidence
    w = np.bincount(inv).astype(np.float64)
    yy = np.bincount(inv, weights=t) / w
    st, en, mean = pav(yy, w)
    st, en, mean = _merge_small(st, en, mean, w, float(min_block))
    xs, ys = [], []
    for a, b, m in zip(st, en, mean, strict=True):
        for xv in (ux[a], ux[b - 1]):
            if not xs or xv > xs[-1]:
                xs.append(float(xv))
                ys.append(float(m))
    info = {"segments": int(s.size), "true": int(t.sum()), "blocks": int(st.size),
            "min_block": int(min_block)}
    return Calibration(np.asarray(xs), np.asarray(ys), profile, "isotonic", tiou, info)


def from_dict(d: Any) -> Calibration:
    """Parse and validate a manifest's ``"calibration"``; raises :class:`BundleError`."""
    if not isinstance(d, Mapping):
        raise BundleError("calibration: must be a JSON object")
    if d.get("format") != FORMAT:
        raise BundleError(
            f"calibration: unsupported format {d.get('format')!r} (reads {FORMAT!r})"
        )
    try:
        x = np.asarray(d["x"], dtype=np.float64).reshape(-1)
        y = np.asarray(d["y"], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError):
        raise BundleError("calibration: 'x' and 'y' must be lists of numbers") from None
    if x.size == 0 or x.size != y.size:
        raise BundleError(f"calibration: {x.size} knots x but {y.size} knots y (need >= 1)")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise BundleError("calibration: knots contain NaN or inf")
    if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
        raise BundleError("calibration: knots must be non-decreasing (a monotone map)")
    if y.min() < 0 or y.max() > 1:
        raise BundleError("calibration: confidences must lie in [0, 1]")
    profile = d.get("profile")
    if not isinstance(profile, str) or not profile:
        raise BundleError("calibration: 'profile' must name the post-processing profile")
    tiou = d.get("tiou", MATCH_TIOU)
    if isinstance(tiou, bool) or not isinstance(tiou, int | float) or not 0 < tiou <= 1:
        raise BundleError(f"calibration: 'tiou' must be in (0, 1], got {tiou!r}")
    return Calibration(x, y, profile, str(d.get("method", "isotonic")), float(tiou),
                       dict(d.get("info") or {}))


# ----------------------------------------------------------------------------- evaluation


def reliability(
    confidence: Any, labels: Any, bins: int = DEFAULT_BINS
) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error with ``bins`` equal-width confidence bins, and the table.

    ECE = sum over bins of (segments in bin / all segments) x |fraction true - mean
    confidence|. The last bin includes 1.0. Empty bins are listed with ``n = 0``."""
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    t = np.asarray(labels, dtype=np.float64).reshape(-1)
    if c.size != t.size:
        raise DataError(f"reliability: {c.size} confidences but {t.size} labels")
    if c.size == 0:
        return math.nan, []
    idx = np.minimum((c * bins).astype(np.int64), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        row = {"bin": [b / bins, (b + 1) / bins], "n": n, "confidence": None, "true": None}
        if n:
            row["confidence"] = float(c[m].mean())
            row["true"] = float(t[m].mean())
            ece += n / c.size * abs(row["true"] - row["confidence"])
        table.append(row)
    return float(ece), table
