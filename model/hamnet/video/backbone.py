"""Feature backbones: the spec that describes them, the protocol they follow, and the loop that
turns a video file into a ``[T, D]`` feature matrix.

Why a spec separate from the code: HAM-Net's head is only meaningful on the features it was
trained on. Everything that changes those features (fps, snippet length, resize/crop, streams,
normalisation, flow algorithm) is written into ``backbone.json`` next to the ONNX files and
copied into every model bundle, so a bundle can never be run with a backbone that preprocesses
differently from training.

This module imports only numpy at module level (``hamnet.bundle`` needs ``BackboneSpec`` on
numpy-only installs); decoding is imported inside :func:`extract_features`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from hamnet.errors import BundleError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from hamnet.video.decode import DecodeStats, VideoInfo

SPEC_FILE = "backbone.json"
STREAMS = ("rgb", "flow")
NORMALISATIONS = ("i3d", "unit", "none")  # [-1,1] | [0,1] | raw uint8 values
FLOW_METHODS = ("tvl1", "tvl1-opencv", "farneback", "dis")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that determines the features a backbone produces.

    ``files`` maps a role (``"rgb"``, ``"flow"``) to an ONNX file name relative to the
    directory holding ``backbone.json`` (or the bundle root). ``options`` carries
    backbone-specific settings (e.g. the motion backbone's grid) that also change the features.
    The defaults are the standard THUMOS'14 two-stream I3D conventions (25 fps, 16-frame
    snippets, shorter side 256, centre crop 224, TV-L1 flow, RGB first then flow: 2048-d).
    """

    name: str
    fps: float = 25.0
    snippet_frames: int = 16
    resize_shorter: int | None = 256
    crop: int | None = 224
    streams: tuple[str, ...] = STREAMS
    normalisation: str = "i3d"
    flow_method: str | None = "tvl1"
    feature_dim: int = 2048
    files: dict[str, str] = field(default_factory=dict)
    version: str = "1"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not self.name or not isinstance(self.name, str):
            problems.append(f"name must be a non-empty string, got {self.name!r}")
        if not (isinstance(self.fps, int | float) and self.fps > 0):
            problems.append(f"fps must be > 0, got {self.fps!r}")
        if not (isinstance(self.snippet_frames, int) and self.snippet_frames >= 1):
            problems.append(f"snippet_frames must be an integer >= 1, got {self.snippet_frames!r}")
        for key in ("resize_shorter", "crop"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, int) and v >= 1):
                problems.append(f"{key} must be null or an integer >= 1, got {v!r}")
        bad = [s for s in self.streams if s not in STREAMS]
        if bad or not self.streams:
            problems.append(f"streams must be a non-empty subset of {STREAMS}, got {self.streams}")
        if self.normalisation not in NORMALISATIONS:
            problems.append(
                f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )
        if self.flow_method is not None and self.flow_method not in FLOW_METHODS:
            problems.append(
                f"flow_method must be null or one of {FLOW_METHODS}, got {self.flow_method!r}"
            )
        if "flow" in self.streams and self.flow_method is None:
            problems.append("the flow stream needs a flow_method")
        if not (isinstance(self.feature_dim, int) and self.feature_dim >= 1):
            problems.append(f"feature_dim must be an integer >= 1, got {self.feature_dim!r}")
        if not isinstance(self.files, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.files.items()
        ):
            problems.append(f"files must map names to file names, got {self.files!r}")
        if problems:
            raise BundleError(f"invalid backbone spec {self.name!r}: " + "; ".join(problems))

    @property
    def snippet_seconds(self) -> float:
        """Seconds covered by one feature vector (0.64 s for 16 frames at 25 fps)."""
        return self.snippet_frames / self.fps

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["streams"] = list(self.streams)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BackboneSpec:
        """Strict: unknown keys are errors, because a key we silently ignore could be a
        preprocessing setting the features depend on."""
        if not isinstance(d, Mapping):
            raise BundleError(f"backbone spec must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BundleError(
                f"backbone spec: unknown key(s) {unknown}; valid keys: {sorted(known)}"
            )
        if "name" not in d:
            raise BundleError("backbone spec: missing required key 'name'")
        kw = dict(d)
        if "streams" in kw:
            if not isinstance(kw["streams"], list | tuple):
                raise BundleError(f"backbone spec: streams must be a list, got {kw['streams']!r}")
            kw["streams"] = tuple(kw["streams"])
        if isinstance(kw.get("fps"), int) and not isinstance(kw.get("fps"), bool):
            kw["fps"] = float(kw["fps"])
        kw["files"] = dict(kw.get("files") or {})
        kw["options"] = dict(kw.get("options") or {})
        return cls(**kw)

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / SPEC_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> BackboneSpec:
        """Read ``backbone.json`` (or the directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE
        if not path.is_file():
            raise BundleError(f"{path}: backbone spec not found")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{path}: not valid JSON: {e}") from None
        try:
            return cls.from_dict(data)
        except BundleError as e:
            raise BundleError(f"{path}: {e}") from None


@runtime_checkable
class Backbone(Protocol):
    """What the pipeline needs from a backbone. Implementations are free to batch internally,
    but ``encode`` must be a pure function of its input (no state carried between calls), so
    that resumable extraction and batching give the same features."""

    @property
    def spec(self) -> BackboneSpec: ...

    @property
    def provider(self) -> str:
        """Execution provider actually used (``"CPUExecutionProvider"``, ``"numpy"`` ...)."""
        ...

    @property
    def feature_dim(self) -> int: ...

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[N, F, H, W, 3]`` RGB snippets -> float32 ``[N, D]``."""
        ...


# ----------------------------------------------------------------------------- registry

# factory(spec or None for "the backbone's default spec", directory, providers)
BackboneFactory = Callable[[BackboneSpec | None, Path | None, list[str] | None], Backbone]


def _motion_factory(
    spec: BackboneSpec | None, directory: Path | None, providers: list[str] | None
) -> Backbone:
    from hamnet.video.motion import MotionBackbone

    return MotionBackbone(spec)


def _i3d_factory(
    spec: BackboneSpec | None, directory: Path | None, providers: list[str] | None
) -> Backbone:
    if directory is None:
        raise BundleError(
            "the 'i3d' backbone needs a directory with backbone.json and its ONNX files "
            "(create one with `hamnet export-i3d`)"
        )
    from hamnet.video.i3d_backbone import I3DBackbone

    if spec is None:
        spec = BackboneSpec.read(directory)
    return I3DBackbone(spec, directory, providers=providers)


_REGISTRY: dict[str, tuple[str, BackboneFactory]] = {
    "motion": ("hamnet.video.motion", _motion_factory),
    "i3d": ("hamnet.video.i3d_backbone", _i3d_factory),
}


def register_backbone(name: str, factory: BackboneFactory, module: str = "") -> None:
    """Add a backbone kind (tests and plugins). ``factory(spec, directory, providers)``."""
    _REGISTRY[name] = (module, factory)


def known_backbones() -> list[str]:
    return sorted(_REGISTRY)


def _build(
    spec: BackboneSpec | str, directory: Path | None, providers: list[str] | None
) -> Backbone:
    name = spec if isinstance(spec, str) else spec.name
    if name not in _REGISTRY:
        raise BundleError(
            f"unknown backbone {name!r}; known backbones: {', '.join(known_backbones())}"
        )
    module, factory = _REGISTRY[name]
    try:
        return factory(None if isinstance(spec, str) else spec, directory, providers)
    except ModuleNotFoundError as e:
        if module and e.name == module:
            raise BundleError(
                f"backbone {name!r} is registered but its module {module} is not installed"
            ) from None
        raise MissingDependencyError(
            f"backbone {name!r} needs the Python package {e.name!r} "
            "(pip install 'hamnet[video]')"
        ) from None


def load_backbone(
    spec_or_dir_or_name: BackboneSpec | str | Path,
    directory: str | Path | None = None,
    providers: list[str] | None = None,
) -> Backbone:
    """Build a backbone from a spec, a directory holding ``backbone.json``, or a bare name.

    A bare name only works for weight-free backbones (``"motion"``); ``directory`` is where
    the spec's ``files`` live (a backbone directory or a bundle root).
    """
    src = spec_or_dir_or_name
    dir_path = Path(directory) if directory is not None else None
    if isinstance(src, BackboneSpec):
        return _build(src, dir_path, providers)
    path = Path(src)
    if path.is_dir():
        return _build(BackboneSpec.read(path), dir_path or path, providers)
    if path.is_file() and path.name == SPEC_FILE:
        return _build(BackboneSpec.read(path), dir_path or path.parent, providers)
    name = str(src)
    if name in _REGISTRY:
        # A bare name means "that backbone with its own default spec" (spec=None).
        return _build(name, dir_path, providers)
    raise BundleError(
        f"{name!r} is neither a backbone directory (with {SPEC_FILE}) nor a known backbone "
        f"name ({', '.join(known_backbones())})"
    )


# ----------------------------------------------------------------------------- extraction


def extract_features(
    backbone: Backbone,
    video_path: str | Path,
    progress: Callable[[str, float], None] | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    stats: DecodeStats | None = None,
    *,
    max_duration_s: float | None = None,
    max_dimension: int | None = None,
    max_pixels: int | None = None,
    threads: int | None = None,
    pipelined: bool | None = None,
) -> tuple[np.ndarray, VideoInfo, np.ndarray]:
    """Decode ``video_path`` and encode it snippet by snippet.

    Streaming with flat memory: at most a few batches of ``batch_size`` snippets of decoded
    frames are alive at once, so a two-hour video needs no more memory than a ten-second one.
    ``batch_size`` defaults to the backbone's own (``backbone.batch_size``, sized to its
    device) or 8. Returns ``(features [T, D] float32, VideoInfo, spans [T, 2] seconds)``.
    ``progress("extract", fraction)`` is called after every batch (fraction of the probed
    duration). Pass a :class:`~hamnet.video.decode.DecodeStats` as ``stats`` to learn whether
    the file was only partially decodable.

    Decoding, flow and the networks overlap (:mod:`hamnet.video.pipelined`) within a budget
    of ``threads`` (default: ``backbone.threads`` when set, else the available cores);
    ``pipelined=False`` (or a budget of 1) runs the plain one-thread loop. Both give the same
    features.

    ``max_duration_s``/``max_dimension``/``max_pixels`` (untrusted input; ``None``:
    unbounded) go to :func:`~hamnet.video.decode.probe` (rejects by header, measures a file
    that declares no duration) and :func:`~hamnet.video.decode.iter_frames` (enforces them on
    decoded time and pictures): :class:`~hamnet.errors.VideoTooLongError`,
    :class:`~hamnet.errors.VideoTooLargeError`, :class:`~hamnet.errors.UnboundedDurationError`.
    """
    from hamnet.video.pipelined import extract

    return extract(
        backbone, video_path, progress=progress, batch_size=batch_size,
        max_seconds=max_seconds, stats=stats, threads=threads, pipelined=pipelined,
        max_duration_s=max_duration_s, max_dimension=max_dimension, max_pixels=max_pixels,
    )
