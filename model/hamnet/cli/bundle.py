"""``hamnet bundle``: checkpoint + backbone -> a model bundle the worker can serve.

Why a separate step from ``hamnet export``: a bundle must also pin the backbone (spec and
ONNX weights), the class names and the post-processing profile, and it refuses combinations
that cannot work (a 2048-d head on a 512-d backbone, class names that do not match the head)
at build time rather than at the first prediction. torch is imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from hamnet.errors import BundleError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bundle",
        help="package a checkpoint and a backbone as a model bundle",
        description=(
            "Export the HAM-Net head of CKPT to ONNX (validated against PyTorch) and write a "
            "bundle directory (or .tar.gz with --archive): manifest.json with classes, backbone "
            "spec, post-processing settings and SHA-256 of every file, head.onnx, and the "
            "backbone's ONNX files."
        ),
    )
    p.add_argument("--backbone", required=True, metavar="DIR|motion",
                   help="backbone directory (backbone.json + ONNX files) or 'motion'")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="HAM-Net checkpoint")
    p.add_argument("--out", required=True, metavar="B", help="bundle directory to create")
    p.add_argument("--name", default=None, help="model name (default: the --out folder name)")
    p.add_argument("--version", default="1", help="model version string (default 1)")
    p.add_argument("--classes", metavar="FILE",
                   help="class names (JSON list or one per line); default: from the checkpoint")
    p.add_argument("--profile", choices=("official", "fixed", "custom"), default=None,
                   help="post-processing profile (default: the checkpoint's, i.e. official)")
    p.add_argument("--preset", choices=("Thumos14reduced", "ActivityNet1.2"), default=None,
                   help="architecture for official checkpoints (default Thumos14reduced)")
    p.add_argument("--archive", action="store_true", help="also pack B.tar.gz")
    p.add_argument("--no-validate", action="store_true",
                   help="skip the ONNX Runtime vs PyTorch check of the exported head")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that pickles Python objects (trusted files only)")
    p.set_defaults(func=run)


def read_classes(path: str | Path) -> list[str]:
    """A JSON list of names, or a text file with one name per line."""
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"{p}: classes file not found")
    text = p.read_text()
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise BundleError(f"{p}: not valid JSON: {e}") from None
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names or not all(isinstance(n, str) for n in names):
        raise BundleError(f"{p}: expected a non-empty list of class names")
    return list(names)


def run(args: argparse.Namespace) -> int:
    from hamnet.bundle import load_bundle, write_bundle
    from hamnet.config import to_dict
    from hamnet.nn.checkpoint import load_checkpoint
    from hamnet.nn.export import export_onnx
    from hamnet.video.backbone import SPEC_FILE, BackboneSpec, load_backbone

    ck = load_checkpoint(args.checkpoint, preset=args.preset, trust_pickle=args.trust_checkpoint)
    classes = read_classes(args.classes) if args.classes else ck.classes
    if not classes:
        raise BundleError(
            f"{args.checkpoint}: the checkpoint has no class names; pass --classes FILE"
        )
    num_class = ck.config.model.num_class
    if len(classes) != num_class:
        raise BundleError(
            f"{len(classes)} class names for a head with {num_class} classes"
        )

    bdir = Path(args.backbone)
    if bdir.is_dir():
        spec = BackboneSpec.read(bdir)
        files = {role: bdir / name for role, name in spec.files.items()}
    elif bdir.name == SPEC_FILE and bdir.is_file():
        spec = BackboneSpec.read(bdir)
        files = {role: bdir.parent / name for role, name in spec.files.items()}
    else:  # a weight-free backbone by name: its default spec
        spec = load_backbone(args.backbone).spec
        files = {}
    if spec.feature_dim != ck.config.model.feature_size:
        raise BundleError(
            f"the checkpoint expects {ck.config.model.feature_size}-d features but backbone "
            f"{spec.name!r} produces {spec.feature_dim}-d; train on features from this backbone"
        )

    post = ck.config.postprocess
    if args.profile:
        post = replace(post, profile=args.profile)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="hamnet-bundle-") as tmp:
        head = Path(tmp) / "head.onnx"
        report = export_onnx(
            ck.model, head, validate=not args.no_validate,
            metadata={"hamnet.classes": json.dumps(classes),
                      "hamnet.source_checkpoint": Path(args.checkpoint).name},
        )
        training = {
            "checkpoint": Path(args.checkpoint).name,
            "config": to_dict(ck.config),
            "meta": {k: v for k, v in ck.meta.items()
                     if isinstance(v, str | int | float | bool | type(None))},
            "export": {"opset": report.get("opset"), "validated": report.get("validated")},
        }
        result = write_bundle(
            out, head, classes, spec, backbone_files=files, postprocess=post,
            name=args.name or out.name, version=args.version, training=training,
            archive=args.archive,
        )
    b = load_bundle(out)
    print(f"wrote bundle {result} ({b.name} {b.version}, {len(b.classes)} classes, backbone "
          f"{spec.name}, profile {b.postprocess.profile}, checksum {b.checksum[:12]})")
    return 0
