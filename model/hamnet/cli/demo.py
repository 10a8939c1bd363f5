"""``hamnet demo``: build the default model bundle from nothing (render, features, train, export)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="build the default bundle offline: synthetic videos -> motion features -> HAM-Net",
        description=(
            "Render synthetic action videos, extract weight-free motion features, train HAM-Net "
            "with video-level labels only, evaluate detection mAP on held-out videos rendered "
            "from other seeds, export the head to ONNX and write a model bundle. Offline; about "
            "ten minutes on 2 CPU cores (--quick: about a minute)."
        ),
    )
    p.add_argument(
        "--out",
        default=None,
        help="bundle directory (default: $HAMNET_HOME/bundles/default, HAMNET_HOME=~/.hamnet)",
    )
    p.add_argument(
        "--quick", action="store_true", help="CI-sized 'mini' build: 3 classes, a few short videos"
    )
    p.add_argument("--seed", type=int, default=0, help="training-set seed (default 0)")
    p.add_argument(
        "--work", default=None, help="work directory for videos/features/runs (default: OUT.work)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel render/feature processes (default: CPU count, max 4)",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also train the base-loss-only variant and report its held-out mAP",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--json", action="store_true", help="print the final report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import shutil
    from pathlib import Path

    from hamnet.demo import build_bundle
    from hamnet.errors import HamnetError
    from hamnet.paths import default_bundle_dir

    out = Path(args.out) if args.out else default_bundle_dir()
    occupied = any(out.iterdir()) if out.is_dir() else out.exists()
    if occupied:
        if not args.force:
            raise HamnetError(f"{out} already exists; pass --force to rebuild it")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    report = build_bundle(
        out,
        size="mini" if args.quick else "default",
        seed=args.seed,
        work_dir=args.work,
        workers=args.workers,
        verbose=True,
        ablation=args.ablation,
    )
    if args.json:
        print(json.dumps(report, indent=1))
    return 0
