"""Synthetic snippet features with known ground truth, written in the W-TAL layout.

Why: real I3D features are large downloads that CI cannot fetch, and a training loop needs data
on which "it learns" is a checkable claim. The generator places actions exactly where a real
dataset has them (``structure="thumos14"`` borrows THUMOS'14 video lengths, instances, classes
and subsets from its annotation folder) or at random (``structure="random"``), and builds each
snippet feature as

    x_t = noise + scene_v + a(t)·s_act·u_act + Σ_c a_c(t)·s_c·u_c
          + context·(1 − a(t))·Σ_{c ∈ labels(v)} u_c + edge(t)·s_edge·u_edge

* ``u_c``: one random unit direction per class (the class prototype), ``s_c`` its strength
  (classes differ in difficulty);
* ``u_act``: a class-agnostic action-ness direction (what the attention branch should find);
* ``a_c(t)``: soft boxes with logistic onsets/offsets (width ``edge_width`` snippets), so the
  boundaries are blurred like real motion ramps; ``edge(t)`` adds a weak, shared "transition"
  signal near each boundary (weakly distinctive onsets/offsets);
* ``context``: the video's classes leak weakly into its background (scene context, the main
  reason weak supervision over-extends segments);
* ``scene_v``: a per-video offset (camera/scene nuisance), ``noise``: i.i.d. Gaussian with std
  ``0.5·difficulty``; the sum is multiplied by ``scale`` (see :class:`SynthSpec`).

Snippet t covers [t·16/25, (t+1)·16/25) seconds, the THUMOS I3D convention (16 frames at 25 fps),
so a video of ``duration`` seconds has ``int(duration·25/16)`` snippets. Everything is
deterministic in ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.data.wtal import WTALDataset, WTALVideo, write_wtal
from hamnet.errors import DataError

SNIPPETS_PER_SECOND = 25 / 16
STRUCTURES = ("thumos14", "random")


@dataclass(frozen=True)
class SynthSpec:
    """Knobs of the generator. Strengths are in units of the per-dimension noise std at
    difficulty 1 (a unit direction carrying strength s has SNR s along that direction)."""

    dim: int = 2048
    difficulty: float = 1.0  # noise std = 0.5 * difficulty
    class_strength: float = 3.0  # mean s_c; each class draws s_c in [0.7, 1.3]·class_strength
    action_strength: float = 3.0
    context: float = 0.4
    edge_strength: float = 0.5
    edge_width: float = 1.0  # snippets
    scene_strength: float = 1.0
    # Global scale of the output. Real I3D features are small per dimension; large inputs give
    # the randomly initialised network large, confidently wrong CAS, and the SAL term then
    # drives the attention to 0 (sigmoid saturates) before the classifier learns anything.
    scale: float = 0.3
    # random structure only
    num_classes: int = 20
    min_length: int = 64
    max_length: int = 320


def _soft_box(t: np.ndarray, start: float, end: float, width: float) -> np.ndarray:
    """Smooth indicator of [start, end) in snippet units (t are snippet centres)."""
    w = max(width, 1e-3)
    z_on = np.clip((t - start) / w, -50, 50)
    z_off = np.clip((end - t) / w, -50, 50)
    return 1.0 / (1.0 + np.exp(-z_on)) / (1.0 + np.exp(-z_off))


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    u = rng.standard_normal((n, dim))  # [n, D]
    return u / np.linalg.norm(u, axis=1, keepdims=True)


@dataclass
class _Layout:
    """Temporal structure of one video before features exist."""

    name: str
    subset: str
    length: int  # snippets
    duration: float
    segments: list[tuple[float, float]]
    labels: list[str]
    labels_all: list[str]


def _thumos_layouts(annotations: Path) -> tuple[list[_Layout], list[str]]:
    ann_dir = Path(annotations)
    parent, folder = ann_dir.parent, ann_dir.name
    if not folder.endswith("-Annotations"):
        raise DataError(f"{ann_dir}: expected a '<name>-Annotations' folder")
    name = folder[: -len("-Annotations")]
    # Reuse the validating reader; features are not needed, so give it none to read.
    meta = _AnnotationsOnly(parent, name)
    layouts = []
    for i, vid in enumerate(meta.videonames):
        dur = float(meta.durations[i]) if meta.durations is not None else None
        if dur is None:
            raise DataError(f"{ann_dir / 'duration.npy'}: needed for structure='thumos14'")
        layouts.append(
            _Layout(
                name=vid,
                subset=meta.subsets[i],
                length=max(1, int(dur * SNIPPETS_PER_SECOND)),
                duration=dur,
                segments=list(meta.segments[i]),
                labels=list(meta.labels[i]),
                labels_all=list(meta.labels_all[i]),
            )
        )
    return layouts, meta.classlist


class _AnnotationsOnly(WTALDataset):
    """A :class:`WTALDataset` that validates the annotations but has no features."""

    def _load_features(self, feature_size: int | None, check_finite: bool) -> list[np.ndarray]:
        self.feature_size = 0
        return []


def _random_layouts(
    spec: SynthSpec, n: int, rng: np.random.Generator
) -> tuple[list[_Layout], list[str]]:
    classes = [f"Class{i:02d}" for i in range(spec.num_classes)]
    layouts = []
    for i in range(n):
        subset = "validation" if i % 2 == 0 else "test"
        length = int(rng.integers(spec.min_length, spec.max_length + 1))
        ncls = 1 if rng.random() < 0.8 else 2
        cls = list(rng.choice(spec.num_classes, size=ncls, replace=False))
        segs: list[tuple[float, float]] = []
        labs: list[str] = []
        occupied = np.zeros(length, dtype=bool)
        for c in cls:
            for _ in range(int(rng.integers(1, 5))):
                ln = int(rng.integers(max(2, length // 20), max(3, length // 4)))
                st = int(rng.integers(0, max(1, length - ln)))
                if occupied[st : st + ln].any():
                    continue
                occupied[st : st + ln] = True
                segs.append((st / SNIPPETS_PER_SECOND, (st + ln) / SNIPPETS_PER_SECOND))
                labs.append(classes[c])
        if not segs:  # every placement collided: put one instance at the start
            ln = max(2, length // 10)
            segs.append((0.0, ln / SNIPPETS_PER_SECOND))
            labs.append(classes[cls[0]])
        order = np.argsort([s for s, _ in segs])
        segs = [segs[k] for k in order]
        labs = [labs[k] for k in order]
        layouts.append(
            _Layout(
                name=f"video_{subset}_{i:07d}",
                subset=subset,
                length=length,
                duration=length / SNIPPETS_PER_SECOND,
                segments=segs,
                labels=labs,
                labels_all=list(dict.fromkeys(labs)),
            )
        )
    return layouts, classes


def _subsample(
    layouts: list[_Layout], n: int, rng: np.random.Generator, max_length: int | None
) -> list[_Layout]:
    """Keep ``n`` videos, half per subset, covering every class in every subset when possible.

    Why coverage: the official evaluator (and ours, by default) averages AP over every class of
    the class list, so a test split without some class would make mAP meaningless.
    """
    pool = [lay for lay in layouts if lay.labels_all]
    if max_length is not None:
        pool = [lay for lay in pool if lay.length <= max_length]
    subsets = sorted({lay.subset for lay in pool})
    keep: list[_Layout] = []
    for k, sub in enumerate(subsets):
        quota = n // len(subsets) + (1 if k < n % len(subsets) else 0)
        cand = [pool[i] for i in rng.permutation(len(pool)) if pool[i].subset == sub]
        chosen: list[_Layout] = []
        covered: set[str] = set()
        for lay in cand:  # first pass: one video per uncovered class
            if len(chosen) >= quota:
                break
            if set(lay.labels_all) - covered:
                chosen.append(lay)
                covered |= set(lay.labels_all)
        for lay in cand:
            if len(chosen) >= quota:
                break
            if lay not in chosen:
                chosen.append(lay)
        keep.extend(chosen)
    order = {lay.name: i for i, lay in enumerate(layouts)}
    return sorted(keep, key=lambda lay: order[lay.name])


def _video_features(
    lay: _Layout, spec: SynthSpec, protos: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    t = np.arange(lay.length) + 0.5  # [T] snippet centres
    d = spec.dim
    x = rng.standard_normal((lay.length, d)).astype(np.float32) * (0.5 * spec.difficulty)
    x += (spec.scene_strength * _unit_rows(rng, 1, d)[0]).astype(np.float32)
    act = np.zeros(lay.length)  # [T] action-ness a(t)
    edge = np.zeros(lay.length)  # [T] boundary signal
    cls_sig = np.zeros((lay.length, d))  # [T, D]
    for (s, e), lab in zip(lay.segments, lay.labels, strict=True):
        s_sn, e_sn = s * SNIPPETS_PER_SECOND, e * SNIPPETS_PER_SECOND
        box = _soft_box(t, s_sn, e_sn, spec.edge_width)  # [T]
        act = np.maximum(act, box)
        cls_sig += np.outer(box, protos["strength"][lab] * protos["class"][lab])
        for b in (s_sn, e_sn):
            edge = np.maximum(edge, np.exp(-0.5 * ((t - b) / max(spec.edge_width, 0.5)) ** 2))
    x += cls_sig.astype(np.float32)
    x += np.outer(act * spec.action_strength, protos["action"]).astype(np.float32)
    x += np.outer(edge * spec.edge_strength, protos["edge"]).astype(np.float32)
    if lay.labels_all and spec.context:
        ctx = sum(protos["class"][c] for c in lay.labels_all)  # [D]
        x += np.outer((1.0 - act) * spec.context, ctx).astype(np.float32)
    return x * np.float32(spec.scale)  # [T, D]


def generate(
    out_dir: str | Path,
    *,
    structure: str = "thumos14",
    annotations: str | Path | None = None,
    name: str = "Thumos14reduced",
    videos: int | None = None,
    seed: int = 0,
    spec: SynthSpec | None = None,
    max_length: int | None = None,
    classes: int | list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate a synthetic W-TAL dataset in ``out_dir`` and return a summary.

    ``structure="thumos14"`` needs ``annotations`` (a ``Thumos14reduced-Annotations`` folder);
    ``videos`` subsamples it (half per subset, class-covering), ``max_length`` skips videos
    longer than that many snippets (CI speed) and ``classes`` (a number: the first n of the
    sorted class list, or names) keeps only videos whose labels all lie in those classes, with
    that smaller class list (more videos per class: a smaller, easier problem with the same
    real temporal structure). ``structure="random"`` makes ``videos`` videos
    (default 200) alternating between subsets 'validation' (train) and 'test'.
    """
    spec = spec or SynthSpec()
    if structure not in STRUCTURES:
        raise DataError(f"unknown structure {structure!r}; choose one of {', '.join(STRUCTURES)}")
    if spec.dim < 1:
        raise DataError(f"feature dimension must be positive, got {spec.dim}")
    rng = np.random.default_rng(seed)
    if structure == "thumos14":
        if annotations is None:
            raise DataError("structure='thumos14' needs the Thumos14reduced-Annotations folder")
        layouts, all_classes = _thumos_layouts(Path(annotations))
        if classes is not None:
            keep = all_classes[:classes] if isinstance(classes, int) else list(classes)
            unknown = sorted(set(keep) - set(all_classes))
            if unknown or not keep:
                raise DataError(f"{annotations}: classes {unknown or keep} not in the class list")
            layouts = [
                lay for lay in layouts if lay.labels_all and set(lay.labels_all) <= set(keep)
            ]
            all_classes = sorted(keep)
        class_names = all_classes
        if videos is not None or max_length is not None:
            layouts = _subsample(layouts, videos or len(layouts), rng, max_length)
    else:
        layouts, class_names = _random_layouts(spec, videos or 200, rng)
    if not layouts:
        raise DataError("no video left to generate (check videos / max_length)")

    proto_rng = np.random.default_rng([seed, 1])
    dirs = _unit_rows(proto_rng, len(class_names) + 2, spec.dim)  # [C+2, D]
    strengths = proto_rng.uniform(0.7, 1.3, size=len(class_names)) * spec.class_strength
    protos = {
        "class": {c: dirs[i] for i, c in enumerate(class_names)},
        "strength": {c: float(strengths[i]) for i, c in enumerate(class_names)},
        "action": dirs[len(class_names)],
        "edge": dirs[len(class_names) + 1],
    }
    items = layouts
    if progress:
        from tqdm import tqdm

        items = tqdm(layouts, desc="synthesising", unit="video")
    out: list[WTALVideo] = []
    for k, lay in enumerate(items):
        vrng = np.random.default_rng([seed, 2, k])
        out.append(
            WTALVideo(
                name=lay.name,
                features=_video_features(lay, spec, protos, vrng),
                subset=lay.subset,
                segments=lay.segments,
                labels=lay.labels,
                duration=lay.duration,
                labels_all=lay.labels_all,
            )
        )
    fpath = write_wtal(out_dir, name, out, class_names)
    counts: dict[str, int] = {}
    for lay in layouts:
        counts[lay.subset] = counts.get(lay.subset, 0) + 1
    return {
        "features": str(fpath),
        "name": name,
        "videos": len(layouts),
        "subsets": counts,
        "snippets": int(sum(lay.length for lay in layouts)),
        "instances": int(sum(len(lay.segments) for lay in layouts)),
        "classes": list(class_names),
        "dim": spec.dim,
        "seed": seed,
        "structure": structure,
    }
