"""GPU capacity planning: the numbers equal what the engine really allocates, on the tiny checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from qwen3_tts_serving.engine import capacity
from qwen3_tts_serving.engine.config import EngineConfig
from qwen3_tts_serving.engine.loading import load_model
from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.engine.slot_cache import SlotKVCache
from qwen3_tts_serving.engine.streaming_decoder import StreamingDecoder
from qwen3_tts_serving.launcher import ensure_checkpoint_dir
from qwen3_tts_serving.settings import Settings

REPO = Path(__file__).resolve().parents[2]
GIB = capacity.GIB


@pytest.fixture(scope="module")
def tiny_root() -> Path:
    return ensure_checkpoint_dir(Settings())


@pytest.fixture(scope="module")
def tiny_base(tiny_root: Path) -> Any:
    """The real tiny Base model on the CPU (float32: 4 bytes per element)."""
    config = EngineConfig(checkpoint_dir=tiny_root / "base", device="cpu", cpu_threads=1)
    return load_model(config, Capability.VOICE_CLONE)


def test_kv_bytes_per_slot_is_what_the_slot_cache_allocates(tiny_base: Any, tiny_root: Path) -> None:
    talker = tiny_base.model.talker
    cache = SlotKVCache.for_talker(talker, slots=2, max_length=96)
    allocated = sum(t[0].numel() * t.element_size() for t in (*cache.keys, *cache.values))  # one slot
    assert cache.bytes_per_slot == allocated
    itemsize = talker.codec_head.weight.element_size()
    live_config = tiny_base.model.config.talker_config
    assert capacity.kv_bytes_per_slot(live_config, max_length=96, dtype_bytes=itemsize) == allocated
    file_config = json.loads((tiny_root / "base" / "config.json").read_text())["talker_config"]
    assert capacity.kv_bytes_per_slot(file_config, max_length=96, dtype_bytes=itemsize) == allocated
    assert SlotKVCache.bytes_per_token(talker) * 96 == allocated


def test_head_dim_falls_back_to_hidden_size_over_heads() -> None:
    config = {"num_hidden_layers": 2, "num_key_value_heads": 2, "hidden_size": 64, "num_attention_heads": 4}
    assert capacity.kv_bytes_per_slot(config, max_length=10, dtype_bytes=2) == 2 * 2 * 2 * 10 * 16 * 2


def _safetensors_elements(path: Path) -> int:
    with safe_open(str(path), framework="pt") as handle:
        return sum(handle.get_tensor(name).numel() for name in handle.keys())


def test_weight_bytes_count_every_tensor_at_two_bytes(tiny_root: Path) -> None:
    folder = tiny_root / "base"
    files = [folder / "model.safetensors", folder / "speech_tokenizer" / "model.safetensors"]
    expected = 2 * sum(_safetensors_elements(path) for path in files)  # tiny files are float32 on disk
    assert capacity.weight_bytes(folder) == (expected, "safetensors")


def test_weight_bytes_from_configs_alone_match_the_files(tiny_root: Path, tmp_path: Path) -> None:
    """A ``--configs-only`` folder (what full-size presets can be planned from) counts the same bytes."""
    folder = tiny_root / "custom_voice"
    (tmp_path / "speech_tokenizer").mkdir()
    for relative in ("config.json", "speech_tokenizer/config.json"):
        shutil.copy(folder / relative, tmp_path / relative)
    on_disk, _ = capacity.weight_bytes(folder)
    assert capacity.weight_bytes(tmp_path) == (on_disk, "config")


def test_decoder_state_bytes_is_a_full_streaming_state(tiny_base: Any, tiny_root: Path) -> None:
    decoder = StreamingDecoder(tiny_base.model.speech_tokenizer, context_frames=0)
    window = int(tiny_base.model.speech_tokenizer.model.decoder.config.sliding_window)
    state = decoder.new_state()
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):  # past the sliding window: the kept keys/values stop growing at window - 1 frames
        codes = torch.randint(0, 1024, (window, 16), generator=generator)
        decoder.decode([(state, codes, window)])
    assert state.kv is not None and state.kv.shape[3] == window - 1
    held = (state.conv_history.numel() + state.kv.numel()) * state.kv.element_size()  # type: ignore[union-attr]
    assert capacity.decoder_state_bytes(tiny_root / "base", dtype_bytes=state.kv.element_size()) == held


def test_streams_per_gpu_holds_back_the_reserve() -> None:
    # 10 GiB - 10% - 1 GiB = 8 GiB usable; 2 GiB of weights leave 6 streams of 1 GiB.
    assert capacity.streams_per_gpu(10 * GIB, 2 * GIB, GIB, 0.1, reserve_bytes=GIB) == 6
    assert capacity.streams_per_gpu(10 * GIB, 2 * GIB, GIB - 1, 0.1, reserve_bytes=GIB) == 6
    assert capacity.streams_per_gpu(10 * GIB, 2 * GIB, GIB + 1, 0.1, reserve_bytes=GIB) == 5
    assert capacity.streams_per_gpu(10 * GIB, 9 * GIB, GIB, 0.1, reserve_bytes=GIB) == 0  # weights alone
    assert capacity.streams_per_gpu(GIB, 0, 1) == 0  # the default 2 GiB reserve is more than 1 GiB
    with pytest.raises(ValueError, match="per_stream"):
        capacity.streams_per_gpu(10 * GIB, 0, 0)
    with pytest.raises(ValueError, match="reserve_fraction"):
        capacity.streams_per_gpu(10 * GIB, 0, GIB, 1.0)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.capacity", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_prints_one_row_per_flavour_and_one_for_all_on_one_gpu(tiny_root: Path) -> None:
    result = _run_cli("--checkpoint-dir", str(tiny_root), "--slot-max-length", "256", "--gpu-gib", "4", "8")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("flavour"))
    columns = lines[header].split("  ")
    assert [c.strip() for c in columns if c.strip()][-2:] == ["4 GiB", "8 GiB"]
    rows = {line[:16].strip(): line[16:].split() for line in lines[header + 1 : header + 5]}
    assert list(rows) == ["custom_voice", "base", "voice_design", "all on one GPU"]

    cost = capacity.engine_cost(
        tiny_root / "custom_voice",
        slot_max_length=256,
        primed_decoder_cache_size=Settings().primed_decoder_cache_size,
    )
    kv = capacity.kv_bytes_per_slot(
        json.loads((tiny_root / "custom_voice" / "config.json").read_text())["talker_config"],
        max_length=256,
        dtype_bytes=2,
    )
    weights, source, kv_mib, *_, four, eight = rows["custom_voice"]
    assert (source, kv_mib) == ("safetensors", f"{kv / 2**20:.1f}")
    assert cost.kv_per_stream == kv
    assert int(four) == capacity.streams_per_gpu(4 * GIB, cost.fixed, cost.per_stream) > 0
    assert int(eight) == capacity.streams_per_gpu(8 * GIB, cost.fixed, cost.per_stream) > int(four)
    # Three engines on one GPU hold three checkpoints' weights: fewer streams fit than beside one.
    assert int(rows["all on one GPU"][-1]) < int(eight)


def test_cli_names_the_flavours_it_looks_for(tmp_path: Path) -> None:
    result = _run_cli("--checkpoint-dir", str(tmp_path))
    assert result.returncode == 2
    assert "custom_voice, base, voice_design" in result.stderr
