"""HAM-Net head latency: ONNX Runtime vs PyTorch eager, side by side, on CPU.

Why this benchmark: the service runs the exported ONNX head, so the question is whether that
choice costs or saves latency against plain PyTorch for realistic video lengths (T snippets of
0.64 s: 200 ~ 2 min, 750 ~ 8 min, 2000 ~ 21 min of video) at the I3D feature size D=2048 and
THUMOS' C=20. Both engines get the same thread count and the same random features; outputs are
also compared so that a fast-but-wrong export cannot look good.

Usage (writes bench/results/head.md)::

    OMP_NUM_THREADS=2 python bench/bench_head.py --threads 2 --repeats 5
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
from pathlib import Path

import numpy as np
from machine import cpu_name  # bench/machine.py (scripts run from bench/)


def _time_pair(fn_a, fn_b, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Alternate a, b, a, b... so both engines see the same background load (shared CPUs)."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    out_a, out_b = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, out_a), (fn_b, out_b)):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out_a, out_b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[200, 750, 2000])
    ap.add_argument("--feature-size", type=int, default=2048)
    ap.add_argument("--num-class", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "head.md"))
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch
    from hamnet.config import ModelConfig
    from hamnet.nn.export import export_onnx
    from hamnet.nn.model import HAMNet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = HAMNet(ModelConfig(feature_size=args.feature_size, num_class=args.num_class)).eval()

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "head.onnx"
        t0 = time.perf_counter()
        export = export_onnx(model, onnx_path, validate=False)
        export_s = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        t0 = time.perf_counter()
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        session_s = time.perf_counter() - t0

        rng = np.random.default_rng(0)
        rows = []
        for t in args.lengths:
            x = rng.standard_normal((1, t, args.feature_size)).astype(np.float32)
            xt = torch.from_numpy(x)

            def run_torch(xt=xt):
                with torch.inference_mode():
                    elem, _, _, atn = model(xt)
                return elem, atn

            def run_ort(x=x):
                return sess.run(["cas", "attention"], {"features": x})

            t_ms, o_ms = _time_pair(run_torch, run_ort, args.repeats, args.warmup)
            (elem, atn), (cas, att) = run_torch(), run_ort()
            diff = max(
                float(np.abs(elem.numpy() - cas).max()), float(np.abs(atn.numpy() - att).max())
            )
            rows.append(
                (t, statistics.median(t_ms), min(t_ms), statistics.median(o_ms), min(o_ms), diff)
            )
            print(
                f"T={t:5d}  torch {statistics.median(t_ms):8.1f} ms  "
                f"onnxruntime {statistics.median(o_ms):8.1f} ms  max|diff| {diff:.1e}",
                flush=True,
            )

    cmd = " ".join(
        [
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')}",
            "python",
            "bench/bench_head.py",
            *map(shlex.quote, argv if argv is not None else sys.argv[1:]),
        ]
    )
    load = os.getloadavg()
    lines = [
        "# HAM-Net head latency: ONNX Runtime vs PyTorch eager (CPU)",
        "",
        f"Command: `{cmd}`",
        "",
        f"- Model: HAMNet D={args.feature_size}, C={args.num_class} (THUMOS architecture, no "
        f"smoothing), random init, batch 1, eval mode; {export['size_bytes'] / 1e6:.0f} MB ONNX "
        f"(opset {export['opset']}).",
        f"- CPU: {cpu_name()}, {os.cpu_count()} logical cores; threads = {args.threads} for both "
        f"engines (torch.set_num_threads / ORT intra_op_num_threads, inter_op 1).",
        f"- torch {torch.__version__}, onnxruntime {ort.__version__} (CPUExecutionProvider), "
        f"Python {platform.python_version()}.",
        f"- {args.warmup} warm-up run(s), then median (and min) of {args.repeats} runs per cell; "
        f"runs alternate torch / ORT.",
        f"- Load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"(the machine may be shared; absolute numbers are only indicative, compare the "
        f"columns).",
        f"- One-off costs: export {export_s:.1f} s, ORT session creation {session_s:.2f} s.",
        "",
        "| T (snippets) | video length | torch eager median (min) ms | ORT median (min) ms "
        "| torch / ORT | max abs diff |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for t, tm, tmin, om, omin, diff in rows:
        lines.append(
            f"| {t} | {t * 0.64 / 60:.1f} min | {tm:.1f} ({tmin:.1f}) | {om:.1f} ({omin:.1f}) "
            f"| {tm / om:.2f}x | {diff:.1e} |"
        )
    lines.append("")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
