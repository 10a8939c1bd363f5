"""Training throughput of HAM-Net: optimisation steps on the official THUMOS shape.

Why: the official recipe (D=2048, 500 sampled snippets, batch 20, 100 epochs over 200 videos =
1000 steps) is CPU-heavy: the two 2048x2048x3 classifier convolutions dominate (~29 M MAC per
snippet forward). This script times ``hamnet.nn.train.train_step`` (forward + HAM-Net loss +
backward + Adam) on random features of that shape, and the eval-mode forward used by the tester,
and reports snippets/s and videos/s.

    python bench/bench_training.py                       # D=2048 T=500 B=20, 3 timed steps
    python bench/bench_training.py --device cuda --steps 20
    python bench/bench_training.py --write bench/results/training.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hamnet.config import preset, update
from hamnet.data.wtal import Batch
from hamnet.nn.model import HAMNet
from hamnet.nn.train import make_optimizer, resolve_device, train_step


def bench(dim: int, t: int, batch: int, steps: int, warmup: int, device: str) -> dict[str, float]:
    cfg = update(preset("Thumos14reduced"), {"model": {"feature_size": dim}})
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = HAMNet(cfg.model).to(dev)
    opt = make_optimizer(model, cfg)
    rng = np.random.default_rng(0)
    labels = np.zeros((batch, cfg.model.num_class), np.float32)
    labels[np.arange(batch), rng.integers(0, cfg.model.num_class, batch)] = 1
    b = Batch(
        features=rng.random((batch, t, dim), dtype=np.float32),  # [B, T, D], I3D-like >= 0
        labels=labels,
        lengths=np.full(batch, t, np.int64),
        names=[f"v{i}" for i in range(batch)],
        num_seg=np.full(batch, t, np.int64),
    )

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        train_step(model, opt, b, cfg, dev)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, b, cfg, dev)
    sync()
    step_s = (time.perf_counter() - t0) / steps

    model.eval()
    x = torch.from_numpy(b.features[:1]).to(dev)  # [1, T, D]: the tester's batch
    with torch.no_grad():
        model(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync()
        eval_s = (time.perf_counter() - t0) / steps
    return {
        "step_s": step_s,
        "train_snippets_per_s": batch * t / step_s,
        "train_videos_per_s": batch / step_s,
        "eval_video_s": eval_s,
        "eval_snippets_per_s": t / eval_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--t", type=int, default=500)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--write", default=None, help="append a Markdown row to this file")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    r = bench(a.dim, a.t, a.batch, a.steps, a.warmup, a.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    env = (
        f"{a.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, load avg {load:.1f}"
    )
    row = (
        f"| D={a.dim} T={a.t} B={a.batch} | {r['step_s']:.2f} | "
        f"{r['train_snippets_per_s']:.0f} | {r['train_videos_per_s']:.2f} | "
        f"{r['eval_video_s'] * 1000:.0f} | {r['eval_snippets_per_s']:.0f} | {env} |"
    )
    print(row)
    steps_official = 1000  # 100 epochs x 10 steps (200 videos / batch 20)
    print(
        f"official recipe ({steps_official} steps) would take "
        f"{steps_official * r['step_s'] / 3600:.2f} h of training steps here",
        file=sys.stderr,
    )
    if a.write:
        path = Path(a.write)
        if not path.exists():
            path.write_text(
                "| shape | s/step | train snippets/s | train videos/s | eval ms/video | "
                "eval snippets/s | environment |\n|---|---|---|---|---|---|---|\n"
            )
        with path.open("a") as f:
            f.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
