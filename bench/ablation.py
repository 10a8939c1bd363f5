"""Ablation of the HAM-Net loss terms and of the post-processing quirk fixes.

Why synthetic THUMOS-structured data: the real I3D features are not redistributable, and the
question here is relative (which term / which fix helps) on realistic temporal structure (real
THUMOS'14 video lengths, instances and classes, see ``hamnet.data.synthetic``).

Loss variants (trained from scratch, same data, same seed):

* ``BCL``            base classification loss only (no attention terms, no regularisers)
* ``BCL+SAL``        + soft attention loss
* ``BCL+SAL+HAL``    + hard attention loss (ADL drop branch)
* ``BCL+SAL+HAL+SSAL`` + semi-soft attention loss (all four MIL terms, still no regularisers)
* ``full``           + sparsity (loss_norm) and guide losses: the official HAM-Net objective

Post-processing variants, evaluated on the best checkpoint of ``full`` (profile ``custom``
with one fix on, then the ``fixed`` profile with all fixes + score floor + proposal cap).

    python bench/ablation.py --annotations tests/fixtures/thumos14/Thumos14reduced-Annotations \
        --seeds 0 1 2 --write bench/results/ablation.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from hamnet.config import preset, update
from hamnet.data.synthetic import SynthSpec, generate
from hamnet.data.wtal import WTALDataset
from hamnet.nn.checkpoint import load_checkpoint
from hamnet.nn.train import evaluate, train

MIL = ("bcl", "sal", "hal", "ssal")
LOSS_VARIANTS = {
    "BCL": {"bcl"},
    "BCL+SAL": {"bcl", "sal"},
    "BCL+SAL+HAL": {"bcl", "sal", "hal"},
    "BCL+SAL+HAL+SSAL": {"bcl", "sal", "hal", "ssal"},
    "full": {"bcl", "sal", "hal", "ssal", "norm", "guide"},
}
POST_VARIANTS = {
    "official": {"profile": "official"},
    "fix_snippet0": {"profile": "custom", "fix_snippet0": True},
    "fix_symmetric_outer": {"profile": "custom", "fix_symmetric_outer": True},
    "fix_nms_seconds": {"profile": "custom", "fix_nms_seconds": True},
    "profile fixed": {"profile": "fixed"},
}


def run(a: argparse.Namespace) -> dict[str, dict[str, list[dict[str, float]]]]:
    results: dict[str, dict[str, list[dict[str, float]]]] = {"loss": {}, "post": {}}
    work = Path(tempfile.mkdtemp(prefix="hamnet-ablation-"))
    for seed in a.seeds:
        data = work / f"data{seed}"
        generate(
            data,
            annotations=a.annotations,
            videos=a.videos,
            classes=a.classes,
            max_length=a.max_length,
            seed=seed,
            spec=SynthSpec(dim=a.dim),
        )
        base = update(
            preset("Thumos14reduced"),
            {
                "train": {
                    "max_epochs": a.epochs,
                    "lr": a.lr,
                    "batch_size": a.batch_size,
                    "eval_every": a.eval_every,
                    "seed": seed,
                    "device": a.device,
                },
                "data": {"num_segments": a.num_segments},
            },
        )
        for name, terms in LOSS_VARIANTS.items():
            flags = {f"use_{t}": t in terms for t in (*MIL, "norm", "guide")}
            cfg = update(base, {"loss": flags})
            t0 = time.perf_counter()
            res = train(cfg, data, work / f"run{seed}-{name}", progress=False)
            row = {
                "average_mAP": res["average_mAP"],
                "mAP@0.5": res["mAP"][4],
                "cls_mAP": res["cls_mAP"],
                "epoch": res["epoch"],
                "seconds": time.perf_counter() - t0,
            }
            results["loss"].setdefault(name, []).append(row)
            print(
                f"seed {seed} {name:18s} avg mAP {row['average_mAP']:.4f} "
                f"(epoch {row['epoch']}, {row['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        ck = load_checkpoint(work / f"run{seed}-full" / "best.ckpt")
        ds = WTALDataset(data, "Thumos14reduced", classes=ck.classes)
        split = ds.split(ck.config.data.test_subset, "all")
        gt = ds.ground_truth(train_subset=ck.config.data.train_subset)
        for name, over in POST_VARIANTS.items():
            cfg = replace(ck.config, postprocess=update(ck.config.postprocess, over))
            ev = evaluate(ck.model, split, gt, cfg, ds.classlist, torch.device("cpu"))
            n_prop = sum(len(v) for v in ev.predictions["results"].values())
            results["post"].setdefault(name, []).append(
                {"average_mAP": ev.average_mAP, "mAP@0.5": ev.mAP[4], "proposals": n_prop}
            )
    return results


def _fmt(rows: list[dict[str, float]], key: str, digits: int = 4) -> str:
    vals = [r[key] for r in rows]
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.{digits}f} ± {sd:.{digits}f}"


def to_markdown(res: dict, a: argparse.Namespace, cmd: str, minutes: float) -> str:
    lines = [
        "# HAM-Net ablation on THUMOS-structured synthetic features",
        "",
        f"Command (took {minutes:.1f} min): `{cmd}`",
        "",
        f"Data: {a.videos} real THUMOS'14 videos (half train/'validation', half test), "
        f"the first {a.classes} classes, videos <= {a.max_length} snippets, D={a.dim} synthetic "
        f"features (`hamnet.data.synthetic`, seed = run seed). Training: {a.epochs} epochs, "
        f"lr {a.lr}, batch {a.batch_size}, {a.num_segments} sampled snippets, evaluation every "
        f"{a.eval_every} epochs, best epoch by average mAP (official post-processing). "
        f"Mean ± std over seeds {a.seeds}. Average mAP over tIoU 0.1:0.1:0.7.",
        "",
        "## Loss terms",
        "",
        "| variant | average mAP | mAP@0.5 | cls mAP | per seed |",
        "|---|---|---|---|---|",
    ]
    for name, rows in res["loss"].items():
        per = ", ".join(f"{r['average_mAP']:.3f}" for r in rows)
        lines.append(
            f"| {name} | {_fmt(rows, 'average_mAP')} | {_fmt(rows, 'mAP@0.5')} | "
            f"{_fmt(rows, 'cls_mAP', 1)} | {per} |"
        )
    lines += [
        "",
        "## Post-processing (best checkpoint of `full`)",
        "",
        "| evaluation | average mAP | mAP@0.5 | proposals | per seed |",
        "|---|---|---|---|---|",
    ]
    for name, rows in res["post"].items():
        per = ", ".join(f"{r['average_mAP']:.3f}" for r in rows)
        lines.append(
            f"| {name} | {_fmt(rows, 'average_mAP')} | {_fmt(rows, 'mAP@0.5')} | "
            f"{statistics.mean(r['proposals'] for r in rows):.0f} | {per} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--annotations", required=True, help="Thumos14reduced-Annotations folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--videos", type=int, default=60)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--max-length", type=int, default=500)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--num-segments", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write", default=None, help="write the Markdown table here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    res = run(a)
    cmd = "python bench/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = to_markdown(res, a, cmd, (time.perf_counter() - t0) / 60)
    print(md)
    if a.write:
        Path(a.write).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
