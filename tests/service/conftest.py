"""Session fixtures for the service tests: one redis-server (append-only, temp dir), one model
bundle, one Celery worker and one gateway (uvicorn), all real processes on free ports.

The bundle is the CI-sized ``hamnet.demo.build_bundle(size="mini")`` (trained on rendered
videos), cached in pytest's cache directory keyed by the source of the ``hamnet.demo`` package
(and the modules it trains with); set ``HAMNET_TEST_BUNDLE`` to use an existing bundle
instead.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hamnet_procs import (  # noqa: E402
    ROOT,
    RedisServer,
    start_gateway,
    start_worker,
    wait_worker_ready,
)


def _bundle_ok(path: Path) -> bool:
    from hamnet.bundle import load_bundle

    try:
        load_bundle(path)
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def bundle_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("HAMNET_TEST_BUNDLE")
    if env:
        return Path(env)
    import hamnet.demo as demo

    # The mini bundle is trained (rendered videos -> motion features -> HAM-Net); the cache is
    # keyed on every module that shapes it, so a change to any of them rebuilds it.
    demo_pkg = Path(demo.__file__).parent  # hamnet/demo/, the generator hamnet/demo/synth/ too
    pkg = demo_pkg.parent
    sources = [*sorted(demo_pkg.rglob("*.py")), pkg / "video" / "motion.py",
               *sorted((pkg / "nn").glob("*.py")), pkg / "postprocess.py"]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    if getattr(request.config, "cache", None) is not None:  # absent with -p no:cacheprovider
        cache = Path(request.config.cache.mkdir(f"hamnet-mini-bundle-{key}"))
    else:
        cache = tmp_path_factory.mktemp("bundle")
    out = cache / "bundle"
    if out.exists() and _bundle_ok(out):
        return out
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    built = demo.build_bundle(out, size="mini", verbose=False)
    return Path(built["bundle"]) if isinstance(built, dict) else out


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def service_env(redis_server: RedisServer, bundle_dir: Path, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HAMNET_REDIS_URL=redis_server.url,
        HAMNET_BUNDLE=str(bundle_dir),
        HAMNET_DATA_DIR=str(data_dir),
        HAMNET_MAX_UPLOAD_BYTES=str(50 * 1024 * 1024),
        HAMNET_MAX_DURATION_S="600",
        HAMNET_RATE_LIMIT_PER_MINUTE="0",
        HAMNET_SOFT_TIME_LIMIT="240",
        HAMNET_TIME_LIMIT="270",
        HAMNET_VISIBILITY_TIMEOUT="300",
        HAMNET_HEARTBEAT_S="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("HAMNET_API_KEYS", None)
    return env


@pytest.fixture(scope="session")
def worker(service_env: dict[str, str], redis_server: RedisServer, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "worker.log"
    proc = start_worker(service_env, log)
    wait_worker_ready(redis_server.client(), proc)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def gateway(service_env: dict[str, str], tmp_path_factory) -> str:
    log = tmp_path_factory.mktemp("logs") / "gateway.log"
    proc, url = start_gateway(service_env, log)
    yield url
    proc.stop()


@pytest.fixture()
def api(gateway: str):
    with httpx.Client(base_url=gateway, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s 96x64 H.264 clip (ffmpeg test pattern): a valid video for the API tests."""
    out = tmp_path_factory.mktemp("videos") / "small.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=3",
         "-pix_fmt", "yuv420p", "-c:v", "libx264", "-y", str(out)],
        check=True, cwd=ROOT,
    )
    return out
