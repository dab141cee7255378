"""The gateway app factory: ``uvicorn qwen3_tts_gateway.app:create_app --factory``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from qwen3_tts_serving.settings import Settings, get_settings

from .auth import require_api_key
from .backend import TTSEngine
from .backend.router import BackendRouter
from .drain import DrainMiddleware, GatewayDrain
from .errors import UPLOAD_LIMIT_SETTING, human_bytes
from .handlers import install_error_handlers
from .metrics import GatewayMetrics
from .middleware import BodySizeLimitMiddleware, MetricsMiddleware
from .openapi import install_openapi
from .responses import install_cut_response_log_filter
from .routers import catalog, health, openai, playground, streaming, synthesis, voices
from .service import SynthesisService
from .voices import VoiceStore

logger = logging.getLogger(__name__)
_EXPOSED_HEADERS = ["X-Sample-Rate", "X-Audio-Duration", "X-Finish-Reason", "Retry-After"]
_JSON_OVERHEAD_BYTES = 1024 * 1024


def max_request_bytes(settings: Settings) -> int:
    """Largest accepted body: a base64 reference clip of ``max_upload_bytes`` plus the other fields."""
    return settings.max_upload_bytes * 4 // 3 + _JSON_OVERHEAD_BYTES


def request_too_large_message(settings: Settings) -> str:
    return (
        f"request body exceeds {human_bytes(max_request_bytes(settings))}: room for a reference clip of "
        f"{human_bytes(settings.max_upload_bytes)} in base64 plus the other fields ({UPLOAD_LIMIT_SETTING})"
    )


def _add_middleware(app: FastAPI, settings: Settings, metrics: GatewayMetrics, drain: GatewayDrain) -> None:
    app.add_middleware(DrainMiddleware, drain=drain, retry_after_s=settings.retry_after_s)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=max_request_bytes(settings),
        message=request_too_large_message(settings),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=_EXPOSED_HEADERS,
        )


def _add_routers(app: FastAPI) -> None:
    protected = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(catalog.router, dependencies=protected)
    app.include_router(synthesis.router, dependencies=protected)
    app.include_router(streaming.router, dependencies=protected)
    app.include_router(streaming.ws_router)  # authenticates in the handler (see websocket.py)
    app.include_router(voices.router, dependencies=protected)
    app.include_router(openai.router, dependencies=protected)
    app.include_router(playground.router)  # the page is open; it calls the API with the user's key


def create_app(settings: Settings | None = None, engine: TTSEngine | None = None) -> FastAPI:
    """Build the gateway. Without ``engine`` it talks over gRPC to the Triton backends of the settings
    (routing each stream to the least loaded ready one) and closes them on shutdown."""
    settings = settings or get_settings()
    router = BackendRouter.from_settings(settings) if engine is None else None
    engine = router or engine
    assert engine is not None
    drain = GatewayDrain(settings.gateway_drain_timeout_s)

    store = VoiceStore.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.open()  # the library's schema at head before the first request (replicas take turns)
        if router is not None:
            await router.start()  # each backend's readiness known before the first request
        drain.install_signal_handler()
        logger.info("gateway ready; Triton at %s", router.describe() if router else "(injected)")
        yield
        await store.close()
        if router is not None:
            await router.close()

    app = FastAPI(
        title="Qwen3-TTS gateway",
        version="0.1.0",
        summary="Qwen3-TTS over Triton: timbres, voice design, cloning, streaming, OpenAI-compatible speech.",
        lifespan=lifespan,
    )
    metrics = GatewayMetrics()
    app.state.settings = settings
    app.state.engine = engine
    app.state.voices = store
    app.state.metrics = metrics
    app.state.drain = drain
    app.state.service = SynthesisService(
        engine, store, metrics, timeout_s=settings.request_timeout_s, max_text_length=settings.max_text_length
    )
    install_error_handlers(app, retry_after_s=settings.retry_after_s, metrics=metrics)
    _add_middleware(app, settings, metrics, drain)
    _add_routers(app)
    install_openapi(app, settings)
    install_cut_response_log_filter()
    return app
