"""Install the images' exact pins into clean virtual environments and import them: a
maintainer's check, run before a release or after `lock.py` rewrote the locks. It downloads
the pinned wheels from the package registry (once, into a wheelhouse), so its answer depends
on what the registry serves; that is why it is not part of the test suite, which checks the
locks offline (tests/deploy/test_compose.py).

    python docker/requirements/check_install.py            # worker and gateway
    python docker/requirements/check_install.py gateway

``onnxruntime-gpu`` (a ~300 MB CUDA wheel) is replaced by the CPU ``onnxruntime`` of the same
version: same module, same API; its CUDA side can only be checked on a GPU host.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCKS = Path(__file__).resolve().parent
# Wheels downloaded once and reused (offline afterwards); /.hamnet/ is ignored by git.
WHEELHOUSE = Path(os.environ.get("HAMNET_WHEELHOUSE", ROOT / ".hamnet" / "wheels"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(target: str) -> dict[str, str]:
    pins = {}
    for line in (LOCKS / f"{target}.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_norm(name)] = version
    return pins


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


def _pip(py: Path, *args: str, timeout: float = 900) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    r = subprocess.run([str(py), "-m", "pip", *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    assert r.returncode == 0, f"pip {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def _wheels(py: Path, requirements: Path) -> list[str]:
    """Fill the wheelhouse with the pinned wheels (and the project's build backend), then
    return pip options that install from it alone."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    house = ["--find-links", str(WHEELHOUSE)]
    _pip(py, "download", "--quiet", "--only-binary=:all:", "--dest", str(WHEELHOUSE), *house,
         "-r", str(requirements), "setuptools>=68", "wheel")
    return ["--no-index", *house]


def _freeze(py: Path) -> dict[str, str]:
    out = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], check=True,
                         capture_output=True, text=True).stdout
    return {_norm(p["name"]): p["version"] for p in json.loads(out)}


def check_worker(tmp_path: Path) -> None:
    """The worker image's exact pins in a clean venv. ``onnxruntime-gpu`` (a ~300 MB CUDA wheel)
    is replaced by the CPU ``onnxruntime`` of the same version: same module, same API; its
    CUDA side can only be checked on a GPU host."""
    pins = read_lock("worker")
    lock = tmp_path / "worker-cpu.txt"
    text = (LOCKS / "worker.txt").read_text()
    lock.write_text(re.sub(r"(?m)^onnxruntime-gpu==", "onnxruntime==", text))
    py = _venv(tmp_path / "venv")
    offline = _wheels(py, lock)
    _pip(py, "install", "--no-compile", *offline, "-r", str(lock))
    # as the Dockerfile does
    _pip(py, "install", "--no-compile", *offline, "--no-deps", str(ROOT))
    _pip(py, "check")
    installed = _freeze(py)
    expected = {("onnxruntime" if n == "onnxruntime-gpu" else n): v for n, v in pins.items()}
    for name, version in expected.items():
        assert installed.get(name) == version, f"{name}: {installed.get(name)} != {version}"
    extra = set(installed) - set(expected) - {"pip", "setuptools", "wheel", "hamnet"}
    assert not extra, f"the lock is incomplete, pip also installed {sorted(extra)}"
    probe = (
        "import json, onnxruntime as ort, av, cv2, numpy\n"
        "import hamnet_worker.celery_app, hamnet_worker.settings, hamnet.bundle\n"
        "print(json.dumps({'providers': ort.get_available_providers(),"
        " 'ort': ort.__version__, 'av': av.__version__, 'cv2': cv2.__version__}))\n"
    )
    r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert "CPUExecutionProvider" in info["providers"]
    assert info["ort"] == pins["onnxruntime-gpu"]
    assert info["av"] == pins["av"]
    r = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.stdout.strip() == "None", "the worker must not need torch"


def check_gateway(tmp_path: Path) -> None:
    """The gateway image's exact pins in a clean venv, and its sources without the worker."""
    pins = read_lock("gateway")
    py = _venv(tmp_path / "venv")
    offline = _wheels(py, LOCKS / "gateway.txt")
    _pip(py, "install", "--no-compile", *offline, "-r", str(LOCKS / "gateway.txt"))
    # What gateway.Dockerfile copies: no worker package, only the job contract.
    src = tmp_path / "src"
    for part in ("pyproject.toml", "README.md", "model", "worker/hamnet_jobs", "service"):
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, src / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (src / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / part, src / part)
    _pip(py, "install", "--no-compile", *offline, "--constraint", str(LOCKS / "gateway.txt"),
         f"{src}[service]")
    _pip(py, "check")
    installed = _freeze(py)
    extra = set(installed) - set(pins) - {"pip", "setuptools", "wheel", "hamnet"}
    assert not extra, f"the lock is incomplete, pip also installed {sorted(extra)}"
    # The gateway probes uploads with PyAV (hamnet.video.decode) without ONNX Runtime.
    import av
    import numpy as np

    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as c:
        st = c.add_stream("mpeg4", rate=25)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for k in range(50):
            img = np.full((48, 64, 3), k * 5, np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    probe = ("import sys, importlib.util as u, hamnet_service.app\n"
             "from hamnet.video.decode import probe\n"
             "info = probe(sys.argv[1])\n"
             "assert info.width == 64 and info.height == 48 and info.duration > 1.5, info\n"
             "assert u.find_spec('torch') is None and u.find_spec('onnxruntime') is None\n"
             "assert u.find_spec('hamnet_worker') is None and u.find_spec('hamnet_jobs')\n")
    r = subprocess.run([str(py), "-c", probe, str(clip)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path,
                       env={**os.environ, "HAMNET_DATA_DIR": str(tmp_path / "d")})
    assert r.returncode == 0, r.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", choices=["worker", "gateway"],
                    default=["worker", "gateway"])
    args = ap.parse_args()
    checks = {"worker": check_worker, "gateway": check_gateway}
    for target in args.targets:
        with tempfile.TemporaryDirectory() as tmp:
            checks[target](Path(tmp))
        print(f"{target}: the locked pins install and import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
