"""Liveness, readiness and Prometheus metrics (open even when API keys are required)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from ..deps import EngineDep, MetricsDep, SettingsDep
from ..engine import ALL_MODELS
from ..schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse, summary="The gateway process is up")
async def health() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Triton and every model it serves are ready",
    responses={503: {"model": ReadyResponse, "description": "Triton or a model is not ready."}},
)
async def ready(engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    server = await engine.ready()
    served = await engine.served_models() if server else ALL_MODELS
    states = await asyncio.gather(*(engine.model_ready(name) for name in served)) if server else []
    models = dict(zip(served, states, strict=True)) if server else dict.fromkeys(served, False)
    body = ReadyResponse(ready=server and all(models.values()), server=server, models=models)
    if body.ready:
        return JSONResponse(body.model_dump())
    return JSONResponse(
        body.model_dump(), status_code=503, headers={"Retry-After": str(settings.retry_after_s)}
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(gateway_metrics: MetricsDep) -> Response:
    body, content_type = gateway_metrics.render()
    return Response(body, media_type=content_type)
