"""FastAPI gateway in front of the Qwen3-TTS Triton models."""

from .app import create_app

__all__ = ["create_app"]
