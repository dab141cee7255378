"""Every setting of the project, in one class.

Read from the environment (prefix ``QWEN3_TTS_``) or a ``.env`` file. The launcher, the Triton model
configs (filled from templates), the gateway and the benchmarks all take their values from here, and the
README table lists each one with its default. Nothing here imports torch or Triton.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Seconds Triton's exit timeout leaves after the models' drain: a stream still live at the drain's end is
# ended with its error (and FINAL) and the models unload within it, so the server exits cleanly (status 0).
TRITON_UNLOAD_MARGIN_S = 10.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QWEN3_TTS_", env_file=".env", extra="ignore")

    # --- where things live ---------------------------------------------------------------------------
    cache_dir: Path = Field(PROJECT_ROOT / ".cache", description="Root for generated checkpoints and state.")
    checkpoint_dir: Path | None = Field(
        None,
        description="Folder holding custom_voice/, base/, voice_design/ checkpoints. Unset: the tiny "
        "random checkpoints under cache_dir/checkpoints/tiny (built on first use).",
    )
    gcs_model_bucket: str | None = Field(
        None, description="gs://bucket/prefix synced into checkpoint_dir by the GPU image's entrypoint."
    )

    # --- Triton ----------------------------------------------------------------------------------------
    triton_host: str = "127.0.0.1"
    triton_http_port: int = Field(8000, description="0 picks a free port.")
    triton_grpc_port: int = Field(8001, description="0 picks a free port.")
    triton_metrics_port: int = Field(8002, description="0 picks a free port.")
    triton_startup_timeout_s: float = 300.0
    triton_restart_attempts: int = Field(
        5,
        ge=0,
        description="qwen3-tts-serve restarts a tritonserver that died (killed, crashed) this many times in "
        "a row, then gives up and exits; 0: exit at once. The gateway answers 503 meanwhile.",
    )
    triton_restart_backoff_s: float = Field(
        1.0, ge=0, description="Wait before the first restart in a row; doubled for each further one."
    )
    triton_restart_backoff_max_s: float = Field(30.0, ge=0, description="Longest wait between restarts.")
    triton_restart_reset_s: float = Field(
        120.0, ge=0, description="A restarted tritonserver up this long starts the count of restarts again."
    )
    triton_drain_timeout_s: float = Field(
        30.0,
        gt=0,
        description="On SIGTERM tritonserver refuses new requests, reports not ready and lets its live "
        "streams and sessions finish for up to this long (the models' drain); --exit-timeout-secs is "
        "10 s longer, for the models to end what is left with an error and unload.",
    )
    engines_per_checkpoint: int = Field(
        0,
        ge=0,
        description="Engine models per checkpoint, each on its own GPU (instance group) with one copy of the "
        "weights, its key/value slots and one running batch; new streams go to the least loaded. 0: one "
        "per visible GPU, one on a CPU host.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when torch sees a GPU.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on the CPU."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto: flash_attention_2 when flash-attn is installed and a GPU is used."
    )

    cpu_threads: int = Field(
        1,
        description="torch threads per engine model on the CPU (each engine is its own process; 0: torch's "
        "default). Ignored on a GPU.",
    )

    # --- engine (filled into every model's config.pbtxt parameters) -----------------------------------
    max_active_streams: int = Field(
        64,
        description="Streams one engine holds at once (stepping, or voice-agent sessions paused for text: "
        "they keep their cache); more wait in its queue.",
    )
    max_queued_streams: int = Field(
        256, description="Requests waiting for a slot per engine; more are refused at once (UNAVAILABLE)."
    )
    max_queue_wait_s: float = Field(
        30.0, description="A request still waiting for a slot after this long fails (UNAVAILABLE, retry)."
    )
    realtime_step_budget_s: float = Field(
        0.07,
        description="While a frame step takes longer (a frame is 80 ms of audio), no new stream is admitted, "
        "so the ones speaking keep ahead of their listeners; 0 turns it off.",
    )
    fault_injection: bool = Field(
        False,
        description="Tests only: a request whose text holds '[[poison]]' gets non-finite values from its "
        "third frame (shows that a bad row fails alone). Never on in production.",
    )
    max_entry_batch: int = Field(32, description="Triton dynamic batcher max_batch_size.")
    batch_delay_us: int = Field(2000, description="Triton dynamic batcher max_queue_delay_microseconds.")
    first_chunk_frames: int = Field(1, description="Frames generated before the first audio chunk.")
    chunk_frames: int = Field(
        4,
        description="Largest audio chunk in frames (12.5 = 1 s); sizes go 1, 1, 2, 4, 4, ... (first twice).",
    )
    decoder_left_context_frames: int = Field(
        72,
        description="Codec frames of context: a clone's reference frames fed to the streaming decoder before "
        "its first chunk; the windowed decoder re-decodes this many before every chunk.",
    )
    primed_decoder_cache_size: int = Field(
        64,
        description="Clone references whose primed decoder state each engine keeps (LRU): a voice used "
        "again starts without re-decoding its reference. 0 disables.",
    )
    decoder_mode: Literal["streaming", "windowed"] = Field(
        "streaming",
        description="streaming: each stream keeps the codec decoder's state and every frame is decoded once "
        "(exact); windowed: every chunk is re-decoded with left context (the fallback).",
    )
    code_predictor: Literal["auto", "reference", "static", "cuda_graphs"] = Field(
        "auto",
        description="How the 15 code-predictor steps of a frame run; auto, static, cuda_graphs: our static "
        "loop inside the frame step (captured with it, see cuda_graphs); cuda_graphs also refuses a CPU; "
        "reference: the package's own forward per step (the frame step then runs eagerly).",
    )
    cuda_graph_batch_sizes: str = Field(
        "1,2,4,8,16,32,64",
        description="Batch-size buckets the frame step and the codec decoder are shaped (and on a GPU "
        "captured) for (max_active_streams is added).",
    )
    cuda_graphs: Literal["auto", "on", "off"] = Field(
        "auto",
        description="The whole frame step as one CUDA graph per batch and key-length bucket, and the codec "
        "decoder's call per batch bucket and chunk length, captured at start-up; auto: on a GPU, falling "
        "back to eager with one log line if a capture fails.",
    )
    slot_max_length: int = Field(
        2048,
        description="Talker tokens one stream's key/value slot holds (prompt + frames), allocated at "
        "start-up for max_active_streams slots (the log states the bytes); a full slot ends its stream "
        "(length).",
    )
    attention_length_buckets: str = Field(
        "128,256,512,1024",
        description="Key lengths the frame step's attention is shaped for (slot_max_length is added); a "
        "step attends over the smallest that holds its longest stream.",
    )
    prefill_tokens_per_step: int = Field(
        2048,
        description="Newcomers' prefill per engine step (rows x longest prompt; at least one stream), so a "
        "burst of long prompts does not stall the streams already speaking.",
    )
    voice_prompt_batch: int = Field(
        8,
        description="Reference clips a Base engine encodes in one call (those waiting together, beside its "
        "running batch), and how many the voice_prompt model forwards at once.",
    )
    voice_prompt_cache_size: int = Field(
        64,
        ge=0,
        description="Voice prompts a Base engine keeps by reference clip (LRU, a few KB each): a clip sent "
        "again, such as each segment of a long one-off clone, is not encoded again; 0 disables.",
    )
    voice_prompt_step_share: float = Field(
        0.5,
        ge=0.0,
        le=4.0,
        description="While a Base engine's streams run, the share of one frame step its voice-prompt worker "
        "may hold the Python interpreter before it waits for the next step (how much extracting a clip may "
        "lengthen a step); 0 lets it run unpaced.",
    )
    max_new_tokens: int = Field(2048, description="Upper bound on frames per request.")
    frames_per_char: float = Field(
        3.0, description="Guard rail: max_new_tokens is capped at frames_per_char * len(text) + 24."
    )
    frames_per_char_by_language: dict[str, float] = Field(
        default_factory=lambda: {"chinese": 6.0, "japanese": 6.0, "korean": 5.0},
        description="Per-language frames_per_char (a CJK character carries more speech than a Latin letter); "
        "language auto uses the largest rate.",
    )
    repetition_window: int = Field(
        24, description="Stop when the last N codebook-0 tokens repeat a short pattern (0 disables)."
    )

    session_idle_timeout_s: float = Field(
        30.0, description="A voice-agent session waiting this long for text ends with idle_timeout."
    )
    session_lookahead_tokens: int = Field(
        0, description="Text tokens a session keeps ahead of the talker before it steps (prosody vs latency)."
    )

    # --- request limits ----------------------------------------------------------------------------------
    max_text_length: int = Field(2000, description="Characters of text per request.")
    min_ref_audio_seconds: float = 3.0
    max_ref_audio_seconds: float = 30.0
    max_upload_bytes: int = 20 * 1024 * 1024

    # --- gateway -------------------------------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    api_keys: list[str] = Field(default_factory=list, description="Bearer keys; empty disables auth.")
    cors_origins: list[str] = Field(default_factory=list)
    voice_db_path: Path | None = Field(None, description="SQLite voice library; unset: cache_dir/voices.db.")
    voice_db_url: SecretStr | None = Field(
        None,
        description="Voice library on a shared database, e.g. postgresql://user:password@host:5432/db, so "
        "every gateway replica sees the same voices; unset: the SQLite file voice_db_path.",
    )
    voice_db_pool_size: int = Field(
        5,
        ge=1,
        description="Connections each gateway keeps open to voice_db_url (as many more on bursts).",
    )
    request_timeout_s: float = 120.0
    retry_after_s: int = 2
    gateway_triton_url: str | None = Field(
        None,
        description="The gateway's Triton backends: gRPC host:port, comma-separated; a name that resolves to "
        "several addresses (a headless Service) is one backend per address. Unset: "
        "triton_host:triton_grpc_port.",
    )
    gateway_triton_metrics_url: str | None = Field(
        None,
        description="Each backend's metrics URL, comma-separated in the order of gateway_triton_url (one URL "
        "serves all); {host} stands for the backend's address. Unset: http://{host}:triton_metrics_port/metrics.",
    )
    gateway_backend_refresh_s: float = Field(
        1.0,
        gt=0,
        description="How often the gateway polls each backend's readiness and its engines' active + queued "
        "streams (the load a new stream is routed by).",
    )
    gateway_backend_resolve_s: float = Field(
        10.0, gt=0, description="How often backend names are resolved again (pods come and go)."
    )
    gateway_circuit_cooldown_s: float = Field(
        5.0,
        ge=0,
        description="A backend that failed (unreachable, shutting down, died mid-stream) stays out of the "
        "rotation at least this long, and until its readiness is back.",
    )
    gateway_drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM the gateway reports not ready, refuses new requests (503) and lets its open "
        "streams and WebSocket sessions finish for up to this long before it exits.",
    )
    gateway_triton_reconnect_max_s: float = Field(
        2.0,
        gt=0,
        description="Longest wait between the gateway's tries to reach a Triton that went away (gRPC's own "
        "backoff grows to 120 s): it serves again at most this long after Triton is back.",
    )
    gateway_stream_stall_s: float = Field(
        15.0,
        gt=0,
        description="A stream that has sent audio and then gets nothing from its model server for this long "
        "(a server or model process that hung or died mid-stream) ends with the in-band 503 error, and that "
        "server leaves the rotation, instead of waiting out request_timeout_s.",
    )
    gateway_startup_timeout_s: float = Field(60.0, description="qwen3-tts-serve: wait for /health.")

    @property
    def triton_exit_timeout_s(self) -> int:
        """tritonserver's ``--exit-timeout-secs``: the models' drain plus the time to unload after it."""
        return math.ceil(self.triton_drain_timeout_s + TRITON_UNLOAD_MARGIN_S)

    @property
    def resolved_checkpoint_dir(self) -> Path:
        return self.checkpoint_dir or self.cache_dir / "checkpoints" / "tiny"

    @property
    def resolved_voice_db_path(self) -> Path:
        return self.voice_db_path or self.cache_dir / "voices.db"


def describe_settings_error(error: ValidationError) -> str:
    """One line naming each bad setting by its environment variable and what it accepts (pydantic's own
    message spans lines and links its docs)."""
    problems = [
        f"QWEN3_TTS_{str(item['loc'][0]).upper()}={item.get('input')!r}: {item['msg']}"
        if item["loc"]
        else item["msg"]
        for item in error.errors()
    ]
    return f"invalid setting(s): {'; '.join(problems)}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
