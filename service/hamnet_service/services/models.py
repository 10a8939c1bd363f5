"""Model use case: describe the bundle in service so that a person can judge its answers.

What ``GET /v1/models`` adds to the manifest: the model card (what the model was trained on,
what it is for, what it cannot do), a plain ``notice`` when the model is the synthetic demo,
and the post-processing *in effect*: a bundle's flags are only what it asks for, its profile
decides what applies (``official`` forces every fix off, ``fixed`` turns them all on), so the
profile is resolved here exactly as the worker resolves it (``hamnet.postprocess``).
"""

from __future__ import annotations

from typing import Any

from hamnet.config import to_dict
from hamnet.postprocess import resolve_profile

from hamnet_service.schemas import ModelInfo

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "ten", "eleven", "twelve")


def card_of(bundle: Any) -> dict[str, Any] | None:
    """The bundle's model card (``Bundle.card``; the manifest's ``card`` for a ``Bundle``
    that predates the attribute); None for bundles without one."""
    card = getattr(bundle, "card", None)
    if card is None:
        card = (getattr(bundle, "manifest", None) or {}).get("card")
    return dict(card) if isinstance(card, dict) else None


def is_synthetic(bundle: Any, card: dict[str, Any] | None) -> bool:
    """The card says so; a bundle without a card is the demo when its training metadata
    says it was trained on synthetic (rendered) videos."""
    if card is not None and card.get("synthetic") is not None:
        return bool(card["synthetic"])
    training = getattr(bundle, "training", None) or {}
    return "synthetic" in str(training.get("source", "")).lower()


def class_names(bundle: Any, card: dict[str, Any] | None) -> list[str]:
    names = [c.get("name") for c in (card or {}).get("classes") or [] if isinstance(c, dict)]
    names = [str(n) for n in names if n]
    return names or [str(c) for c in bundle.classes]


def notice(bundle: Any, card: dict[str, Any] | None) -> str | None:
    """One sentence a person must read before trusting a result of the demo model."""
    if not is_synthetic(bundle, card):
        return None
    names = class_names(bundle, card)
    n = len(names)
    count = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    plural = "pattern" if n == 1 else "patterns"
    return (f"Demo model: trained only on {count} rendered motion {plural} "
            f"({', '.join(names)}); it will not recognise real-world actions.")


def effective_postprocess(bundle: Any) -> dict[str, Any]:
    """The bundle's post-processing settings with its profile applied."""
    return to_dict(resolve_profile(bundle.postprocess))


def calibrated(bundle: Any) -> bool:
    """Whether results of this bundle carry a calibrated ``confidence`` (its manifest has a
    ``calibration`` map; without one, ``confidence`` is null and ``min_score`` filters on the
    raw score)."""
    if getattr(bundle, "calibration", None) is not None:
        return True
    return bool((getattr(bundle, "manifest", None) or {}).get("calibration"))


def describe(bundle: Any, providers: list[str]) -> ModelInfo:
    card = card_of(bundle)
    m = bundle.manifest
    return ModelInfo(
        name=bundle.name, version=bundle.version, checksum=bundle.checksum,
        created=bundle.created, classes=list(bundle.classes),
        backbone=dict(m.get("backbone") or {}), synthetic=is_synthetic(bundle, card),
        notice=notice(bundle, card), card=card, calibrated=calibrated(bundle),
        postprocess=effective_postprocess(bundle), providers=providers,
    )
