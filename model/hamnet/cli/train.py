"""``hamnet train``: train HAM-Net on W-TAL features and write a run folder.

Configuration is layered so that the defaults are the official effective ones and every change
is explicit: dataset preset (chosen by ``--dataset``, or ``--preset``) -> ``--config`` YAML ->
command-line flags. The resolved config is written to ``RUN/config.yaml`` and embedded in every
checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

_SWITCHES = ("bcl", "hal", "sal", "ssal", "norm", "guide")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train HAM-Net on pre-extracted snippet features (W-TAL layout)",
        description=(
            "Train HAM-Net on <data-dir>/<dataset>-I3D-JOINTFeatures.npy + "
            "<dataset>-Annotations/, evaluating on the test split as the official tester does. "
            "Writes RUN/best.ckpt, last.ckpt, metrics.json, predictions.json, config.yaml, "
            "history.csv and curves.png."
        ),
    )
    p.add_argument("--data-dir", required=True, help="folder with the W-TAL files")
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset name (file prefix; default: the config's data.dataset, Thumos14reduced); "
        "also picks the preset if it names one",
    )
    p.add_argument(
        "--preset",
        default=None,
        help="config preset (Thumos14reduced | ActivityNet1.2); default: --dataset",
    )
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--config", default=None, help="YAML config applied on top of the preset")
    p.add_argument("--epochs", type=int, default=None, help="train.max_epochs")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N]")
    p.add_argument("--num-segments", type=int, default=None, help="training sampling length")
    p.add_argument("--sampling", choices=("random", "uniform", "all"), default=None)
    p.add_argument("--eval-every", type=int, default=None, help="epochs between evaluations")
    p.add_argument(
        "--profile",
        choices=("official", "fixed", "custom"),
        default=None,
        help="post-processing profile used for evaluation",
    )
    for s in _SWITCHES:
        p.add_argument(f"--no-{s}", action="store_true", help=f"switch off loss term {s}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Any:
    """Preset -> YAML -> flags (numpy-only; torch is not needed to resolve a config)."""
    from hamnet.config import PRESETS, load_yaml, preset, update

    name = args.preset or (args.dataset if args.dataset in PRESETS else "Thumos14reduced")
    dataset = args.dataset
    cfg = preset(name)
    if args.config:
        cfg = load_yaml(args.config, base=cfg)
    over: dict[str, dict[str, Any]] = {
        "data": {"dataset": dataset} if dataset else {},
        "train": {},
        "loss": {},
        "postprocess": {},
    }
    for flag, section, key in (
        ("epochs", "train", "max_epochs"),
        ("lr", "train", "lr"),
        ("weight_decay", "train", "weight_decay"),
        ("batch_size", "train", "batch_size"),
        ("seed", "train", "seed"),
        ("device", "train", "device"),
        ("eval_every", "train", "eval_every"),
        ("num_segments", "data", "num_segments"),
        ("sampling", "data", "sampling"),
        ("profile", "postprocess", "profile"),
    ):
        v = getattr(args, flag)
        if v is not None:
            over[section][key] = v
    for s in _SWITCHES:
        if getattr(args, f"no_{s}"):
            over["loss"][f"use_{s}"] = False
    return update(cfg, over)


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    from hamnet.nn.train import train

    res = train(cfg, args.data_dir, args.out, progress=not args.no_progress)
    tiou = " ".join(f"{t:.2f}:{m:.4f}" for t, m in zip(res["tiou"], res["mAP"], strict=True))
    print(
        f"best epoch {res['epoch']}: average mAP {res['average_mAP']:.4f} "
        f"(cls mAP {res['cls_mAP']:.2f})",
        file=sys.stderr,
    )
    print(f"mAP per tIoU: {tiou}", file=sys.stderr)
    print(res["paths"]["best"])
    return 0
