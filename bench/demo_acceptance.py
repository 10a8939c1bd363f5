"""Acceptance check of a demo bundle: held-out detection mAP through the real CLI.

Renders fresh videos with ``hamnet synth`` from seeds the demo never used, runs
``hamnet predict --bundle BUNDLE --video V --json`` on each one (a separate process per video,
exactly what a user runs), and scores the segments against the rendered gt.json with the
official ANet-style detection mAP. Prints, per seed, the mAP table, the per-class AP at tIoU
0.5 and the class confusion of the ground-truth instances; with several ``--seed`` values also
the mean and spread of mAP@0.5 over the seeds.

    python bench/demo_acceptance.py --bundle ~/.hamnet/bundles/default --seed 777 --count 30
    python bench/demo_acceptance.py --bundle B --seed 424242 --seed 515151 --seed 626262 --count 36

Confusion: each ground-truth instance is matched to the highest-scoring predicted segment of
*any* class that overlaps it with tIoU >= 0.5; the row is the true class, the column the
predicted class of that segment, ``miss`` when no segment overlaps that much.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from hamnet.demo import map_table
from hamnet.evaluation import detection_map

TIOU = np.arange(0.1, 0.75, 0.1)
MATCH_TIOU = 0.5


def predict(bundle: str, video: Path) -> tuple[str, list[dict], float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hamnet",
            "predict",
            "--bundle",
            bundle,
            "--video",
            str(video),
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(out.stdout)
    segs = [
        {"label": s["label"], "score": s["score"], "segment": [s["start"], s["end"]]}
        for s in res["segments"]
    ]
    return video.stem, segs, time.perf_counter() - t0


def _tiou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def confusion(gt: dict[str, Any], preds: dict[str, list[dict]], classes: list[str]) -> np.ndarray:
    """``[n_class, n_class + 1]`` counts: true class x predicted class of the best-scoring
    segment with tIoU >= 0.5 (last column: no such segment)."""
    idx = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes) + 1), np.int64)
    for vid, entry in gt["database"].items():
        segs = preds.get(vid, [])
        for ann in entry["annotations"]:
            hits = [s for s in segs if _tiou(ann["segment"], s["segment"]) >= MATCH_TIOU]
            col = idx[max(hits, key=lambda s: s["score"])["label"]] if hits else len(classes)
            m[idx[ann["label"]], col] += 1
    return m


def confusion_table(m: np.ndarray, classes: list[str]) -> str:
    head = "| true \\ predicted | " + " | ".join(classes) + " | miss |"
    sep = "|---" * (len(classes) + 2) + "|"
    rows = [
        f"| {c} | " + " | ".join(str(int(x)) for x in m[i]) + " |" for i, c in enumerate(classes)
    ]
    return "\n".join([head, sep, *rows])


def gt_classes(gt: dict[str, Any]) -> list[str]:
    """The class list of a rendered gt.json (``{"0": name, ...}``), in index order."""
    cl = gt["class-list"]
    return [cl[k] for k in sorted(cl, key=int)] if isinstance(cl, dict) else list(cl)


def score(
    gt: dict[str, Any], preds: dict[str, list[dict]]
) -> tuple[dict[str, Any], dict[str, float], np.ndarray]:
    """Detection mAP, per-class AP at tIoU 0.5 and the instance confusion of one set."""
    det = detection_map(gt, {"results": preds}, TIOU, subset="test", skip_classes_without_gt=True)
    k = int(np.argmin(np.abs(np.asarray(det["tiou"]) - MATCH_TIOU)))
    ap = {c: float(det["ap"][k][i]) for i, c in enumerate(det["classes"])}
    return det, ap, confusion(gt, preds, gt_classes(gt))


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    out = Path(args.out) / str(seed) if len(args.seed) > 1 else Path(args.out)
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hamnet",
            "synth",
            "--out",
            str(out),
            "--count",
            str(args.count),
            "--seed",
            str(seed),
            "--workers",
            str(args.jobs),
        ],
        check=True,
    )
    t_render = time.perf_counter() - t0
    gt = json.loads((out / "gt.json").read_text())
    videos = sorted((out / "videos").glob("*.mp4"))
    t1 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as ex:
        results = list(ex.map(lambda v: predict(args.bundle, v), videos))
    t_predict = time.perf_counter() - t1
    preds = {name: segs for name, segs, _ in results}
    det, ap, conf = score(gt, preds)
    (out / "predictions.json").write_text(json.dumps({"results": preds}))
    n_inst = sum(len(e["annotations"]) for e in gt["database"].values())
    classes = gt_classes(gt)
    print(
        f"seed {seed}: {len(videos)} videos ({n_inst} instances) rendered in {t_render:.1f} s; "
        f"`hamnet predict` on all of them in {t_predict:.1f} s "
        f"({np.mean([r[2] for r in results]):.1f} s per video incl. process start)"
    )
    print(map_table(det))
    print("\nAP@0.5 per class: " + ", ".join(f"{c} {100 * v:.1f}" for c, v in ap.items()))
    print(confusion_table(conf, classes) + "\n")
    return {
        "seed": seed,
        "videos": len(videos),
        "instances": n_inst,
        "mAP@0.5": det["mAP"][4],
        "average_mAP": det["average_mAP"],
        "ap@0.5": ap,
        "confusion": conf.tolist(),
        "classes": classes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--seed", type=int, action="append", help="repeatable (default 777)")
    ap.add_argument("--count", type=int, default=30)
    ap.add_argument("--out", default="/tmp/hamnet_acceptance")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json-out", help="also write the per-seed figures to this file")
    args = ap.parse_args()
    args.seed = args.seed or [777]

    runs = [run_seed(args, s) for s in args.seed]
    summary: dict[str, Any] = {"runs": runs}
    if len(runs) > 1:
        m = np.array([r["mAP@0.5"] for r in runs])
        avg = np.array([r["average_mAP"] for r in runs])
        classes = runs[0]["classes"]
        conf = np.sum([np.array(r["confusion"]) for r in runs], axis=0)
        per_class = {c: float(np.mean([r["ap@0.5"].get(c, np.nan) for r in runs])) for c in classes}
        summary.update(
            {
                "mAP@0.5_mean": float(m.mean()),
                "mAP@0.5_std": float(m.std(ddof=1)),
                "mAP@0.5_min": float(m.min()),
                "mAP@0.5_max": float(m.max()),
                "average_mAP_mean": float(avg.mean()),
                "ap@0.5_mean": per_class,
                "confusion_sum": conf.tolist(),
            }
        )
        print(
            f"{len(runs)} seeds x {args.count} videos: mAP@0.5 {100 * m.mean():.1f} "
            f"± {100 * m.std(ddof=1):.1f} (sample std; min {100 * m.min():.1f}, "
            f"max {100 * m.max():.1f}); avg mAP (0.1:0.7) {100 * avg.mean():.1f}"
        )
        print(
            "mean AP@0.5 per class: "
            + ", ".join(f"{c} {100 * v:.1f}" for c, v in per_class.items())
        )
        print("confusion, all seeds:\n" + confusion_table(conf, classes))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1) + "\n")
    print(
        json.dumps(
            {k: v for k, v in summary.items() if k != "runs"}
            or {"mAP@0.5": runs[0]["mAP@0.5"], "average_mAP": runs[0]["average_mAP"]}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
