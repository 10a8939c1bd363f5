"""A small, bounded version of ``bench/bench_load.py`` that runs in CI: concurrent uploads and
pollers against one gateway and two workers with zero errors, and gateway memory that stays
flat while a 256 MiB upload streams (the 2 GiB and one-hour figures come from the bench)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.service

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_load.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_load", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def stack(stack_factory):
    return stack_factory("load", workers=2, proxy=False,
                         HAMNET_MAX_UPLOAD_BYTES=str(300 * 1024 * 1024))


def test_concurrent_uploads_and_pollers(bench, stack, videos) -> None:
    out = bench.run_load(stack, videos["short"].read_bytes(), uploaders=3, per_uploader=3,
                         pollers=4, max_seconds=120)
    assert out["errors"] == 0, out
    assert out["job_statuses"] == {"succeeded": 9}, out
    assert out["polls"] > 0 and out["poll_p99_ms"] < 2000, out
    # the load was shared: both workers received jobs (prefetch 1, no hoarding)
    for w in stack.workers:
        assert "received" in w.log.read_text(errors="replace"), w.log


def test_gateway_memory_flat_while_streaming(bench, stack) -> None:
    out = bench.run_big_upload(stack, 256 * 1024 * 1024, max_seconds=120)
    assert out["bytes_sent"] == 256 * 1024 * 1024, out
    assert out["status"] == 415 and out["code"] == "not_a_video", out  # random bytes
    assert out["gateway_rss_growth_mb"] < 40, out
    assert out["partials_left"] == 0 and stack.files_left() == []
