"""``hamnet export``: turn a checkpoint into the ONNX head the service runs.

The export is validated against PyTorch by default (several batch sizes and lengths), because
the ONNX file is what serves predictions and a silent mismatch would go unnoticed otherwise.
torch is imported inside :func:`run` so that ``hamnet --help`` works on a numpy-only install.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a HAM-Net checkpoint to ONNX (validated against PyTorch)",
        description=(
            "Export the HAM-Net head of CKPT (ours, an official .ckpt/.pt, or an .npz of the "
            "official state dict) to ONNX: input 'features' [B,T,D] float32 with dynamic B and "
            "T; outputs 'cas' [B,T,C+1] (element logits, background last) and 'attention' "
            "[B,T,1]. The result is checked with ONNX Runtime against PyTorch unless "
            "--no-validate is given."
        ),
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint to export")
    p.add_argument("--out", required=True, metavar="MODEL.onnx", help="ONNX file to write")
    p.add_argument(
        "--preset",
        default=None,
        choices=("Thumos14reduced", "ActivityNet1.2"),
        help=(
            "architecture for official checkpoints, which do not record it (ActivityNet1.2 "
            "adds temporal smoothing); default Thumos14reduced. Ignored for our own checkpoints."
        ),
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch check"
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a checkpoint that pickles Python objects (only for files you trust)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hamnet.nn.checkpoint import load_checkpoint
    from hamnet.nn.export import export_onnx, format_report

    ck = load_checkpoint(args.checkpoint, preset=args.preset, trust_pickle=args.trust_checkpoint)
    metadata = {"hamnet.source_checkpoint": str(args.checkpoint)}
    if ck.classes is not None:
        metadata["hamnet.classes"] = json.dumps(ck.classes)
    report = export_onnx(
        ck.model, args.out, opset=args.opset, validate=not args.no_validate, metadata=metadata
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0
