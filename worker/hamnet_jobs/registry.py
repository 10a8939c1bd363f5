"""The model registry: named, immutably versioned bundles (``name@version``) shared by the
gateway (which resolves a job's ``model=`` at submit time) and the workers (which fetch the
bundle a job names, by checksum).

Why it lives in the job contract: both sides need the same names, versions and storage layout,
and neither may import the other. It reads ``manifest.json`` as plain JSON (no ``hamnet``
import): the gateway never needs ONNX Runtime to list models, and the worker loads the files
with ``hamnet.bundle`` after :meth:`ModelRegistry.fetch` has put them on disk.

Layout
------
Redis (keys under ``hamnet:``; ``<ns>`` is the owner id, ``_shared`` for models readable by
every caller)::

    model:<ns>:<name>      hash: version -> ModelVersion JSON
    models:<ns>            set of the namespace's model names
    model-seq:<ns>:<name>  counter the versions are drawn from (never reset: a deleted
                           version number is never reused, so ``name@3`` means one bundle
                           forever)

Files: ``models/<ns>/<name>/<version>/`` under ``HAMNET_DATA_DIR`` (local storage) or as
objects with that key prefix in the bucket (S3 storage; outside the uploads prefix, so a
lifecycle rule that expires uploads never touches models).

Names are per owner (an API key's ``mymodel`` and another key's ``mymodel`` are different
models; another key's model answers "not found", never "forbidden", so a name's existence is
not leaked). ``default`` is the alias of the bundle the deployment is configured with
(``HAMNET_BUNDLE`` or the built-in demo bundle): it is not stored here, every process reads its
own configured directory, and it is readable by all.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import re
import secrets
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field

from hamnet_jobs import keys
from hamnet_jobs.record import ACTIVE, JobRecord
from hamnet_jobs.storage import Storage, StorageUnavailable

log = logging.getLogger("hamnet.registry")

DEFAULT = "default"
SHARED = "_shared"
MANIFEST = "manifest.json"
BUNDLE_FORMAT = "hamnet-bundle/1"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
REF_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_.-]{0,63})(?:@(?P<version>[0-9]{1,9}))?$")
_NS_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_COMPLETE = ".complete"


# ---- errors: each carries the HTTP status and stable code the API answers with -------------
class RegistryError(Exception):
    status = 500
    code = "registry_error"


class ModelNotFound(RegistryError):
    """Unknown name or version, or another owner's model (same answer: no existence leak)."""

    status, code = 404, "model_not_found"


class InvalidModelRef(RegistryError):
    status, code = 422, "invalid_model_ref"


class InvalidModelName(RegistryError):
    status, code = 422, "invalid_model_name"


class InvalidBundle(RegistryError):
    status, code = 422, "invalid_bundle"


class ModelInUse(RegistryError):
    status, code = 409, "model_in_use"


class ModelProtected(RegistryError):
    """The ``default`` alias is the deployment's configuration, not a registry entry."""

    status, code = 409, "model_protected"


class ChecksumMismatch(RegistryError):
    """Fetched files do not match the manifest (a half-copied or swapped object)."""

    status, code = 500, "model_checksum_mismatch"


# ---- records -------------------------------------------------------------------------------
class ModelVersion(BaseModel):
    """One immutable version of a named model (or the ``default`` alias)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    version: int = Field(ge=1)
    checksum: str = Field(description="SHA-256 of the canonical manifest (hamnet.bundle)")
    owner: str | None = Field(None, description="owner id; None: shared, readable by all")
    created: str
    classes: list[str]
    synthetic: bool = False
    card: dict[str, Any] | None = Field(None, description="card summary (title, summary, "
                                        "synthetic, metrics)")
    size_bytes: int = 0
    files: list[str] = Field(default_factory=list)
    source: dict[str, Any] | None = None
    bundle_name: str = ""
    bundle_version: str = ""
    manifest: dict[str, Any] = Field(default_factory=dict, repr=False)
    location: str = Field("", description="storage prefix (models/<ns>/<name>/<v>) or, for "
                          "the default alias, the local bundle directory")
    builtin: bool = Field(False, description="the default alias (not stored in the registry)")

    @property
    def ref(self) -> str:
        """What a client sends as ``model=`` to get exactly this version."""
        return DEFAULT if self.builtin else f"{self.name}@{self.version}"

    @property
    def shared(self) -> bool:
        return self.owner is None

    def job_ref(self) -> dict[str, Any]:
        """What a job record stores: the bundle's own name and version (as results name
        them), its checksum, and the registry reference it was resolved from."""
        return {"name": self.bundle_name or self.name, "version": self.bundle_version
                or str(self.version), "checksum": self.checksum, "ref": self.ref}

    def summary(self) -> dict[str, Any]:
        """JSON-able, without the manifest (listings)."""
        return self.model_dump(mode="json", exclude={"manifest", "location"}) | {
            "ref": self.ref, "shared": self.shared}


# ---- manifest helpers (JSON only; mirrors hamnet.bundle's checksum) -------------------------
def manifest_checksum(manifest: dict[str, Any]) -> str:
    """``hamnet.bundle.bundle_checksum``: SHA-256 of the canonical manifest JSON."""
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    path = Path(bundle_dir) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidBundle(f"{bundle_dir}: no {MANIFEST} (not a HAM-Net bundle)") from None
    except (OSError, ValueError) as e:
        raise InvalidBundle(f"{path}: not readable JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise InvalidBundle(f"{path}: not a {BUNDLE_FORMAT} manifest")
    files = data.get("files")
    if not isinstance(files, dict) or "head" not in files:
        raise InvalidBundle(f"{path}: 'files' must name at least the head")
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(
            isinstance(c, str) and c for c in classes):
        raise InvalidBundle(f"{path}: 'classes' must be a non-empty list of names")
    return data


def _manifest_files(manifest: dict[str, Any]) -> dict[str, str]:
    """Relative path -> sha256 of every file the manifest lists (backbone files included)."""
    out: dict[str, str] = {}
    for role, entry in (manifest.get("files") or {}).items():
        if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
            raise InvalidBundle(f"manifest files.{role} must be {{'path', 'sha256'}}")
        rel = Path(str(entry["path"]))
        if rel.is_absolute() or ".." in rel.parts:
            raise InvalidBundle(f"manifest files.{role} leaves the bundle: {rel}")
        out[rel.as_posix()] = str(entry["sha256"])
    return out


def verify_files(root: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is present with its SHA-256 (else :class:`InvalidBundle`
    naming the first bad file)."""
    for rel, digest in _manifest_files(manifest).items():
        path = root / rel
        if not path.is_file():
            raise InvalidBundle(f"{root}: {rel} listed in the manifest is missing")
        if _sha256(path) != digest:
            raise InvalidBundle(f"{root}: {rel} does not match the manifest's sha256")


def card_summary(manifest: dict[str, Any]) -> dict[str, Any] | None:
    card = manifest.get("card")
    if not isinstance(card, dict):
        return None
    keep = ("title", "summary", "synthetic", "intended_use", "metrics")
    return {k: card[k] for k in keep if k in card}


def is_synthetic(manifest: dict[str, Any]) -> bool:
    card = manifest.get("card")
    if isinstance(card, dict) and card.get("synthetic") is not None:
        return bool(card["synthetic"])
    training = manifest.get("training") if isinstance(manifest.get("training"), dict) else {}
    return "synthetic" in str((training or {}).get("source", "")).lower()


def _bundle_files(bundle_dir: Path) -> list[str]:
    """Every regular file of the bundle directory (relative, posix), dot-files excluded; a
    symbolic link is refused (it could point anywhere on the publisher's machine)."""
    out = []
    for p in sorted(bundle_dir.rglob("*")):
        rel = p.relative_to(bundle_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink():
            raise InvalidBundle(f"{bundle_dir}: {rel} is a symbolic link")
        if p.is_file():
            out.append(rel.as_posix())
    return out


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@version`` -> (name, version or None); :class:`InvalidModelRef`."""
    m = REF_RE.match(ref or "")
    if not m:
        raise InvalidModelRef(
            f"invalid model reference {ref!r}: expected NAME or NAME@VERSION (NAME: lowercase "
            "letters, digits, '_', '.', '-', at most 64; VERSION: a number)")
    return m.group("name"), int(m.group("version")) if m.group("version") else None


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidModelName(f"invalid model name {name!r}: 1-64 of a-z 0-9 _ . -, "
                               "starting with a letter or digit")
    if name == DEFAULT:
        raise InvalidModelName("'default' is reserved for the deployment's default model")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ns(owner: str | None) -> str:
    ns = owner or SHARED
    if not _NS_RE.match(ns):
        raise ValueError(f"invalid owner id {owner!r}")
    return ns


def _key(ns: str, name: str) -> str:
    return f"{keys.PREFIX}model:{ns}:{name}"


def _names_key(ns: str) -> str:
    return f"{keys.PREFIX}models:{ns}"


def _seq_key(ns: str, name: str) -> str:
    return f"{keys.PREFIX}model-seq:{ns}:{name}"


# ---- the registry --------------------------------------------------------------------------
DefaultBundle = Path | str | Callable[[], Path] | None


class ModelRegistry:
    """Publish, resolve, list, delete and fetch model versions.

    ``default_bundle`` is the directory (or a function returning it, evaluated on use: the
    demo bundle may be built after the process starts) the ``default`` alias stands for."""

    def __init__(self, client: redis.Redis, storage: Storage,
                 default_bundle: DefaultBundle = None) -> None:
        self.r = client
        self.storage = storage
        self._default = default_bundle
        self._default_cache: tuple[str, float, ModelVersion] | None = None

    # ---- the default alias -----------------------------------------------------------------
    def default_dir(self) -> Path | None:
        d = self._default() if callable(self._default) else self._default
        return Path(d) if d is not None else None

    def default(self) -> ModelVersion:
        """The ``default`` alias (re-read when its manifest changes on disk)."""
        d = self.default_dir()
        if d is None:
            raise ModelNotFound("no default model is configured")
        path = d / MANIFEST
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise ModelNotFound(f"the default model bundle is not available ({d})") from None
        cached = self._default_cache
        if cached and cached[0] == str(path) and cached[1] == mtime:
            return cached[2]
        manifest = read_manifest(d)
        raw_version = str(manifest.get("version", ""))
        mv = ModelVersion(
            name=DEFAULT, version=int(raw_version) if raw_version.isdigit() and
            int(raw_version) >= 1 else 1, checksum=manifest_checksum(manifest), owner=None,
            created=str(manifest.get("created") or ""), classes=list(manifest["classes"]),
            synthetic=is_synthetic(manifest), card=card_summary(manifest),
            size_bytes=sum((d / f).stat().st_size for f in _bundle_files(d)),
            files=_bundle_files(d), bundle_name=str(manifest.get("name", "")),
            bundle_version=raw_version, manifest=manifest, location=str(d), builtin=True,
        )
        self._default_cache = (str(path), mtime, mv)
        return mv

    # ---- publish ---------------------------------------------------------------------------
    def publish(self, owner: str | None, name: str, bundle_dir: Path, *,
                source: dict[str, Any] | None = None) -> ModelVersion:
        """Copy the bundle into storage as the next version of ``name`` and register it.

        The version comes from a Redis counter (INCR), so two concurrent publishes of one name
        get different versions and nothing is ever overwritten; the record is written only
        after every file is stored, and a failed copy removes what it stored, so a reader never
        sees a version whose files are incomplete."""
        check_name(name)
        ns = _ns(owner)
        bundle_dir = Path(bundle_dir)
        if not bundle_dir.is_dir():
            raise InvalidBundle(f"{bundle_dir} is not a bundle directory")
        manifest = read_manifest(bundle_dir)
        verify_files(bundle_dir, manifest)
        files = _bundle_files(bundle_dir)
        if MANIFEST not in files:
            raise InvalidBundle(f"{bundle_dir}: no {MANIFEST}")
        version = int(self.r.incr(_seq_key(ns, name)))
        location = f"models/{ns}/{name}/{version}"
        mv = ModelVersion(
            name=name, version=version, checksum=manifest_checksum(manifest), owner=owner,
            created=_now(), classes=list(manifest["classes"]), synthetic=is_synthetic(manifest),
            card=card_summary(manifest),
            size_bytes=sum((bundle_dir / f).stat().st_size for f in files), files=files,
            source=dict(source) if source else None, bundle_name=str(manifest.get("name", "")),
            bundle_version=str(manifest.get("version", "")), manifest=manifest,
            location=location,
        )
        self._store_files(bundle_dir, files, location)
        try:
            pipe = self.r.pipeline(transaction=True)
            pipe.hsetnx(_key(ns, name), str(version), mv.model_dump_json())
            pipe.sadd(_names_key(ns), name)
            written, _ = pipe.execute()
            if not written:  # cannot happen with INCR, but never overwrite a version
                raise RegistryError(f"{name}@{version} exists already")
        except BaseException:
            self._remove_files(location, files)
            raise
        log.info("published model %s@%s (%s, %d files, %d bytes) for %s", name, version,
                 mv.checksum[:12], len(files), mv.size_bytes, ns)
        return mv

    def _store_files(self, src: Path, files: builtins.list[str], location: str) -> None:
        if self.storage.kind == "local":
            final = self.storage.root / location
            tmp = final.parent / f".tmp-{final.name}-{secrets.token_hex(4)}"
            try:
                for rel in files:
                    dst = tmp / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src / rel, dst)
                tmp.rename(final)  # atomic: the version directory appears complete or not
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return
        client, bucket, done = self.storage.client, self.storage.bucket, []
        try:
            for rel in files:
                key = f"{location}/{rel}"
                client.upload_file(str(src / rel), bucket, key)
                done.append(rel)
        except Exception as e:
            self._remove_files(location, done)
            log.warning("storing model files under %s failed: %s", location, e)
            raise StorageUnavailable("the model store is unavailable") from None
        except BaseException:
            self._remove_files(location, done)
            raise

    def _remove_files(self, location: str, files: builtins.list[str]) -> None:
        if self.storage.kind == "local":
            shutil.rmtree(self.storage.root / location, ignore_errors=True)
            return
        for rel in files:
            try:
                self.storage.client.delete_object(Bucket=self.storage.bucket,
                                                  Key=f"{location}/{rel}")
            except Exception as e:  # the record is gone already: log, never raise
                log.warning("deleting model file %s/%s failed: %s", location, rel, e)

    # ---- reads -----------------------------------------------------------------------------
    def _versions(self, ns: str, name: str) -> dict[int, ModelVersion]:
        raw = self.r.hgetall(_key(ns, name))
        return {int(v): ModelVersion.model_validate_json(j) for v, j in raw.items()}

    def _scopes(self, owner: str | None) -> builtins.list[str]:
        """Namespaces the caller may read, own first (an own model shadows a shared one)."""
        return [_ns(owner), SHARED] if owner else [SHARED]

    def resolve(self, owner: str | None, ref: str) -> ModelVersion:
        """``default``, ``name`` (its latest version) or ``name@version`` -> the version."""
        name, version = parse_ref((ref or "").strip())
        if name == DEFAULT:
            mv = self.default()
            if version is not None and version != mv.version:
                raise ModelNotFound(f"no model {ref}")
            return mv
        for ns in self._scopes(owner):
            versions = self._versions(ns, name)
            if not versions:
                continue
            if version is None:
                return versions[max(versions)]
            if version in versions:
                return versions[version]
            raise ModelNotFound(f"model {name} has no version {version}")
        raise ModelNotFound(f"no model {name}")

    def get(self, owner: str | None, name: str) -> builtins.list[ModelVersion]:
        """Every version of ``name`` the caller may read, oldest first."""
        if name == DEFAULT:
            return [self.default()]
        if not NAME_RE.match(name or ""):
            raise InvalidModelRef(f"invalid model name {name!r}")
        for ns in self._scopes(owner):
            versions = self._versions(ns, name)
            if versions:
                return [versions[v] for v in sorted(versions)]
        raise ModelNotFound(f"no model {name}")

    def list(self, owner: str | None) -> builtins.list[ModelVersion]:
        """The latest version of every model the caller may use: the default alias (when
        available), then the caller's own, then shared ones it does not shadow."""
        out: builtins.list[ModelVersion] = []
        try:
            out.append(self.default())
        except RegistryError:
            pass
        seen = {DEFAULT}
        for ns in self._scopes(owner):
            for name in sorted(self.r.smembers(_names_key(ns))):
                if name in seen:
                    continue
                versions = self._versions(ns, name)
                if versions:
                    seen.add(name)
                    out.append(versions[max(versions)])
        return out

    # ---- delete ----------------------------------------------------------------------------
    def jobs_using(self, mv: ModelVersion) -> builtins.list[str]:
        """Ids of queued or running jobs that reference this exact version."""
        ids = set(self.r.zrange(keys.QUEUED, 0, -1)) | set(self.r.zrange(keys.RUNNING, 0, -1))
        return self._using(self.r, sorted(ids), mv)

    @staticmethod
    def _using(conn: Any, ids: builtins.list[str], mv: ModelVersion) -> builtins.list[str]:
        if not ids:
            return []
        out = []
        for job_id, raw in zip(ids, conn.mget([keys.job(i) for i in ids]), strict=True):
            if raw is None:
                continue
            job = JobRecord.model_validate_json(raw)
            m = job.model or {}
            if job.status in ACTIVE and m.get("ref") == mv.ref \
                    and m.get("checksum") == mv.checksum:
                out.append(job_id)
        return out

    def delete(self, owner: str | None, name: str, version: int) -> ModelVersion:
        """Remove one version (record, then files). Only the owner's own models (shared ones:
        owner None, the operator CLI). Refused with :class:`ModelInUse` while a queued or
        running job references it: the check and the removal are one WATCH/MULTI transaction
        over the version and the queued/running sets, so a job created meanwhile retries it."""
        if name == DEFAULT:
            raise ModelProtected("the default model is the deployment's configuration "
                                 "(HAMNET_BUNDLE); it cannot be deleted through the registry")
        if not NAME_RE.match(name or ""):
            raise InvalidModelRef(f"invalid model name {name!r}")
        ns, key = _ns(owner), _key(_ns(owner), name)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, keys.QUEUED, keys.RUNNING)
                    raw = pipe.hget(key, str(version))
                    if raw is None:
                        pipe.reset()
                        raise ModelNotFound(f"no model {name}@{version}")
                    mv = ModelVersion.model_validate_json(raw)
                    ids = sorted(set(pipe.zrange(keys.QUEUED, 0, -1))
                                 | set(pipe.zrange(keys.RUNNING, 0, -1)))
                    using = self._using(pipe, ids, mv)
                    if using:
                        pipe.reset()
                        raise ModelInUse(f"{name}@{version} is used by {len(using)} queued or "
                                         "running job(s); delete it when they have finished")
                    last = int(pipe.hlen(key)) == 1
                    pipe.multi()
                    pipe.hdel(key, str(version))
                    if last:
                        pipe.srem(_names_key(ns), name)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        self._remove_files(mv.location, mv.files)
        log.info("deleted model %s@%s of %s", name, version, ns)
        return mv

    # ---- fetch (workers) -------------------------------------------------------------------
    def fetch(self, mv: ModelVersion, dest_root: Path) -> Path:
        """A local directory holding the bundle's files, checksum verified.

        The default alias and local storage need no copy (the directory is already on this
        machine; ``hamnet.bundle.load_bundle`` verifies each file's SHA-256 when it loads);
        from S3 the files are downloaded into ``dest_root/<checksum>/`` through a temporary
        directory renamed when complete, so a crash mid-download never leaves a directory
        that looks whole, and the download is reused by later jobs."""
        if mv.builtin or self.storage.kind == "local":
            root = Path(mv.location) if mv.builtin else self.storage.root / mv.location
            if not (root / MANIFEST).is_file():
                raise ModelNotFound(f"the files of model {mv.ref} are missing ({root})")
            self._check_manifest(root, mv)
            return root
        target = Path(dest_root) / mv.checksum
        if (target / _COMPLETE).is_file():
            return target
        Path(dest_root).mkdir(parents=True, exist_ok=True)
        tmp = Path(dest_root) / f".{mv.checksum[:16]}-{secrets.token_hex(4)}"
        try:
            for rel in mv.files:
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.storage.client.download_file(self.storage.bucket,
                                                      f"{mv.location}/{rel}", str(dst))
                except Exception as e:
                    if getattr(e, "response", None) and str(
                            e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                        raise ModelNotFound(f"the files of model {mv.ref} are missing") \
                            from None
                    raise StorageUnavailable("the model store is unavailable") from None
            self._check_manifest(tmp, mv)
            try:
                verify_files(tmp, mv.manifest)
            except InvalidBundle as e:
                raise ChecksumMismatch(str(e)) from None
            (tmp / _COMPLETE).write_text("ok\n")
            try:
                tmp.rename(target)
            except OSError:  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @staticmethod
    def _check_manifest(root: Path, mv: ModelVersion) -> None:
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise ChecksumMismatch(f"{mv.ref}: unreadable manifest: {e}") from None
        actual = manifest_checksum(manifest)
        if actual != mv.checksum:
            raise ChecksumMismatch(f"{mv.ref}: manifest checksum {actual[:12]}... does not "
                                   f"match the registry's {mv.checksum[:12]}...")

    def prune_fetched(self, dest_root: Path, keep: set[str], older_than_s: float = 0) -> None:
        """Remove downloaded bundles (S3) whose checksum is not in ``keep``."""
        root = Path(dest_root)
        if not root.is_dir():
            return
        cutoff = time.time() - older_than_s
        for p in root.iterdir():
            if p.name in keep or not p.is_dir():
                continue
            try:
                if p.stat().st_mtime <= cutoff:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                continue
