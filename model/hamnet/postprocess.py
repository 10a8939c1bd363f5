"""Test-time post-processing of HAM-Net outputs (numpy only): CAS -> scored temporal segments.

This module restates the official ``Tester.eval_one_batch`` / ``get_proposal_oic`` /
``soft_nms`` path (fixtures README, "Test-time post-processing") so that the service, the
worker and the evaluation share one implementation that needs neither torch nor the training
code. The ``official`` profile reproduces the official output value for value, quirks included;
every quirk fix is a named :class:`~hamnet.config.PostprocessConfig` flag, and the ``fixed``
profile switches them all on.

Profiles (``cfg.profile``):

* ``official``: every quirk fix is forced off, whatever the flags say, so that a bundle or a
  result labelled "official" is always the official behaviour.
* ``fixed``: every quirk fix is on; ``nms_score_floor`` / ``max_proposals_per_class`` default to
  :data:`FIXED_NMS_SCORE_FLOOR` / :data:`FIXED_MAX_PROPOSALS` when left unset.
* ``custom``: the flags are used exactly as written.

The ``fixed`` profile ends with a clean step (:func:`dedupe`): of two segments of the same
class that overlap with tIoU >= :data:`DEDUPE_TIOU` only the higher-scoring one is kept.
Gaussian soft-NMS only *decays* a near-duplicate, so without this step a result lists the same
action two or three times with slightly shifted boundaries, which a person reads as two or
three actions; its effect on held-out mAP is measured in BENCHMARKS.md (``bench/trust.py``).
``custom`` applies only what its flags say (pass ``clean=True`` to add the step); the served
result of :func:`hamnet.pipeline.predict_video` is cleaned in every profile but ``official``.

Numerics follow the official run under numpy 2: attention is compared with ``float32(theta)``,
OIC scores are float32 (``inner - outer + gamma * p``), segments are ``index * t_factor`` in
float64, soft-NMS works in float64 on the float32 scores. Means are taken from float64 prefix
sums (vectorised over runs and classes) and rounded to float32, which agrees with numpy's
float32 pairwise means to ~1e-7 and keeps identical runs bit-identical (so soft-NMS ties break
exactly as officially).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hamnet.config import PostprocessConfig
from hamnet.errors import ConfigError, DataError

PROFILES = ("official", "fixed", "custom")
FIXED_NMS_SCORE_FLOOR = 1e-3  # soft-NMS score below which a proposal is dropped (fixed profile)
FIXED_MAX_PROPOSALS = 100  # proposals kept per class and video (fixed profile)
DEDUPE_TIOU = 0.7  # clean step: of two same-class segments this similar, the lower one goes

# (class_id, score, start_seconds, end_seconds), as the official code emits them.
Proposal = tuple[int, float, float, float]

__all__ = [
    "PROFILES",
    "Proposal",
    "LocalizeTrace",
    "ThresholdStep",
    "resolve_profile",
    "topk_k",
    "video_scores",
    "compute_t_factor",
    "attention_runs",
    "oic_scores",
    "soft_nms",
    "DEDUPE_TIOU",
    "dedupe_mask",
    "dedupe",
    "dedupe_applies",
    "localize",
    "localize_trace",
    "to_segments",
    "predict_from_outputs",
]


# ----------------------------------------------------------------------------- configuration


def resolve_profile(cfg: PostprocessConfig) -> PostprocessConfig:
    """Return ``cfg`` with its quirk flags set as its ``profile`` demands (see module doc)."""
    if cfg.profile == "official":
        return replace(
            cfg, fix_snippet0=False, fix_symmetric_outer=False, fix_nms_seconds=False,
            nms_score_floor=None, max_proposals_per_class=None,
        )
    if cfg.profile == "fixed":
        return replace(
            cfg, fix_snippet0=True, fix_symmetric_outer=True, fix_nms_seconds=True,
            nms_score_floor=(
                FIXED_NMS_SCORE_FLOOR if cfg.nms_score_floor is None else cfg.nms_score_floor
            ),
            max_proposals_per_class=(
                FIXED_MAX_PROPOSALS if cfg.max_proposals_per_class is None
                else cfg.max_proposals_per_class
            ),
        )
    if cfg.profile == "custom":
        return cfg
    raise ConfigError(
        f"postprocess.profile: unknown profile {cfg.profile!r}; known: {', '.join(PROFILES)}"
    )


def _check_cfg(cfg: PostprocessConfig) -> None:
    if cfg.fps <= 0 or cfg.snippet_frames <= 0 or cfg.scale <= 0:
        raise ConfigError(
            f"postprocess: fps ({cfg.fps}), snippet_frames ({cfg.snippet_frames}) and scale "
            f"({cfg.scale}) must be positive"
        )
    if cfg.rat < 1:
        raise ConfigError(f"postprocess.rat must be >= 1, got {cfg.rat}")
    if cfg.nms_sigma <= 0:
        raise ConfigError(f"postprocess.nms_sigma must be > 0, got {cfg.nms_sigma}")
    if cfg.max_proposals_per_class is not None and cfg.max_proposals_per_class < 1:
        raise ConfigError(
            f"postprocess.max_proposals_per_class must be >= 1, got {cfg.max_proposals_per_class}"
        )


def _as_outputs(elem: Any, atn: Any, where: str = "head outputs") -> tuple[np.ndarray, np.ndarray]:
    """Validate ``elem [T,C+1]`` and ``atn [T,1]|[T]`` and return them as float32 arrays."""
    e = np.asarray(elem)
    a = np.asarray(atn)
    if e.ndim == 3 and e.shape[0] == 1:
        e = e[0]
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if e.ndim != 2 or e.shape[1] < 2:
        raise DataError(f"{where}: element logits must be [T, C+1] with C >= 1, got {e.shape}")
    if a.ndim != 1 or a.shape[0] != e.shape[0]:
        raise DataError(
            f"{where}: attention must be [T, 1] with T = {e.shape[0]}, got {np.shape(atn)}"
        )
    if e.shape[0] < 1:
        raise DataError(f"{where}: empty sequence (T = 0)")
    e = e.astype(np.float32, copy=False)
    a = a.astype(np.float32, copy=False)
    if not (np.isfinite(e).all() and np.isfinite(a).all()):
        raise DataError(f"{where}: element logits or attention contain NaN/inf")
    return e, a


# ----------------------------------------------------------------------------- video scores


def topk_k(num_snippets: int, rat: int) -> int:
    """Top-k size of the video score: ``max(1, T // rat)`` (official ``get_cls_score``)."""
    return max(1, int(num_snippets) // int(rat))


def video_scores(elem: Any, atn: Any, rat: int = 10) -> np.ndarray:
    """Video-level class probabilities ``p`` [C] (float32), background dropped.

    Top-k temporal mean of ``CAS = E * A`` over all C+1 columns (background included, as the
    official tester does), softmax over C+1, then the background column is removed. Computed in
    float64 and rounded once to float32, which matches the official torch float32 to ~1 ulp.
    """
    e, a = _as_outputs(elem, atn)
    cas = e * a[:, None]  # float32 product, exactly as torch computes it
    k = topk_k(cas.shape[0], rat)
    top = np.partition(cas, cas.shape[0] - k, axis=0)[cas.shape[0] - k:]
    s = top.astype(np.float64).mean(axis=0)
    z = np.exp(s - s.max())
    p = z / z.sum()
    return p[:-1].astype(np.float32)


# ----------------------------------------------------------------------------- proposals


def compute_t_factor(num_snippets: int, cfg: PostprocessConfig, vid_num_seg: int | None = None) -> float:
    """Seconds per snippet index: ``(snippet_frames * vid_num_seg) / (scale * T * fps)``.

    Evaluated in the official order (numerator first, then ``scale * T * fps``), so that
    ``index * t_factor`` reproduces the official segment floats bit for bit.
    """
    v = int(num_snippets if vid_num_seg is None else vid_num_seg)
    return (cfg.snippet_frames * v) / (cfg.scale * int(num_snippets) * cfg.fps)


def attention_runs(
    atn: np.ndarray, theta: float, fix_snippet0: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices with ``A > float32(theta)`` and their maximal runs ``(indices, starts, ends)``.

    Official quirk (snippet-0): the code tests the index array with ``.any()``, so when the only
    index above ``theta`` is 0 the threshold produces nothing; ``fix_snippet0`` keeps it.
    """
    idx = np.flatnonzero(atn > np.float32(theta))
    empty = np.zeros(0, dtype=np.int64)
    if idx.size == 0 or (not fix_snippet0 and not idx.any()):
        return idx, empty, empty
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = idx[np.concatenate(([0], breaks + 1))]
    ends = idx[np.concatenate((breaks, [idx.size - 1]))]
    return idx, starts.astype(np.int64), ends.astype(np.int64)


def oic_scores(
    prefix: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    p_pred: np.ndarray,
    cfg: PostprocessConfig,
) -> np.ndarray:
    """Outer-inner-contrast scores [n_classes, n_runs] (float32) for runs ``[s..e]``.

    ``prefix`` is the float64 prefix sum [T+1, n_classes] of the class CAS. Official outer
    region: ``[trunc(s - lam*L), s) U (e, trunc(e + lam*L)]`` clipped to the video, which is
    asymmetric (ceil on the left, floor on the right); ``fix_symmetric_outer`` uses
    ``ceil(lam*L)`` on both sides.
    """
    num_t = prefix.shape[0] - 1
    length = (ends - starts + 1).astype(np.float64)
    if cfg.fix_symmetric_outer:
        ext = np.ceil(cfg.oic_lambda * length).astype(np.int64)
        o_s = np.maximum(0, starts - ext)
        o_e = np.minimum(num_t - 1, ends + ext)
    else:
        o_s = np.maximum(0, np.trunc(starts - cfg.oic_lambda * length).astype(np.int64))
        o_e = np.minimum(num_t - 1, np.trunc(ends + cfg.oic_lambda * length).astype(np.int64))
    inner = (prefix[ends + 1] - prefix[starts]) / length[:, None]
    count = (starts - o_s) + (o_e - ends)
    outer_sum = (prefix[starts] - prefix[o_s]) + (prefix[o_e + 1] - prefix[ends + 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        outer = np.where(count[:, None] > 0, outer_sum / np.maximum(count, 1)[:, None], 0.0)
    inner32 = inner.astype(np.float32)
    outer32 = outer.astype(np.float32)
    bonus = np.float32(cfg.gamma_oic) * p_pred.astype(np.float32)
    return ((inner32 - outer32) + bonus[None, :]).T


_NMS_MATRIX_MAX = 256  # up to this many rows the decay matrix is precomputed (per-call overhead
# dominates there); longer lists compute one decay row per pick (half the arithmetic)


def _nms_weights(
    x1: np.ndarray, x2: np.ndarray, area: np.ndarray, top: int, rest: np.ndarray,
    sigma: float, plus_one: bool,
) -> np.ndarray:
    """Gaussian decay ``exp(-iou^2 / sigma)`` of rows ``rest`` by row ``top`` (official maths)."""
    xx1 = np.maximum(x1[top], x1[rest])
    xx2 = np.minimum(x2[top], x2[rest])
    if plus_one:
        inter = np.maximum(xx2 - xx1 + 1, 0.0)
        iou = inter / (area[top] + area[rest] - inter)
    else:
        inter = np.maximum(xx2 - xx1, 0.0)
        union = area[top] + area[rest] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.exp(-(iou * iou) / sigma)


def _nms_weight_matrix(
    x1: np.ndarray, x2: np.ndarray, area: np.ndarray, sigma: float, plus_one: bool
) -> np.ndarray:
    """All pairwise decays at once, with the same float operations as :func:`_nms_weights`.

    max, min and ``+`` commute exactly, so entry (i, j) equals the official per-pick value.
    ``exp`` runs only on overlapping pairs (``exp(-0.0)`` is exactly 1; most pairs are
    disjoint), and outer ufuncs avoid fancy-index gathers.
    """
    inter = np.minimum.outer(x2, x2)
    inter -= np.maximum.outer(x1, x1)
    if plus_one:
        inter += 1
    np.maximum(inter, 0.0, out=inter)
    union = np.add.outer(area, area)
    union -= inter
    hit = inter > 0
    if not plus_one:
        hit &= union > 0
    iou = inter[hit] / union[hit]
    out = np.ones_like(inter)
    out[hit] = np.exp(-(iou * iou) / sigma)
    return out


def soft_nms(
    scores: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    sigma: float = 0.3,
    plus_one: bool = True,
    score_floor: float | None = None,
    max_keep: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian soft-NMS of one class. Returns ``(order, rescored)`` in emission order.

    Official behaviour (``plus_one=True``): lengths and intersections get ``+1`` (a pixel-box
    convention applied to seconds), nothing is ever removed, and the picked row is swapped with
    the first remaining row, which decides later ties (first argmax), so the swap is reproduced
    on a position permutation. The pairwise decay matrix is computed once (up to
    ``_NMS_MATRIX_MAX`` rows, else one row per pick), so each pick costs an argmax, a swap and
    one gathered multiply instead of ten vector operations.
    """
    n = int(scores.shape[0])
    s = np.asarray(scores, dtype=np.float64).copy()  # in position order
    x1 = np.asarray(starts, dtype=np.float64)
    x2 = np.asarray(ends, dtype=np.float64)
    area = x2 - x1 + 1 if plus_one else x2 - x1
    pos = np.arange(n)  # pos[k] = original row at position k
    weights = _nms_weight_matrix(x1, x2, area, sigma, plus_one) if n <= _NMS_MATRIX_MAX else None
    limit = n if max_keep is None else min(n, int(max_keep))
    out_pos = np.empty(limit, dtype=np.int64)
    out_score = np.empty(limit, dtype=np.float64)
    kept = 0
    for k in range(limit):
        m = k + int(s[k:].argmax())
        if score_floor is not None and s[m] < score_floor:
            break  # every remaining score is below the floor: all of them are dropped
        if m != k:
            s[k], s[m] = s[m], s[k]
            pos[k], pos[m] = pos[m], pos[k]
        top = pos[k]
        out_pos[kept] = top
        out_score[kept] = s[k]
        kept += 1
        rest = pos[k + 1:]
        if rest.size:
            if weights is not None:
                s[k + 1:] *= weights[top, rest]
            else:
                s[k + 1:] *= _nms_weights(x1, x2, area, top, rest, sigma, plus_one)
    return out_pos[:kept], out_score[:kept]


def dedupe_mask(
    labels: Sequence[int], scores: Sequence[float], starts: Sequence[float],
    ends: Sequence[float], tiou: float = DEDUPE_TIOU,
) -> np.ndarray:
    """Which rows survive the clean step (bool [N]): greedy by descending score within each
    class, a row is dropped when its tIoU with an already kept row of its class is >= ``tiou``.

    Ties in score keep the earlier row (stable order). Zero-length rows have tIoU 0 with
    everything (never dropped by this rule, never dropping others).
    """
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    st = np.asarray(starts, dtype=np.float64).reshape(-1)
    en = np.asarray(ends, dtype=np.float64).reshape(-1)
    keep = np.ones(lab.size, dtype=bool)
    for c in np.unique(lab):
        rows = np.flatnonzero(lab == c)
        rows = rows[np.argsort(-sc[rows], kind="stable")]
        kept: list[int] = []
        for r in rows.tolist():
            if kept:
                k = np.asarray(kept)
                inter = np.clip(np.minimum(en[k], en[r]) - np.maximum(st[k], st[r]), 0.0, None)
                union = (en[k] - st[k]) + (en[r] - st[r]) - inter
                with np.errstate(invalid="ignore", divide="ignore"):
                    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
                if np.any(iou >= tiou):
                    keep[r] = False
                    continue
            kept.append(r)
    return keep


def dedupe(proposals: Sequence[Proposal], tiou: float = DEDUPE_TIOU) -> list[Proposal]:
    """The clean step on proposals ``(class_id, score, start, end)``; order is preserved."""
    if not proposals:
        return []
    arr = np.asarray(proposals, dtype=np.float64)
    keep = dedupe_mask(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], tiou)
    return [p for p, k in zip(proposals, keep.tolist(), strict=True) if k]


def dedupe_applies(cfg: PostprocessConfig) -> bool:
    """Whether :func:`localize_trace` cleans by default: in the ``fixed`` profile only
    (``official`` must stay exact, ``custom`` does what its flags say)."""
    return cfg.profile == "fixed"


# ----------------------------------------------------------------------------- full pipeline


@dataclass
class ThresholdStep:
    """What one attention threshold produced (before soft-NMS)."""

    threshold: float
    indices: np.ndarray  # snippet indices with A > threshold
    starts: np.ndarray  # run starts (empty when the threshold produced nothing)
    ends: np.ndarray
    scores: np.ndarray  # [n_pred_classes, n_runs] float32 OIC scores
    segments: np.ndarray  # [n_runs, 2] seconds


@dataclass
class LocalizeTrace:
    """Every intermediate of :func:`localize`, for debugging and fixture comparison."""

    cfg: PostprocessConfig  # the resolved config
    num_snippets: int
    k: int
    t_factor: float
    video_scores: np.ndarray  # [C] float32
    pred_classes: np.ndarray  # ascending class ids with p >= class_thresh
    steps: list[ThresholdStep] = field(default_factory=list)
    proposals: list[Proposal] = field(default_factory=list)  # final, official order


def localize_trace(
    elem: Any,
    atn: Any,
    cfg: PostprocessConfig | None = None,
    vid_num_seg: int | None = None,
    clean: bool | None = None,
) -> LocalizeTrace:
    """Run the whole post-processing and keep every intermediate (see :func:`localize`).

    ``clean`` forces the clean step (:func:`dedupe`) on or off; ``None`` follows the profile
    (:func:`dedupe_applies`). Forcing it off is for measuring what it changes."""
    cfg = resolve_profile(cfg if cfg is not None else PostprocessConfig())
    _check_cfg(cfg)
    e, a = _as_outputs(elem, atn)
    num_t = e.shape[0]
    p = video_scores(e, a, cfg.rat)
    pred = np.flatnonzero(p >= np.float32(cfg.class_thresh))
    tau = compute_t_factor(num_t, cfg, vid_num_seg)
    trace = LocalizeTrace(cfg, num_t, topk_k(num_t, cfg.rat), tau, p, pred)
    if pred.size == 0:
        return trace
    cas = (e[:, pred] * a[:, None]).astype(np.float64)  # class CAS, float32 product first
    prefix = np.concatenate((np.zeros((1, pred.size)), np.cumsum(cas, axis=0)), axis=0)
    pooled: list[list[np.ndarray]] = [[] for _ in pred]  # per class: [score, start, end] blocks
    for theta in cfg.act_thresh:
        idx, st, en = attention_runs(a, float(theta), cfg.fix_snippet0)
        if st.size:
            sc = oic_scores(prefix, st, en, p[pred], cfg)
            seg = np.stack((st * tau, (en + 1) * tau), axis=1)
        else:
            sc = np.zeros((pred.size, 0), np.float32)
            seg = np.zeros((0, 2))
        trace.steps.append(ThresholdStep(float(theta), idx, st, en, sc, seg))
        for ci in range(pred.size):
            if st.size:
                pooled[ci].append(np.column_stack((sc[ci].astype(np.float64), seg)))
    for ci, c in enumerate(pred):
        if not pooled[ci]:
            continue
        rows = np.concatenate(pooled[ci], axis=0)
        order, rescored = soft_nms(
            rows[:, 0], rows[:, 1], rows[:, 2], sigma=cfg.nms_sigma,
            plus_one=not cfg.fix_nms_seconds, score_floor=cfg.nms_score_floor,
            max_keep=cfg.max_proposals_per_class,
        )
        trace.proposals.extend(
            (int(c), score, float(rows[j, 1]), float(rows[j, 2]))
            for j, score in zip(order.tolist(), rescored.tolist(), strict=True)
        )
    if dedupe_applies(cfg) if clean is None else clean:
        trace.proposals = dedupe(trace.proposals)
    return trace


def localize(
    elem: Any,
    atn: Any,
    cfg: PostprocessConfig | None = None,
    vid_num_seg: int | None = None,
) -> list[Proposal]:
    """Proposals ``(class_id, score, start_s, end_s)`` of one video, in the official order.

    ``elem`` are the element logits [T, C+1] (background last) and ``atn`` the attention
    [T, 1]. ``vid_num_seg`` is the original snippet count when ``T`` was resampled (official
    t_factor formula); it defaults to ``T``. Classes come out in ascending id, each in soft-NMS
    emission order. An empty list means no class reached ``class_thresh``.
    """
    return localize_trace(elem, atn, cfg, vid_num_seg).proposals


def to_segments(proposals: Sequence[Proposal], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Proposals as JSON-ready dicts ``{label, label_id, start, end, score}``."""
    out = []
    for cid, score, start, end in proposals:
        if not 0 <= int(cid) < len(classes):
            raise DataError(
                f"proposal class id {cid} is outside the class list ({len(classes)} classes)"
            )
        out.append({
            "label": classes[int(cid)], "label_id": int(cid),
            "start": float(start), "end": float(end), "score": float(score),
        })
    return out


def predict_from_outputs(
    elem: Any,
    atn: Any,
    classes: Sequence[str],
    cfg: PostprocessConfig | None = None,
    vid_num_seg: int | None = None,
    clean: bool | None = None,
) -> dict[str, Any]:
    """One call from head outputs to the JSON the CLI/service return.

    ``clean``: see :func:`localize_trace`.

    ``segments`` are in the official order; ``classes`` lists the predicted classes (video score
    >= class_thresh) by descending score; ``video_scores`` holds every class's probability.
    """
    e, a = _as_outputs(elem, atn)
    if e.shape[1] - 1 != len(classes):
        raise DataError(
            f"head outputs have {e.shape[1] - 1} classes but {len(classes)} class names were "
            f"given"
        )
    tr = localize_trace(e, a, cfg, vid_num_seg, clean)
    p = tr.video_scores
    predicted = sorted(tr.pred_classes.tolist(), key=lambda c: (-float(p[c]), c))
    return {
        "segments": to_segments(tr.proposals, classes),
        "classes": [
            {"label": classes[c], "label_id": int(c), "score": float(p[c])} for c in predicted
        ],
        "video_scores": [
            {"label": name, "score": float(p[i])} for i, name in enumerate(classes)
        ],
        "num_snippets": tr.num_snippets,
        "snippet_seconds": tr.t_factor,
        "duration": tr.num_snippets * tr.t_factor,
        "profile": tr.cfg.profile,
        "attention": a.astype(float).tolist(),
    }
