"""Typed FastAPI dependencies: the app's settings, engine, voice store and synthesis service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from qwen3_tts_serving.settings import Settings

from .backend import TTSEngine
from .metrics import GatewayMetrics
from .service import SynthesisService
from .voices import VoiceStore


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> TTSEngine:
    return request.app.state.engine


def get_voice_store(request: Request) -> VoiceStore:
    return request.app.state.voices


def get_service(request: Request) -> SynthesisService:
    return request.app.state.service


def get_metrics(request: Request) -> GatewayMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EngineDep = Annotated[TTSEngine, Depends(get_engine)]
VoiceStoreDep = Annotated[VoiceStore, Depends(get_voice_store)]
ServiceDep = Annotated[SynthesisService, Depends(get_service)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]
