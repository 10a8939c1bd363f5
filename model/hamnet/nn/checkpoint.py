"""Load and save HAM-Net weights: our self-describing format and the official ones.

Why a self-describing format: a checkpoint that carries its own config and class names can be
exported and served without a side-channel YAML, so "what was trained is what is served".
Official checkpoints carry only weights, so their ``feature_size``/``num_class`` are inferred
from the weight shapes and the architecture variant (THUMOS vs ANet smoothing, which has no
parameters and cannot be inferred) is chosen by ``preset``.

Loading uses ``torch.load(weights_only=True)``: a checkpoint is untrusted input (users upload
them to the service), and arbitrary pickles execute code. Official PyTorch-Lightning files that
pickle other objects (e.g. an argparse ``Namespace`` of hparams) need ``trust_pickle=True``.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hamnet.config import ExperimentConfig, from_dict, to_dict
from hamnet.config import preset as make_preset
from hamnet.errors import CheckpointError, ConfigError
from hamnet.nn.model import HAMNet

FORMAT = "hamnet-checkpoint/1"
DEFAULT_PRESET = "Thumos14reduced"
_PREFIXES = ("net.", "model.", "module.")
_RESERVED = {"format", "config", "state_dict", "classes"}


@dataclass
class LoadedCheckpoint:
    """A ready-to-use model (eval mode, CPU, float32) plus what the file said about it."""

    model: HAMNet
    config: ExperimentConfig
    classes: list[str] | None
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- reading


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"state_dict": {k: torch.from_numpy(np.array(z[k])) for k in z.files}}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable .npz weight file ({e})") from None


def _read_torch(path: Path, trust_pickle: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, EOFError)
        text = str(e)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found and not trust_pickle:
            raise CheckpointError(
                f"{path}: the checkpoint pickles Python objects besides tensors (e.g. "
                f"{found.group(1)}) and was not loaded, because unpickling can run arbitrary "
                f"code. If you trust this file, load it with trust_pickle=True "
                f"(CLI: --trust-checkpoint)."
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        lines = text.strip().splitlines()
        why = detail.group(1).strip() if detail else (lines[0][:200] if lines else "")
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {why})"
        ) from None


def _read(path: Path, trust_pickle: bool) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.suffix == ".npz":
        return _read_npz(path)
    obj = _read_torch(path, trust_pickle)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: not a checkpoint (expected a dict of weights, got {type(obj).__name__})"
        )
    if "state_dict" not in obj:
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return {"state_dict": obj}  # a bare state dict
        raise CheckpointError(f"{path}: not a checkpoint (no 'state_dict' and not a bare one)")
    return obj


def _bare_state_dict(path: Path, raw: Any) -> dict[str, Tensor]:
    """Strip a common wrapper prefix (``net.`` from LightningSystem) and check tensor types."""
    if not isinstance(raw, dict) or not raw:
        raise CheckpointError(f"{path}: 'state_dict' is empty or not a mapping")
    sd: dict[str, Tensor] = {}
    for k, v in raw.items():
        if not isinstance(v, Tensor):
            raise CheckpointError(f"{path}: state_dict entry {k!r} is not a tensor")
        sd[str(k)] = v
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
            break
    return sd


def _infer_shape(path: Path, sd: dict[str, Tensor]) -> dict[str, int]:
    """feature_size, num_class and attention width from the first/last conv weights."""
    need = ("classifier.0.weight", "classifier.5.weight", "attention.0.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        found = ", ".join(sorted(sd)[:6]) + (" ..." if len(sd) > 6 else "")
        raise CheckpointError(
            f"{path}: not a HAM-Net state dict: missing {', '.join(missing)} (found: {found})"
        )
    c0, c5, a0 = sd["classifier.0.weight"], sd["classifier.5.weight"], sd["attention.0.weight"]
    if c0.dim() != 3 or c5.dim() != 3 or a0.dim() != 3:
        raise CheckpointError(
            f"{path}: HAM-Net conv weights must be 3-D [out, in, kernel]; got classifier.0 "
            f"{list(c0.shape)}, classifier.5 {list(c5.shape)}, attention.0 {list(a0.shape)}"
        )
    if c5.shape[0] < 2:
        raise CheckpointError(
            f"{path}: classifier.5.weight has {c5.shape[0]} output(s); need C+1 >= 2"
        )
    return {
        "feature_size": int(c0.shape[1]),
        "num_class": int(c5.shape[0]) - 1,
        "attention_width": int(a0.shape[0]),
    }


def _load_weights(path: Path, model: HAMNet, sd: dict[str, Tensor]) -> None:
    """Strict load with errors that list what is wrong instead of torch's traceback."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected keys: {', '.join(extra)}")
        raise CheckpointError(f"{path}: state dict does not match HAM-Net ({'; '.join(parts)})")
    bad = [
        f"{k}: file {list(sd[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if tuple(sd[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise CheckpointError(f"{path}: weight shape mismatch ({'; '.join(bad)})")
    model.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True)


def load_checkpoint(
    path: str | Path, preset: str | None = None, trust_pickle: bool = False
) -> LoadedCheckpoint:
    """Load any supported checkpoint into an eval-mode float32 CPU :class:`HAMNet`.

    * ours (``format: hamnet-checkpoint/1``): config and classes come from the file; ``preset``
      is ignored (the file's own config is authoritative);
    * official ``{'state_dict': {'net.classifier.0.weight': ...}}`` (with or without ``net.``),
      a bare state dict, or an ``.npz`` of the same keys: the architecture comes from
      ``preset`` (default THUMOS), feature_size/num_class from the weights; ``classes=None``.
    """
    path = Path(path)
    obj = _read(path, trust_pickle)
    sd = _bare_state_dict(path, obj["state_dict"])
    fmt = obj.get("format")
    if fmt is not None and fmt != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {fmt!r} (expected {FORMAT})")

    if fmt == FORMAT:
        if not isinstance(obj.get("config"), dict):
            raise CheckpointError(f"{path}: {FORMAT} checkpoint without a 'config' mapping")
        try:
            config = from_dict(obj["config"])
        except ConfigError as e:
            raise CheckpointError(f"{path}: embedded config is invalid: {e}") from None
        classes = obj.get("classes")
        if classes is not None:
            if not isinstance(classes, list | tuple) or not all(
                isinstance(c, str) for c in classes
            ):
                raise CheckpointError(f"{path}: 'classes' must be a list of strings")
            classes = list(classes)
        meta = {k: v for k, v in obj.items() if k not in _RESERVED}
        meta["source_format"] = FORMAT
    else:
        name = preset or DEFAULT_PRESET
        try:
            base = make_preset(name)
        except ConfigError as e:
            raise CheckpointError(f"{path}: {e}") from None
        config = replace(base, model=replace(base.model, **_infer_shape(path, sd)))
        classes = None
        meta = {"source_format": "official", "preset": name}
        for key in ("epoch", "global_step"):
            if isinstance(obj.get(key), int):
                meta[key] = obj[key]

    if classes is not None and len(classes) != config.model.num_class:
        raise CheckpointError(
            f"{path}: {len(classes)} class names for a model with "
            f"num_class={config.model.num_class}"
        )
    try:
        model = HAMNet(config.model)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    _load_weights(path, model, sd)
    model.eval()
    return LoadedCheckpoint(model=model, config=config, classes=classes, meta=meta)


# ----------------------------------------------------------------------------------- writing


def save_checkpoint(
    path: str | Path,
    model: HAMNet,
    config: ExperimentConfig,
    classes: Sequence[str] | np.ndarray | None = None,
    **meta: Any,
) -> Path:
    """Write ``{"format", "config", "state_dict", "classes", **meta}`` with ``torch.save``.

    ``config.model`` must describe ``model`` (it is what the loader rebuilds). ``classes`` and
    ``meta`` must be plain data (numbers, strings, lists, dicts; numpy values and bytes are
    converted) so the file stays loadable with ``weights_only=True``; anything else is refused
    here rather than at load time. The write is atomic (temp file + rename).
    """
    path = Path(path)
    if config.model != model.cfg:
        raise CheckpointError(
            f"{path}: config.model {config.model} does not describe the model ({model.cfg})"
        )
    if classes is not None and len(classes) != model.cfg.num_class:
        raise CheckpointError(
            f"{path}: {len(classes)} class names for a model with num_class={model.cfg.num_class}"
        )
    clash = _RESERVED & set(meta)
    if clash:
        raise CheckpointError(f"{path}: meta keys {sorted(clash)} are reserved")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "config": to_dict(config),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
        "classes": _plain(path, list(classes), "classes") if classes is not None else None,
        **_plain(path, meta, "meta"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash mid-save never leaves a truncated checkpoint
    return path


def _plain(path: Path, value: Any, where: str) -> Any:
    """Convert to built-in types (numpy scalars/arrays, tuples, bytes) or refuse.

    Built-ins only, because ``torch.load(weights_only=True)`` refuses anything else: a stray
    ``np.float32`` metric or ``np.str_`` class name would make the checkpoint unloadable.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.generic):
        return _plain(path, value.item(), where)
    if isinstance(value, np.ndarray):
        return _plain(path, value.tolist(), where)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(path, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: {where} has a non-string key {k!r}")
            out[str(k)] = _plain(path, v, f"{where}.{k}")
        return out
    raise CheckpointError(
        f"{path}: {where} is a {type(value).__name__}; only plain data can be stored in meta"
    )
