"""The standard W-TAL dataset layout: reading, validating, sampling, batching and writing.

Layout (the one the official HAM-Net / W-TALC / BaS-Net code reads)::

    <data_dir>/<name>-<feature_type>-JOINTFeatures.npy   object array, one [T, D] array per video
    <data_dir>/<name>-Annotations/videoname.npy          bytes (or str), one per video
                                 /subset.npy             bytes, e.g. b'validation' / b'test'
                                 /classlist.npy          bytes, the class names
                                 /labels_all.npy         list of str per video (video-level)
                                 /labels.npy             list of str per video (one per segment)
                                 /segments.npy           list of [start, end] seconds per video
                                 /duration.npy           seconds, [N] or [N, 1]
    <data_dir>/<name>/gt.json                            ActivityNet-style ground truth

Why validate eagerly: the official loader fails deep inside a training epoch (or silently trains
on NaNs) when one of these files is inconsistent. Here every problem is a :class:`DataError`
that names the file and the video before anything is trained.

Sampling reproduces the official ``Dataset`` modes: ``random`` (random perturbation of a uniform
grid of ``num_segments`` positions, which also repeats snippets of short videos), ``uniform``
(the floor of that grid) and ``all`` (every snippet; the test mode).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.errors import DataError

SAMPLING_MODES = ("random", "uniform", "all")
_REQUIRED = ("videoname", "subset", "classlist", "labels_all")
_OPTIONAL = ("labels", "segments", "duration")


def _text(x: Any) -> str:
    """Annotation entries are bytes in the official files and str in newer copies."""
    if isinstance(x, bytes | np.bytes_):
        return x.decode("utf-8")
    return str(x)


def features_path(data_dir: str | Path, name: str, feature_type: str = "I3D") -> Path:
    return Path(data_dir) / f"{name}-{feature_type}-JOINTFeatures.npy"


def annotations_dir(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / f"{name}-Annotations"


def gt_path(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / name / "gt.json"


def official_train_subset(name: str) -> str:
    """The official loader's rule: THUMOS trains on 'validation', everything else on 'training'."""
    return "validation" if "thumos" in name.lower() else "training"


# ----------------------------------------------------------------------------------- sampling


def random_perturb(length: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Official 'random' sampling: one random index per cell of a uniform grid.

    Grid position i is ``i * length / num_segments``. Each cell draws uniformly from
    ``[floor(g_i), floor(g_{i+1})]`` (both ends included, so neighbouring cells can pick the same
    snippet); the last cell draws from ``[floor(g_last), length - 1]``. When the video is shorter
    than ``num_segments`` most cells are a single index, so snippets repeat: the output always has
    ``num_segments`` entries, which is what lets the official loader stack batches.
    """
    if length <= 0:
        raise DataError(f"cannot sample from an empty video (length {length})")
    if num_segments == length:
        return np.arange(num_segments, dtype=np.int64)
    grid = np.arange(num_segments) * length / num_segments  # [N] float64, as officially
    lo = grid.astype(np.int64)  # int() of a non-negative float = floor
    hi = np.empty_like(lo)
    hi[:-1] = lo[1:]
    hi[-1] = max(length - 1, lo[-1])
    draw = rng.integers(lo, hi + 1)  # inclusive upper end, like range(lo, hi + 1)
    return np.where(hi > lo, draw, lo).astype(np.int64)


def uniform_sampling(length: int, num_segments: int) -> np.ndarray:
    """Official 'uniform' sampling: the floor of the uniform grid (repeats for short videos)."""
    if length <= 0:
        raise DataError(f"cannot sample from an empty video (length {length})")
    if num_segments == length:
        return np.arange(num_segments, dtype=np.int64)
    return np.floor(np.arange(num_segments) * length / num_segments).astype(np.int64)


def sample_indices(
    length: int, mode: str, num_segments: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Snippet indices for one video under an official sampling mode."""
    if mode == "all":
        return np.arange(length, dtype=np.int64)
    if mode == "uniform":
        return uniform_sampling(length, num_segments)
    if mode == "random":
        return random_perturb(length, num_segments, rng or np.random.default_rng())
    raise DataError(f"unknown sampling mode {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")


# ------------------------------------------------------------------------------------ batches


@dataclass
class Batch:
    """A padded batch. Padding only happens with sampling 'all' (variable lengths)."""

    features: np.ndarray  # [B, T, D] float32, zero padded after each video's length
    labels: np.ndarray  # [B, C] float32 multi-hot
    lengths: np.ndarray  # [B] int64, valid snippets per row
    names: list[str]
    num_seg: np.ndarray  # [B] int64, snippets of the *unsampled* video (vid_num_seg)

    @property
    def mask(self) -> np.ndarray:  # [B, T] bool, True on real snippets
        t = self.features.shape[1]
        return np.arange(t)[None, :] < self.lengths[:, None]


def collate(items: Sequence[tuple[np.ndarray, np.ndarray, str, int]]) -> Batch:
    """Stack ``(features [T_i, D], label [C], name, num_seg)`` items, zero-padding time."""
    if not items:
        raise DataError("cannot collate an empty batch")
    lengths = np.array([it[0].shape[0] for it in items], dtype=np.int64)
    d = items[0][0].shape[1]
    feats = np.zeros((len(items), int(lengths.max()), d), dtype=np.float32)  # [B, T, D]
    for i, it in enumerate(items):
        feats[i, : it[0].shape[0]] = it[0]
    labels = np.stack([np.asarray(it[1], dtype=np.float32) for it in items])  # [B, C]
    return Batch(
        features=feats,
        labels=labels,
        lengths=lengths,
        names=[it[2] for it in items],
        num_seg=np.array([it[3] for it in items], dtype=np.int64),
    )


# ------------------------------------------------------------------------------------ dataset


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=True, encoding="bytes")
    except Exception as e:  # corrupt / truncated / not an npy file
        raise DataError(f"{path}: cannot read as a .npy file ({e})") from None


class WTALDataset:
    """All videos of one W-TAL dataset, validated, with official multi-hot labels.

    ``classes`` fixes the class order (e.g. from a checkpoint); by default it is the sorted
    ``classlist.npy``, exactly as the official loader orders it.
    """

    def __init__(
        self,
        data_dir: str | Path,
        name: str,
        *,
        feature_type: str = "I3D",
        feature_size: int | None = None,
        classes: Sequence[str] | None = None,
        check_finite: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.name = name
        self.features_file = features_path(data_dir, name, feature_type)
        self.annotations_dir = annotations_dir(data_dir, name)
        if not self.annotations_dir.is_dir():
            raise DataError(f"{self.annotations_dir}: annotations folder not found")
        ann = {k: _load_npy(self.annotations_dir / f"{k}.npy") for k in _REQUIRED}
        for k in _OPTIONAL:
            p = self.annotations_dir / f"{k}.npy"
            ann[k] = _load_npy(p) if p.is_file() else None

        self.videonames = [_text(v) for v in np.ravel(ann["videoname"])]
        n = len(self.videonames)
        dup = sorted(v for v, k in Counter(self.videonames).items() if k > 1)
        if dup:
            raise DataError(f"{self.annotations_dir / 'videoname.npy'}: duplicate videos {dup[:5]}")
        self._check_len("subset", ann["subset"], n)
        self._check_len("labels_all", ann["labels_all"], n)
        self.subsets = [_text(s) for s in np.ravel(ann["subset"])]
        self.labels_all = [[_text(c) for c in labs] for labs in ann["labels_all"]]

        for k in _OPTIONAL:
            if ann[k] is not None:
                self._check_len(k, ann[k], n)
        self.segments = (
            [[(float(s), float(e)) for s, e in segs] for segs in ann["segments"]]
            if ann["segments"] is not None
            else [[] for _ in range(n)]
        )
        self.labels = (
            [[_text(c) for c in labs] for labs in ann["labels"]]
            if ann["labels"] is not None
            else [[] for _ in range(n)]
        )
        for i, (segs, labs) in enumerate(zip(self.segments, self.labels, strict=True)):
            if ann["labels"] is not None and ann["segments"] is not None and len(segs) != len(labs):
                raise DataError(
                    f"{self.annotations_dir}: video {self.videonames[i]} has {len(segs)} "
                    f"segments but {len(labs)} segment labels"
                )
        self.durations = (
            np.asarray(ann["duration"], dtype=np.float64).reshape(n, -1)[:, 0]
            if ann["duration"] is not None
            else None
        )

        file_classes = sorted(_text(c) for c in np.ravel(ann["classlist"]))
        self.classlist = list(classes) if classes is not None else file_classes
        self.class_index = {c: i for i, c in enumerate(self.classlist)}
        known = set(self.classlist)
        for i, labs in enumerate(self.labels_all):
            bad = sorted(set(labs) - known)
            if bad:
                raise DataError(
                    f"{self.annotations_dir / 'labels_all.npy'}: video {self.videonames[i]} has "
                    f"labels {bad} that are not in the class list"
                )
        for i, labs in enumerate(self.labels):
            bad = sorted(set(labs) - known)
            if bad:
                raise DataError(
                    f"{self.annotations_dir / 'labels.npy'}: video {self.videonames[i]} has "
                    f"segment labels {bad} that are not in the class list"
                )
        # Official multi-hot: 1 for every class in labels_all.
        self.multihot = np.zeros((n, len(self.classlist)), dtype=np.float32)  # [N, C]
        for i, labs in enumerate(self.labels_all):
            for c in labs:
                self.multihot[i, self.class_index[c]] = 1.0

        self.features = self._load_features(feature_size, check_finite)

    # ------------------------------------------------------------------ validation helpers
    def _check_len(self, key: str, arr: np.ndarray, n: int) -> None:
        if len(arr) != n:
            raise DataError(
                f"{self.annotations_dir / (key + '.npy')}: {len(arr)} entries but videoname.npy "
                f"has {n} videos"
            )

    def _load_features(self, feature_size: int | None, check_finite: bool) -> list[np.ndarray]:
        raw = _load_npy(self.features_file)
        if raw.dtype != object and raw.ndim == 3:  # equal lengths: numpy stacked them
            raw = list(raw)
        elif raw.dtype != object or raw.ndim != 1:
            raise DataError(
                f"{self.features_file}: expected an object array of [T, D] arrays, got "
                f"dtype {raw.dtype} shape {raw.shape}"
            )
        if len(raw) != len(self.videonames):
            raise DataError(
                f"{self.features_file}: {len(raw)} feature arrays but "
                f"{self.annotations_dir / 'videoname.npy'} has {len(self.videonames)} videos"
            )
        feats: list[np.ndarray] = []
        dim = feature_size
        for name, f in zip(self.videonames, raw, strict=True):
            f = np.asarray(f)
            if f.ndim != 2 or f.shape[0] == 0:
                raise DataError(
                    f"{self.features_file}: video {name} has features of shape {f.shape}; "
                    "expected [T, D] with T >= 1"
                )
            if dim is None:
                dim = int(f.shape[1])
            if f.shape[1] != dim:
                what = "the model expects" if feature_size is not None else "other videos have"
                raise DataError(
                    f"{self.features_file}: video {name} has D={f.shape[1]} features but "
                    f"{what} D={dim}"
                )
            f = f.astype(np.float32, copy=False)
            if check_finite and not np.isfinite(f).all():
                bad = int((~np.isfinite(f)).any(axis=1).sum())
                raise DataError(
                    f"{self.features_file}: video {name} has NaN/inf features in {bad} snippets"
                )
            feats.append(f)
        self.feature_size = int(dim or 0)
        return feats

    # ------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.videonames)

    @property
    def num_class(self) -> int:
        return len(self.classlist)

    def indices(self, subset: str) -> np.ndarray:
        """Video indices of one subset, in file order (the official test order)."""
        idx = [i for i, s in enumerate(self.subsets) if s == subset]
        return np.asarray(idx, dtype=np.int64)

    def split(
        self, subset: str, sampling: str = "all", num_segments: int = 500, seed: int = 0
    ) -> WTALSplit:
        if sampling not in SAMPLING_MODES:
            raise DataError(
                f"unknown sampling mode {sampling!r}; choose one of {', '.join(SAMPLING_MODES)}"
            )
        idx = self.indices(subset)
        if len(idx) == 0:
            raise DataError(
                f"{self.annotations_dir / 'subset.npy'}: no video has subset {subset!r} "
                f"(found: {', '.join(sorted(set(self.subsets)))})"
            )
        return WTALSplit(self, idx, sampling, num_segments, seed)

    def ground_truth(self, train_subset: str | None = None) -> dict[str, Any]:
        """``<name>/gt.json`` when present, else built from the annotations like the official
        ``anet_create_json.py`` (train subset -> 'train', everything else -> 'test')."""
        p = gt_path(self.data_dir, self.name)
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: not valid JSON ({e})") from None
        return build_gt_from_annotations(
            self.videonames,
            self.subsets,
            self.segments,
            self.labels,
            self.classlist,
            train_subset or official_train_subset(self.name),
        )


@dataclass
class WTALSplit:
    """The videos of one subset under one sampling mode (the official ``Dataset(mode=...)``)."""

    dataset: WTALDataset
    video_idx: np.ndarray
    sampling: str
    num_segments: int
    seed: int = 0
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __len__(self) -> int:
        return len(self.video_idx)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, str, int]:
        j = int(self.video_idx[i])
        feat = self.dataset.features[j]  # [T, D]
        idx = sample_indices(feat.shape[0], self.sampling, self.num_segments, self.rng)
        return feat[idx], self.dataset.multihot[j], self.dataset.videonames[j], feat.shape[0]

    def batches(self, batch_size: int, shuffle: bool = False) -> Iterator[Batch]:
        """One epoch of batches; the last one may be smaller (no drop_last, as officially).

        'random'/'uniform' give every video ``num_segments`` snippets, so batches stack exactly
        as officially. 'all' with ``batch_size > 1`` zero-pads to the longest video (see
        :attr:`Batch.lengths`); the official code never does that (its test batches are 1).
        """
        order = self.rng.permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(order), batch_size):
            yield collate([self[int(i)] for i in order[start : start + batch_size]])


# ------------------------------------------------------------------------------------ writing


@dataclass
class WTALVideo:
    """One video to write: features plus its (possibly empty) annotations."""

    name: str
    features: np.ndarray  # [T, D]
    subset: str
    segments: Sequence[Sequence[float]] = ()  # [start, end] seconds
    labels: Sequence[str] = ()  # class of each segment
    duration: float | None = None  # seconds; default T * 16 / 25
    labels_all: Sequence[str] | None = None  # video-level labels; default: labels, deduplicated


def build_gt_from_annotations(
    videonames: Sequence[str],
    subsets: Sequence[str],
    segments: Sequence[Sequence[Sequence[float]]],
    labels: Sequence[Sequence[str]],
    classlist: Sequence[str],
    train_subset: str,
) -> dict[str, Any]:
    """gt.json in the official format (``class-list`` + ``database`` with '%.2f' segments) from
    per-video annotation arrays: the train subset becomes 'train', every other one 'test'."""
    database: dict[str, Any] = {}
    for name, sub, segs, labs in zip(videonames, subsets, segments, labels, strict=True):
        database[name] = {
            "subset": "train" if sub == train_subset else "test",
            "annotations": [
                {"segment": [f"{float(s):.2f}", f"{float(e):.2f}"], "label": lab}
                for (s, e), lab in zip(segs, labs, strict=True)
            ],
        }
    return {
        "class-list": {str(i): c for i, c in enumerate(classlist)},
        "database": dict(sorted(database.items())),
    }


def _objects(items: Sequence[Any]) -> np.ndarray:
    """A 1-D object array; assigning element-wise stops numpy from stacking equal shapes."""
    out = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        out[i] = x
    return out


def write_wtal(
    out_dir: str | Path,
    name: str,
    videos: Sequence[WTALVideo | tuple[Any, ...]],
    classlist: Sequence[str] | None = None,
    *,
    feature_type: str = "I3D",
    train_subset: str | None = None,
    write_gt: bool = True,
) -> Path:
    """Write ``videos`` in the W-TAL layout (official element types: bytes names/subsets).

    Returns the features file. The class list defaults to the sorted labels seen.
    """
    out = Path(out_dir)
    # Plain tuples (name, features, subset, segments, labels, ...) are accepted too.
    videos = [v if isinstance(v, WTALVideo) else WTALVideo(*v) for v in videos]
    if not videos:
        raise DataError(f"{out}: no videos to write")
    dims = {
        np.asarray(v.features).shape[1] if np.asarray(v.features).ndim == 2 else -1 for v in videos
    }
    if len(dims) != 1 or -1 in dims:
        raise DataError(f"{out}: every video needs [T, D] features with the same D (got {dims})")
    labs_all = [
        list(dict.fromkeys(v.labels_all if v.labels_all is not None else v.labels)) for v in videos
    ]
    if classlist is None:
        classlist = sorted({c for labs in labs_all for c in labs})
    known = set(classlist)
    for v, labs in zip(videos, labs_all, strict=True):
        if len(v.segments) != len(v.labels):
            raise DataError(
                f"{out}: video {v.name} has {len(v.segments)} segments but {len(v.labels)} labels"
            )
        bad = sorted((set(labs) | set(v.labels)) - known)
        if bad:
            raise DataError(f"{out}: video {v.name} has labels {bad} not in the class list")

    ann = annotations_dir(out, name)
    ann.mkdir(parents=True, exist_ok=True)
    feats = _objects([np.asarray(v.features, dtype=np.float32) for v in videos])
    fpath = features_path(out, name, feature_type)
    np.save(fpath, feats, allow_pickle=True)
    np.save(ann / "videoname.npy", np.array([v.name.encode() for v in videos]))
    np.save(ann / "subset.npy", np.array([v.subset.encode() for v in videos]))
    np.save(ann / "classlist.npy", np.array([c.encode() for c in classlist]))
    np.save(ann / "labels_all.npy", _objects(labs_all), allow_pickle=True)
    np.save(ann / "labels.npy", _objects([list(v.labels) for v in videos]), allow_pickle=True)
    segs = [[[float(s), float(e)] for s, e in v.segments] for v in videos]
    np.save(ann / "segments.npy", _objects(segs), allow_pickle=True)
    dur = [
        v.duration if v.duration is not None else np.asarray(v.features).shape[0] * 16 / 25
        for v in videos
    ]
    np.save(ann / "duration.npy", np.asarray(dur, dtype=np.float64).reshape(-1, 1))
    if write_gt:
        gt = build_gt_from_annotations(
            [v.name for v in videos],
            [v.subset for v in videos],
            segs,
            [list(v.labels) for v in videos],
            list(classlist),
            train_subset or official_train_subset(name),
        )
        gpath = gt_path(out, name)
        gpath.parent.mkdir(parents=True, exist_ok=True)
        gpath.write_text(json.dumps(gt))
    return fpath
