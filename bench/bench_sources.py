"""Remote-source download throughput on loopback: hamnet's pinned, policy-checked downloader
(:func:`hamnet_jobs.sources.download_http`) against the baselines a worker could have used
instead (``urllib.request`` + ``shutil.copyfileobj``, and ``curl``), from the same local HTTP
server, plus the cost of resuming after dropped connections.

The server is the tests' ``VideoServer`` (Python ``http.server``, body in memory): on loopback
it, not the client, may be the bottleneck, which the baselines make visible.

    python bench/bench_sources.py --mib 256 --reps 5 --write bench/results/sources.md
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "jobs"))

from hamnet_jobs.sources import Limits, download_http  # noqa: E402
from videoserver import VideoServer  # noqa: E402


def _urllib(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=30) as r, open(dest, "wb") as fh:  # noqa: S310
        shutil.copyfileobj(r, fh, 256 << 10)


def _curl(url: str, dest: Path) -> None:
    subprocess.run(["curl", "-sS", "--fail", "-o", str(dest), url], check=True)


def _hamnet(url: str, dest: Path) -> None:
    download_http(url, dest, Limits(max_bytes=8 << 30, timeout_s=30, deadline_s=600),
                  allow_private=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="size of the served file")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--write", type=Path)
    a = ap.parse_args()
    body = bytes(range(256)) * (a.mib << 12)
    rows = []
    with VideoServer() as srv, tempfile.TemporaryDirectory() as tmp:
        plain = srv.add("/plain.mp4", body=body)
        cases = [("hamnet download_http", _hamnet, plain),
                 ("urllib.request (baseline)", _urllib, plain)]
        if shutil.which("curl"):
            cases.append(("curl (baseline)", _curl, plain))
        for name, fn, url in cases:
            times = []
            for i in range(a.reps):
                dest = Path(tmp) / f"out{i}"
                t0 = time.perf_counter()
                fn(url, dest)
                times.append(time.perf_counter() - t0)
                assert dest.stat().st_size == len(body)
                dest.unlink()
            rows.append((name, times))
        # resume cost: the connection is cut every 1/4 of the file (3 resumes per download)
        times = []
        for i in range(a.reps):
            url = srv.add(f"/drop{i}.mp4", body=body, drop_after=len(body) // 4, drops=3)
            dest = Path(tmp) / "drop"
            t0 = time.perf_counter()
            download_http(url, dest, Limits(max_bytes=8 << 30, backoff_s=0.0),
                          allow_private=True)
            times.append(time.perf_counter() - t0)
            assert dest.read_bytes() == body
        rows.append(("hamnet, 3 dropped connections resumed", times))
    mib = len(body) / 2**20
    lines = [
        "# Remote-source download throughput (loopback)", "",
        f"Command: `python bench/bench_sources.py --mib {a.mib} --reps {a.reps}"
        f"{' --write ' + str(a.write) if a.write else ''}`", "",
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, shared 2-core VM (other jobs were running: "
        "absolute numbers are noisy; compare rows of the same run). One "
        f"{mib:.0f} MiB file served from memory by the tests' `VideoServer` "
        "(Python `http.server`), loopback, one download at a time, "
        f"{a.reps} repetitions each.", "",
        "| client | median MiB/s | min-max MiB/s | median s |", "|---|---|---|---|",
    ]
    for name, t in rows:
        lines.append(f"| {name} | {mib / statistics.median(t):.0f} | "
                     f"{mib / max(t):.0f}-{mib / min(t):.0f} | {statistics.median(t):.2f} |")
    lines += ["", "The Python server is the ceiling on loopback: compare hamnet with the "
              "baselines, not with a network link. The resumed row re-sends nothing (each "
              "resume asks `Range: bytes=N-`) and pays one new connection per drop (backoff "
              "set to 0 here; the default waits 0.5 s x consecutive failures)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        a.write.write_text(text)


if __name__ == "__main__":
    main()
