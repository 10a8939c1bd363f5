"""Device benchmark: decode, flow, I3D fp32/fp16, HAM-Net head, end to end and concurrency on
one GPU (or, with ``--cpu``, the same code on the CPU provider at tiny sizes).

Run it through ``bench/device.sh`` (which checks the machine first); see docs/DEVICE.md.
Every number comes from the code the service runs: :class:`hamnet.video.i3d_backbone.
I3DBackbone` (I/O binding, device-sized batches, fp16 on CUDA), :class:`hamnet.video.tvl1.
TVL1Flow` (TV-L1 as an ONNX graph), :func:`hamnet.pipeline.predict_video` (the pipelined
extractor) on a bundle assembled here from the I3D graphs and a HAM-Net head.

Real-time factor = seconds of video processed per wall second (a 60 s video in 1.2 s is 50x).
A snippet is 16 frames at 25 fps = 0.64 s, so one stream at 1.5625 snippets/s is real time.
Weights: ``--weights DIR`` (a ``hamnet export-i3d`` output directory) or ``--rgb-weights``/
``--flow-weights`` (.pt checkpoints, exported here); without them, the deterministic recipe
weights (random, not pretrained: speed does not depend on weight values; the table says so).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SNIPPET_S = 16 / 25


class GpuMemory:
    """Peak ``memory.used`` of GPU 0 (nvidia-smi, sampled every 0.2 s) while the block runs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.peak: float | None = None
        self._stop = threading.Event()

    def _sample(self) -> float | None:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                 "-i", "0"], capture_output=True, text=True, timeout=5, check=True).stdout
            return float(out.split()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            v = self._sample()
            if v is not None:
                self.peak = max(self.peak or 0.0, v)

    @contextlib.contextmanager
    def watch(self) -> Iterator[GpuMemory]:
        self.peak, self._stop = None, threading.Event()
        if not self.enabled:
            yield self
            return
        t = threading.Thread(target=self._loop, daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._stop.set()
            t.join()
            v = self._sample()
            if v is not None:
                self.peak = max(self.peak or 0.0, v)

    def text(self) -> str:
        return "n/a (cpu)" if not self.enabled else (
            "n/a" if self.peak is None else f"{self.peak:,.0f}")


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    xs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs)


# ----------------------------------------------------------------------------- inputs


def make_video(path: Path, seconds: float, width: int, height: int) -> Path:
    """A moving test pattern (ffmpeg's testsrc2: moving shapes and a counter) encoded with
    H.264 at 25 fps; PyAV with a numpy pattern where ffmpeg is missing. No downloads."""
    if shutil.which("ffmpeg"):
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=size={width}x{height}:rate=25:duration={seconds}", "-c:v", "libx264",
             "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)],
            check=True, timeout=600)
        return path
    sys.path.insert(0, str(ROOT / "tests" / "video"))
    from vidgen import moving_square, write_video

    return write_video(path, moving_square(int(seconds * 25), width, height, speed=3), fps=25)


def prepare_graphs(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """Directory with rgb.onnx/flow.onnx, and how the weights were obtained."""
    if args.weights:
        d = Path(args.weights)
        if not (d / "rgb.onnx").is_file() or not (d / "flow.onnx").is_file():
            raise SystemExit(f"{d}: expected rgb.onnx and flow.onnx (`hamnet export-i3d`)")
        return d, f"user-supplied ONNX graphs ({d})"
    out = work / "i3d"
    if args.rgb_weights and args.flow_weights:  # the CLI validates user checkpoints
        subprocess.run([sys.executable, "-m", "hamnet", "export-i3d", "--out", str(out),
                        "--rgb", str(args.rgb_weights), "--flow", str(args.flow_weights)],
                       check=True, timeout=900, stdout=subprocess.DEVNULL)
        return out, f"user-supplied checkpoints ({args.rgb_weights}, {args.flow_weights})"
    try:
        from hamnet.i3d.export import export_i3d_onnx
    except ModuleNotFoundError as e:
        raise SystemExit(f"exporting the recipe I3D graphs needs torch ({e}); pass --weights "
                         "DIR with rgb.onnx/flow.onnx from `hamnet export-i3d` instead") from None
    from hamnet.i3d.model import load_i3d_state_dict
    from hamnet.i3d.recipe import STREAM_CHANNELS, recipe_state_dict

    for stream in ("rgb", "flow"):  # tests/i3d validates the export itself
        model = load_i3d_state_dict(recipe_state_dict(stream), STREAM_CHANNELS[stream]).eval()
        export_i3d_onnx(model, out / f"{stream}.onnx", stream, validate=False)
    return out, ("RANDOM recipe weights (no weights given; speed does not depend on the "
                 "weight values, features are meaningless)")


def make_head(work: Path, feature_dim: int = 2048, classes: int = 20) -> tuple[Path, str]:
    """A HAM-Net head with random initial weights, exported to ONNX (the service's graph);
    without torch, the two-matmul stand-in of the tests (same interface, far cheaper: the
    head row then says so)."""
    try:
        import torch
    except ModuleNotFoundError:
        sys.path.insert(0, str(ROOT / "tests" / "model"))
        from headgen import write_head

        return (write_head(work / "head.onnx", feature_dim, classes),
                "stand-in head (torch missing: tests/model/headgen.py), not HAM-Net")
    from hamnet.config import ModelConfig
    from hamnet.nn.export import export_onnx
    from hamnet.nn.model import HAMNet

    torch.manual_seed(0)
    model = HAMNet(ModelConfig(feature_size=feature_dim, num_class=classes)).eval()
    path = work / "head.onnx"
    export_onnx(model, path, validate=False)
    return path, "HAM-Net head, random initial weights"


def make_bundle(work: Path, graphs: Path, head: Path, flow_method: str) -> Path:
    from hamnet.bundle import write_bundle
    from hamnet.video.backbone import BackboneSpec

    spec = BackboneSpec(name="i3d", flow_method=flow_method,
                        files={"rgb": "rgb.onnx", "flow": "flow.onnx"})
    return write_bundle(work / f"bundle_{flow_method}", head, [f"c{i}" for i in range(20)],
                        spec, {"rgb": graphs / "rgb.onnx", "flow": graphs / "flow.onnx"},
                        name="device-bench")


# ----------------------------------------------------------------------------- measurements


def clip(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """uint8 [n,16,size,size,3]: a moving block over a gradient with noise (real motion)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.float32) * (200 / (2 * size))
    frames = []
    for t in range(16 * n):
        img = base + rng.normal(0, 3, base.shape)
        x0, y0 = (size // 8 + 3 * t) % (size // 2), (size // 4 + 2 * t) % (size // 2)
        img[y0 : y0 + size // 4, x0 : x0 + size // 4] = (240, 220, 30)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames).reshape(n, 16, size, size, 3)


def row(name: str, setting: str, snippets_s: float | None, wall: float, video_s: float | None,
        mem: GpuMemory, notes: str = "") -> dict[str, str]:
    rtf = f"{video_s / wall:,.1f}x" if video_s else "-"
    return {"stage": name, "setting": setting, "snippets/s":
            "-" if snippets_s is None else f"{snippets_s:,.2f}", "rtf": rtf,
            "wall": f"{wall:.3f}", "mem": mem.text(), "notes": notes}


def bench_decode(video: Path, video_s: float, threads: int, mem: GpuMemory) -> dict[str, str]:
    """Decoding as the pipeline's producer does it: FFmpeg threads and converter threads
    from the thread plan, pictures resized to 256 and cropped to 224."""
    from concurrent.futures import ThreadPoolExecutor

    from hamnet.video.decode import iter_frames
    from hamnet.video.pipelined import _resolved, plan_threads

    plan = plan_threads(threads)
    n = [0]

    def run() -> None:
        pool = ThreadPoolExecutor(plan.converters) if plan.converters else None
        try:
            frames = iter_frames(video, 25.0, 256, 224, threads=plan.ffmpeg_threads,
                                 convert_pool=pool)
            n[0] = sum(1 for _ in _resolved(frames))
        finally:
            if pool is not None:
                pool.shutdown()

    with mem.watch():
        wall = timed(run, 1)
    return row("decode", f"PyAV, {plan.ffmpeg_threads} decoder + {plan.converters} converter "
               "threads, 25 fps, 256 / crop 224", n[0] / 16 / wall, wall, video_s,
               mem, f"{n[0] / wall:,.0f} frames/s")


def bench_flows(args: argparse.Namespace, providers: list[str], mem: GpuMemory,
                ) -> list[dict[str, str]]:
    """Per frame pair, scaled to a 16-frame snippet (15 pairs, the first field duplicated)."""
    import cv2
    from hamnet.video.flow import compute_flow, to_gray

    size = args.flow_size
    frames = clip(1 + args.flow_pairs // 16, size)[0][: args.flow_pairs + 1]  # [P+1,s,s,3]
    gray = np.stack([to_gray(f) for f in frames])
    out = []
    try:
        from hamnet.video.tvl1 import TVL1Flow
    except ModuleNotFoundError:
        TVL1Flow = None  # noqa: N806
    if TVL1Flow is not None:
        t = time.perf_counter()
        tv = TVL1Flow(size, size, providers, args.threads)
        build = time.perf_counter() - t
        with mem.watch():
            wall = timed(lambda: tv.flow(gray), 1)
        pairs_s = args.flow_pairs / wall
        out.append(row("flow tvl1-onnx", f"{tv.provider}, {args.flow_pairs} pairs in one batch, "
                       f"{size}x{size}", pairs_s / 15, 15 / pairs_s, SNIPPET_S, mem,
                       f"{pairs_s:,.1f} pairs/s; graph + session built in {build:.1f} s; "
                       "wall = one snippet"))
    else:
        out.append({"stage": "flow tvl1-onnx", "setting": "hamnet.video.tvl1 missing",
                    "snippets/s": "-", "rtf": "-", "wall": "-", "mem": "-", "notes": ""})
    cv2.setNumThreads(1)
    for method, pairs in (("tvl1", args.cpu_tvl1_pairs), ("farneback", args.flow_pairs)):
        wall = timed(lambda m=method, p=pairs: [compute_flow(gray[i], gray[i + 1], m)
                                               for i in range(p)], 1) / pairs
        label = "flow tvl1-opencv" if method == "tvl1" else "flow farneback"
        out.append(row(label, f"OpenCV CPU, 1 thread, {pairs} pairs, {size}x{size}",
                       1 / (15 * wall), 15 * wall, SNIPPET_S, GpuMemory(False),
                       f"{1 / wall:,.2f} pairs/s; wall = one snippet"))
    cv2.setNumThreads(-1)
    return out


def bench_i3d(graphs: Path, providers: list[str], args: argparse.Namespace, mem: GpuMemory,
              ) -> list[dict[str, str]]:
    from hamnet.video.backbone import BackboneSpec
    from hamnet.video.device import to_device
    from hamnet.video.i3d_backbone import I3DBackbone

    spec = BackboneSpec(name="i3d", flow_method="farneback",
                        files={"rgb": "rgb.onnx", "flow": "flow.onnx"})
    out = []
    n = args.batch
    inputs: dict[str, object] = {}
    for precision in ("fp32", "fp16"):
        bb = I3DBackbone(spec, graphs, providers=providers, threads=args.threads,
                         precision=precision, batch_size=n)
        if not inputs:  # one device-sized batch, prepared once for both precisions
            n = bb.batch_size
            inputs = bb.preprocess(np.repeat(clip(1, seed=1), n, axis=0))  # [n,16,224,224,3]
        for stream in ("rgb", "flow"):
            value = to_device(inputs[stream], bb.device)  # on the device, as the flow is
            with mem.watch():
                wall = timed(lambda s=stream, v=value, b=bb: b._run(s, v), args.repeats)
            out.append(row(f"i3d {stream} {precision}", f"{bb.provider}, batch {n}, I/O bound",
                           n / wall, wall, n * SNIPPET_S, mem,
                           "input already on the device; output copied back"))
    return out


def bench_head(bundle: Path, providers: list[str], snippets: int, args: argparse.Namespace,
               mem: GpuMemory, what: str) -> dict[str, str]:
    from hamnet import pipeline

    b = pipeline.get_bundle(bundle)
    head = pipeline.get_head(b, providers, threads=args.threads)
    feats = np.random.default_rng(0).normal(0, 1, (snippets, 2048)).astype(np.float32)
    with mem.watch():
        wall = timed(lambda: head.run(feats), args.repeats)
    return row("head", f"{head.provider}, T = {snippets} snippets", snippets / wall, wall,
               snippets * SNIPPET_S, mem, what)


def bench_end_to_end(bundle: Path, video: Path, video_s: float, providers: list[str],
                     args: argparse.Namespace, mem: GpuMemory,
                     ) -> tuple[dict[str, str], list[dict[str, str]], str]:
    from hamnet import pipeline

    b = pipeline.get_bundle(bundle)
    backbone = pipeline.get_backbone(b, providers, threads=args.threads)
    pipeline.get_head(b, providers, threads=args.threads)
    res = pipeline.predict_video(b, video)  # warm-up: sessions, fp16 conversion, flow graph
    with mem.watch():
        t = time.perf_counter()
        res = pipeline.predict_video(b, video)
        wall = time.perf_counter() - t
    n = res["num_snippets"]
    setting = (f"{backbone.provider}, {b.backbone.flow_method} flow via {backbone.flow_engine}, "
               f"RGB on {'device' if backbone.rgb_on_device else 'CPU'}, "
               f"{backbone.precision}, batch {backbone.batch_size}, {args.threads} threads")
    e2e = row("end to end", setting, n / wall, wall, video_s, mem,
              f"predict_video: {res['timings']}")
    conc, single, serves = [], wall, None
    for jobs in args.concurrency:
        lat: list[float] = []
        lock = threading.Lock()

        def job(lat: list[float] = lat, lock: threading.Lock = lock) -> None:
            t0 = time.perf_counter()
            pipeline.predict_video(b, video)
            with lock:
                lat.append(time.perf_counter() - t0)

        with mem.watch():
            t = time.perf_counter()
            ts = [threading.Thread(target=job) for _ in range(jobs)]
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            total = time.perf_counter() - t
        med = statistics.median(lat)
        if serves is None and med >= 2 * single:
            serves = f"latency doubles at {jobs} concurrent jobs"
        conc.append({"stage": f"concurrent jobs: {jobs}", "setting": "threads in one worker "
                     "process, shared sessions", "snippets/s": f"{jobs * n / total:,.2f}",
                     "rtf": f"{jobs * video_s / total:,.1f}x (all jobs)", "wall": f"{med:.3f}",
                     "mem": mem.text(), "notes": f"median job latency {med / single:.2f}x one job"})
    if serves is None:
        serves = f"latency stays under 2x up to {max(args.concurrency)} concurrent jobs"
    return e2e, conc, serves


def bench_motion_scaling(video: Path, budgets: list[int]) -> list[dict[str, str]]:
    """The CPU motion pipeline (default bundle's backbone) against decode-only, per budget."""
    from hamnet.video.backbone import extract_features, load_backbone
    from hamnet.video.decode import iter_frames
    from hamnet.video.decode import probe as probe_video

    b = load_backbone("motion")
    spec = b.spec
    dur = probe_video(video).duration
    floor = timed(lambda: sum(1 for _ in iter_frames(video, spec.fps, spec.resize_shorter,
                                                     spec.crop, threads=1)), 1)
    out = []
    for n in budgets:
        if n > (os.cpu_count() or 1):
            continue
        wall = timed(lambda n=n: extract_features(b, video, threads=n), 1)
        out.append({"stage": f"motion pipeline, {n} threads", "setting": "CPU, pipelined"
                    if n > 1 else "CPU, one-thread loop", "snippets/s": "-",
                    "rtf": f"{dur / wall:,.1f}x", "wall": f"{wall:.3f}", "mem": "-",
                    "notes": f"{wall / floor:.2f}x decode-only ({floor:.3f} s)"})
    return out


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="CPU provider, tiny sizes (smoke run)")
    ap.add_argument("--quick", action="store_true", help="fewest repeats and sizes")
    ap.add_argument("--weights", help="directory with rgb.onnx/flow.onnx (hamnet export-i3d)")
    ap.add_argument("--rgb-weights", help="RGB-stream checkpoint (.pt) to export")
    ap.add_argument("--flow-weights", help="flow-stream checkpoint (.pt) to export")
    ap.add_argument("--out", type=Path, help="table (default: bench/results/device.md on a "
                    "device, a temporary file with --cpu)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores)")
    ap.add_argument("--batch", type=int, default=None, help="snippets per I3D call "
                    "(default: sized to the free device memory)")
    args = ap.parse_args(argv)
    args.threads = args.threads or len(os.sched_getaffinity(0))
    if args.cpu:
        providers = ["CPUExecutionProvider"]
        seconds, width, height = (1.0, 320, 240) if args.quick else (4.0, 640, 360)
        args.flow_size, args.flow_pairs, args.cpu_tvl1_pairs = 32, 1, 1
        args.repeats, args.concurrency = 1, [1, 2]
        args.batch = args.batch or 1
        flow_method = "farneback"  # ONNX TV-L1 costs seconds per 224 pair on a CPU
        budgets = [1, 2]
    else:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        seconds, width, height = (20.0, 1280, 720) if args.quick else (60.0, 1280, 720)
        args.flow_size, args.flow_pairs, args.cpu_tvl1_pairs = 224, 60, 3
        args.repeats, args.concurrency = (3, [1, 2, 4]) if args.quick else (5, [1, 2, 4, 8])
        flow_method = "tvl1"
        budgets = [1, 2, 4, 8, 16]
    out = args.out or (Path(tempfile.mkdtemp()) / "device.md" if args.cpu
                       else ROOT / "bench" / "results" / "device.md")
    mem = GpuMemory(not args.cpu)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = make_video(work / "video.mp4", seconds, width, height)
        graphs, weights = prepare_graphs(args, work)
        head, head_what = make_head(work)
        bundle = make_bundle(work, graphs, head, flow_method)
        rows = [bench_decode(video, seconds, args.threads, mem)]
        rows += bench_flows(args, providers, mem)
        rows += bench_i3d(graphs, providers, args, mem)
        rows.append(bench_head(bundle, providers, int(seconds / SNIPPET_S), args, mem,
                               head_what))
        e2e, conc, serves = bench_end_to_end(bundle, video, seconds, providers, args, mem)
        rows += [e2e, *conc]
        small = make_video(work / "motion.mp4", min(seconds, 60.0), 160, 120)
        rows += bench_motion_scaling(small, budgets)
    total = time.perf_counter() - t0
    write_table(out, rows, args, argv, weights, seconds, width, height, serves, total)
    print(out.read_text())
    print(f"table written to {out}")
    return 0


def _gpu_name() -> str:
    if not shutil.which("nvidia-smi"):
        return "no GPU (nvidia-smi not found)"
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"


def write_table(out: Path, rows: list[dict[str, str]], args: argparse.Namespace,
                argv: list[str] | None, weights: str, seconds: float, width: int, height: int,
                serves: str, total: float) -> None:
    import onnxruntime as ort

    cmd = "bash bench/device.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Device benchmark" + (" (CPU smoke run, tiny sizes: not device numbers)"
                                if args.cpu else ""),
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {_gpu_name()}; {os.cpu_count()} CPUs ({args.threads} used), "
        f"{platform.machine()}, Python {platform.python_version()}, onnxruntime "
        f"{ort.__version__} ({', '.join(ort.get_available_providers())}); load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}  ",
        f"I3D weights: {weights}  ",
        f"Video: {seconds:g} s, {width}x{height}, 25 fps, H.264 (ffmpeg testsrc2, made here). "
        f"Total runtime {total:.0f} s.",
        "",
        "Real-time factor (RTF) = video seconds per wall second (single-stream rows: the "
        "video that many snippets cover; a snippet is 0.64 s). Medians after a warm-up.",
        "",
        "| stage | setting | snippets/s | real-time factor | wall s | peak GPU MiB | notes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['setting']} | {r['snippets/s']} | {r['rtf']} | "
                     f"{r['wall']} | {r['mem']} | {r['notes']} |")
    lines += ["", f"Concurrency: one worker process, jobs as threads sharing the sessions: "
              f"{serves}.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
