"""Load and memory of the service under a bounded, loopback-only load.

Starts a whole stack (redis-server, two workers, one gateway; ``tests/reliability/relprocs``)
on 127.0.0.1 and measures:

1. **load**: ``--uploaders`` threads each uploading ``--jobs-per-uploader`` short clips while
   ``--pollers`` threads poll job status for the whole run: upload and poll latency p50/p99,
   request and job throughput, errors (anything but 202/200 or a job that does not succeed;
   must be 0).
2. **2 GB upload**: gateway RSS sampled every 0.25 s while one client streams a 2 GiB multipart
   body (must stay flat: the upload goes to disk in chunks, never into memory).
3. **1-hour video**: worker-child RSS sampled every 0.5 s while it processes a one-hour video
   (sparse and tiny, so it encodes in seconds; the worker still decodes and resamples an
   hour of frames) next to its RSS before the job.

Every loop is bounded in count and in time, and every target is 127.0.0.1.

Usage (about 4-8 minutes on 2 shared cores; writes bench/results/load.md and .json)::

    OMP_NUM_THREADS=1 python bench/bench_load.py
    python bench/bench_load.py --skip-2gb --skip-hour      # the load part only (~1 min)

The model is the reliability tests' untrained bundle (accuracy is not the point here) unless
``--bundle`` names another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from relprocs import Stack, ensure_test_bundle  # noqa: E402

TERMINAL = ("succeeded", "failed", "cancelled")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, timeout=600)


PROBE_CHILD = "hamnet_service._probe_child"


def tree_rss(pid: int, exclude: str | None = None) -> int:
    """RSS of a process and its children (bytes), leaving out children whose command line
    contains ``exclude``."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            if exclude and q.pid != pid and exclude in " ".join(q.cmdline()):
                continue
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def probe_rss(pid: int) -> int:
    """RSS of the gateway's upload-probe children (short-lived, capped by RLIMIT_AS)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in kids:
        try:
            if PROBE_CHILD in " ".join(q.cmdline()):
                total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Sampler:
    """Samples ``fn()`` every ``period`` seconds in a thread until stopped."""

    def __init__(self, fn, period: float) -> None:  # noqa: ANN001
        self.fn, self.period = fn, period
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - t0, self.fn()))
            self._stop.wait(self.period)

    def __enter__(self) -> Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self._stop.set()
        self._t.join(5)


# ------------------------------------------------------------------------------ 1. load


def run_load(stack: Stack, clip: bytes, uploaders: int, per_uploader: int, pollers: int,
             max_seconds: float) -> dict:
    lock = threading.Lock()
    ids: list[str] = []
    up_lat: list[float] = []
    poll_lat: list[float] = []
    errors: list[str] = []
    done_uploading = threading.Event()
    deadline = time.monotonic() + max_seconds

    def uploader(n: int) -> None:
        with httpx.Client(base_url=stack.url, timeout=60) as c:
            for i in range(per_uploader):
                if time.monotonic() > deadline:
                    return
                t = time.perf_counter()
                try:
                    r = c.post("/v1/jobs", files={"file": (f"u{n}-{i}.mp4", clip, "video/mp4")})
                except httpx.HTTPError as e:
                    with lock:
                        errors.append(f"upload: {type(e).__name__}")
                    continue
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code == 202:
                        up_lat.append(dt)
                        ids.append(r.json()["id"])
                    else:
                        errors.append(f"upload: {r.status_code} {r.text[:100]}")

    def poller(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=stack.url, timeout=30) as c:
            while time.monotonic() < deadline:
                with lock:
                    pick = rng.choice(ids) if ids else None
                if pick is None:
                    time.sleep(0.01)
                    continue
                t = time.perf_counter()
                try:
                    r = c.get(f"/v1/jobs/{pick}")
                except httpx.HTTPError as e:
                    with lock:
                        errors.append(f"poll: {type(e).__name__}")
                    continue
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code == 200:
                        poll_lat.append(dt)
                    else:
                        errors.append(f"poll: {r.status_code}")
                    if done_uploading.is_set() and all_done():
                        return

    def all_done() -> bool:
        raws = stack.r().mget([f"hamnet:job:{i}" for i in ids])
        return all(raw and json.loads(raw)["status"] in TERMINAL for raw in raws)

    t0 = time.monotonic()
    ups = [threading.Thread(target=uploader, args=(n,)) for n in range(uploaders)]
    pls = [threading.Thread(target=poller, args=(n,)) for n in range(pollers)]
    for t in ups + pls:
        t.start()
    for t in ups:
        t.join()
    t_uploaded = time.monotonic() - t0
    done_uploading.set()
    for t in pls:
        t.join(max(1.0, deadline - time.monotonic() + 5))
    while not all_done() and time.monotonic() < deadline:
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    statuses: dict[str, int] = {}
    for raw in stack.r().mget([f"hamnet:job:{i}" for i in ids]):
        s = json.loads(raw)["status"] if raw else "missing"
        statuses[s] = statuses.get(s, 0) + 1
    bad_jobs = sum(v for k, v in statuses.items() if k != "succeeded")
    return {
        "uploaders": uploaders, "jobs_per_uploader": per_uploader, "pollers": pollers,
        "jobs": len(ids), "job_statuses": statuses, "seconds": round(elapsed, 2),
        "upload_phase_s": round(t_uploaded, 2),
        "jobs_per_s": round(statuses.get("succeeded", 0) / elapsed, 3),
        "uploads_per_s": round(len(up_lat) / t_uploaded, 2) if t_uploaded else None,
        "upload_p50_ms": round(pct(up_lat, 50) * 1e3, 1),
        "upload_p99_ms": round(pct(up_lat, 99) * 1e3, 1),
        "polls": len(poll_lat),
        "polls_per_s": round(len(poll_lat) / elapsed, 1),
        "poll_p50_ms": round(pct(poll_lat, 50) * 1e3, 2),
        "poll_p99_ms": round(pct(poll_lat, 99) * 1e3, 2),
        "errors": len(errors) + bad_jobs, "error_samples": errors[:5],
    }


# ------------------------------------------------------------------------------ 2. 2 GB upload


def run_big_upload(stack: Stack, total: int, max_seconds: float) -> dict:
    boundary = "benchboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n').encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    chunk = os.urandom(1 << 20)
    deadline = time.monotonic() + max_seconds
    sent = {"n": 0}

    def body():
        yield head
        while sent["n"] < total and time.monotonic() < deadline:
            n = min(len(chunk), total - sent["n"])
            yield chunk[:n]
            sent["n"] += n
        yield tail

    # The gateway's memory while it streams; the probe child that reads the finished upload
    # is a separate, bounded process (RLIMIT_AS) and is reported on its own.
    pid = stack.gateway.pid
    base = tree_rss(pid, exclude=PROBE_CHILD)
    t0 = time.monotonic()
    with Sampler(lambda: tree_rss(pid, exclude=PROBE_CHILD), 0.25) as s, \
            Sampler(lambda: probe_rss(pid), 0.05) as probe:
        with httpx.Client(timeout=httpx.Timeout(max_seconds + 60)) as c:
            r = c.post(f"{stack.url}/v1/jobs", content=body(), headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}"})
    elapsed = time.monotonic() - t0
    rss = [v for _, v in s.samples]
    probe_peak = max([v for _, v in probe.samples] or [0])
    return {
        "bytes_sent": sent["n"], "seconds": round(elapsed, 1),
        "mb_per_s": round(sent["n"] / elapsed / 1e6, 1),
        "status": r.status_code, "code": (r.json().get("error") or {}).get("code")
        if r.headers.get("content-type", "").startswith("application/json") else None,
        "gateway_rss_before_mb": round(base / 2**20, 1),
        "gateway_rss_max_mb": round(max(rss) / 2**20, 1),
        "gateway_rss_growth_mb": round((max(rss) - base) / 2**20, 1),
        "samples": len(rss),
        "probe_child_rss_max_mb": round(probe_peak / 2**20, 1),
        "partials_left": len(list((stack.data_dir / "incoming").glob("*.part"))),
    }


# ------------------------------------------------------------------------------ 3. 1-hour video


def run_hour_video(stack: Stack, video: Path, max_seconds: float) -> dict:
    infos = stack.worker_infos()
    children = {i["pid"] for i in infos}
    base = {pid: psutil.Process(pid).memory_info().rss for pid in children}
    job = stack.submit(video.read_bytes(), name="hour.mp4")
    pid = stack.child_pid_running(job["id"], timeout=60)
    t0 = time.monotonic()
    with Sampler(lambda: tree_rss(pid), 0.5) as s:
        final = stack.wait_job(job["id"], timeout=max_seconds)
    elapsed = time.monotonic() - t0
    rss = [v for _, v in s.samples if v]
    quarter = max(1, len(rss) // 4)
    return {
        "video_seconds": final.get("video", {}).get("duration"),
        "status": final["status"], "error": final.get("error"),
        "seconds": round(elapsed, 1),
        "realtime_factor": round((final.get("video", {}).get("duration") or 0) / elapsed, 1),
        "worker_rss_before_mb": round(base.get(pid, 0) / 2**20, 1),
        "worker_rss_max_mb": round(max(rss) / 2**20, 1),
        "worker_rss_first_quarter_max_mb": round(max(rss[:quarter]) / 2**20, 1),
        "worker_rss_last_quarter_max_mb": round(max(rss[-quarter:]) / 2**20, 1),
        "samples": len(rss),
    }


# ------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--uploaders", type=int, default=8)
    ap.add_argument("--jobs-per-uploader", type=int, default=8)
    ap.add_argument("--pollers", type=int, default=16)
    ap.add_argument("--load-max-s", type=float, default=240)
    ap.add_argument("--big-bytes", type=int, default=2 * 1024**3)
    ap.add_argument("--big-max-s", type=float, default=300)
    ap.add_argument("--hour-s", type=int, default=3600)
    ap.add_argument("--hour-max-s", type=float, default=1200)
    ap.add_argument("--skip-2gb", action="store_true")
    ap.add_argument("--skip-hour", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hamnet-bench-load-"))
    bundle = args.bundle or ensure_test_bundle(ROOT / ".pytest_cache" / "d" /
                                               "hamnet-reliability")
    clip = work / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=3", "-pix_fmt", "yuv420p",
           "-c:v", "libx264", "-preset", "ultrafast", str(clip))
    report: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "loadavg_start": os.getloadavg()}}
    stack = Stack(work / "stack", bundle, workers=2, proxy=False,
                  HAMNET_MAX_UPLOAD_BYTES=str(args.big_bytes + 2**20),
                  HAMNET_MAX_DURATION_S=str(max(4 * 3600, args.hour_s + 60)),
                  HAMNET_MAX_QUEUE="1000", HAMNET_SOFT_TIME_LIMIT=str(args.hour_max_s),
                  HAMNET_TIME_LIMIT=str(args.hour_max_s + 60),
                  HAMNET_VISIBILITY_TIMEOUT=str(args.hour_max_s + 300))
    try:
        print("load ...", flush=True)
        report["load"] = run_load(stack, clip.read_bytes(), args.uploaders,
                                  args.jobs_per_uploader, args.pollers, args.load_max_s)
        print(json.dumps(report["load"], indent=1), flush=True)
        if not args.skip_2gb:
            print("2 GB upload ...", flush=True)
            report["big_upload"] = run_big_upload(stack, args.big_bytes, args.big_max_s)
            print(json.dumps(report["big_upload"], indent=1), flush=True)
        if not args.skip_hour:
            print("1-hour video ...", flush=True)
            hour = work / "hour.mp4"
            ffmpeg("-f", "lavfi", "-i", f"testsrc=size=64x48:rate=1:duration={args.hour_s}",
                   "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast",
                   "-g", "600", str(hour))
            report["hour_video"] = run_hour_video(stack, hour, args.hour_max_s)
            report["hour_video"]["file_mb"] = round(hour.stat().st_size / 1e6, 2)
            print(json.dumps(report["hour_video"], indent=1), flush=True)
    finally:
        stack.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(report, " ".join(sys.argv[1:])))
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0 if report["load"]["errors"] == 0 else 1


def to_markdown(rep: dict, argv: str) -> str:
    cmd = f"OMP_NUM_THREADS=1 python bench/bench_load.py {argv}".rstrip()
    lines = ["# Load bench (bench/bench_load.py)", "", f"Command: `{cmd}`  ",
             f"Machine: {rep['machine']['platform']}, {rep['machine']['cpus']} CPUs, load "
             f"average {rep['machine']['loadavg_start'][0]:.1f} at start", ""]
    ld = rep["load"]
    lines += ["## Concurrent uploads and pollers (1 gateway, 2 workers)", "",
              "| | value |", "|---|---|"]
    for k in ("uploaders", "jobs_per_uploader", "pollers", "jobs", "job_statuses", "seconds",
              "jobs_per_s", "uploads_per_s", "upload_p50_ms", "upload_p99_ms", "polls",
              "polls_per_s", "poll_p50_ms", "poll_p99_ms", "errors"):
        lines.append(f"| {k} | {ld[k]} |")
    for key, title in (("big_upload", "Gateway RSS while streaming one 2 GiB upload"),
                       ("hour_video", "Worker RSS on a one-hour video")):
        if key in rep:
            lines += ["", f"## {title}", "", "| | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in rep[key].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
