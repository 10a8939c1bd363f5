"""Deployment files checked without a Docker engine (none runs on these machines).

* ``docker-compose.yml`` (+ ``docker-compose.cpu.yml``): structure and references — build
  contexts and Dockerfiles exist, every command is a real ``hamnet`` subcommand with valid
  flags, every ``HAMNET_*`` variable is a field of the settings class of the process that reads
  it (and the values validate), ports and healthchecks agree with each other and with the app's
  routes, Redis persists and never evicts, the GPU reservation, shared volumes, grace periods.
* The Dockerfiles pass lint rules implemented here (pinned bases, non-root, apt/pip hygiene,
  exec form, no URLs in ADD, no secrets, ...); a deliberately bad Dockerfile proves each rule
  fires.
* The pinned requirement files the images install are complete and consistent with
  ``pyproject.toml``, checked offline. Installing the pins (which downloads wheels, so the
  answer depends on what the registry serves that day) is a maintainer's script,
  ``docker/requirements/check_install.py``, never a test; the one test here that runs pip
  installs this checkout's own sources with ``--no-index`` and ``PIP_NO_INDEX=1``.
* The non-Docker path (``scripts/run.sh``) and the compose path start the same processes with
  the same configuration names.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
LOCKS = ROOT / "docker" / "requirements"
# Services built from this repository and which settings class reads their environment.
SETTINGS_OF = {"gateway": ("service",), "worker": ("worker",), "bundle": ("service", "worker")}
# Environment variables that are not ours but are read by a dependency, with the reason.
FOREIGN_ENV = {
    "REMAP_SIGTERM": "Celery: SIGTERM starts the cold (soft) shutdown",
    "NVIDIA_VISIBLE_DEVICES": "NVIDIA Container Toolkit",
    "NVIDIA_DRIVER_CAPABILITIES": "NVIDIA Container Toolkit",
}


# ------------------------------------------------------------------------------------ loading

class _ComposeLoader(yaml.SafeLoader):
    """YAML loader that understands Compose's merge tags (``!reset``, ``!override``)."""


class Tagged:
    def __init__(self, tag: str, value) -> None:  # noqa: ANN001
        self.tag, self.value = tag, value


def _tagged(loader: yaml.Loader, node: yaml.Node) -> Tagged:
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged(node.tag, value)


_ComposeLoader.add_constructor("!reset", _tagged)
_ComposeLoader.add_constructor("!override", _tagged)


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506 (safe subclass)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def interpolate(value) -> str:  # noqa: ANN001
    """Compose variable interpolation with an empty environment: ``${X:-d}`` -> ``d``."""
    return _VAR.sub(lambda m: m.group(3) or "", str(value))


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: interpolate("" if v is None else v) for k, v in env.items()}


def duration_s(text: str) -> float:
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", str(text))
    assert parts and "".join(a + u for a, u in parts) == str(text), f"bad duration {text!r}"
    return sum(float(a) * units[u] for a, u in parts)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def settings_fields(kind: str) -> set[str]:
    if kind == "service":
        from hamnet_service.settings import ServiceSettings as cls
    else:
        from hamnet_worker.settings import WorkerSettings as cls
    return set(cls.model_fields)


def package_env_names() -> set[str]:
    """``HAMNET_*`` variables the packages read directly (``os.environ``), outside the settings
    classes (e.g. ``HAMNET_HOME`` of ``hamnet.demo``)."""
    pat = re.compile(r"""(?:environ(?:\.get)?[(\[]|getenv\()\s*["'](HAMNET_[A-Z0-9_]+)""")
    names: set[str] = set()
    for pkg in ("model", "worker", "service"):
        for f in (ROOT / pkg).rglob("*.py"):
            names |= set(pat.findall(f.read_text(errors="replace")))
    return names


def settings_class(kind: str):  # noqa: ANN201
    if kind == "service":
        from hamnet_service.settings import ServiceSettings

        return ServiceSettings
    from hamnet_worker.settings import WorkerSettings

    return WorkerSettings


# --------------------------------------------------------------------------- Dockerfile parser

class Instr:
    def __init__(self, line: int, cmd: str, args: str, stage: int) -> None:
        self.line, self.cmd, self.args, self.stage = line, cmd, args, stage

    def __repr__(self) -> str:
        return f"{self.line}: {self.cmd} {self.args[:60]}"


def parse_dockerfile(text: str) -> list[Instr]:
    out: list[Instr] = []
    buf, start, stage = "", 0, -1
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):  # comment lines inside a continuation are dropped
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        cmd, _, args = buf.partition(" ")
        cmd = cmd.upper()
        if cmd == "FROM":
            stage += 1
        out.append(Instr(start, cmd, args.strip(), stage))
        buf = ""
    assert not buf, "dangling line continuation"
    return out


def global_args(instrs: list[Instr]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (usable in FROM lines)."""
    out = {}
    for i in instrs:
        if i.cmd == "FROM":
            break
        if i.cmd == "ARG":
            k, _, v = i.args.partition("=")
            out[k.strip()] = v.strip().strip('"')
    return out


def from_images(instrs: list[Instr], build_args: dict[str, str] | None = None):  # noqa: ANN201
    """(line, resolved image, stage name) of every FROM."""
    args = {**global_args(instrs), **(build_args or {})}
    out = []
    for i in instrs:
        if i.cmd != "FROM":
            continue
        toks = [t for t in i.args.split() if not t.startswith("--platform")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), toks[0])
        name = toks[2] if len(toks) >= 3 and toks[1].upper() == "AS" else None
        out.append((i.line, image, name))
    return out


_VERSION_TAG = re.compile(r"\d+\.\d+")


def image_pinned(image: str) -> str | None:
    """None when ``image`` names a pinned version, else why not."""
    if "@sha256:" in image:
        return None
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if not tag:
        return f"{image}: no tag (means latest)"
    if tag == "latest" or "$" in tag:
        return f"{image}: tag {tag!r} is not a pinned version"
    if not _VERSION_TAG.search(tag):
        return f"{image}: tag {tag!r} names no version (like 3.12.10 or 24.04)"
    return None


def _run_segments(args: str) -> list[str]:
    return [s.strip() for s in re.split(r"&&|\|\||;", args) if s.strip()]


def _exec_form(args: str) -> bool:
    try:
        v = json.loads(args)
    except ValueError:
        return False
    return isinstance(v, list) and all(isinstance(x, str) for x in v) and bool(v)


def _pip_requirements(segment: str) -> list[str] | None:
    """Requirement arguments of a ``pip install`` command, or None when it is not one."""
    try:
        toks = shlex.split(segment)
    except ValueError:
        toks = segment.split()
    for k in range(len(toks) - 1):
        if toks[k].endswith("pip") and toks[k + 1] == "install" or (
            toks[k] == "pip" and toks[k + 1] == "install"
        ):
            rest = toks[k + 2:]
            break
    else:
        if "-m" in toks and "pip" in toks and "install" in toks:
            rest = toks[toks.index("install") + 1:]
        else:
            return None
    reqs, skip = [], False
    with_value = {"-r", "--requirement", "-c", "--constraint", "--index-url", "-i",
                  "--extra-index-url", "--target", "-t", "--prefix", "--find-links", "-f",
                  "--platform", "--python-version", "--root"}
    for t in rest:
        if skip:
            skip = False
            continue
        if t in with_value:
            skip = True
            continue
        if t.startswith("-"):
            continue
        reqs.append(t)
    return reqs


def lint_dockerfile(text: str, context: Path | None = None) -> list[str]:
    """Offline lint. Returns ``"RULE line: message"`` findings (empty: clean)."""
    instrs = parse_dockerfile(text)
    problems: list[str] = []

    def bad(rule: str, i: Instr | None, msg: str) -> None:
        problems.append(f"{rule} {i.line if i else 0}: {msg}")

    froms = from_images(instrs)
    if not froms:
        bad("DF000", None, "no FROM")
        return problems
    stage_names = set()
    for line, image, name in froms:
        if image not in stage_names:
            why = image_pinned(image)
            if why:
                problems.append(f"DF001 {line}: base image not pinned: {why}")
        if name:
            stage_names.add(name)

    last_stage = max(i.stage for i in instrs)
    users = [i for i in instrs if i.cmd == "USER" and i.stage == last_stage]
    if not users:
        bad("DF002", None, "final stage has no USER: the container would run as root")
    elif users[-1].args.split(":")[0] in ("root", "0"):
        bad("DF002", users[-1], "final stage runs as root")

    if re.search(r":latest\b", text):
        bad("DF003", None, "':latest' tag used")

    for i in instrs:
        if i.cmd == "ADD":
            if re.search(r"(https?|ftp)://|git@", i.args):
                bad("DF004", i, "ADD of a URL: download in a RUN with a checksum, or COPY")
            else:
                bad("DF004", i, "ADD: use COPY for local files")
        if i.cmd == "MAINTAINER":
            bad("DF005", i, "MAINTAINER is deprecated: use LABEL")
        if i.cmd in ("CMD", "ENTRYPOINT") and not _exec_form(i.args):
            bad("DF006", i, f"{i.cmd} not in exec (JSON array) form")
        if i.cmd == "HEALTHCHECK" and i.args.strip() != "NONE":
            m = re.search(r"\bCMD\s+(.*)$", i.args)
            if not m or not _exec_form(m.group(1)):
                bad("DF006", i, "HEALTHCHECK CMD not in exec form")
        if i.cmd == "WORKDIR" and not i.args.startswith(("/", "$")):
            bad("DF007", i, "WORKDIR must be absolute")
        if i.cmd in ("ENV", "ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " " + i.args) or [
                i.args.split()[0].split("=")[0]]
            for n in names:
                if re.search(r"PASSWORD|SECRET|TOKEN|API_KEYS?$|ACCESS_KEY|PRIVATE_KEY", n):
                    bad("DF008", i, f"{n}: secrets must not be baked into the image")
        if i.cmd == "RUN":
            segs = _run_segments(i.args)
            joined = " ".join(segs)
            if re.search(r"\bsudo\b", i.args):
                bad("DF009", i, "sudo in RUN")
            if re.search(r"\b(curl|wget)\b[^|]*\|\s*(ba|z)?sh\b", i.args):
                bad("DF010", i, "piping a download into a shell")
            if re.search(r"apt-get\s+(dist-)?upgrade", joined):
                bad("DF011", i, "apt-get upgrade in an image build: bump the base tag instead")
            if "apt-get install" in joined or "apt install" in joined:
                if "apt-get update" not in joined:
                    bad("DF011", i, "apt-get install without apt-get update in the same RUN")
                if "--no-install-recommends" not in joined:
                    bad("DF011", i, "apt-get install without --no-install-recommends")
                if not re.search(r"apt-get install[^&;]*\s-(y|-yes|qq?y)\b", joined):
                    bad("DF011", i, "apt-get install without -y")
            if "apt-get update" in joined:
                if "apt-get install" not in joined:
                    bad("DF011", i, "apt-get update alone: its cache layer goes stale")
                if "rm -rf /var/lib/apt/lists" not in joined:
                    bad("DF011", i, "apt lists not removed in the same RUN")
            for seg in segs:
                reqs = _pip_requirements(seg)
                if reqs is None:
                    continue
                pinned_by_file = re.search(r"(-r|--requirement|-c|--constraint)\s+\S+", seg)
                for r in reqs:
                    local = r.startswith((".", "/")) and not r.startswith("./requirements")
                    if local or "==" in r:
                        continue
                    bad("DF012", i, f"pip requirement {r!r} not pinned with ==")
                if not pinned_by_file and not reqs:
                    bad("DF012", i, "pip install of nothing pinned")
                if "--no-cache-dir" not in seg and not re.search(
                    r"PIP_NO_CACHE_DIR=(1|true|on|yes)", text
                ):
                    bad("DF013", i, "pip cache left in the layer (--no-cache-dir or "
                                    "PIP_NO_CACHE_DIR=1)")

    if context is not None:
        ignore = dockerignore_patterns(context)
        for i in instrs:
            if i.cmd != "COPY" or "--from=" in i.args:
                continue
            toks = [t for t in i.args.split() if not t.startswith("--")]
            if toks and toks[0].startswith("["):
                toks = json.loads(" ".join(toks))
            for src in toks[:-1]:
                if not (context / src).exists():
                    bad("DF014", i, f"COPY source {src} does not exist in the build context")
                elif ignored(src, ignore):
                    bad("DF014", i, f"COPY source {src} is excluded by .dockerignore")
    return problems


def dockerignore_patterns(context: Path) -> list[str]:
    f = context / ".dockerignore"
    if not f.exists():
        return []
    return [ln.strip() for ln in f.read_text().splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Does .dockerignore exclude ``path`` (or a folder above it)? Last match wins."""
    parts = Path(path).parts
    candidates = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        pats = [p] + ([p[3:]] if p.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(c, q) for c in candidates for q in pats) or any(
            fnmatch.fnmatchcase(part, p[3:]) for part in parts if p.startswith("**/")
        ):
            result = not neg
    return result


# ------------------------------------------------------------------------------------- lint

def test_dockerfiles_exist() -> None:
    names = {p.name for p in DOCKERFILES}
    assert {"gateway.Dockerfile", "worker.Dockerfile"} <= names
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lint_clean(dockerfile: Path) -> None:
    assert lint_dockerfile(dockerfile.read_text(), context=ROOT) == []


BAD_DOCKERFILE = """\
FROM python
FROM ubuntu:latest AS x
FROM debian:bookworm-slim
MAINTAINER someone
ADD https://example.com/tool.tar.gz /opt/
ADD local.txt /opt/
RUN apt-get update
RUN apt-get install curl
RUN apt-get update && apt-get install -y --no-install-recommends git
RUN pip install requests
RUN curl -s https://example.com/install.sh | sh
RUN sudo true
ENV HAMNET_API_KEYS=abc
WORKDIR relative/dir
COPY does-not-exist /x
COPY .git /x
CMD hamnet serve
"""


def test_lint_rules_fire_on_a_bad_dockerfile() -> None:
    found = lint_dockerfile(BAD_DOCKERFILE, context=ROOT)
    rules = {f.split()[0] for f in found}
    expected = {f"DF{n:03d}" for n in range(1, 15)}
    assert expected <= rules, f"rules that did not fire: {sorted(expected - rules)}\n{found}"
    text = "\n".join(found)
    for needle in ("python: no tag", "'latest'", "bookworm-slim", "URL", "without -y",
                   "apt lists not removed", "'requests'", "HAMNET_API_KEYS",
                   "does-not-exist", ".git is excluded", "no USER"):
        assert needle in text, needle


def test_lint_accepts_pinned_variants() -> None:
    ok = """\
ARG BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 \\
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir -r /tmp/req.txt && pip install --no-cache-dir --no-deps .
FROM python:3.12.10-slim-bookworm@sha256:""" + "0" * 64 + """
COPY --from=build /opt /opt
USER 10001
CMD ["serve"]
"""
    assert lint_dockerfile(ok) == []


def test_images_use_the_locked_requirements() -> None:
    for name, lock in (("gateway", "gateway.txt"), ("worker", "worker.txt"),
                       ("train", "train.txt")):
        df = ROOT / "docker" / f"{name}.Dockerfile"
        if not df.exists():
            continue
        text = df.read_text()
        assert f"docker/requirements/{lock}" in text, f"{df.name} does not install {lock}"


def test_gateway_image_has_no_torch_nor_onnxruntime() -> None:
    instrs = parse_dockerfile((ROOT / "docker" / "gateway.Dockerfile").read_text())
    runs = " ".join(i.args for i in instrs if i.cmd == "RUN")
    assert '".[service]"' in runs or "'.[service]'" in runs
    for seg in _run_segments(runs):
        reqs = _pip_requirements(seg) or []
        assert not [r for r in reqs if re.match(r"torch|onnxruntime", r)], seg
    pins = read_lock("gateway")
    assert not [n for n in pins if n.startswith(("torch", "onnxruntime", "nvidia-"))]


def test_only_the_train_image_carries_the_training_worker() -> None:
    """torch is the training side's alone: the training worker lives in ``trainer/``, which
    only train.Dockerfile copies, and what the gateway and worker images copy never imports
    torch at module level (``hamnet.nn`` and ``hamnet.i3d`` do, and are imported lazily)."""
    copied = {}
    for name in ("gateway", "worker", "train"):
        instrs = parse_dockerfile((ROOT / "docker" / f"{name}.Dockerfile").read_text())
        copied[name] = {i.args.split()[0] for i in instrs if i.cmd == "COPY"
                        and not i.args.startswith("--from")}
    assert "trainer" in copied["train"]
    assert not {c for c in copied["gateway"] | copied["worker"] if c.startswith("trainer")}
    assert not (ROOT / "worker" / "hamnet_trainer").exists()
    for py in (ROOT / "worker").rglob("*.py"):
        text = py.read_text()
        assert not re.search(r"^\s*(import torch|from torch)", text, re.M), py


def test_worker_image_is_cuda12_cudnn9_with_onnxruntime_gpu() -> None:
    instrs = parse_dockerfile((ROOT / "docker" / "worker.Dockerfile").read_text())
    images = [img for _, img, _ in from_images(instrs)]
    assert all(re.match(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d$", img)
               for img in images), images
    pins = read_lock("worker")
    # onnxruntime-gpu wheels on PyPI are CUDA 12 + cuDNN 9 from 1.19 to 1.26; 1.27+ are CUDA 13.
    major, minor = (int(x) for x in pins["onnxruntime-gpu"].split(".")[:2])
    assert (1, 19) <= (major, minor) <= (1, 26)
    assert {"av", "opencv-contrib-python-headless", "celery", "redis", "numpy"} <= set(pins)
    assert "onnxruntime" not in pins and not [n for n in pins if n.startswith("torch")]
    # The CPU variant (docker-compose.cpu.yml) only swaps these two build args.
    cpu_images = [img for _, img, _ in from_images(instrs, {"BASE_IMAGE": "ubuntu:24.04"})]
    assert set(cpu_images) == {"ubuntu:24.04"}


# -------------------------------------------------------------------------------- lock files

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(target: str) -> dict[str, str]:
    pins = {}
    for line in (LOCKS / f"{target}.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        assert m, f"{target}.txt: not an exact pin: {line!r}"
        assert _norm(m.group(1)) not in pins, f"{target}.txt: {line} twice"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def _extra_requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = list(project["dependencies"])

    def expand(e: str) -> None:
        for r in project["optional-dependencies"][e]:
            m = re.match(r"hamnet\[([^\]]+)\]", r)
            if m:
                for sub in m.group(1).split(","):
                    expand(sub.strip())
            else:
                out.append(r)

    expand(extra)
    return out


@pytest.mark.parametrize("target,extra", [("gateway", "service"), ("worker", "worker"),
                                          ("train", "train"), ("train", "video")])
def test_lock_covers_pyproject(target: str, extra: str) -> None:
    from packaging.requirements import Requirement

    pins = read_lock(target)
    for spec in _extra_requirements(extra):
        req = Requirement(spec)
        name = _norm(req.name)
        if target == "worker" and name == "onnxruntime":
            name = "onnxruntime-gpu"
        if target == "train" and name == "torch":
            continue  # installed from the PyTorch index by train.Dockerfile
        assert name in pins, f"{target}.txt lacks {spec}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{target}.txt pins {name}=={pins[name]}, pyproject wants {spec}")


# ---------------------------------------------------------------------------------- compose

def test_compose_services_and_volumes(compose: dict, services: dict) -> None:
    assert {"redis", "gateway", "worker", "bundle"} <= set(services)
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for v in svc.get("volumes") or []:
            src = (v.split(":")[0] if isinstance(v, str) else v.get("source"))
            if src and not src.startswith((".", "/", "$", "~")):
                assert src in declared, f"{name}: volume {src} not declared"
        if "image" in svc:
            assert image_pinned(interpolate(svc["image"])) is None, svc["image"]


def test_build_contexts_and_dockerfiles_exist(services: dict) -> None:
    built = 0
    for name, svc in services.items():
        b = svc.get("build")
        if b is None:
            continue
        built += 1
        if isinstance(b, str):
            b = {"context": b}
        ctx = (ROOT / b.get("context", ".")).resolve()
        assert ctx.is_dir(), f"{name}: build context {ctx} missing"
        df = ctx / b.get("dockerfile", "Dockerfile")
        assert df.is_file(), f"{name}: {df} missing"
        declared = {i.args.split("=")[0].strip()
                    for i in parse_dockerfile(df.read_text()) if i.cmd == "ARG"}
        for arg in (b.get("args") or {}):
            assert arg in declared, f"{name}: build arg {arg} is not an ARG of {df.name}"
    assert built >= 3


def _dockerfile_of(svc: dict) -> Path:
    b = svc["build"]
    return ROOT / b.get("context", ".") / b.get("dockerfile", "Dockerfile")


def _argv(svc: dict) -> list[str]:
    instrs = parse_dockerfile(_dockerfile_of(svc).read_text())
    last = max(i.stage for i in instrs)
    ep = [json.loads(i.args) for i in instrs if i.cmd == "ENTRYPOINT" and i.stage == last]
    cmd = [json.loads(i.args) for i in instrs if i.cmd == "CMD" and i.stage == last]
    entry = svc.get("entrypoint", ep[-1] if ep else [])
    command = svc.get("command", cmd[-1] if cmd else [])
    if isinstance(entry, str):
        entry = shlex.split(entry)
    if isinstance(command, str):
        command = shlex.split(command)
    return [interpolate(x) for x in [*entry, *command]]


def hamnet_argv(svc: dict) -> list[str]:
    """The ``hamnet ...`` command a service runs, also from inside an ``sh -c`` script."""
    argv = _argv(svc)
    if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"], ["bash", "-c"]):
        for seg in re.split(r"\|\||&&|;", argv[2]):
            toks = shlex.split(seg)
            if "hamnet" in toks:
                return toks[toks.index("hamnet"):]
        pytest.fail(f"no hamnet command in {argv[2]!r}")
    return argv


@pytest.mark.parametrize("name", ["gateway", "worker", "bundle"])
def test_commands_are_hamnet_subcommands(services: dict, name: str) -> None:
    from hamnet.cli import build_parser

    argv = hamnet_argv(services[name])
    assert argv[0] == "hamnet", argv
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if argv[1] not in sub.choices:
        pytest.fail(f"{name}: `hamnet {argv[1]}` is not a subcommand ({sorted(sub.choices)})")
    try:
        parser.parse_args(argv[1:])
    except SystemExit as e:  # argparse: unknown flag or bad value
        pytest.fail(f"{name}: `{' '.join(argv)}` does not parse (exit {e.code})")
    expected = {"gateway": "serve", "worker": "worker", "bundle": "demo"}[name]
    assert argv[1] == expected


@pytest.mark.parametrize("compose_file", [COMPOSE, COMPOSE_CPU], ids=lambda p: p.name)
def test_every_hamnet_variable_is_a_setting(compose_file: Path, monkeypatch) -> None:
    """Each HAMNET_* a service sets is a field of the settings class of the process that reads
    it, and the values (defaults of ${VAR:-default}) validate in that class."""
    svcs = load_compose(compose_file)["services"]
    base = load_compose(COMPOSE)["services"]
    for name, svc in svcs.items():
        if name not in SETTINGS_OF:
            continue
        env = {**env_of(base.get(name, {})), **env_of(svc)}
        for key in env:
            if key.startswith("HAMNET_"):
                field = key[len("HAMNET_"):].lower()
                kinds = SETTINGS_OF[name]
                assert any(field in settings_fields(k) for k in kinds), (
                    f"{compose_file.name}: {name} sets {key}, which no settings class of "
                    f"{kinds} reads")
            else:
                assert key in FOREIGN_ENV, f"{name}: unknown variable {key}"
        for k in list(os.environ):
            if k.startswith("HAMNET_"):
                monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        for kind in SETTINGS_OF[name]:
            settings_class(kind)()  # raises on a bad value or inconsistent time limits


def test_dockerfile_env_vars_are_settings() -> None:
    fields = settings_fields("service") | settings_fields("worker")
    for df in DOCKERFILES:
        for i in parse_dockerfile(df.read_text()):
            if i.cmd != "ENV":
                continue
            for key in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " " + i.args):
                if key.startswith("HAMNET_"):
                    assert key[7:].lower() in fields, f"{df.name}: {key} is not a setting"


def test_redis_persistent_and_never_evicts(services: dict) -> None:
    r = services["redis"]
    cmd = [interpolate(c) for c in r["command"]]
    assert cmd[0] == "redis-server"
    opts = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert opts.get("--appendonly") == "yes"
    assert opts.get("--maxmemory-policy") == "noeviction"
    assert any(str(v).split(":")[1] == "/data" for v in r["volumes"]), "AOF not on a volume"
    assert r["healthcheck"]["test"][:3] == ["CMD", "redis-cli", "ping"]
    assert image_pinned(r["image"]) is None


def test_redis_url_points_at_the_redis_service(services: dict) -> None:
    for name in ("gateway", "worker", "bundle"):
        url = urlparse(env_of(services[name])["HAMNET_REDIS_URL"])
        assert url.scheme == "redis" and url.hostname == "redis" and (url.port or 6379) == 6379
        assert "ports" not in services["redis"], "Redis must not be published on the host"


def _healthcheck_url(test: list[str]) -> str:
    m = re.search(r"https?://[^'\" ]+", " ".join(test))
    assert m, test
    return m.group(0)


def test_gateway_ports_and_healthcheck_agree(services: dict) -> None:
    from hamnet_service.app import app

    routes = set(app.openapi()["paths"])
    gw = services["gateway"]
    env = env_of(gw)
    port = int(env["HAMNET_PORT"])
    assert env["HAMNET_HOST"] == "0.0.0.0"  # noqa: S104 (inside the container)
    argv = hamnet_argv(gw)
    if "--port" in argv:
        assert int(argv[argv.index("--port") + 1]) == port
    published = [interpolate(p) for p in gw["ports"]]
    assert any(p.rsplit(":", 1)[-1].split("/")[0] == str(port) for p in published), published
    url = urlparse(_healthcheck_url(gw["healthcheck"]["test"]))
    assert url.port == port and url.path == "/readyz" and "/readyz" in routes
    for key in ("interval", "timeout", "start_period"):
        duration_s(gw["healthcheck"][key])
    assert duration_s(gw["healthcheck"]["timeout"]) < duration_s(gw["healthcheck"]["interval"])
    # the image's own HEALTHCHECK and EXPOSE agree too
    instrs = parse_dockerfile(_dockerfile_of(gw).read_text())
    exposed = [i.args for i in instrs if i.cmd == "EXPOSE"]
    assert exposed == [str(port)]
    for i in instrs:
        if i.cmd == "HEALTHCHECK":
            u = urlparse(_healthcheck_url([i.args]))
            assert u.port == port and u.path in routes


def test_startup_order(services: dict) -> None:
    for name in ("gateway", "worker"):
        dep = services[name]["depends_on"]
        assert dep["redis"]["condition"] == "service_healthy"
        assert dep["bundle"]["condition"] == "service_completed_successfully"
    assert services["bundle"].get("restart", "no") == "no"
    assert "deploy" not in services["bundle"] or "replicas" not in services["bundle"]["deploy"]


def test_worker_gpu_reservation_and_cpu_override(services: dict) -> None:
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert "container_name" not in services["worker"], "would break --scale worker=N"
    assert not any(":" in str(p) for p in services["worker"].get("ports", [])), (
        "published ports break --scale worker=N")
    cpu = load_compose(COMPOSE_CPU)["services"]["worker"]
    assert isinstance(cpu["deploy"], Tagged) and cpu["deploy"].tag == "!reset"
    assert cpu["build"]["args"]["ORT_PACKAGE"] == "onnxruntime"
    assert image_pinned(cpu["build"]["args"]["BASE_IMAGE"]) is None
    assert cpu["image"] != services["worker"]["image"]


def test_stop_grace_period_exceeds_soft_shutdown(services: dict) -> None:
    w = services["worker"]
    env = env_of(w)
    df_env = " ".join(i.args for i in parse_dockerfile(_dockerfile_of(w).read_text())
                      if i.cmd == "ENV")
    assert env.get("REMAP_SIGTERM") == "SIGQUIT" or "REMAP_SIGTERM=SIGQUIT" in df_env, (
        "without REMAP_SIGTERM=SIGQUIT, `docker stop` waits for the whole job (warm shutdown)")
    from hamnet_worker.settings import WorkerSettings

    soft = float(env.get("HAMNET_SOFT_SHUTDOWN_S",
                         WorkerSettings.model_fields["soft_shutdown_s"].default))
    assert soft > 0, "soft shutdown disabled: a stopped worker's job waits for the visibility "
    grace = duration_s(w["stop_grace_period"])
    assert grace >= soft + 15, f"stop_grace_period {grace}s vs soft shutdown {soft}s"
    assert duration_s(services["gateway"].get("stop_grace_period", "10s")) >= 10


def _mount_target(v) -> tuple[str, str, bool]:  # noqa: ANN001
    if isinstance(v, str):
        parts = v.split(":")
        return parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")
    return v.get("source", ""), v["target"], bool(v.get("read_only"))


def test_uploads_and_bundles_are_shared(services: dict) -> None:
    mounts = {n: [_mount_target(v) for v in services[n].get("volumes", [])]
              for n in ("gateway", "worker", "bundle")}

    def volume_at(name: str, path: str) -> tuple[str, bool]:
        best = None
        for src, tgt, ro in mounts[name]:
            if path == tgt or path.startswith(tgt.rstrip("/") + "/"):
                if best is None or len(tgt) > len(best[1]):
                    best = (src, tgt, ro)
        assert best, f"{name}: nothing mounted at {path}"
        return best[0], best[2]

    data = {n: volume_at(n, env_of(services[n])["HAMNET_DATA_DIR"]) for n in ("gateway",
                                                                             "worker")}
    assert data["gateway"][0] == data["worker"][0], "gateway and workers must share uploads"
    assert not data["gateway"][1] and not data["worker"][1]
    bundle = {n: volume_at(n, env_of(services[n])["HAMNET_BUNDLE"]) for n in mounts}
    assert len({src for src, _ in bundle.values()}) == 1, bundle
    assert not bundle["bundle"][1], "the bundle job must be able to write"
    argv = hamnet_argv(services["bundle"])
    out = argv[argv.index("--out") + 1]
    assert out == env_of(services["bundle"])["HAMNET_BUNDLE"]


def test_bundle_job_is_idempotent_and_can_train(services: dict) -> None:
    """Re-running `docker compose up` must not fail on the existing bundle (``hamnet demo``
    refuses a non-empty --out), a half-written one is rebuilt, and the image has torch."""
    from hamnet.bundle import MANIFEST

    svc = services["bundle"]
    script = _argv(svc)[2]
    out = hamnet_argv(svc)[hamnet_argv(svc).index("--out") + 1]
    assert script.startswith(f"test -f {out}/{MANIFEST} || "), script
    assert "--force" in hamnet_argv(svc)
    text = _dockerfile_of(svc).read_text()
    assert re.search(r"torch==", text), "`hamnet demo` trains: its image needs torch"
    assert {"av", "opencv-contrib-python-headless", "onnx", "onnxruntime"} <= set(
        read_lock("train"))


def test_deploy_doc_covers_compose() -> None:
    doc = (ROOT / "docs" / "DEPLOY.md").read_text()
    for needle in ("--scale worker=", "docker-compose.cpu.yml", "HAMNET_REDIS_URL",
                   "HAMNET_DATA_DIR", "S3", "REMAP_SIGTERM", "stop_grace_period"):
        assert needle in doc, needle
    names = set()
    for f in (COMPOSE, COMPOSE_CPU):
        for svc in load_compose(f)["services"].values():
            names |= {k for k in env_of(svc) if k.startswith("HAMNET_")}
    missing = sorted(n for n in names if n not in doc)
    assert not missing, f"docs/DEPLOY.md does not mention {missing}"


# ------------------------------------------------------------------- run.sh vs compose parity

def _run_sh() -> str:
    return (ROOT / "scripts" / "run.sh").read_text()


def test_run_sh_and_compose_start_the_same_processes(services: dict) -> None:
    text = _run_sh()
    script_cmds = set(re.findall(r"\bhamnet\b[\"']?\s+(serve|worker)\b", text))
    assert script_cmds == {"serve", "worker"}, script_cmds
    compose_cmds = {hamnet_argv(services[n])[1] for n in ("gateway", "worker")}
    assert compose_cmds == {"serve", "worker"}
    assert "redis-server" in text


def test_run_sh_and_compose_use_the_same_configuration_names(services: dict) -> None:
    text = _run_sh()
    script_vars = set(re.findall(r"\bHAMNET_[A-Z0-9_]+", text))
    fields = settings_fields("service") | settings_fields("worker")
    # What the script hands to the processes (exported) must be a setting they read; knobs of
    # the script itself (where it keeps its state, which Redis port it starts) must not leak
    # into the processes nor into the compose file under a name the processes ignore.
    exported = set(re.findall(r"(?m)^\s*export\s+(HAMNET_[A-Z0-9_]+)", text))
    read = package_env_names()
    unknown = sorted(v for v in exported if v[7:].lower() not in fields and v not in read)
    assert not unknown, f"scripts/run.sh exports {unknown}, which no process reads"
    script_only = {v for v in script_vars if v[7:].lower() not in fields and v not in read}
    compose_vars = set()
    for n in ("gateway", "worker"):
        compose_vars |= {k for k in env_of(services[n]) if k.startswith("HAMNET_")}
    # What wires the processes together is named the same way on both paths.
    core = {"HAMNET_REDIS_URL", "HAMNET_DATA_DIR", "HAMNET_BUNDLE", "HAMNET_PORT"}
    assert core <= compose_vars
    assert core <= script_vars, f"scripts/run.sh does not set {sorted(core - script_vars)}"
    assert not (compose_vars & script_only), sorted(compose_vars & script_only)


def test_readme_names_both_paths() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "scripts/run.sh" in readme


# ----------------------------------------------------- the gateway image's sources, offline

def test_gateway_installs_without_the_worker_package(tmp_path: Path) -> None:
    """What gateway.Dockerfile copies (no worker package, only the job contract) builds and
    runs: installed offline (no index, no build isolation, no dependencies) into its own
    directory, and imported there with site processing off, so neither the editable install
    of this checkout nor its ``hamnet_worker`` can be seen. Whether the locked versions still
    install from the registry is a maintainer's check (docker/requirements/check_install.py):
    its answer depends on what the registry serves."""
    import site

    src, target = tmp_path / "src", tmp_path / "target"
    for part in ("pyproject.toml", "README.md", "model", "worker/hamnet_jobs", "service"):
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, src / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (src / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / part, src / part)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                        "--no-deps", "--no-build-isolation", "--no-compile", "--target",
                        str(target), str(src)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                            "PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert not (target / "hamnet_worker").exists() and (target / "hamnet_jobs").is_dir()
    probe = ("import sys, importlib.util as u, hamnet_service.app, hamnet_jobs.store\n"
             "assert hamnet_service.app.__file__.startswith(sys.argv[1]), "
             "hamnet_service.app.__file__\n"
             "assert u.find_spec('hamnet_worker') is None\n"
             "assert not {'torch', 'onnxruntime', 'av'} & set(sys.modules), sys.modules\n")
    path = os.pathsep.join([str(target), *site.getsitepackages()])
    r = subprocess.run([sys.executable, "-S", "-c", probe, str(target)], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": path,
                            "HAMNET_DATA_DIR": str(tmp_path / "d")})
    assert r.returncode == 0, r.stderr[-3000:]


def test_lock_files_agree_with_each_other() -> None:
    """The images run side by side (one Redis, one job contract): a distribution locked in
    several files has one version everywhere. Checked offline; re-resolving the locks against
    the registry (``python docker/requirements/lock.py --check``) is a maintainer's command,
    not a test, because its answer changes whenever the registry publishes a release."""
    locks = {t: read_lock(t) for t in ("gateway", "worker", "train")}
    for name in sorted(set().union(*locks.values())):
        versions = {t: pins[name] for t, pins in locks.items() if name in pins}
        assert len(set(versions.values())) == 1, f"{name} is locked differently: {versions}"


def test_lock_check_is_a_documented_maintainer_command() -> None:
    text = (ROOT / "docs" / "DEPLOY.md").read_text()
    assert "docker/requirements/lock.py --check" in text


def test_trainer_is_the_train_image_on_the_train_queue(services: dict, monkeypatch) -> None:
    """The training worker (docs/TRAINING.md): `hamnet worker --queues train` from the train
    image (torch), sharing the uploads volume (datasets, checkpoints, models) with the gateway,
    GPU when reserved and CPU torch without a reservation in the CPU override."""
    from hamnet.cli import build_parser

    t = services["trainer"]
    assert _dockerfile_of(t).name == "train.Dockerfile"
    argv = hamnet_argv(t)
    assert argv[:2] == ["hamnet", "worker"] and argv[argv.index("--queues") + 1] == "train"
    build_parser().parse_args(argv[1:])
    mounts = {_mount_target(v)[1]: _mount_target(v) for v in t["volumes"]}
    gw_data = env_of(services["gateway"])["HAMNET_DATA_DIR"]
    assert env_of(t)["HAMNET_DATA_DIR"] == gw_data
    assert mounts[gw_data][0] == next(_mount_target(v)[0] for v in services["gateway"]["volumes"]
                                      if _mount_target(v)[1] == gw_data)
    for k in list(os.environ):
        if k.startswith("HAMNET_"):
            monkeypatch.delenv(k)
    for k, v in env_of(t).items():
        monkeypatch.setenv(k, v)
    from hamnet_worker.settings import WorkerSettings

    WorkerSettings()  # time limits ordered
    devices = t["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    cpu = load_compose(COMPOSE_CPU)["services"]["trainer"]
    assert isinstance(cpu["deploy"], Tagged) and cpu["deploy"].tag == "!reset"
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/cpu")
    assert cpu["image"] != t["image"]


def test_streams_service_is_a_stream_worker(services: dict) -> None:
    """docs/STREAMS.md: the `streams` service consumes only the streams queue, with the
    worker's image (CPU override included) and the shared data and bundle volumes."""
    from hamnet.cli import build_parser

    svc = services["streams"]
    argv = hamnet_argv(svc)
    args = build_parser().parse_args(argv[1:])
    assert argv[1] == "worker" and args.streams == "only"
    assert svc["image"] == services["worker"]["image"]
    assert {_mount_target(v)[1] for v in svc["volumes"]} == \
        {_mount_target(v)[1] for v in services["worker"]["volumes"]}
    cpu = load_compose(COMPOSE_CPU)["services"]
    assert cpu["streams"]["image"] == cpu["worker"]["image"]
