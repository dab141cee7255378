"""Provider settings, read from the environment with the prefix ``QWEN3_TTS_PROVIDER_``.

Kept separate from the serving ``Settings`` (prefix ``QWEN3_TTS_``) so that an app embedding the client
never picks up the server's knobs, and the client package does not import the server package.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ProviderSettings"]


class ProviderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QWEN3_TTS_PROVIDER_", extra="ignore")

    base_url: str | None = Field(
        None, description="Gateway URL; unset: QWEN3_TTS_BASE_URL, then the default."
    )
    api_key: str | None = Field(None, description="Bearer key; unset: QWEN3_TTS_API_KEY.")
    timeout_s: float = Field(
        120.0, gt=0, description="Per-request timeout (synthesis of a long text is slow)."
    )
    max_retries: int = Field(2, ge=0)

    price_per_character: float = Field(0.0, ge=0, description="Price of one input character.")
    price_per_second: float = Field(0.0, ge=0, description="Price of one second of generated audio.")
    currency: str = "USD"

    failure_threshold: int = Field(3, ge=1, description="Consecutive failures that open the circuit.")
    cooldown_s: float = Field(30.0, ge=0, description="Seconds the circuit stays open before a probe.")

    default_language: str = "auto"
    default_format: str = "wav"

    @model_validator(mode="after")
    def _strip_url(self) -> ProviderSettings:
        if self.base_url is not None:
            self.base_url = self.base_url.rstrip("/") or None
        return self
