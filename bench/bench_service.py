"""End-to-end service benchmark: seconds from upload to result for a 60 s video, next to the
decode-only time of the same file (the floor no service can beat) and the in-process
``predict_video`` time (the model's share); then gateway status-poll latency p50/p99 under a
bounded local load. Everything runs on loopback: redis-server, one worker, one gateway.

    python bench/bench_service.py [--bundle DIR] [--duration 60] [--repeats 3]
        [--pollers 8] [--poll-seconds 10] [--out bench/results/service.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "service"))  # the process helpers of the service tests

from hamnet_procs import (  # noqa: E402
    RedisServer,
    start_gateway,
    start_worker,
    wait_worker_ready,
)


def render_video(out: Path, duration: float) -> Path:
    from hamnet.demo.synth import SceneConfig, make_plan, render_frames, write_mp4

    cfg = SceneConfig(duration=(duration, duration), instances=(3, 5))
    plan = make_plan(60, 0, cfg)
    write_mp4(out, render_frames(plan), plan.fps)
    return out


def decode_only(video: Path, bundle) -> float:  # noqa: ANN001
    """Decode and resample the frames exactly as the backbone asks, doing nothing with them."""
    from hamnet.video.decode import iter_frames

    spec = bundle.backbone
    t0 = time.perf_counter()
    n = 0
    for _ in iter_frames(video, spec.fps, resize_shorter=spec.resize_shorter, crop=spec.crop):
        n += 1
    return time.perf_counter() - t0


def in_process(video: Path, bundle) -> float:  # noqa: ANN001
    from hamnet.pipeline import predict_video

    predict_video(bundle, video)  # warm the sessions
    t0 = time.perf_counter()
    predict_video(bundle, video)
    return time.perf_counter() - t0


def end_to_end(url: str, video: Path) -> tuple[float, dict]:
    with httpx.Client(base_url=url, timeout=600) as c:
        t0 = time.perf_counter()
        with open(video, "rb") as fh:
            r = c.post("/v1/jobs", files={"file": (video.name, fh, "video/mp4")})
        r.raise_for_status()
        job_id = r.json()["id"]
        while True:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.05)
        result = c.get(f"/v1/jobs/{job_id}/result").json()
        return time.perf_counter() - t0, {"job": job, "result": result}


def poll_load(url: str, job_id: str, pollers: int, seconds: float, cap: int) -> dict:
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            while time.monotonic() < stop:
                with lock:
                    if len(lat) + errors[0] >= cap:
                        return
                t0 = time.perf_counter()
                try:
                    ok = c.get(f"/v1/jobs/{job_id}").status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        lat.append(dt)
                    else:
                        errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(pollers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [0] * 99
    return {"requests": len(lat), "errors": errors[0], "rps": len(lat) / wall,
            "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "max_ms": lat[-1] * 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=os.environ.get("HAMNET_BUNDLE"))
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pollers", type=int, default=8)
    ap.add_argument("--poll-seconds", type=float, default=10.0)
    ap.add_argument("--poll-cap", type=int, default=20000, help="max poll requests in total")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "service.md"))
    args = ap.parse_args(argv)

    from hamnet.bundle import load_bundle

    if args.bundle is None:
        from hamnet.demo import ensure_default_bundle

        args.bundle = str(ensure_default_bundle())
    bundle = load_bundle(args.bundle)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="hamnet-bench-"))
    video = render_video(work / f"bench{int(args.duration)}s.mp4", args.duration)
    print(f"video: {video} ({video.stat().st_size / 1e6:.1f} MB)", flush=True)

    t_decode = min(decode_only(video, bundle) for _ in range(2))
    t_inproc = in_process(video, bundle)
    print(f"decode only {t_decode:.2f} s, in-process predict {t_inproc:.2f} s", flush=True)

    redis = RedisServer(work / "redis").start()
    env = dict(os.environ, HAMNET_REDIS_URL=redis.url, HAMNET_BUNDLE=str(args.bundle),
               HAMNET_DATA_DIR=str(work / "data"), HAMNET_RATE_LIMIT_PER_MINUTE="0")
    worker = start_worker(env, work / "worker.log")
    gateway = None
    try:
        wait_worker_ready(redis.client(), worker)
        gateway, url = start_gateway(env, work / "gateway.log")
        runs = [end_to_end(url, video) for _ in range(args.repeats)]
        times = [t for t, _ in runs]
        last = runs[-1][1]
        assert last["job"]["status"] == "succeeded", last["job"]
        print(f"end-to-end {statistics.median(times):.2f} s (runs {times})", flush=True)
        load = poll_load(url, last["job"]["id"], args.pollers, args.poll_seconds, args.poll_cap)
        print(f"poll load: {load}", flush=True)
    finally:
        if gateway is not None:
            gateway.stop()
        worker.stop()
        redis.stop()

    provider = last["result"]["model"].get("head_provider") or last["result"]["model"].get(
        "provider")
    cmd = "python bench/bench_service.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Service benchmark",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; bundle `{bundle.name}` {bundle.version} "
        f"(backbone {bundle.backbone.name}, head provider {provider}); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; 1-min load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other work on the machine "
        "inflates every figure).",
        "",
        f"Video: {args.duration:.0f} s rendered action video "
        f"({last['result']['video']['width']}x{last['result']['video']['height']}, "
        f"{last['result']['video']['fps']:g} fps, {video.stat().st_size / 1e6:.1f} MB).",
        "",
        "| measurement | seconds |",
        "|---|---|",
        f"| decode only (PyAV, resampled to {bundle.backbone.fps:g} fps; the floor) "
        f"| {t_decode:.2f} |",
        f"| in-process `predict_video` (warm sessions) | {t_inproc:.2f} |",
        f"| service end to end: upload → result, median of {len(times)} "
        f"| {statistics.median(times):.2f} |",
        f"| service end to end, all runs | {', '.join(f'{t:.2f}' for t in times)} |",
        "",
        f"Status polling (`GET /v1/jobs/{{id}}`), {args.pollers} concurrent clients for at most "
        f"{args.poll_seconds:g} s / {args.poll_cap} requests, loopback, one uvicorn process:",
        "",
        "| requests | errors | req/s | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
        f"| {load['requests']} | {load['errors']} | {load['rps']:.0f} | {load['p50_ms']:.1f} "
        f"| {load['p99_ms']:.1f} | {load['max_ms']:.1f} |",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
