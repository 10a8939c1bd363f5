"""Model bundles: everything needed to turn a video into action segments, in one directory.

A bundle is a directory (optionally packed as ``.tar.gz``) holding ``manifest.json``, the
HAM-Net head as ONNX and the backbone's ONNX files (none for the weight-free ``motion``
backbone). Why one self-describing unit: the head only works on features produced exactly as
during training, so the backbone spec (fps, snippet length, crop, streams, flow algorithm)
and the post-processing settings travel with the weights, and every file carries a SHA-256
so a half-copied or swapped file is an error at load time instead of wrong predictions.

Manifest (``format: hamnet-bundle/1``)::

    {"format", "name", "version", "created", "classes": [...],
     "backbone": {BackboneSpec}, "files": {"head": {"path", "sha256"}, "rgb": {...}, ...},
     "postprocess": {PostprocessConfig}, "training": {...},
     "card": {model card} (optional), "calibration": {raw score -> confidence} (optional),
     "domain": {training-feature statistics + threshold} (optional)}

The three optional keys make answers trustworthy (:mod:`hamnet.card`,
:mod:`hamnet.calibration`, :mod:`hamnet.domain`): what the model is for, a confidence that
means what it says, and whether a video looks like the training data. Bundles written before
them stay loadable (the attributes are then None and results say so with nulls).

numpy-only on purpose (the gateway lists models without ONNX Runtime): no av/cv2/onnxruntime
import here. If the ``onnx`` package happens to be installed, the head's declared input and
output sizes are checked against the backbone feature size and the class count.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hamnet import calibration as calibration_mod
from hamnet import card as card_mod
from hamnet import domain as domain_mod
from hamnet.calibration import Calibration
from hamnet.config import PostprocessConfig, to_dict, update
from hamnet.domain import DomainModel
from hamnet.errors import BundleError, ConfigError
from hamnet.video.backbone import BackboneSpec, known_backbones

FORMAT = "hamnet-bundle/1"
MANIFEST = "manifest.json"
HEAD_KEY = "head"
_REQUIRED = ("format", "name", "version", "classes", "backbone", "files", "postprocess")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle. ``files`` maps roles (``head``, ``rgb``, ``flow``) to absolute
    paths; ``root`` is the directory the backbone's ``files`` are relative to. ``card`` is
    the manifest's model card (dict), ``calibration``/``domain`` the parsed maps; each is
    None for a bundle without it."""

    root: Path
    name: str
    version: str
    created: str
    classes: tuple[str, ...]
    backbone: BackboneSpec
    files: dict[str, Path]
    postprocess: PostprocessConfig
    training: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    checksum: str = ""
    card: dict[str, Any] | None = None
    calibration: Calibration | None = field(default=None, compare=False)
    domain: DomainModel | None = field(default=None, compare=False)

    @property
    def head_path(self) -> Path:
        return self.files[HEAD_KEY]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict[str, Any]:
        """Short JSON-able description (``GET /v1/models``, ``hamnet predict`` output)."""
        return {
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "checksum": self.checksum,
            "classes": list(self.classes),
            "backbone": self.backbone.name,
            "feature_dim": self.backbone.feature_dim,
            "snippet_seconds": self.backbone.snippet_seconds,
            "profile": self.postprocess.profile,
        }


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def bundle_checksum(bundle_or_manifest: Bundle | Mapping[str, Any] | str | Path) -> str:
    """Identity of a bundle: SHA-256 of its canonical manifest. The manifest holds every
    file's SHA-256, so this changes whenever any weight, class, or setting changes; results
    record it so that a prediction can be traced to the exact model that made it."""
    if isinstance(bundle_or_manifest, Bundle):
        return bundle_or_manifest.checksum
    if isinstance(bundle_or_manifest, str | Path):
        return load_bundle(bundle_or_manifest).checksum
    return hashlib.sha256(_canonical(bundle_or_manifest)).hexdigest()


# ----------------------------------------------------------------------------- loading


def _extract_archive(archive: Path, dest: Path | None) -> Path:
    """Unpack safely (no absolute paths, ``..``, links or devices) into a directory keyed by
    the archive's hash, so repeated loads of the same archive reuse one extraction."""
    digest = sha256_file(archive)[:16]
    base = dest if dest is not None else Path(tempfile.gettempdir()) / "hamnet-bundles"
    target = base / digest
    if (target / ".complete").is_file():
        return target
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=base))
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                name = member.name
                if name.startswith("/") or ".." in Path(name).parts:
                    raise BundleError(f"{archive}: unsafe path in archive: {name!r}")
                if not (member.isfile() or member.isdir()):
                    raise BundleError(f"{archive}: archive member {name!r} is not a plain file")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python without PEP 706; members checked above
                tar.extractall(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            tmp.rename(target)
        except OSError:  # another process extracted it first
            shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"{archive}: not a readable .tar.gz bundle: {e}") from None
    except BundleError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _find_root(directory: Path) -> Path:
    """The manifest is at the top of the directory or inside its single sub-directory
    (``tar czf b.tar.gz mybundle/``)."""
    if (directory / MANIFEST).is_file():
        return directory
    subdirs = [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
        return subdirs[0]
    raise BundleError(f"{directory}: no {MANIFEST} (not a HAM-Net bundle)")


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: manifest must be a JSON object")
    fmt = data.get("format")
    if fmt != FORMAT:
        raise BundleError(
            f"{path}: unsupported bundle format {fmt!r} (this version reads {FORMAT!r})"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise BundleError(f"{path}: manifest is missing key(s): {', '.join(missing)}")
    return data


def _check_classes(path: Path, classes: Any) -> tuple[str, ...]:
    if not isinstance(classes, list) or not classes:
        raise BundleError(f"{path}: 'classes' must be a non-empty list of names")
    if not all(isinstance(c, str) and c for c in classes):
        raise BundleError(f"{path}: every class name must be a non-empty string")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise BundleError(f"{path}: duplicate class name(s): {', '.join(dupes)}")
    return tuple(classes)


def _check_files(root: Path, files: Any, verify: bool) -> dict[str, Path]:
    where = root / MANIFEST
    if not isinstance(files, dict) or HEAD_KEY not in files:
        raise BundleError(f"{where}: 'files' must be an object with at least a 'head' entry")
    out: dict[str, Path] = {}
    for role, entry in files.items():
        if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
            raise BundleError(f"{where}: files.{role} must be {{'path': ..., 'sha256': ...}}")
        rel = Path(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise BundleError(f"{where}: files.{role} path must stay inside the bundle: {rel}")
        path = root / rel
        if not path.is_file():
            raise BundleError(f"{root}: file {rel} ({role}) listed in the manifest is missing")
        if verify:
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                raise BundleError(
                    f"{root}: file {rel} ({role}) is corrupt: sha256 {actual[:12]}... does not "
                    f"match the manifest's {str(entry['sha256'])[:12]}..."
                )
        out[role] = path
    return out


def _onnx_io_sizes(path: Path) -> tuple[int | None, int | None] | None:
    """(input feature size, output class count incl. background) if ``onnx`` is installed
    and the dimensions are static; None when we cannot tell (never an error by itself)."""
    try:
        import onnx  # optional; comes with the [train] extra
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means a broken file
        raise BundleError(f"{path}: head is not a valid ONNX model: {e}") from None

    def last_dim(values, name: str) -> int | None:
        for v in values:
            if v.name == name:
                dims = v.type.tensor_type.shape.dim
                if dims and dims[-1].HasField("dim_value"):
                    return int(dims[-1].dim_value)
        return None

    return last_dim(model.graph.input, "features"), last_dim(model.graph.output, "cas")


def load_bundle(
    path: str | Path, verify: bool = True, extract_dir: str | Path | None = None
) -> Bundle:
    """Load and validate a bundle directory or ``.tar.gz``; raises :class:`BundleError`
    naming the file and the problem. ``verify=False`` skips the SHA-256 checks (large
    backbones, trusted local copies)."""
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: bundle not found")
    if p.is_file():
        if not tarfile.is_tarfile(p):
            raise BundleError(f"{p}: not a bundle directory or .tar.gz archive")
        p = _extract_archive(p, Path(extract_dir) if extract_dir is not None else None)
    root = _find_root(p)
    data = _read_manifest(root)
    where = root / MANIFEST
    classes = _check_classes(where, data["classes"])
    try:
        spec = BackboneSpec.from_dict(data["backbone"])
    except BundleError as e:
        raise BundleError(f"{where}: {e}") from None
    if spec.name not in known_backbones():
        raise BundleError(
            f"{where}: unknown backbone {spec.name!r}; known backbones: "
            f"{', '.join(known_backbones())}"
        )
    files = _check_files(root, data["files"], verify)
    missing = [f"{role} ({name})" for role, name in spec.files.items() if role not in files]
    if missing:
        raise BundleError(
            f"{where}: backbone {spec.name!r} needs file(s) {', '.join(missing)} that the "
            "manifest does not list"
        )
    pp = data["postprocess"]
    if not isinstance(pp, dict):
        raise BundleError(f"{where}: 'postprocess' must be an object")
    try:
        post = update(PostprocessConfig(), pp, "postprocess")
    except ConfigError as e:
        raise BundleError(f"{where}: {e}") from None
    if abs(post.fps - spec.fps) > 1e-9 or post.snippet_frames != spec.snippet_frames:
        raise BundleError(
            f"{where}: postprocess timing ({post.snippet_frames} frames at {post.fps} fps) "
            f"differs from the backbone's ({spec.snippet_frames} at {spec.fps} fps)"
        )
    sizes = _onnx_io_sizes(files[HEAD_KEY])
    if sizes is not None:
        d_in, c_out = sizes
        if d_in is not None and d_in != spec.feature_dim:
            raise BundleError(
                f"{where}: head expects {d_in}-d features but backbone {spec.name!r} "
                f"produces {spec.feature_dim}-d"
            )
        if c_out is not None and c_out != len(classes) + 1:
            raise BundleError(
                f"{where}: head outputs {c_out} scores ({c_out - 1} classes + background) "
                f"but the manifest lists {len(classes)} classes"
            )
    training = data.get("training") or {}
    if not isinstance(training, dict):
        raise BundleError(f"{where}: 'training' must be an object")
    card, cal, dom = _trust_parts(where, data, classes, spec)
    return Bundle(
        root=root,
        name=str(data["name"]),
        version=str(data["version"]),
        created=str(data.get("created", "")),
        classes=classes,
        backbone=spec,
        files=files,
        postprocess=post,
        training=training,
        manifest=data,
        checksum=bundle_checksum(data),
        card=card,
        calibration=cal,
        domain=dom,
    )


def _trust_parts(
    where: Path, data: Mapping[str, Any], classes: Sequence[str], spec: BackboneSpec
) -> tuple[dict[str, Any] | None, Calibration | None, DomainModel | None]:
    """Validate the optional ``card``, ``calibration`` and ``domain`` keys."""
    card = cal = dom = None
    try:
        if data.get("card") is not None:
            card = card_mod.from_dict(data["card"]).to_dict()
            card_mod.check_classes(card, classes)
        if data.get("calibration") is not None:
            cal = calibration_mod.from_dict(data["calibration"])
        if data.get("domain") is not None:
            dom = domain_mod.from_dict(data["domain"])
            if dom.dim != spec.feature_dim:
                raise BundleError(
                    f"domain: statistics of {dom.dim}-d features for a backbone producing "
                    f"{spec.feature_dim}-d"
                )
            if dom.threshold is None:
                raise BundleError("domain: no threshold")
    except BundleError as e:
        raise BundleError(f"{where}: {e}") from None
    return card, cal, dom


# ----------------------------------------------------------------------------- writing


def write_bundle(
    out_dir: str | Path,
    head_onnx: str | Path,
    classes: Sequence[str],
    backbone_spec: BackboneSpec,
    backbone_files: Mapping[str, str | Path] | None = None,
    postprocess: PostprocessConfig | Mapping[str, Any] | None = None,
    name: str = "hamnet",
    version: str = "0",
    training: Mapping[str, Any] | None = None,
    archive: bool = False,
    card: card_mod.ModelCard | Mapping[str, Any] | None = None,
    calibration: Calibration | Mapping[str, Any] | None = None,
    domain: DomainModel | Mapping[str, Any] | None = None,
) -> Path:
    """Assemble a bundle in ``out_dir`` (created; must be empty or absent) and validate it by
    loading it back. ``backbone_files`` maps the spec's roles to source paths (default: the
    spec's file names are taken as paths). Returns the directory, or ``out_dir.tar.gz`` when
    ``archive`` is true. Post-processing timing is forced to the backbone's fps/snippet.
    ``card``, ``calibration`` and ``domain`` (objects or their dicts) go into the manifest
    when given."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out}: output exists and is not an empty directory")
    head_src = Path(head_onnx)
    if not head_src.is_file():
        raise BundleError(f"{head_src}: head ONNX file not found")
    sources = {k: Path(v) for k, v in (backbone_files or backbone_spec.files).items()}
    missing = [k for k in backbone_spec.files if k not in sources]
    if missing:
        raise BundleError(f"backbone {backbone_spec.name!r} file(s) not given: {missing}")
    for role, src in sources.items():
        if role == HEAD_KEY:
            raise BundleError("'head' is reserved for the HAM-Net head file")
        if not src.is_file():
            raise BundleError(f"{src}: backbone file ({role}) not found")
    if postprocess is None:
        post = PostprocessConfig()
    elif isinstance(postprocess, PostprocessConfig):
        post = postprocess
    else:
        try:
            post = update(PostprocessConfig(), dict(postprocess), "postprocess")
        except ConfigError as e:
            raise BundleError(str(e)) from None
    post = replace(post, fps=float(backbone_spec.fps), snippet_frames=backbone_spec.snippet_frames)

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    shutil.copyfile(head_src, out / "head.onnx")
    files[HEAD_KEY] = {"path": "head.onnx", "sha256": sha256_file(out / "head.onnx")}
    spec_files: dict[str, str] = {}
    for role, src in sources.items():
        dst = f"{role}.onnx" if src.suffix == ".onnx" else f"{role}{src.suffix}"
        shutil.copyfile(src, out / dst)
        files[role] = {"path": dst, "sha256": sha256_file(out / dst)}
        spec_files[role] = dst
    spec = replace(backbone_spec, files=spec_files)
    manifest = {
        "format": FORMAT,
        "name": name,
        "version": str(version),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "classes": list(classes),
        "backbone": spec.to_dict(),
        "files": files,
        "postprocess": to_dict(post),
        "training": dict(training or {}),
    }
    for key, value in (("card", card), ("calibration", calibration), ("domain", domain)):
        if value is not None:
            manifest[key] = value.to_dict() if hasattr(value, "to_dict") else dict(value)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    load_bundle(out)  # refuse to hand out a bundle we could not load
    if not archive:
        return out
    tar_path = out.with_name(out.name + ".tar.gz")
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(out, arcname=out.name)
    return tar_path
