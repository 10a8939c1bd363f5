"""Is this video like the ones the model was trained on? An out-of-domain score per video.

Why: HAM-Net answers every video with segments and scores, and nothing in those numbers says
that a video of bikes looks nothing like the rendered shapes the default model learned from.
So every bundle carries a compact description of its *training features* (manifest key
``"domain"``) and every prediction reports how far the video's features are from it.

The description is the range each feature dimension takes on the training snippets: the
``QUANTILE`` and ``1 - QUANTILE`` quantiles per dimension (two vectors over the D dimensions,
stored as base64 float16: ~2 KB for D = 416). The score of a video with features ``F [T, D]``
is the **fraction of its (snippet, dimension) values that fall outside that range**. By
construction about ``2 x QUANTILE`` of a training video's values do; a video from elsewhere
has whole groups of dimensions outside (real footage: the appearance descriptors and the
motion statistics of camera noise and textured motion).

Why ranges and not z-scores: the motion features are sparse and heavy-tailed (a dimension is
exactly 0 on most snippets and large on a few), so a mean and a standard deviation describe
them badly. A z-score average let a fast in-domain action look as odd as a real photo (both
about 3x the median on our validation clips) while the out-of-range fraction separated them
by 3x the threshold; the two designs were compared on validation data only (see
BENCHMARKS.md, "trust"). Averaging a fraction over snippets also needs no length model: a
two-second clip and a minute-long video are judged on the same scale.

What it cannot see: a video whose values each stay inside the training ranges, only in
combinations the training never showed, is not flagged (a full covariance would catch some
of that, at D x D numbers instead of 2 x D).

The threshold is never chosen on the data it is reported on: :func:`choose_threshold` takes a
high quantile of the scores of *held-out in-domain* videos (the build's calibration split, not
the training videos and not the evaluation videos), over whole videos and over windows of
several lengths, times a safety margin. The ranges are rounded to float16 *before* the
threshold is chosen, so the threshold fits exactly what a prediction uses.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hamnet.errors import BundleError, DataError

FORMAT = "hamnet-domain/1"
METHOD = "fraction of feature values outside the training range (per-dimension quantiles)"
QUANTILE = 0.001  # per-dimension range: the 0.1 % and 99.9 % quantiles of training snippets
WINDOWS = (4, 8, 16)  # snippets per held-out window when choosing the threshold
DEFAULT_QUANTILE = 0.99
DEFAULT_MARGIN = 1.25


def _encode(x: np.ndarray) -> str:
    return base64.b64encode(np.asarray(x, dtype="<f2").tobytes()).decode("ascii")


def _decode(text: Any, dim: int, what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(str(text), validate=True)
    except (ValueError, TypeError):
        raise BundleError(f"domain.{what}: not base64") from None
    if len(raw) != 2 * dim:
        raise BundleError(f"domain.{what}: {len(raw) // 2} values for dim {dim}")
    arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise BundleError(f"domain.{what}: contains NaN or inf")
    return arr


@dataclass(frozen=True, eq=False)
class DomainModel:
    """Per-dimension training range plus the threshold above which a video is out of domain."""

    low: np.ndarray  # [D] float32 (float16 values)
    high: np.ndarray  # [D]
    threshold: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # how it was fitted / thresholded

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    def outside(self, features: Any) -> np.ndarray:
        """bool [T, D]: which values of ``features [T, D]`` fall outside the training range."""
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[1] != self.dim or f.shape[0] < 1:
            raise DataError(f"domain score: features must be [T, {self.dim}], got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise DataError("domain score: features contain NaN or inf")
        return (f < self.low) | (f > self.high)

    def score(self, features: Any) -> float:
        """Fraction of the video's feature values outside the training range (0..1)."""
        return float(self.outside(features).mean())

    def check(self, features: Any) -> dict[str, Any]:
        """What a prediction reports: ``{"in_distribution", "score", "threshold"}``."""
        if self.threshold is None:
            raise BundleError("domain: no threshold chosen for this domain model")
        s = self.score(features)
        return {"in_distribution": bool(s <= self.threshold), "score": round(s, 5),
                "threshold": round(float(self.threshold), 5)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": METHOD,
            "dim": self.dim,
            "encoding": "base64 float16 little-endian",
            "low": _encode(self.low),
            "high": _encode(self.high),
            "threshold": None if self.threshold is None else float(self.threshold),
            "info": dict(self.info),
        }


def from_dict(d: Any) -> DomainModel:
    """Parse and validate a manifest's ``"domain"``; raises :class:`BundleError`."""
    if not isinstance(d, Mapping):
        raise BundleError("domain: must be a JSON object")
    if d.get("format") != FORMAT:
        raise BundleError(f"domain: unsupported format {d.get('format')!r} (reads {FORMAT!r})")
    dim = d.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise BundleError(f"domain.dim must be a positive integer, got {dim!r}")
    thr = d.get("threshold")
    if thr is not None and (isinstance(thr, bool) or not isinstance(thr, int | float)
                            or not math.isfinite(thr) or not 0 <= thr <= 1):
        raise BundleError(f"domain.threshold must be a fraction in [0, 1], got {thr!r}")
    model = DomainModel(
        low=_decode(d.get("low"), dim, "low"),
        high=_decode(d.get("high"), dim, "high"),
        threshold=None if thr is None else float(thr),
        info=dict(d.get("info") or {}),
    )
    if np.any(model.low > model.high):
        raise BundleError("domain: 'low' must not exceed 'high' in any dimension")
    return model


def fit(features: Sequence[Any], quantile: float = QUANTILE) -> DomainModel:
    """Per-dimension range of the training videos' snippet features (a list of ``[T_i, D]``
    arrays), rounded to float16 as a bundle stores it; no threshold yet
    (see :func:`choose_threshold`)."""
    feats = [np.asarray(f, dtype=np.float32) for f in features]
    if len(feats) < 2:
        raise DataError("domain fit: need features of at least 2 videos")
    dim = feats[0].shape[1] if feats[0].ndim == 2 else -1
    if any(f.ndim != 2 or f.shape[1] != dim or f.shape[0] < 1 for f in feats):
        raise DataError("domain fit: every video's features must be [T, D] with the same D")
    allf = np.concatenate(feats, axis=0)
    lo, hi = np.quantile(allf, [quantile, 1.0 - quantile], axis=0)
    # round outwards to float16 so that no training value ends up outside by rounding alone
    lo16, hi16 = lo.astype(np.float16), hi.astype(np.float16)
    lo16 = np.where(lo16 > lo, np.nextafter(lo16, np.float16(-np.inf)), lo16).astype(np.float32)
    hi16 = np.where(hi16 < hi, np.nextafter(hi16, np.float16(np.inf)), hi16).astype(np.float32)
    info = {"videos": len(feats), "snippets": int(allf.shape[0]), "quantile": quantile}
    return DomainModel(lo16, hi16, None, info)


def window_scores(
    model: DomainModel, features: Sequence[Any], windows: Sequence[int] = WINDOWS
) -> np.ndarray:
    """Scores of whole videos and of non-overlapping windows of ``windows`` snippets in them
    (what a user's short clip looks like)."""
    out = []
    for f in features:
        bad = model.outside(f).mean(axis=1)  # [T] fraction per snippet
        out.append(float(bad.mean()))
        for w in windows:
            for s in range(0, bad.shape[0] - w + 1, w):
                out.append(float(bad[s:s + w].mean()))
    return np.asarray(out, dtype=np.float64)


def choose_threshold(
    model: DomainModel,
    heldout_features: Sequence[Any],
    quantile: float = DEFAULT_QUANTILE,
    margin: float = DEFAULT_MARGIN,
    windows: Sequence[int] = WINDOWS,
) -> DomainModel:
    """Set the threshold to ``margin x`` the ``quantile`` of held-out in-domain scores (whole
    videos and windows). Held-out: videos the range was not fitted on, and not the ones the
    bundle's metrics are reported on."""
    scores = window_scores(model, heldout_features, windows)
    if scores.size == 0:
        raise DataError("domain threshold: no held-out videos")
    q = float(np.quantile(scores, quantile))
    thr = min(1.0, round(margin * q, 5))
    info = dict(model.info)
    info.update(
        threshold_rule=f"{margin} x the {quantile:.0%} quantile of held-out in-domain scores "
        f"(whole videos and windows of {', '.join(map(str, windows))} snippets)",
        heldout_videos=len(heldout_features),
        heldout_scores=int(scores.size),
        heldout_quantile=round(q, 5),
        heldout_flagged=round(float(np.mean(scores > thr)), 4),
    )
    return replace(model, threshold=thr, info=info)
