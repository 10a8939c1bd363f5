"""Model card: what a bundle was trained on, what it is for, where it fails, how well it did.

Why it travels inside the bundle (manifest key ``"card"``): a person reading a result needs to
know whether the model that produced it was ever meant for their video. A synthetic demo model
answers every upload with *some* segments; without the card nothing says that it only knows
six motion patterns of flat shapes on a 160x120 canvas. The card is written when the bundle is
built (``hamnet demo`` fills it entirely; ``hamnet bundle --card card.yaml`` takes the human
parts from a file) and shown by ``hamnet predict``, the API and the web page.

Standard library only (no numpy): the gateway reads cards from manifests without any model
runtime. Schema (``format: hamnet-card/1``)::

    {"format", "title", "synthetic": bool, "summary", "intended_use", "limitations": [str],
     "training_data": {"source", "videos", "classes", "description"},
     "classes": [{"name", "description"}], "backbone", "flow_method",
     "metrics": {"tiou": [...], "mAP": [...], "average_mAP", "videos", "instances", "seed",
                 "note"} | null,
     "calibration": {...summary...} | null, "domain": {...summary...} | null}

``compact(card)`` is the short form every prediction result carries (``model.card``):
``{"title", "synthetic", "summary", "intended_use", "limitations"}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hamnet.errors import BundleError

FORMAT = "hamnet-card/1"
COMPACT_KEYS = ("title", "synthetic", "summary", "intended_use", "limitations")


@dataclass(frozen=True)
class ClassInfo:
    """One class the model can output, with a one-line description of what it means."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class DataSummary:
    """What the model was trained on."""

    source: str
    videos: int | None
    classes: int
    description: str = ""


@dataclass(frozen=True)
class HeldOutMetrics:
    """Detection mAP on videos the training never saw (fractions, not percent)."""

    tiou: tuple[float, ...]
    mAP: tuple[float, ...]  # noqa: N815 - the name every report uses
    average_mAP: float  # noqa: N815
    videos: int | None = None
    instances: int | None = None
    seed: int | None = None
    note: str = ""


@dataclass(frozen=True)
class ModelCard:
    title: str
    synthetic: bool
    summary: str
    intended_use: str
    limitations: tuple[str, ...]
    training_data: DataSummary
    classes: tuple[ClassInfo, ...]
    backbone: str
    flow_method: str | None = None
    metrics: HeldOutMetrics | None = None
    calibration: dict[str, Any] | None = None  # summary (method, ECE, segments, bins)
    domain: dict[str, Any] | None = None  # summary (method, threshold, false-flag rate)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["limitations"] = list(self.limitations)
        d["classes"] = [asdict(c) for c in self.classes]
        if self.metrics is not None:
            d["metrics"] = {**asdict(self.metrics), "tiou": list(self.metrics.tiou),
                            "mAP": list(self.metrics.mAP)}
        return {"format": FORMAT, **d}


# ----------------------------------------------------------------------------- validation


def _err(msg: str) -> BundleError:
    return BundleError(f"model card: {msg}")


def _opt_count(value: Any, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise _err(f"{what} must be a non-negative integer or null, got {value!r}")


def validate(card: ModelCard) -> None:
    """Raise :class:`BundleError` naming the first field that is wrong."""
    for name in ("title", "summary", "intended_use", "backbone"):
        value = getattr(card, name)
        if not isinstance(value, str) or not value.strip():
            raise _err(f"{name!r} must be a non-empty string")
    if not isinstance(card.synthetic, bool):
        raise _err(f"'synthetic' must be true or false, got {card.synthetic!r}")
    if not card.limitations or not all(isinstance(x, str) and x.strip() for x in card.limitations):
        raise _err("'limitations' must be a non-empty list of non-empty strings")
    td = card.training_data
    if not isinstance(td.source, str) or not td.source.strip():
        raise _err("training_data.source must be a non-empty string")
    _opt_count(td.videos, "training_data.videos")
    _opt_count(td.classes, "training_data.classes")
    if not card.classes:
        raise _err("'classes' must list at least one class")
    names = [c.name for c in card.classes]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise _err(f"class names must be unique non-empty strings, got {names}")
    if td.classes != len(names):
        raise _err(f"training_data.classes is {td.classes} but {len(names)} classes are listed")
    m = card.metrics
    if m is not None:
        if len(m.tiou) != len(m.mAP) or not m.tiou:
            raise _err(f"metrics: {len(m.tiou)} tIoU thresholds but {len(m.mAP)} mAP values")
        values = [*m.tiou, *m.mAP, m.average_mAP]
        if not all(isinstance(v, int | float) and math.isfinite(v) and 0 <= v <= 1 for v in values):
            raise _err("metrics: tIoU and mAP values must be fractions in [0, 1]")
        _opt_count(m.videos, "metrics.videos")
        _opt_count(m.instances, "metrics.instances")
        if m.seed is not None and (isinstance(m.seed, bool) or not isinstance(m.seed, int)):
            raise _err(f"metrics.seed must be an integer or null, got {m.seed!r}")


def check_classes(card: Mapping[str, Any], classes: Sequence[str]) -> None:
    """The card must describe exactly the bundle's classes, in the bundle's order."""
    names = [c["name"] for c in card["classes"]]
    if names != list(classes):
        raise _err(f"classes {names} differ from the bundle's classes {list(classes)}")


# ----------------------------------------------------------------------------- (de)serialise


def _require(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise _err(f"{where}missing key {key!r}")
    return d[key]


def from_dict(d: Any) -> ModelCard:
    """Parse and validate a card dict (the manifest's ``"card"``)."""
    if not isinstance(d, Mapping):
        raise _err("must be a JSON object")
    if d.get("format", FORMAT) != FORMAT:
        raise _err(f"unsupported format {d.get('format')!r} (this version reads {FORMAT!r})")
    td = _require(d, "training_data", "")
    if not isinstance(td, Mapping):
        raise _err("'training_data' must be an object")
    classes = _require(d, "classes", "")
    if not isinstance(classes, list) or not all(isinstance(c, Mapping) for c in classes):
        raise _err("'classes' must be a list of {name, description} objects")
    limitations = _require(d, "limitations", "")
    if isinstance(limitations, str):
        limitations = [limitations]
    if not isinstance(limitations, list):
        raise _err("'limitations' must be a list of strings")
    metrics = d.get("metrics")
    if metrics is not None and not isinstance(metrics, Mapping):
        raise _err("'metrics' must be an object or null")
    for key in ("calibration", "domain", "extra"):
        if d.get(key) is not None and not isinstance(d.get(key), Mapping):
            raise _err(f"{key!r} must be an object or null")
    try:
        return ModelCard(
            title=_require(d, "title", ""),
            synthetic=_require(d, "synthetic", ""),
            summary=_require(d, "summary", ""),
            intended_use=_require(d, "intended_use", ""),
            limitations=tuple(limitations),
            training_data=DataSummary(
                source=_require(td, "source", "training_data: "),
                videos=td.get("videos"),
                classes=_require(td, "classes", "training_data: "),
                description=str(td.get("description", "")),
            ),
            classes=tuple(
                ClassInfo(str(_require(c, "name", "classes[]: ")), str(c.get("description", "")))
                for c in classes
            ),
            backbone=_require(d, "backbone", ""),
            flow_method=d.get("flow_method"),
            metrics=None if metrics is None else HeldOutMetrics(
                tiou=tuple(_require(metrics, "tiou", "metrics: ")),
                mAP=tuple(_require(metrics, "mAP", "metrics: ")),
                average_mAP=_require(metrics, "average_mAP", "metrics: "),
                videos=metrics.get("videos"),
                instances=metrics.get("instances"),
                seed=metrics.get("seed"),
                note=str(metrics.get("note", "")),
            ),
            calibration=dict(d["calibration"]) if d.get("calibration") else None,
            domain=dict(d["domain"]) if d.get("domain") else None,
            extra=dict(d.get("extra") or {}),
        )
    except TypeError as e:  # e.g. a list where a number was expected
        raise _err(str(e)) from None


def compact(card: Mapping[str, Any] | ModelCard | None) -> dict[str, Any] | None:
    """The short card every prediction result carries (``model.card``); None without a card."""
    if card is None:
        return None
    d = card.to_dict() if isinstance(card, ModelCard) else card
    out = {k: d[k] for k in COMPACT_KEYS}
    out["limitations"] = list(out["limitations"])
    return out


# ----------------------------------------------------------------------------- text


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render_text(card: Mapping[str, Any] | ModelCard) -> str:
    """The card for humans (``hamnet predict``, logs): plain text, one fact per line."""
    c = card if isinstance(card, ModelCard) else from_dict(card)
    lines = [c.title, "=" * len(c.title)]
    if c.synthetic:
        lines.append("SYNTHETIC: trained only on procedurally rendered videos, not real footage.")
    lines += ["", c.summary, "", f"Intended use: {c.intended_use}", "", "Known limits:"]
    lines += [f"  - {x}" for x in c.limitations]
    td = c.training_data
    videos = "unknown number of" if td.videos is None else str(td.videos)
    lines += ["", f"Trained on: {td.source} ({videos} videos, {td.classes} classes)"]
    if td.description:
        lines.append(f"  {td.description}")
    lines.append(f"Backbone: {c.backbone}" + (f" (flow: {c.flow_method})" if c.flow_method else ""))
    lines.append("Classes:")
    width = max(len(x.name) for x in c.classes)
    lines += [f"  {x.name:<{width}}  {x.description}".rstrip() for x in c.classes]
    m = c.metrics
    if m is not None:
        facts = [f"{m.videos} videos" if m.videos is not None else None,
                 f"{m.instances} instances" if m.instances is not None else None,
                 f"seed {m.seed}" if m.seed is not None else None]
        what = ", ".join(f for f in facts if f)
        lines += ["", "Held-out detection mAP (%)" + (f" ({what})" if what else "") + ":"]
        lines.append("  tIoU " + " ".join(f"{t:>5.2f}" for t in m.tiou) + "    avg")
        lines.append("  mAP  " + " ".join(f"{_pct(v):>5}" for v in m.mAP) +
                     f"  {_pct(m.average_mAP):>5}")
        if m.note:
            lines.append(f"  {m.note}")
    if c.calibration:
        cal = c.calibration
        ece = cal.get("ece")
        if ece is not None:
            lines += ["", f"Confidence: {cal.get('method', 'calibrated')}; expected calibration "
                      f"error {ece:.3f} on {cal.get('segments', '?')} held-out segments "
                      f"({cal.get('bins', '?')} bins)"]
    if c.domain:
        dom = c.domain
        lines.append(f"Out-of-domain check: {dom.get('method', 'feature statistics')}, threshold "
                     f"{dom.get('threshold', '?')}")
    return "\n".join(lines)
