"""``hamnet predict``: features (or a video) in, scored action segments out.

Three model sources, one output: ``--checkpoint`` runs the torch model, ``--onnx`` the exported
head under ONNX Runtime, ``--bundle`` the whole video pipeline. The first two share the numpy
post-processing of :mod:`hamnet.postprocess`, so the same features give the same segments
whichever runtime computed the head. Heavy imports happen inside :func:`run`.

With no model option at all, ``--video`` runs the default bundle (``hamnet demo`` builds it).
The human-readable output of a bundle run starts with the model card's summary (so nobody
mistakes the synthetic demo model for a real-world one), warns loudly when the video is out
of the model's domain, and shows each segment's calibrated confidence next to its raw score.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.errors import ConfigError, DataError, MissingDependencyError

PRESETS = ("Thumos14reduced", "ActivityNet1.2")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="localize actions in one video's features (or in a video, with a bundle)",
        description=(
            "Run HAM-Net on snippet features [T, D] (.npy) with a checkpoint or an ONNX head, or "
            "on a video file with a model bundle, and print the action segments (start/end in "
            "seconds, label, score). Post-processing follows the official code by default "
            "(--profile official); --profile fixed repairs its documented quirks."
        ),
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="CKPT", help="HAM-Net checkpoint (ours or official)")
    src.add_argument("--onnx", metavar="MODEL.onnx", help="exported ONNX head")
    src.add_argument("--bundle", metavar="BUNDLE",
                     help="model bundle (directory or .tar.gz); default with --video: the "
                     "default bundle ($HAMNET_HOME/bundles/default, built by `hamnet demo`)")
    p.add_argument("--features", metavar="X.npy", help="snippet features [T, D] (float)")
    p.add_argument("--video", metavar="VIDEO", help="video file (with --bundle)")
    p.add_argument(
        "--classes",
        metavar="A,B,...",
        help="class names in index order (comma list or a text file, one per line); default: "
        "the names stored in the checkpoint/ONNX file",
    )
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="official architecture/post-processing variant (default Thumos14reduced)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate the features were extracted at (default 25)")
    p.add_argument("--snippet-frames", type=int, default=None,
                   help="frames per feature snippet (default 16)")
    p.add_argument("--profile", choices=("official", "fixed"), default=None,
                   help="post-processing profile (default official)")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop segments whose calibrated confidence is below this (raw score "
                   "when the model has no calibration)")
    p.add_argument("--min-raw-score", type=float, default=None,
                   help="drop segments whose raw score is below this")
    p.add_argument("--top", type=int, default=20, help="rows of the table (without --json)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- inputs


def _parse_classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    path = Path(text)
    if "," not in text and path.is_file():
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    else:
        names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise DataError(f"--classes {text!r}: no class names")
    if len(set(names)) != len(names):
        raise DataError(f"--classes: duplicate class names in {text!r}")
    return names


def load_features(path: str | Path) -> np.ndarray:
    """Read ``[T, D]`` float features from .npy (or a one-array / 'features' .npz)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: features file not found")
    try:
        obj = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy/.npz array ({e})") from None
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = list(obj.files)
            if "features" in keys:
                x = obj["features"]
            elif len(keys) == 1:
                x = obj[keys[0]]
            else:
                raise DataError(f"{path}: .npz has {len(keys)} arrays and none named 'features'")
    else:
        x = obj
    if x.dtype.kind not in "fiu":
        raise DataError(f"{path}: features must be numeric, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(f"{path}: features must be [T, D] (snippets x dims), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: features contain NaN or inf")
    return x.astype(np.float32, copy=False)


def _postprocess_cfg(base: Any, args: argparse.Namespace) -> Any:
    changes: dict[str, Any] = {}
    if args.fps is not None:
        if args.fps <= 0:
            raise ConfigError(f"--fps must be > 0, got {args.fps}")
        changes["fps"] = float(args.fps)
    if args.snippet_frames is not None:
        if args.snippet_frames <= 0:
            raise ConfigError(f"--snippet-frames must be > 0, got {args.snippet_frames}")
        changes["snippet_frames"] = int(args.snippet_frames)
    if args.profile is not None:
        changes["profile"] = args.profile
    return replace(base, **changes)


def _resolve_classes(given: list[str] | None, stored: list[str] | None, n: int,
                     source: str) -> list[str]:
    names = given if given is not None else stored
    if names is None:
        return [f"class_{i}" for i in range(n)]
    if len(names) != n:
        where = "--classes" if given is not None else source
        raise DataError(f"{where}: {len(names)} class names but the model {source} has {n} classes")
    return list(names)


# ----------------------------------------------------------------------------- model runs


def _run_checkpoint(args: argparse.Namespace, x: np.ndarray) -> dict[str, Any]:
    try:
        import torch

        from hamnet.nn.checkpoint import load_checkpoint
    except ImportError:
        raise MissingDependencyError(
            "--checkpoint needs torch (pip install 'hamnet[train]'); or export the model and use "
            "--onnx"
        ) from None
    from hamnet.postprocess import predict_from_outputs

    ck = load_checkpoint(args.checkpoint, preset=args.preset)
    mcfg = ck.config.model
    if x.shape[1] != mcfg.feature_size:
        raise DataError(
            f"{args.features}: feature dimension {x.shape[1]} does not match the model "
            f"{args.checkpoint} (feature_size {mcfg.feature_size})"
        )
    classes = _resolve_classes(_parse_classes(args.classes), ck.classes, mcfg.num_class,
                               str(args.checkpoint))
    ck.model.eval()
    with torch.no_grad():
        elem, _, _, atn = ck.model(torch.from_numpy(np.ascontiguousarray(x))[None])
    cfg = _postprocess_cfg(ck.config.postprocess, args)
    out = predict_from_outputs(elem[0].numpy(), atn[0].numpy(), classes, cfg)
    out["model"] = {"checkpoint": str(args.checkpoint), "runtime": "torch",
                    "feature_size": mcfg.feature_size, "num_class": mcfg.num_class}
    return out


def _run_onnx(args: argparse.Namespace, x: np.ndarray) -> dict[str, Any]:
    from hamnet.config import preset
    from hamnet.localize import HeadSession
    from hamnet.postprocess import predict_from_outputs

    head = HeadSession(args.onnx)
    elem, atn = head.run(x, name=str(args.features))
    classes = _resolve_classes(_parse_classes(args.classes), head.classes, elem.shape[1] - 1,
                               str(args.onnx))
    cfg = _postprocess_cfg(preset(args.preset or PRESETS[0]).postprocess, args)
    out = predict_from_outputs(elem, atn, classes, cfg)
    out["model"] = {"onnx": str(args.onnx), "runtime": "onnxruntime", "provider": head.provider,
                    "feature_size": int(x.shape[1]), "num_class": len(classes)}
    return out


def _default_bundle() -> str:
    from hamnet.bundle import MANIFEST
    from hamnet.paths import default_bundle_dir

    path = default_bundle_dir()
    if not (path / MANIFEST).is_file():
        raise DataError(
            f"no model given (--bundle, --checkpoint or --onnx) and the default bundle {path} "
            "does not exist; build it with `hamnet demo` (about ten minutes, offline) or pass "
            "--bundle BUNDLE"
        )
    return str(path)


def _run_bundle(args: argparse.Namespace) -> dict[str, Any]:
    from hamnet.pipeline import predict_video

    video = Path(args.video)
    if not video.is_file():
        raise DataError(f"{video}: video file not found")
    if not Path(args.bundle).exists():
        raise DataError(f"{args.bundle}: bundle not found")
    options: dict[str, Any] = {}
    if args.profile is not None:
        options["profile"] = args.profile
    if args.min_score is not None:
        options["min_score"] = args.min_score
    if args.min_raw_score is not None:
        options["min_raw_score"] = args.min_raw_score

    def progress(stage: str, fraction: float) -> None:
        # pipeline contract: progress(stage, fraction in 0..1); stderr keeps --json clean
        print(f"\r{stage:<12} {100 * float(fraction):5.1f}%", end="", file=sys.stderr,
              flush=True)

    result = predict_video(args.bundle, str(video), progress=progress, **options)
    print(file=sys.stderr)
    return result


# ----------------------------------------------------------------------------- output


def _card_lines(card: dict[str, Any] | None) -> list[str]:
    if not card:
        return []
    import textwrap

    title = card.get("title") or "model"
    lines = [f"model: {title}" + (" [SYNTHETIC]" if card.get("synthetic") else "")]
    for text in (card.get("summary"), card.get("intended_use") and
                 f"Intended use: {card['intended_use']}"):
        if text:
            lines += textwrap.wrap(text, 88, initial_indent="  ", subsequent_indent="  ")
    return lines + [""]


def _domain_lines(domain: dict[str, Any] | None) -> list[str]:
    if not domain or domain.get("in_distribution", True):
        return []
    bar = "!" * 78
    return [
        bar,
        "WARNING: OUT OF DOMAIN. This video does not look like the videos the model was",
        f"trained on (domain score {domain['score']:.3f} > threshold {domain['threshold']:.3f}).",
        "Its segments and confidences are unlikely to mean anything.",
        bar,
        "",
    ]


def format_table(result: dict[str, Any], top: int = 20) -> str:
    """Human-readable summary: model card, domain warning, predicted classes, then the best
    segments by confidence (by raw score when there is no confidence)."""
    lines = _card_lines((result.get("model") or {}).get("card"))
    lines += _domain_lines(result.get("domain"))
    cls = result.get("classes") or []
    if cls:
        lines.append("video classes: " + ", ".join(f"{c['label']} ({c['score']:.3f})" for c in cls))
    else:
        lines.append("video classes: none above the class threshold")
    segs = sorted(result.get("segments") or [],
                  key=lambda s: (-(s.get("confidence") or 0.0), -s["score"]))
    if not segs:
        lines.append("no segments")
        return "\n".join(lines)
    has_conf = any(s.get("confidence") is not None for s in segs)
    width = max(5, *(len(s["label"]) for s in segs[:top]))
    lines.append(f"{'label':<{width}}  {'start s':>9}  {'end s':>9}  {'confidence':>10}  "
                 f"{'score':>8}")
    for s in segs[:top]:
        conf = s.get("confidence")
        c = f"{100 * conf:9.0f}%" if conf is not None else f"{'-':>10}"
        lines.append(f"{s['label']:<{width}}  {s['start']:9.2f}  {s['end']:9.2f}  {c}  "
                     f"{s['score']:8.4f}")
    if not has_conf:
        lines.append("(no calibrated confidence for this model: rank by raw score only)")
    if len(segs) > top:
        lines.append(f"... {len(segs) - top} more segments (use --json for all)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not (args.bundle or args.checkpoint or args.onnx):
        if not args.video:
            raise DataError("give a --video VIDEO (default bundle) or a model: --bundle, "
                            "--checkpoint or --onnx")
        args.bundle = _default_bundle()
    if args.bundle:
        if not args.video:
            raise DataError("--bundle needs --video VIDEO")
        if args.features:
            raise DataError("--bundle works on a video; use --checkpoint/--onnx with --features")
        result = _run_bundle(args)
    else:
        if not args.features:
            raise DataError("--checkpoint/--onnx need --features X.npy ([T, D] snippet features)")
        if args.video:
            raise DataError("--video needs --bundle (checkpoints and ONNX heads take --features)")
        x = load_features(args.features)
        result = _run_checkpoint(args, x) if args.checkpoint else _run_onnx(args, x)
        result["features"] = str(args.features)
        # no calibration without a bundle: both thresholds apply to the raw score
        floors = [v for v in (args.min_score, args.min_raw_score) if v is not None]
        if floors:
            result["segments"] = [s for s in result["segments"] if s["score"] >= max(floors)]
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result, args.top))
    return 0
