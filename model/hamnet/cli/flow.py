"""``hamnet flow``: optical flow of the first frames of a video, as ``.npy`` and/or pictures.

Why a command: to look at (and compare) what the I3D flow stream is fed, e.g. the ONNX TV-L1
against OpenCV's, on a real video, without writing Python. Frames are decoded exactly as the
backbones decode them (resampled to ``--fps``, shorter side resized to ``--size``, centre crop
``--size`` x ``--size``) and converted to gray like OpenCV's RGB2GRAY.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

METHODS = ("tvl1", "tvl1-opencv", "farneback", "dis")  # = hamnet.video.flow.METHODS
MIN_SIZE, MAX_SIZE = 16, 2048


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {value}"
        )
    return value


def _frames(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 2 <= value <= 10000:
        raise argparse.ArgumentTypeError(f"must be between 2 and 10000, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flow",
        help="compute optical flow between the first frames of a video",
        description=(
            "Decode the first N frames of VIDEO (resampled to --fps, shorter side resized to "
            "--size and centre-cropped to SIZExSIZE, as the I3D backbone does) and compute the "
            "optical flow from each frame to the next. Writes float32 [N-1, SIZE, SIZE, 2] "
            "(pixels; channel 0 = x/right, 1 = y/down) with --out, and colour-coded pictures "
            "with --png (hue = direction, brightness = speed, scaled to the largest speed of "
            "the run). Methods: tvl1 = TV-L1 as an ONNX graph on ONNX Runtime (CUDA when "
            "available, batched); tvl1-opencv = OpenCV's DualTVL1 (the reference, CPU, one "
            "pair at a time); farneback, dis = OpenCV's fast methods."
        ),
        epilog="example: hamnet flow clip.mp4 --method tvl1 --frames 17 --out flow.npy "
        "--png flow_png/",
    )
    p.add_argument("video", metavar="VIDEO", help="video file")
    p.add_argument(
        "--method", choices=METHODS, default="tvl1", help="flow algorithm (default tvl1)"
    )
    p.add_argument(
        "--size",
        type=_size,
        default=224,
        metavar="PIXELS",
        help=f"frame side after resize + centre crop ({MIN_SIZE}..{MAX_SIZE}, default 224)",
    )
    p.add_argument(
        "--frames",
        type=_frames,
        default=16,
        metavar="N",
        help="number of frames to decode; N-1 flow fields (default 16)",
    )
    p.add_argument("--fps", type=float, default=25.0, help="decoding frame rate (default 25)")
    p.add_argument("--out", type=Path, metavar="FLOW.npy", help="write the flow array here")
    p.add_argument(
        "--png",
        type=Path,
        metavar="DIR",
        help="write colour-coded flow pictures DIR/flow_0000.png, ...",
    )
    p.add_argument(
        "--cpu",
        action="store_true",
        help="tvl1: run on ONNX Runtime's CPU provider even if CUDA is available",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="tvl1: ONNX Runtime intra-op threads (default: its choice)",
    )
    p.set_defaults(func=run)


def flow_to_bgr(flow, max_speed: float | None = None):
    """``[H, W, 2]`` flow -> uint8 ``[H, W, 3]`` BGR picture: hue = direction (OpenCV's
    0..180 hue scale), full saturation, value = speed / ``max_speed`` (default: this field's
    largest speed)."""
    import cv2
    import numpy as np

    mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    top = float(mag.max()) if max_speed is None else float(max_speed)
    hsv = np.zeros((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = np.round(ang / 2).astype(np.uint8) % 180
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / top * 255, 0, 255).astype(np.uint8) if top > 0 else 0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from hamnet.errors import DataError

    path = Path(args.video)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if args.out is None and args.png is None:
        raise DataError("nothing to write: give --out FLOW.npy and/or --png DIR")
    if not args.fps > 0:
        raise DataError(f"--fps must be > 0, got {args.fps}")

    import cv2

    from hamnet.video.decode import iter_frames

    gray = []
    for frame in iter_frames(path, args.fps, resize_shorter=args.size, crop=args.size):
        gray.append(cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY))
        if len(gray) == args.frames:
            break
    if len(gray) < 2:
        raise DataError(f"{path}: need at least 2 frames for flow, decoded {len(gray)}")
    frames = np.stack(gray)  # [N, S, S] uint8
    t0 = time.perf_counter()
    provider = "OpenCV (CPU)"
    if args.method == "tvl1":
        from hamnet.video.tvl1 import TVL1Flow

        providers = ["CPUExecutionProvider"] if args.cpu else None
        tv = TVL1Flow(args.size, args.size, providers=providers, threads=args.threads)
        provider = tv.provider
        flow = tv.flow(frames)
    else:
        from hamnet.video.flow import compute_flow

        flow = np.stack(
            [compute_flow(frames[i], frames[i + 1], args.method) for i in range(len(frames) - 1)]
        )
    seconds = time.perf_counter() - t0
    flow = np.ascontiguousarray(flow, dtype=np.float32)  # [N-1, S, S, 2]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, flow)
    if args.png is not None:
        args.png.mkdir(parents=True, exist_ok=True)
        top = float(np.sqrt((flow**2).sum(-1)).max())
        for i, f in enumerate(flow):
            if not cv2.imwrite(str(args.png / f"flow_{i:04d}.png"), flow_to_bgr(f, top)):
                raise DataError(f"{args.png}: cannot write pictures there")
    speed = np.sqrt((flow**2).sum(-1))
    print(
        f"{path.name}: {len(flow)} flow fields {args.size}x{args.size} by {args.method} on "
        f"{provider} in {seconds:.2f} s ({1000 * seconds / len(flow):.0f} ms/pair); "
        f"mean speed {speed.mean():.2f} px, max {speed.max():.2f} px",
        file=sys.stderr,
    )
    return 0
