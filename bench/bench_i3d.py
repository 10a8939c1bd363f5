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

On a GPU machine (see bench/device_i3d.sh)::

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

SNIPPETS_PER_VIDEO_SECOND = 25 / 16


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _timed(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list]:
    """Seconds per call for each fn, interleaved a, b, c, a, b, c ... after warm-up."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


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
    ap.add_argument("--skip-flow", action="store_true", help="no flow / two-stream sections")
    ap.add_argument(
        "--tvl1-snippets",
        type=int,
        default=1,
        help="snippets for the (slow, ~1 s per frame pair) TV-L1 timing",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "i3d.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import onnx
    import torch
    from hamnet.i3d.export import FeatureGraph, export_i3d_onnx, to_fp16
    from hamnet.i3d.model import load_i3d_state_dict
    from hamnet.i3d.recipe import STREAM_CHANNELS, recipe_input, recipe_state_dict

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    lines: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_i3d_"))

    # ---- models and graphs
    t0 = time.perf_counter()
    models = {
        s: load_i3d_state_dict(recipe_state_dict(s), STREAM_CHANNELS[s]) for s in ("rgb", "flow")
    }
    graphs: dict[tuple[str, str], Path] = {}
    for s, m in models.items():
        graphs[(s, "fp32")] = Path(export_i3d_onnx(m, tmp / f"{s}.onnx", s, validate=False)["path"])
        p16 = tmp / f"{s}_fp16.onnx"
        onnx.save(to_fp16(onnx.load(str(graphs[(s, "fp32")]))), str(p16))
        graphs[(s, "fp16")] = p16
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sessions = {k: _session(p, args.provider, args.threads) for k, p in graphs.items()}
    session_s = (time.perf_counter() - t0) / len(graphs)
    prov = sessions[("rgb", "fp32")].get_providers()[0]

    # ---- RGB stream: torch eager vs ORT fp32 vs ORT fp16
    clip = recipe_input("rgb", 16 * max(args.batches))  # [1,3,16*B,224,224]
    rgb_rows = []
    feature_graph = FeatureGraph(models["rgb"]).eval()
    for b in args.batches:
        # b consecutive 16-frame snippets of the recipe clip: [b,3,16,224,224]
        x = np.ascontiguousarray(
            clip[0, :, : 16 * b].reshape(3, b, 16, 224, 224).transpose(1, 0, 2, 3, 4)
        )
        xt = torch.from_numpy(x)
        fns: dict[str, Callable[[], object]] = {}
        if not args.skip_torch:
            fns["torch"] = lambda xt=xt: feature_graph(xt)
        for prec in ("fp32", "fp16"):
            sess = sessions[("rgb", prec)]
            fns[f"ort_{prec}"] = lambda sess=sess, x=x: sess.run(["features"], {"frames": x})
        times = _timed(fns, args.repeats if b == 1 else args.repeats_large, warmup=1)
        ort32 = sessions[("rgb", "fp32")].run(["features"], {"frames": x})[0]
        ort16 = sessions[("rgb", "fp16")].run(["features"], {"frames": x})[0]
        ref = feature_graph(xt).numpy() if not args.skip_torch else ort32
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
        snippets = synthetic_snippets(max(2, args.tvl1_snippets))
        for method in ("farneback", "dis", "tvl1"):
            n = args.tvl1_snippets if method == "tvl1" else 2
            reps = 1 if method == "tvl1" else args.repeats
            times = _timed(
                {method: lambda m=method, n=n: [snippet_flow(s, m) for s in snippets[:n]]},
                reps,
                warmup=0,
            )
            per = statistics.median(times[method]) / n
            flow_rows.append((method, per, n * reps))
            print(f"flow {method}: {per:.3f} s per snippet", flush=True)

        # ---- two-stream: preprocess + flow + RGB graph + flow graph, per snippet
        bmax = max(args.batches)
        batch = synthetic_snippets(bmax, seed=1)
        for prec in ("fp32", "fp16"):
            rs, fs = sessions[("rgb", prec)], sessions[("flow", prec)]
            for method in ("farneback", "dis"):

                def two(rs=rs, fs=fs, method=method):
                    a = rs.run(["features"], {"frames": rgb_to_i3d(batch)})[0]
                    f = fs.run(["features"], {"frames": flow_input(batch, method)})[0]
                    return np.concatenate([a, f], 1)

                times = _timed({"two": two}, args.repeats_large, warmup=1)["two"]
                two_rows.append((prec, method, bmax, _rate(bmax, times), "measured"))
                print(
                    f"two-stream {prec} {method}: {_rate(bmax, times):.2f} snippets/s", flush=True
                )
            # TV-L1 at batch size bmax would take minutes: derived from measured parts.
            ort_rgb = next(r for r in rgb_rows if r[0] == bmax)[1][f"ort_{prec}"]
            per_snip_ort = 2 * statistics.median(ort_rgb) / bmax  # flow graph ~ RGB graph
            tvl1 = next(r for r in flow_rows if r[0] == "tvl1")[1]
            two_rows.append(
                (
                    prec,
                    "tvl1",
                    bmax,
                    1 / (per_snip_ort + tvl1),
                    "derived: TV-L1 per snippet + 2 x ORT RGB per snippet",
                )
            )

    # ---- report
    cmd = "OMP_NUM_THREADS={} python bench/bench_i3d.py {}".format(
        os.environ.get("OMP_NUM_THREADS", "?"),
        shlex.join(argv if argv is not None else sys.argv[1:]),
    )
    import onnxruntime

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
        f"- CPU: {_cpu_name()}, {os.cpu_count()} logical cores; threads = {args.threads} for "
        "every engine (torch.set_num_threads / ORT intra-op, inter-op 1; cv2.setNumThreads).",
        f"- torch {torch.__version__}, onnxruntime {onnxruntime.__version__} ({prov}), "
        f"Python {platform.python_version()}.",
        f"- Median (min) seconds per call after 1 warm-up; {args.repeats} runs at batch 1, "
        f"{args.repeats_large} at larger batches; engines interleaved.",
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
            "## Optical flow, per 16-frame 224x224 snippet (16 frame pairs incl. the "
            "duplicated edge: 15 computed)",
            "",
            "| method | s per snippet | snippets timed |",
            "|---|---:|---:|",
        ]
        lines += [f"| {m} | {per:.3f} | {n} |" for m, per, n in flow_rows]
    if two_rows:
        lines += [
            "",
            f"## Two-stream (RGB + flow) end to end per snippet, batch {bmax}",
            "",
            "Preprocessing (x/255*2-1), flow + quantisation, both graphs; excludes "
            "decoding/resizing.",
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
