"""``hamnet evaluate``: ActivityNet-style detection mAP of a prediction file against a gt.json.

Numbers are the official HAM-Net ones (:mod:`hamnet.evaluation`); unlike the official evaluator,
a class without test ground truth or an unknown label is a clear error (or a documented skip),
never a crash.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

DEFAULT_TIOU = {"Thumos14reduced": "0.1:0.7:0.1", "ActivityNet1.2": "0.5:0.95:0.05"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="detection mAP of predictions against a gt.json (ActivityNet/HAM-Net protocol)",
        description=(
            "Compute the mAP at each tIoU threshold and their average, exactly as the official "
            "HAM-Net evaluation (ANETdetection) does. GT.json: {'class-list', 'database': {vid: "
            "{'subset', 'annotations': [{'label', 'segment'}]}}}; PRED.json: {'results': {vid: "
            "[{'label', 'score', 'segment'}]}}."
        ),
    )
    p.add_argument("--gt", required=True, metavar="GT.json", help="ground truth (gt.json)")
    p.add_argument("--pred", required=True, metavar="PRED.json", help="ActivityNet-format results")
    p.add_argument(
        "--tiou",
        default=None,
        help=(
            "tIoU thresholds: START:STOP:STEP with STOP included, built like the official "
            "np.arange(START, STOP + STEP/2, STEP) (0.1:0.7:0.1 gives 0.1, 0.2, "
            "0.30000000000000004, ..., 0.7000000000000001), or a comma list. Default: the "
            "preset's official list (THUMOS 0.1:0.7:0.1, ActivityNet 0.5:0.95:0.05)"
        ),
    )
    p.add_argument("--preset", choices=tuple(DEFAULT_TIOU), default="Thumos14reduced",
                   help="which official threshold list to default to")
    p.add_argument("--subset", default="test", help="GT subset to evaluate on (default test)")
    p.add_argument("--skip-classes-without-gt", action="store_true",
                   help="leave classes without GT in the subset out of the mAP (default: error)")
    p.add_argument("--ignore-unknown-labels", action="store_true",
                   help="drop predictions whose label is not a GT class (default: error)")
    p.add_argument("--per-class", action="store_true", help="also print per-class AP")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def format_table(result: dict[str, Any], per_class: bool = False) -> str:
    lines = [f"{'tIoU':>6}  {'mAP':>7}"]
    for t, m in zip(result["tiou"], result["mAP"], strict=True):
        lines.append(f"{t:6.2f}  {100 * m:6.2f}%")
    lines.append(f"{'avg':>6}  {100 * result['average_mAP']:6.2f}%")
    if result.get("skipped_classes"):
        lines.append("skipped (no GT in subset): " + ", ".join(result["skipped_classes"]))
    if per_class:
        width = max([5, *(len(c) for c in result["classes"])])
        head = "  ".join(f"{t:6.2f}" for t in result["tiou"])
        lines.append(f"\n{'class':<{width}}  {head}")
        for j, c in enumerate(result["classes"]):
            row = "  ".join(f"{100 * result['ap'][i][j]:6.2f}" for i in range(len(result["tiou"])))
            lines.append(f"{c:<{width}}  {row}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from hamnet.evaluation import detection_map, parse_tiou

    thresholds = parse_tiou(args.tiou if args.tiou is not None else DEFAULT_TIOU[args.preset])
    result = detection_map(
        args.gt,
        args.pred,
        thresholds,
        subset=args.subset,
        skip_classes_without_gt=args.skip_classes_without_gt,
        ignore_unknown_labels=args.ignore_unknown_labels,
    )
    if args.json:
        print(json.dumps({k: _nan_to_none(v) for k, v in result.items()}))
    else:
        print(format_table(result, args.per_class))
    return 0
