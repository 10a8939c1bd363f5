"""Model use cases: describe the models a caller may use so that a person can judge their
answers; resolve, list and delete registry versions (:mod:`hamnet_jobs.registry`).

What ``GET /v1/models`` adds to the manifest: the model card (what the model was trained on,
what it is for, what it cannot do), a plain ``notice`` when the model is the synthetic demo,
and the post-processing *in effect*: a bundle's flags are only what it asks for, its profile
decides what applies (``official`` forces every fix off, ``fixed`` turns them all on), so the
profile is resolved here exactly as the worker resolves it (``hamnet.postprocess``).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import redis
from hamnet.config import PostprocessConfig, to_dict, update
from hamnet.postprocess import resolve_profile
from hamnet_jobs.registry import DEFAULT, ModelRegistry, ModelVersion, RegistryError

from hamnet_service.errors import ApiError
from hamnet_service.schemas import ModelInfo

log = logging.getLogger("hamnet.service")

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


# ---- the registry (named, versioned bundles) -----------------------------------------------
def registry_error(e: RegistryError) -> ApiError:
    """A registry error as the API answers it (status and stable code from the error)."""
    return ApiError(e.status, e.code, str(e))


def _manifest_bundle(mv: ModelVersion) -> SimpleNamespace:
    """What :func:`describe` reads of a bundle, from a registered version's manifest alone:
    the gateway describes models stored in S3 without their files (and without ONNX)."""
    m = mv.manifest
    return SimpleNamespace(
        name=mv.bundle_name or mv.name, version=mv.bundle_version or str(mv.version),
        checksum=mv.checksum, created=str(m.get("created") or mv.created),
        classes=tuple(mv.classes), manifest=m, card=m.get("card"),
        calibration=m.get("calibration") or None, training=m.get("training") or {},
        postprocess=update(PostprocessConfig(), m.get("postprocess") or {}, "postprocess"),
    )


def describe_version(mv: ModelVersion, providers: list[str], bundle: Any = None,
                     versions: list[int] | None = None) -> ModelInfo:
    """:func:`describe` plus the registry's view: the ref to send, versions, ownership."""
    info = describe(bundle if bundle is not None else _manifest_bundle(mv), providers)
    return info.model_copy(update={
        "ref": mv.ref, "registry_name": mv.name, "registry_version": mv.version,
        "versions": versions or [mv.version], "shared": mv.shared,
        "published": None if mv.builtin else mv.created,
        "size_bytes": mv.size_bytes, "source": mv.source,
    })


def resolve(registry: ModelRegistry, owner: str, ref: str) -> ModelVersion:
    try:
        return registry.resolve(owner, ref)
    except RegistryError as e:
        raise registry_error(e) from None


def list_models(registry: ModelRegistry, default_bundle: Any, owner: str,
                providers: list[str]) -> list[ModelInfo]:
    """The default model first (described from its loaded bundle, as before the registry),
    then every other model the caller may use at its latest version."""
    out = []
    try:
        listed = registry.list(owner)
    except redis.RedisError:  # the registry is in Redis: still describe the default model
        log.warning("listing registry models failed; answering with the default model only")
        listed = []
    for mv in listed:
        if mv.builtin:
            out.insert(0, describe_version(mv, providers, bundle=default_bundle))
        else:
            versions = [v.version for v in registry.get(owner, mv.name)]
            out.append(describe_version(mv, providers, versions=versions))
    if not out or out[0].ref != DEFAULT:  # the registry could not read it: describe anyway
        out.insert(0, describe(default_bundle, providers))
    return out


def model_versions(registry: ModelRegistry, default_bundle: Any, owner: str, name: str,
                   providers: list[str]) -> list[ModelInfo]:
    try:
        found = registry.get(owner, name)
    except RegistryError as e:
        raise registry_error(e) from None
    versions = [v.version for v in found]
    return [describe_version(v, providers, bundle=default_bundle if v.builtin else None,
                             versions=versions) for v in found]


def delete_version(registry: ModelRegistry, owner: str, name: str, version: int) -> None:
    try:
        registry.delete(owner, name, version)
    except RegistryError as e:
        raise registry_error(e) from None


def choose_model(registry: ModelRegistry | None, models: Any, owner: str,
                 ref: str | None) -> tuple[dict[str, Any], list[str]]:
    """The model a job asks for (form field ``model``; none: the default model), resolved at
    submission to an immutable ``{name, version, checksum, ref}`` for the job record, and the
    classes its ``include``/``exclude`` labels are checked against. Resolving now means a job
    keeps the version it was submitted with even if ``NAME`` gets a newer one meanwhile."""
    ref = (ref or "").strip()
    if not ref or ref == DEFAULT or registry is None:
        if ref and ref != DEFAULT:  # pragma: no cover - the gateway always has a registry
            raise ApiError(404, "model_not_found", f"no model {ref}")
        bundle, default_ref = models.get(), models.ref()
        if bundle is None or default_ref is None:
            raise ApiError(503, "model_unavailable", "the model bundle is not available yet")
        return {**default_ref, "ref": DEFAULT}, list(bundle.classes)
    mv = resolve(registry, owner, ref)
    return mv.job_ref(), list(mv.classes)
