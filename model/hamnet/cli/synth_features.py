"""``hamnet synth-features``: write a synthetic W-TAL dataset with known ground truth.

Why a command: it lets anyone run ``hamnet train`` end to end (and the CI do the same) without
downloading the real I3D features, on the real THUMOS'14 temporal structure.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth-features",
        help="generate synthetic snippet features + annotations (W-TAL layout)",
        description=(
            "Generate synthetic features with known ground truth. --structure thumos14 borrows "
            "video lengths, action instances, classes and subsets from a "
            "Thumos14reduced-Annotations folder; --structure random invents them."
        ),
    )
    p.add_argument("--out", required=True, help="output data folder")
    p.add_argument("--structure", choices=("thumos14", "random"), default="thumos14")
    p.add_argument(
        "--annotations",
        default=None,
        help="Thumos14reduced-Annotations folder (needed for --structure thumos14)",
    )
    p.add_argument("--name", default="Thumos14reduced", help="dataset name (file prefix)")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension D")
    p.add_argument(
        "--videos",
        type=int,
        default=None,
        help="number of videos (thumos14: subsample, half per subset; random: 200)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="thumos14: skip videos longer than this many snippets",
    )
    p.add_argument("--classes", type=int, default=20, help="random structure: number of classes")
    p.add_argument("--difficulty", type=float, default=1.0, help="noise standard deviation")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hamnet.data.synthetic import SynthSpec, generate

    spec = SynthSpec(dim=args.dim, difficulty=args.difficulty, num_classes=args.classes)
    summary = generate(
        args.out,
        structure=args.structure,
        annotations=args.annotations,
        name=args.name,
        videos=args.videos,
        seed=args.seed,
        spec=spec,
        max_length=args.max_length,
        progress=True,
    )
    summary.pop("classes")
    print(json.dumps(summary, indent=1))
    return 0
