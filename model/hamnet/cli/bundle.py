"""``hamnet bundle``: checkpoint + backbone -> a model bundle the worker can serve.

Why a separate step from ``hamnet export``: a bundle must also pin the backbone (spec and
ONNX weights), the class names and the post-processing profile, and it refuses combinations
that cannot work (a 2048-d head on a 512-d backbone, class names that do not match the head)
at build time rather than at the first prediction. torch is imported inside :func:`run`.

``--card card.yaml`` adds a model card (:mod:`hamnet.card`): the human parts (title, summary,
intended use, limitations, training data description, class descriptions) come from the file,
the rest is filled from what the command knows (classes, backbone, flow method, the held-out
mAP of the training run's ``metrics.json`` with ``--metrics``). ``--domain-data DIR`` (the
W-TAL layout the checkpoint was trained on) adds the out-of-domain check
(:mod:`hamnet.domain`): statistics of 80 % of the training videos' features, threshold from
the other 20 %, so the threshold is set on videos the statistics never saw and never on the
test subset. A bundle made here has no calibration: its results carry ``confidence: null``.
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
    p.add_argument("--card", metavar="CARD.yaml",
                   help="model card: title, summary, intended_use, limitations (list), "
                   "training_data {source, videos, description}, optional synthetic, classes "
                   "{name: description}, metrics {videos, instances, seed, note}")
    p.add_argument("--metrics", metavar="metrics.json",
                   help="the training run's metrics.json: its held-out mAP goes into the card")
    p.add_argument("--domain-data", metavar="DIR",
                   help="W-TAL data directory of the training run: adds the out-of-domain check "
                   "(statistics of its training subset's features)")
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

    card = build_card(args.card, args.metrics, classes, spec) if args.card else None
    if args.metrics and not args.card:
        raise BundleError("--metrics goes into the model card: pass --card CARD.yaml too")
    domain = domain_from_data(args.domain_data, ck.config, classes) if args.domain_data else None

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
            archive=args.archive, card=card, domain=domain,
        )
    b = load_bundle(out)
    print(f"wrote bundle {result} ({b.name} {b.version}, {len(b.classes)} classes, backbone "
          f"{spec.name}, profile {b.postprocess.profile}, checksum {b.checksum[:12]})")
    print(f"model card: {'yes' if b.card else 'no (add one with --card CARD.yaml)'}; "
          f"out-of-domain check: {'yes' if b.domain else 'no (--domain-data DIR)'}; "
          "calibrated confidence: no")
    return 0


def _read_yaml(path: str | Path, what: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise BundleError(f"{p}: {what} file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise BundleError(f"{p}: not valid YAML/JSON: {e}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{p}: {what} must be a mapping")
    return data


def build_card(card_path: str | Path, metrics_path: str | Path | None, classes: list[str],
               spec) -> dict:
    """The card: the human parts from ``card_path``, the rest from what is known here."""
    from hamnet import card as card_mod

    human = _read_yaml(card_path, "model card")
    missing = [k for k in ("title", "summary", "intended_use", "limitations", "training_data")
               if not human.get(k)]
    if missing:
        raise BundleError(f"{card_path}: model card needs {', '.join(missing)}")
    unknown = sorted(set(human) - {"title", "summary", "intended_use", "limitations",
                                   "training_data", "synthetic", "classes", "metrics"})
    if unknown:
        raise BundleError(f"{card_path}: unknown model card key(s): {', '.join(unknown)}")
    descr = human.get("classes") or {}
    if not isinstance(descr, dict) or set(descr) - set(classes):
        raise BundleError(f"{card_path}: 'classes' must map class names ({', '.join(classes)}) "
                          "to one-line descriptions")
    td = human["training_data"]
    if not isinstance(td, dict):
        raise BundleError(f"{card_path}: training_data must be a mapping")
    metrics = None
    if metrics_path:
        m = _read_yaml(metrics_path, "metrics")  # JSON is YAML
        if not all(k in m for k in ("tiou", "mAP", "average_mAP")):
            raise BundleError(f"{metrics_path}: expected tiou, mAP and average_mAP (the "
                              "metrics.json a training run writes)")
        extra = human.get("metrics") or {}
        note = extra.get("note") or (
            f"training run's metrics.json (epoch {m['epoch']}: the best epoch on the test "
            "subset, so optimistic)" if "epoch" in m else "training run's metrics.json")
        metrics = {"tiou": m["tiou"], "mAP": m["mAP"], "average_mAP": m["average_mAP"],
                   "videos": extra.get("videos"), "instances": extra.get("instances"),
                   "seed": extra.get("seed"), "note": note}
    limitations = human["limitations"]
    d = {
        "title": human["title"], "synthetic": bool(human.get("synthetic", False)),
        "summary": human["summary"], "intended_use": human["intended_use"],
        "limitations": [limitations] if isinstance(limitations, str) else limitations,
        "training_data": {"source": td.get("source"), "videos": td.get("videos"),
                          "classes": len(classes), "description": td.get("description", "")},
        "classes": [{"name": c, "description": str(descr.get(c, ""))} for c in classes],
        "backbone": spec.name, "flow_method": spec.flow_method, "metrics": metrics,
    }
    try:
        return card_mod.from_dict(d).to_dict()
    except BundleError as e:
        raise BundleError(f"{card_path}: {e}") from None


def domain_from_data(data_dir: str | Path, cfg, classes: list[str]):
    """Domain statistics of the training subset: 80 % of its videos for the statistics, the
    other 20 % (every fifth video) for the threshold."""
    from hamnet import domain
    from hamnet.data.wtal import WTALDataset

    ds = WTALDataset(data_dir, cfg.data.dataset, feature_type=cfg.data.feature_type,
                     classes=classes)
    feats = [ds.features[i] for i in ds.indices(cfg.data.train_subset)]
    held = feats[4::5]
    fit = [f for i, f in enumerate(feats) if i % 5 != 4]
    if len(fit) < 2 or not held:
        raise BundleError(f"{data_dir}: the out-of-domain check needs at least 5 training "
                          f"videos (subset {cfg.data.train_subset!r} has {len(feats)})")
    model = domain.fit(fit)
    return domain.choose_threshold(model, held)
