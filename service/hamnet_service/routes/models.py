"""``/v1/models``: the models a caller may use (the default one and the registry's named,
versioned bundles), so a result can be traced to its exact model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from hamnet_service.deps import Models, Owner, Registry, Settings, Telemetry
from hamnet_service.errors import ApiError, responses
from hamnet_service.schemas import ModelList, ModelVersions, WebhookSecret
from hamnet_service.services import models as service

router = APIRouter(prefix="/v1", tags=["models"])


# What each error status of these routes means (the stable codes clients branch on).
_CODES = {
    404: "`model_not_found`: no such model or version, or another API key's",
    409: "`model_in_use`: a queued or running job uses this version; `model_protected`: "
         "the default model is the deployment's configuration",
    422: "`invalid_parameter`: malformed name or version",
    503: "`model_unavailable` (the default bundle is not built yet) or `store_unavailable`",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    out = responses(*codes)
    for code, text in _CODES.items():
        if code in out:
            out[code] = {**out[code], "description": text}
    return out


ModelName = Annotated[str, PathParam(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
                                      description="registry name (`default`: the "
                                      "deployment's model)")]
Version = Annotated[int, PathParam(ge=1, le=999_999_999, description="registry version")]


async def _default_and_providers(models: Any, telemetry: Any) -> tuple[Any, list[str]]:
    b = await run_in_threadpool(models.get)
    if b is None:
        raise ApiError(503, "model_unavailable", "the model bundle is not available yet")
    try:
        workers = await run_in_threadpool(telemetry.workers)
    except Exception:
        workers = []
    return b, sorted({w["provider"] for w in workers if w.get("provider")})


@router.get("/models", response_model=ModelList, responses=_responses(401, 503),
            summary="The models the caller may use: the default model first (its card: "
                    "training data, intended use, limits, held-out metrics; classes, backbone, "
                    "post-processing in effect, checksum), then the caller's own and shared "
                    "models at their latest version")
async def list_models(owner: Owner, models: Models, telemetry: Telemetry,
                      registry: Registry) -> ModelList:
    b, providers = await _default_and_providers(models, telemetry)
    return ModelList(models=await run_in_threadpool(service.list_models, registry, b, owner,
                                                    providers))


@router.get("/models/{name}", response_model=ModelVersions,
            responses=_responses(401, 404, 422, 503),
            summary="Every version of a model, each with its full card")
async def get_model(name: ModelName, owner: Owner, models: Models, telemetry: Telemetry,
                    registry: Registry) -> ModelVersions:
    b, providers = await _default_and_providers(models, telemetry)
    versions = await run_in_threadpool(service.model_versions, registry, b, owner, name,
                                       providers)
    return ModelVersions(name=name, versions=versions)


@router.delete("/models/{name}/versions/{version}", status_code=204, response_class=Response,
               responses=_responses(401, 404, 409, 422, 503),
               summary="Delete one version of your model (refused while a queued or running "
                       "job uses it); version numbers are never reused")
async def delete_model_version(name: ModelName, version: Version, owner: Owner,
                               registry: Registry) -> Response:
    await run_in_threadpool(service.delete_version, registry, owner, name, version)
    return Response(status_code=204)


@router.get("/webhook-secret", response_model=WebhookSecret, tags=["callbacks"],
            responses=responses(401, 403, 503),
            summary="The key that signs this API key's job callbacks")
async def webhook_secret(owner: Owner, settings: Settings, telemetry: Telemetry) -> WebhookSecret:
    from hamnet_jobs.webhooks import master_key, signing_secret

    from hamnet_service.auth import ANONYMOUS

    if owner == ANONYMOUS:
        raise ApiError(403, "webhook_secret_requires_api_key",
                       "callback signatures are per API key; configure HAMNET_API_KEYS")
    master = await run_in_threadpool(master_key, telemetry.r, settings.callback_secret)
    return WebhookSecret(secret=signing_secret(master, owner))
