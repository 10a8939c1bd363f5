"""``GET /v1/models``: what the service runs, so a result can be traced to its exact model."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from hamnet_service.deps import Models, Owner, Settings, Telemetry
from hamnet_service.errors import ApiError, responses
from hamnet_service.schemas import ModelList, WebhookSecret
from hamnet_service.services import models as service

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList, responses=responses(401, 503),
            summary="The model in service: its card (training data, intended use, limits, "
                    "held-out metrics), classes, backbone, post-processing in effect, checksum")
async def list_models(_: Owner, models: Models, telemetry: Telemetry) -> ModelList:
    b = await run_in_threadpool(models.get)
    if b is None:
        raise ApiError(503, "model_unavailable", "the model bundle is not available yet")
    try:
        workers = await run_in_threadpool(telemetry.workers)
    except Exception:
        workers = []
    providers = sorted({w["provider"] for w in workers if w.get("provider")})
    return ModelList(models=[service.describe(b, providers)])


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
