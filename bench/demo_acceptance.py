"""Acceptance check of a demo bundle: held-out detection mAP through the real CLI.

Renders fresh videos with ``hamnet synth`` from a seed the demo never used, runs
``hamnet predict --bundle BUNDLE --video V --json`` on each one (a separate process per video,
exactly what a user runs), and scores the segments against the rendered gt.json with the
official ANet-style detection mAP.

    python bench/demo_acceptance.py --bundle ~/.hamnet/bundles/default --seed 777 --count 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from hamnet.demo import map_table
from hamnet.evaluation import detection_map


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--count", type=int, default=30)
    ap.add_argument("--out", default="/tmp/hamnet_acceptance")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()

    out = Path(args.out)
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
            str(args.seed),
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
    det = detection_map(
        gt,
        {"results": preds},
        np.arange(0.1, 0.75, 0.1),
        subset="test",
        skip_classes_without_gt=True,
    )
    (out / "predictions.json").write_text(json.dumps({"results": preds}))
    print(
        f"{len(videos)} videos rendered with seed {args.seed} in {t_render:.1f} s; "
        f"`hamnet predict` on all of them in {t_predict:.1f} s "
        f"({np.mean([r[2] for r in results]):.1f} s per video incl. process start)"
    )
    print(map_table(det))
    print(json.dumps({"mAP@0.5": det["mAP"][4], "average_mAP": det["average_mAP"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
