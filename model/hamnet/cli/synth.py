"""``hamnet synth``: render procedural action videos with ground truth and video-level labels."""

from __future__ import annotations

import argparse

from hamnet.errors import ConfigError


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 160x120), got {text!r}") from None
    return w, h


def _duration(text: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected A:B seconds (e.g. 20:40), got {text!r}"
        ) from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected A:B seconds, got {text!r}")
    return parts[0], parts[1]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="render synthetic action videos (MP4 + gt.json + video-level labels)",
        description=(
            "Render procedural action videos: foreground objects performing motion-pattern "
            "actions (bounce, spin, slide, orbit, pulse, zigzag) over drifting textured "
            "backgrounds with distractors. Writes OUT/videos/*.mp4, OUT/gt.json (segments), "
            "OUT/labels.json and OUT/labels.csv (video-level labels). Same seed, same videos."
        ),
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--count", type=int, default=10, help="number of videos (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=_size, default=(160, 120), help="frame size WxH (160x120)")
    p.add_argument("--fps", type=float, default=25.0, help="frames per second (25)")
    p.add_argument(
        "--duration",
        type=_duration,
        default=(20.0, 40.0),
        help="video length range A:B in seconds (20:40)",
    )
    p.add_argument("--subset", default="test", help="subset written into gt.json (test)")
    p.add_argument(
        "--classes", default=None, help="comma-separated subset of action classes (default: all)"
    )
    p.add_argument(
        "--no-clutter",
        action="store_true",
        help="static plain background, no distractors, no flicker",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel render processes (1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hamnet.demo.synth.actions import ACTION_CLASSES
    from hamnet.demo.synth.render import render_dataset
    from hamnet.demo.synth.scene import SceneConfig

    classes = ACTION_CLASSES
    if args.classes:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    try:
        cfg = SceneConfig(
            width=args.size[0],
            height=args.size[1],
            fps=args.fps,
            duration=args.duration,
            classes=classes,
            clutter=not args.no_clutter,
        )
    except ValueError as e:
        raise ConfigError(f"synth: {e}") from None
    bar = tqdm(total=args.count, desc="render", unit="video")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        gt = render_dataset(
            args.out,
            args.count,
            args.seed,
            cfg,
            subset=args.subset,
            workers=args.workers,
            progress=progress,
        )
    except ValueError as e:
        raise ConfigError(f"synth: {e}") from None
    finally:
        bar.close()
    n_inst = sum(len(v["annotations"]) for v in gt["database"].values())
    print(f"wrote {len(gt['database'])} videos, {n_inst} action instances to {args.out}")
    return 0
