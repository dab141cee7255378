"""What one engine model costs on a GPU, from the engine's own accounting (no GPU needed).

An engine model (one per checkpoint per GPU) holds, for as long as it runs:

- the checkpoint's weights, once: the talker/code predictor (``model.safetensors``) and the 12 Hz codec
  (``speech_tokenizer/model.safetensors``), both loaded at the serving dtype (bfloat16 on a GPU);
- ``max_active_streams`` talker key/value slots of ``slot_max_length`` tokens, allocated at start-up
  (:class:`~qwen3_tts_serving.engine.slot_cache.SlotKVCache`; the same formula, :func:`kv_bytes`);
- per running stream, the streaming codec decoder's state
  (:class:`~qwen3_tts_serving.engine.streaming_decoder.DecoderState`): every convolution's last inputs and
  the keys/values of the last ``sliding_window - 1`` frames of every codec transformer layer;
- a Base (voice clone) engine also keeps up to ``primed_decoder_cache_size`` decoder states primed with a
  reference (other engines never prime one).

Everything else (activations of a prefill or a frame step, CUDA graphs, cuBLAS workspaces, the CUDA
context, allocator slack) is not counted item by item: :func:`streams_per_gpu` holds back a reserve.
"""

from __future__ import annotations

import copy
import json
import logging
import struct
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .slot_cache import kv_bytes

logger = logging.getLogger(__name__)

GIB = 2**30
MIB = 2**20
# loading.resolve_dtype: bfloat16 on a GPU. Floating tensors are cast to it at load time whatever the file
# holds (the tiny checkpoints are float32 on disk); integer buffers keep their own width.
SERVING_DTYPE_BYTES = 2
# The reserve for what is not counted item by item. The fixed part covers what every engine process pays
# whatever its size: the CUDA context and cuBLAS/cuDNN workspaces (~0.5-1 GiB), the frame step's CUDA
# graphs (one per batch x key-length bucket) and the prefill's activations (prefill_tokens_per_step tokens
# through the talker). The fraction covers the caching allocator's fragmentation and the batched decoder
# calls' temporaries, which grow with the memory in use.
RESERVE_FRACTION = 0.10
RESERVE_BYTES = 2 * GIB
# A stream's decoder state, and on a GPU its rows of the captured decoder calls' static inputs and outputs
# (allocated for max_active_streams): three states' worth per stream.
DECODER_STATES_PER_STREAM = 3
WEIGHT_FILE = "model.safetensors"
CODEC_DIR = "speech_tokenizer"
# Bytes per element of each safetensors dtype code.
_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
_FLOATING = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def _field(config: Any, name: str, default: Any = None) -> Any:
    """A config value from a ``config.json`` dict or a transformers config object."""
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def talker_head_dim(talker_config: Any) -> int:
    """As the package's talker attention reads it: ``head_dim``, else hidden size over heads."""
    head_dim = _field(talker_config, "head_dim")
    if head_dim is None:
        return int(_field(talker_config, "hidden_size")) // int(_field(talker_config, "num_attention_heads"))
    return int(head_dim)


def kv_bytes_per_slot(talker_config: Any, *, max_length: int, dtype_bytes: int = SERVING_DTYPE_BYTES) -> int:
    """What ``SlotKVCache.for_talker`` allocates for one stream's slot of ``max_length`` tokens."""
    return kv_bytes(
        layers=int(_field(talker_config, "num_hidden_layers")),
        kv_heads=int(_field(talker_config, "num_key_value_heads")),
        max_length=max_length,
        head_dim=talker_head_dim(talker_config),
        dtype_bytes=dtype_bytes,
    )


# ------------------------------------------------------------------------------------------------ weights
def weight_files(checkpoint_dir: Path) -> list[Path]:
    """The safetensors files an engine loads from a checkpoint folder (the model's and the codec's)."""
    return [
        path
        for path in (checkpoint_dir / WEIGHT_FILE, checkpoint_dir / CODEC_DIR / WEIGHT_FILE)
        if path.is_file()
    ]


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: an 8-byte little-endian length, then that much JSON. Only
    the header is read, so a multi-GB file costs nothing."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def _tensor_bytes(dtype: str, shape: list[int], dtype_bytes: int) -> int:
    if dtype not in _SAFETENSORS_DTYPE_BYTES:
        raise ValueError(f"unknown safetensors dtype {dtype!r}; known: {sorted(_SAFETENSORS_DTYPE_BYTES)}")
    elements = 1
    for size in shape:
        elements *= int(size)
    return elements * (dtype_bytes if dtype in _FLOATING else _SAFETENSORS_DTYPE_BYTES[dtype])


def file_weight_bytes(path: Path, *, dtype_bytes: int = SERVING_DTYPE_BYTES) -> int:
    """Bytes the tensors of one safetensors file take once loaded at the serving dtype."""
    return sum(
        _tensor_bytes(entry["dtype"], entry["shape"], dtype_bytes)
        for entry in safetensors_header(path).values()
    )


def _meta_models(checkpoint_dir: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The talker model and the codec built on the meta device from the folder's configs: shapes only,
    no memory, no weights (what ``--configs-only`` folders allow)."""
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    model_config = json.loads((checkpoint_dir / "config.json").read_text("utf-8"))
    codec_config = json.loads((checkpoint_dir / CODEC_DIR / "config.json").read_text("utf-8"))
    with torch.device("meta"):
        model = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig.from_dict(copy.deepcopy(model_config)))
        codec = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config.from_dict(copy.deepcopy(codec_config)))
    return model, codec


def _state_dict_bytes(module: torch.nn.Module, dtype_bytes: int) -> int:
    return sum(
        tensor.numel() * (dtype_bytes if tensor.is_floating_point() else tensor.element_size())
        for tensor in module.state_dict().values()
    )


def weight_bytes(checkpoint_dir: Path, *, dtype_bytes: int = SERVING_DTYPE_BYTES) -> tuple[int, str]:
    """The checkpoint's weights at the serving dtype, and where the count came from: ``"safetensors"``
    (the files' headers, when ``model.safetensors`` is there) or ``"config"`` (the models built on the meta
    device from ``config.json`` and ``speech_tokenizer/config.json``: the state dicts the builder saves)."""
    files = weight_files(checkpoint_dir)
    if (checkpoint_dir / WEIGHT_FILE).is_file():
        return sum(file_weight_bytes(path, dtype_bytes=dtype_bytes) for path in files), "safetensors"
    logger.info("no %s in %s: weights counted from its configs", WEIGHT_FILE, checkpoint_dir)
    model, codec = _meta_models(checkpoint_dir)
    return _state_dict_bytes(model, dtype_bytes) + _state_dict_bytes(codec, dtype_bytes), "config"


# ------------------------------------------------------------------------------------------ codec state
def decoder_state_bytes(checkpoint_dir: Path, *, dtype_bytes: int = SERVING_DTYPE_BYTES) -> int:
    """One stream's streaming-decoder state at its largest (the transformer past full: window - 1 frames),
    measured on the engine's own ``StreamingDecoder`` over a meta-device codec."""
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model

    from .streaming_decoder import StreamingDecoder

    codec_config = json.loads((checkpoint_dir / CODEC_DIR / "config.json").read_text("utf-8"))
    with torch.device("meta"):
        codec = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config.from_dict(copy.deepcopy(codec_config)))
    # StreamingDecoder reads ``speech_tokenizer.model``: the package's wrapper around the codec.
    state = StreamingDecoder(types.SimpleNamespace(model=codec), context_frames=0).new_state()
    assert state.conv_history is not None and state.kv is not None  # new_state fills both
    window = int(codec.decoder.config.sliding_window)
    layers, pair, kv_heads, _, head_dim = state.kv.shape  # the past is empty: count one frame's worth
    kv_per_frame = layers * pair * kv_heads * head_dim
    return (state.conv_history.numel() + kv_per_frame * (window - 1)) * dtype_bytes


# ------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class EngineCost:
    """One engine model's memory: fixed (weights, caches kept whatever runs) and per stream."""

    weights: int
    weights_source: str  # "safetensors" or "config"
    kv_per_stream: int
    decoder_per_stream: int  # the stream's decoder state and its rows of the captured decoder's buffers
    primed_cache: int  # Base engines: primed decoder states kept for reused clone references

    @property
    def fixed(self) -> int:
        return self.weights + self.primed_cache

    @property
    def per_stream(self) -> int:
        return self.kv_per_stream + self.decoder_per_stream


def engine_cost(
    checkpoint_dir: Path,
    *,
    slot_max_length: int,
    primed_decoder_cache_size: int = 0,
    dtype_bytes: int = SERVING_DTYPE_BYTES,
) -> EngineCost:
    """What one engine on ``checkpoint_dir`` holds; ``primed_decoder_cache_size`` counts only for a
    checkpoint that clones voices (a Base one): the others never prime a decoder state."""
    weights, source = weight_bytes(checkpoint_dir, dtype_bytes=dtype_bytes)
    model_config = json.loads((checkpoint_dir / "config.json").read_text("utf-8"))
    decoder = decoder_state_bytes(checkpoint_dir, dtype_bytes=dtype_bytes)
    clones = model_config.get("tts_model_type") == "base"
    return EngineCost(
        weights=weights,
        weights_source=source,
        kv_per_stream=kv_per_slot_from_model_config(model_config, slot_max_length, dtype_bytes),
        decoder_per_stream=decoder * DECODER_STATES_PER_STREAM,
        primed_cache=decoder * primed_decoder_cache_size if clones else 0,
    )


def kv_per_slot_from_model_config(
    model_config: dict[str, Any], slot_max_length: int, dtype_bytes: int
) -> int:
    return kv_bytes_per_slot(
        model_config["talker_config"], max_length=slot_max_length, dtype_bytes=dtype_bytes
    )


def usable_bytes(
    gpu_bytes: int, *, reserve_fraction: float = RESERVE_FRACTION, reserve_bytes: int = RESERVE_BYTES
) -> int:
    """What is left for weights and streams once the reserve (see ``RESERVE_*``) is held back."""
    if not 0.0 <= reserve_fraction < 1.0:
        raise ValueError(f"reserve_fraction must be in [0, 1), got {reserve_fraction}")
    return max(0, int(gpu_bytes * (1.0 - reserve_fraction)) - reserve_bytes)


def streams_per_gpu(
    gpu_bytes: int,
    weights: int,
    per_stream: int,
    reserve_fraction: float = RESERVE_FRACTION,
    *,
    reserve_bytes: int = RESERVE_BYTES,
) -> int:
    """Streams (``max_active_streams`` summed over the GPU's engines) that fit beside ``weights`` (every
    engine's fixed bytes together); 0 when the weights alone do not fit."""
    if per_stream <= 0:
        raise ValueError(f"per_stream must be > 0 bytes, got {per_stream}")
    free = usable_bytes(gpu_bytes, reserve_fraction=reserve_fraction, reserve_bytes=reserve_bytes) - weights
    return max(0, free // per_stream)
