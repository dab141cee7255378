"""Liveness, readiness and Prometheus metrics (open even when API keys are required)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..backend import ALL_MODELS
from ..deps import EngineDep, MetricsDep, SettingsDep
from ..schemas import BackendState, HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse, summary="The gateway process is up")
async def health() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    response_model_exclude_none=True,
    summary="A Triton backend is ready, and every model the backends serve is ready on one of them",
    responses={
        503: {
            "model": ReadyResponse,
            "description": "No backend is ready, a model is ready nowhere, or the gateway is draining.",
        }
    },
)
async def ready(request: Request, engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    server = await engine.ready()
    served = await engine.served_models() if server else ALL_MODELS
    states = await asyncio.gather(*(engine.model_ready(name) for name in served)) if server else []
    models = dict(zip(served, states, strict=True)) if server else dict.fromkeys(served, False)
    backend_states = getattr(engine, "backend_states", None)  # the router lists its backends
    draining = request.app.state.drain.draining
    body = ReadyResponse(
        ready=server and all(models.values()) and not draining,
        server=server,
        models=models,
        backends=[BackendState(**state) for state in await backend_states()] if backend_states else None,
        draining=True if draining else None,
    )
    if body.ready:
        return JSONResponse(body.model_dump(exclude_none=True))
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=503,
        headers={"Retry-After": str(settings.retry_after_s)},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(gateway_metrics: MetricsDep) -> Response:
    body, content_type = gateway_metrics.render()
    return Response(body, media_type=content_type)
