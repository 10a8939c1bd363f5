"""``hamnet extract``: videos in, a W-TAL feature dataset out (what ``hamnet train`` reads).

Why resumable: extracting I3D features costs ~36 CPU-minutes per video-hour and stream, so a
crash or Ctrl-C must not throw work away. Each finished video's features go to
``OUT/.cache/<name>-<key>.npy`` (written atomically); a rerun loads those and only extracts
what is missing. The key covers the file (path, size, mtime) and the backbone spec, so
changing either re-extracts. Bad videos are reported and skipped, never fatal for the batch.

Labels (optional) give each video its subset and annotated segments:

* CSV with header ``video,label,start,end[,subset]``: one row per segment; a row with empty
  start/end gives a video-level label only; ``video`` is the file name without extension;
* JSON ``{"<video>": {"subset": "...", "annotations": [{"label": ..., "segment": [s, e]}]}}``,
  also wrapped as ``{"database": {...}}`` (the gt.json / ActivityNet format).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.errors import DataError, HamnetError

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                    ".flv", ".wmv", ".3gp"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="extract snippet features from videos into a W-TAL dataset",
        description=(
            "Decode VIDEOS (files or directories), cut them into non-overlapping snippets and "
            "encode each with the backbone, writing OUT/<NAME>-<TYPE>-JOINTFeatures.npy and "
            "OUT/<NAME>-Annotations/ (the layout `hamnet train` reads). Resumable: finished "
            "videos are cached in OUT/.cache. Unreadable videos are reported and skipped."
        ),
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or directories")
    p.add_argument("--backbone", required=True, metavar="DIR|motion",
                   help="backbone directory (with backbone.json) or the name 'motion'")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    p.add_argument("--name", default="Custom", help="dataset name (default Custom)")
    p.add_argument("--feature-type", default="I3D",
                   help="feature type in the file name (default I3D, what the loaders expect)")
    p.add_argument("--labels", metavar="FILE", help="annotations (.csv or .json, see above)")
    p.add_argument("--subset", default=None,
                   help="subset of videos the labels file does not place (default: the "
                        "training subset for labelled videos, 'test' for the others)")
    p.add_argument("--batch-size", type=int, default=8, help="snippets per backbone call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- labels


@dataclass
class VideoLabels:
    subset: str | None = None
    segments: list[tuple[float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    labels_all: list[str] = field(default_factory=list)


def read_labels(path: str | Path) -> dict[str, VideoLabels]:
    """Parse a CSV or JSON labels file (module doc) into ``{video name: VideoLabels}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: labels file not found")
    out: dict[str, VideoLabels] = {}
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            need = {"video", "label"}
            if not reader.fieldnames or not need <= set(reader.fieldnames):
                raise DataError(f"{path}: CSV header must include video,label[,start,end,subset]")
            for n, row in enumerate(reader, start=2):
                vl = out.setdefault(row["video"].strip(), VideoLabels())
                label = (row.get("label") or "").strip()
                if row.get("subset"):
                    vl.subset = row["subset"].strip()
                if not label:
                    continue
                start, end = (row.get("start") or "").strip(), (row.get("end") or "").strip()
                if start or end:
                    try:
                        s, e = float(start), float(end)
                    except ValueError:
                        raise DataError(f"{path}:{n}: start/end must be numbers") from None
                    if not 0 <= s < e:
                        raise DataError(f"{path}:{n}: need 0 <= start < end, got {s}, {e}")
                    vl.segments.append((s, e))
                    vl.labels.append(label)
                if label not in vl.labels_all:
                    vl.labels_all.append(label)
        return out
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("database"), dict):
        data = data["database"]
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping video names to annotations")
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise DataError(f"{path}: entry for {name!r} must be an object")
        vl = VideoLabels(subset=entry.get("subset"))
        for ann in entry.get("annotations", []):
            try:
                s, e = (float(x) for x in ann["segment"])
                label = str(ann["label"])
            except (KeyError, TypeError, ValueError):
                raise DataError(
                    f"{path}: {name}: annotations need 'label' and 'segment': [start, end]"
                ) from None
            vl.segments.append((s, e))
            vl.labels.append(label)
        for label in [*vl.labels, *entry.get("labels", [])]:
            if label not in vl.labels_all:
                vl.labels_all.append(str(label))
        out[str(name)] = vl
    return out


# ----------------------------------------------------------------------------- inputs & cache


def find_videos(inputs: list[str]) -> list[Path]:
    """Files as given; directories searched recursively for video extensions (sorted)."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTENSIONS
                                and q.is_file()))
        else:
            found.append(p)
    seen: dict[str, Path] = {}
    for v in found:
        if v.stem in seen and seen[v.stem].resolve() != v.resolve():
            raise DataError(
                f"two videos share the name {v.stem!r} ({seen[v.stem]} and {v}); video names "
                "must be unique in a dataset"
            )
        seen[v.stem] = v
    return list(seen.values())


def cache_key(video: Path, spec_dict: dict[str, Any]) -> str:
    """Changes whenever the file or anything about the backbone changes."""
    try:
        st = video.stat()
        ident = f"{video.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        ident = str(video)
    blob = ident + json.dumps(spec_dict, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_atomic(path: Path, array: np.ndarray, meta: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta))


class _Bar:
    """tqdm when installed, else a line per video on stderr (the CLI must work without it)."""

    def __init__(self, total: float, disable: bool) -> None:
        self._tqdm = None
        self.disable = disable
        self.total = total
        self.done = 0.0
        if not disable:
            try:
                from tqdm import tqdm

                self._tqdm = tqdm(total=total, unit="s", desc="extract",
                                  bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s video "
                                             "[{elapsed}<{remaining}]")
            except ImportError:
                pass

    def update(self, seconds: float) -> None:
        step = min(seconds, self.total - self.done)  # float sums must not overshoot the bar
        if self._tqdm is not None and step > 0:
            self._tqdm.update(step)
            self.done += step

    def note(self, msg: str) -> None:
        if self._tqdm is not None:
            self._tqdm.write(msg, file=sys.stderr)
        elif not self.disable:
            print(msg, file=sys.stderr)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


# ----------------------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    from hamnet.data.wtal import WTALVideo, official_train_subset, write_wtal
    from hamnet.video.backbone import extract_features, load_backbone
    from hamnet.video.decode import probe

    out = Path(args.out)
    videos = find_videos(args.videos)
    if not videos:
        raise DataError("no videos given (or none found in the given directories)")
    labels = read_labels(args.labels) if args.labels else {}
    unknown = sorted(set(labels) - {v.stem for v in videos})
    if unknown:
        print(f"warning: labels for {len(unknown)} video(s) not given: "
              f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}", file=sys.stderr)
    backbone = load_backbone(args.backbone)
    spec_dict = backbone.spec.to_dict()
    cache = out / ".cache"
    cache.mkdir(parents=True, exist_ok=True)

    failures: dict[str, str] = {}
    durations: dict[Path, float] = {}
    for v in videos:
        try:
            durations[v] = probe(v).duration
        except HamnetError as e:
            failures[v.stem] = str(e)
    bar = _Bar(sum(durations.values()), args.no_progress)
    for name, msg in failures.items():
        bar.note(f"skipped {name}: {msg}")

    results: dict[str, tuple[np.ndarray, float]] = {}
    reused = 0
    for v in videos:
        if v not in durations:
            continue
        f_path = cache / f"{v.stem}-{cache_key(v, spec_dict)}.npy"
        if f_path.is_file() and f_path.with_suffix(".json").is_file():
            meta = json.loads(f_path.with_suffix(".json").read_text())
            results[v.stem] = (np.load(f_path), float(meta["duration"]))
            reused += 1
            bar.update(durations[v])
            continue
        done = 0.0

        def on_progress(stage: str, fraction: float, _total=durations[v]) -> None:
            nonlocal done
            now = fraction * _total
            bar.update(now - done)
            done = now

        try:
            feats, info, spans = extract_features(
                backbone, v, progress=on_progress, batch_size=args.batch_size
            )
        except HamnetError as e:
            failures[v.stem] = str(e)
            bar.note(f"skipped {v.stem}: {e}")
            bar.update(durations[v] - done)
            continue
        duration = info.duration if info.duration > 0 else float(spans[-1, 1])
        _save_atomic(f_path, feats, {"video": str(v), "duration": duration,
                                     "num_snippets": int(feats.shape[0])})
        results[v.stem] = (feats, duration)
    bar.close()

    if not results:
        raise DataError(f"no video could be extracted ({len(failures)} failed)")
    train_subset = official_train_subset(args.name)
    items = []
    for v in videos:
        if v.stem not in results:
            continue
        feats, duration = results[v.stem]
        vl = labels.get(v.stem, VideoLabels())
        subset = vl.subset or args.subset or (train_subset if vl.labels_all else "test")
        items.append(WTALVideo(
            name=v.stem, features=feats, subset=subset, segments=vl.segments,
            labels=vl.labels, duration=duration, labels_all=vl.labels_all,
        ))
    fpath = write_wtal(out, args.name, items, feature_type=args.feature_type,
                       train_subset=train_subset)
    (out / f"{args.name}-backbone.json").write_text(json.dumps(spec_dict, indent=2) + "\n")
    report = {"features": str(fpath), "videos": len(items), "reused_from_cache": reused,
              "failed": failures, "backbone": spec_dict["name"],
              "feature_dim": int(items[0].features.shape[1])}
    (out / f"{args.name}-extract.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {fpath} ({len(items)} videos, {reused} from cache, "
          f"{len(failures)} skipped)")
    for name, msg in failures.items():
        print(f"  skipped {name}: {msg}", file=sys.stderr)
    return 1 if failures else 0
