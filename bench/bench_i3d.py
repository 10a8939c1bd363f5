"""I3D feature extraction throughput: ONNX Runtime vs PyTorch eager, flow cost, two-stream.

Why: I3D is by far the most expensive stage of the service (two 3D ConvNets over every
0.64 s of video plus optical flow), so the questions are (1) what running the exported ONNX
graph gains over PyTorch eager on the same cores, (2) what fp16 buys, (3) how much of the
two-stream cost is optical flow per method, and (4) what that means in video seconds
processed per wall second (25 fps, 16-frame snippets: 1.5625 snippets per video second).

Weights are the deterministic recipe (random, not pretrained): speed does not depend on the
weight values. Both engines get the same threads and the same inputs; runs are interleaved so
a shared machine's background load hits both; outputs are compared so a fast-but-wrong graph
cannot look good.

Usage (CPU; writes bench/results/i3d.md)::

    OMP_NUM_THREADS=2 python bench/bench_i3d.py --threads 2

On a GPU machine (bench/device.sh runs this sweep after its own table)::

    python bench/bench_i3d.py --provider cuda --batches 1 8 32 --skip-torch --out RESULT.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from machine import cpu_name  # bench/machine.py (scripts run from bench/)

SNIPPETS_PER_VIDEO_SECOND = 25 / 16


def _timed(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds per call for each fn, interleaved a, b, c, a, b, c ... after warm-up; also the
    last output of each (so results can be compared without another slow call)."""
    last: dict[str, object] = {}
    for _ in range(warmup):
        for k, fn in fns.items():
            last[k] = fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            last[k] = fn()
            out[k].append(time.perf_counter() - t0)
    return out, last


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f})"


def _rate(n: int, xs: list[float]) -> float:
    return n / statistics.median(xs)


def _session(path: Path, provider: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if provider == "cuda"
        else ["CPUExecutionProvider"]
    )
    sess = ort.InferenceSession(str(path), opts, providers=providers)
    if provider == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit(f"CUDAExecutionProvider not usable here (got {sess.get_providers()})")
    return sess


def synthetic_snippets(n: int, seed: int = 0) -> np.ndarray:
    """uint8 [n,16,224,224,3]: textured background with a moving block (real flow to compute)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224]
    base = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.float32) * (200 / 448)
    frames = []
    for t in range(16 * n):
        img = base + rng.normal(0, 4, base.shape)
        x0, y0 = (20 + 3 * t) % 160, (40 + 2 * t) % 160
        img[y0 : y0 + 60, x0 : x0 + 60] = (230, 200, 40)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames).reshape(n, 16, 224, 224, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs for batch 1")
    ap.add_argument("--repeats-large", type=int, default=2, help="timed runs for batch > 1")
    ap.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--skip-torch", action="store_true", help="ONNX Runtime only")
    ap.add_argument(
        "--torch-device", default="cpu", help="device of the PyTorch eager baseline (cpu, cuda)"
    )
    ap.add_argument(
        "--onnx-dir",
        type=Path,
        help="use DIR/rgb.onnx and DIR/flow.onnx (fp32, from `hamnet export-i3d`) instead of "
        "exporting the recipe weights; needed where torch is not installed",
    )
    ap.add_argument("--skip-flow", action="store_true", help="no flow / two-stream sections")
    ap.add_argument(
        "--tvl1-pairs",
        type=int,
        default=4,
        help="frame pairs timed for TV-L1 (1-3 s per pair on a CPU core), scaled to the 15 "
        "pairs of a snippet; 15 times a whole snippet",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "i3d.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import onnx
    from hamnet.i3d.fp16 import to_fp16
    from hamnet.i3d.recipe import recipe_input

    try:
        import torch
    except ModuleNotFoundError:
        torch = None
        args.skip_torch = True
    if torch is None and args.onnx_dir is None:
        raise SystemExit("torch is not installed: pass --onnx-dir with exported graphs")
    if torch is not None:
        torch.set_num_threads(args.threads)
        torch.set_grad_enabled(False)
    lines: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_i3d_"))

    # ---- models and graphs
    t0 = time.perf_counter()
    models = {}
    if torch is not None:
        from hamnet.i3d.model import load_i3d_state_dict
        from hamnet.i3d.recipe import STREAM_CHANNELS, recipe_state_dict

        models = {
            s: load_i3d_state_dict(recipe_state_dict(s), STREAM_CHANNELS[s])
            for s in ("rgb", "flow")
        }
    graphs: dict[tuple[str, str], Path] = {}
    for s in ("rgb", "flow"):
        if args.onnx_dir is not None:
            graphs[(s, "fp32")] = args.onnx_dir / f"{s}.onnx"
        else:
            from hamnet.i3d.export import export_i3d_onnx

            report = export_i3d_onnx(models[s], tmp / f"{s}.onnx", s, validate=False)
            graphs[(s, "fp32")] = Path(report["path"])
        p16 = tmp / f"{s}_fp16.onnx"
        onnx.save(to_fp16(onnx.load(str(graphs[(s, "fp32")]))), str(p16))
        graphs[(s, "fp16")] = p16
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sessions = {k: _session(p, args.provider, args.threads) for k, p in graphs.items()}
    session_s = (time.perf_counter() - t0) / len(graphs)
    prov = sessions[("rgb", "fp32")].get_providers()[0]
    feature_graph = None
    if not args.skip_torch:
        from hamnet.i3d.export import FeatureGraph

        feature_graph = FeatureGraph(models["rgb"]).eval().to(args.torch_device)

    def run_torch(xt):
        y = feature_graph(xt)
        if args.torch_device != "cpu":
            torch.cuda.synchronize()
        return y

    # ---- RGB stream: torch eager vs ORT fp32 vs ORT fp16
    clip = recipe_input("rgb", 16 * max(args.batches))  # [1,3,16*B,224,224]
    rgb_rows = []
    for b in args.batches:
        # b consecutive 16-frame snippets of the recipe clip: [b,3,16,224,224]
        x = np.ascontiguousarray(
            clip[0, :, : 16 * b].reshape(3, b, 16, 224, 224).transpose(1, 0, 2, 3, 4)
        )
        fns: dict[str, Callable[[], object]] = {}
        if not args.skip_torch:
            xt = torch.from_numpy(x).to(args.torch_device)
            fns["torch"] = lambda xt=xt: run_torch(xt)
        for prec in ("fp32", "fp16"):
            sess = sessions[("rgb", prec)]
            fns[f"ort_{prec}"] = lambda sess=sess, x=x: sess.run(["features"], {"frames": x})
        # Batch 1 runs first and warms every session; larger batches only repeat.
        times, last = _timed(
            fns, args.repeats if b == 1 else args.repeats_large, warmup=int(b == 1)
        )
        ort32, ort16 = last["ort_fp32"][0], last["ort_fp16"][0]
        ref = last["torch"].float().cpu().numpy() if not args.skip_torch else ort32
        rgb_rows.append(
            (
                b,
                times,
                float(np.abs(ort32 - ref).max()),
                float(np.abs(ort16 - ref).max()),
                float(np.abs(ref).max()),
            )
        )
        print(
            f"rgb batch {b}: " + ", ".join(f"{k} {_med(v)} s" for k, v in times.items()), flush=True
        )

    # ---- optical flow per method, per 16-frame snippet
    flow_rows = []
    two_rows = []
    if not args.skip_flow:
        import cv2
        from hamnet.video.flow import snippet_flow
        from hamnet.video.i3d_backbone import flow_input, rgb_to_i3d

        cv2.setNumThreads(args.threads)
        snippets = synthetic_snippets(2)
        pairs_per_snippet = 15  # 16 frames; flow[0] duplicates flow[1] (pure per-snippet)
        for method in ("farneback", "dis", "tvl1"):
            if method == "tvl1":
                pairs = max(1, min(args.tvl1_pairs, pairs_per_snippet))
                clips, reps = [snippets[0][: pairs + 1]], 1
            else:
                clips, reps = list(snippets), args.repeats
                pairs = pairs_per_snippet * len(clips)
            times, _ = _timed(
                {method: lambda m=method, c=clips: [snippet_flow(x, m) for x in c]},
                reps,
                warmup=0,
            )
            per = statistics.median(times[method]) / pairs * pairs_per_snippet
            flow_rows.append((method, per, pairs * reps))
            print(f"flow {method}: {per:.3f} s per snippet", flush=True)

        # ---- two-stream per snippet: RGB preprocessing + graph, flow + quantisation + graph.
        # Measured end to end once (fp32, Farneback, batch bmax, through I3DBackbone's own
        # preprocessing); the other rows add measured parts (a full TV-L1 batch would take
        # minutes on a shared 2-core machine).
        bmax = max(args.batches)
        batch = synthetic_snippets(bmax, seed=1)
        flow_graph_s = {}
        for prec in ("fp32", "fp16"):
            fs = sessions[("flow", prec)]
            xf = flow_input(batch[:1], "dis")
            fs.run(["features"], {"frames": xf})  # warm the flow session
            xf = np.repeat(xf, bmax, axis=0)
            times, _ = _timed(
                {"f": lambda fs=fs, xf=xf: fs.run(["features"], {"frames": xf})}, 1, 0
            )
            flow_graph_s[prec] = times["f"][0] / bmax

        def two() -> np.ndarray:
            a = sessions[("rgb", "fp32")].run(["features"], {"frames": rgb_to_i3d(batch)})[0]
            f = sessions[("flow", "fp32")].run(
                ["features"], {"frames": flow_input(batch, "farneback")}
            )[0]
            return np.concatenate([a, f], 1)

        e2e = _timed({"two": two}, 1, warmup=0)[0]["two"]
        two_rows.append(("fp32", "farneback", bmax, _rate(bmax, e2e), "measured end to end"))
        for prec in ("fp32", "fp16"):
            rgb_s = (
                statistics.median(next(r for r in rgb_rows if r[0] == bmax)[1][f"ort_{prec}"])
                / bmax
            )
            for method, flow_s, _n in flow_rows:
                rate = 1.0 / (rgb_s + flow_graph_s[prec] + flow_s)
                two_rows.append((prec, method, bmax, rate, "sum of measured parts"))
        print("two-stream: " + "; ".join(f"{r[0]} {r[1]} {r[3]:.3f}/s" for r in two_rows))

    # ---- report
    cmd = "OMP_NUM_THREADS={} python bench/bench_i3d.py {}".format(
        os.environ.get("OMP_NUM_THREADS", "?"),
        shlex.join(argv if argv is not None else sys.argv[1:]),
    )
    import onnxruntime

    torch_version = torch.__version__ if torch is not None else "not installed"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    lines += [
        f"# I3D feature extraction throughput ({args.provider.upper()})",
        "",
        f"Command: `{cmd}`",
        "",
        "- Model: pytorch-i3d InceptionI3d (`hamnet.i3d.model`), recipe weights (random; speed "
        "does not depend on values); ONNX graph = `extract_features` -> [N,1024], opset 17, "
        f"fixed 16x224x224, dynamic N; fp32 {graphs[('rgb', 'fp32')].stat().st_size / 1e6:.0f} MB,"
        f" fp16 {graphs[('rgb', 'fp16')].stat().st_size / 1e6:.0f} MB.",
        f"- CPU: {cpu_name()}, {os.cpu_count()} logical cores; threads = {args.threads} for "
        "every engine (torch.set_num_threads / ORT intra-op, inter-op 1; cv2.setNumThreads).",
        f"- torch {torch_version} (eager baseline on {args.torch_device}), onnxruntime {onnxruntime.__version__} ({prov}), "
        f"Python {platform.python_version()}.",
        f"- Median (min) seconds per call; batch 1: 1 warm-up + {args.repeats} runs, larger "
        f"batches: {args.repeats_large} runs on the warm sessions; engines interleaved.",
        f"- Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared "
        "machine: absolute numbers are indicative, compare columns of the same row).",
        f"- One-off costs: 4 graphs exported/converted in {export_s:.1f} s; ORT session "
        f"creation {session_s:.2f} s per graph.",
        "",
        "## RGB stream (one 3D ConvNet), snippets/s",
        "",
    ]
    head = "| batch |"
    if not args.skip_torch:
        head += " torch eager s/call | torch snip/s |"
    head += (
        " ORT fp32 s/call | ORT fp32 snip/s | ORT fp16 s/call | ORT fp16 snip/s |"
        " max abs diff fp32 | fp16 (max abs feature) |"
    )
    lines += [head, "|" + "---:|" * (head.count("|") - 1)]
    for b, times, d32, d16, scale in rgb_rows:
        row = f"| {b} |"
        if not args.skip_torch:
            row += f" {_med(times['torch'])} | {_rate(b, times['torch']):.2f} |"
        row += (
            f" {_med(times['ort_fp32'])} | {_rate(b, times['ort_fp32']):.2f} |"
            f" {_med(times['ort_fp16'])} | {_rate(b, times['ort_fp16']):.2f} |"
            f" {d32:.1e} | {d16:.1e} ({scale:.1f}) |"
        )
        lines.append(row)
    if not args.skip_torch:
        lines += [
            "",
            "Speed-up of ORT fp32 over torch eager: "
            + ", ".join(
                f"batch {b}: {statistics.median(t['torch']) / statistics.median(t['ort_fp32']):.2f}x"
                for b, t, *_ in rgb_rows
            )
            + ".",
        ]
    if flow_rows:
        lines += [
            "",
            "## Optical flow, per 16-frame 224x224 snippet (15 frame pairs computed; the "
            "first field duplicates the second)",
            "",
            "| method | s per snippet | frame pairs timed |",
            "|---|---:|---:|",
        ]
        lines += [f"| {m} | {per:.3f} | {n} |" for m, per, n in flow_rows]
    if two_rows:
        lines += [
            "",
            f"## Two-stream (RGB + flow) end to end per snippet, batch {bmax}",
            "",
            "Preprocessing (x/255*2-1), flow + quantisation to [-1, 1], both graphs; excludes "
            "decoding/resizing. One row is timed end to end; the others add the measured "
            "per-snippet parts (RGB graph + flow graph at this batch + flow method).",
            "",
            "| precision | flow | snippets/s | video s per wall s | how |",
            "|---|---|---:|---:|---|",
        ]
        lines += [
            f"| {p} | {m} | {r:.3f} | {r / SNIPPETS_PER_VIDEO_SECOND:.3f} | {how} |"
            for p, m, _b, r, how in two_rows
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
