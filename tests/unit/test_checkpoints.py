"""Random Qwen3-TTS checkpoints: built once per session, loaded and run through the real qwen_tts code."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from qwen3_tts_serving.checkpoints import (
    FLAVOURS,
    ensure_checkpoints,
    is_complete,
    load_reference_configs,
    preset_configs,
)
from qwen3_tts_serving.checkpoints.builder import MARKER, marker_payload
from qwen3_tts_serving.checkpoints.cli import main as cli_main
from qwen3_tts_serving.checkpoints.presets import REFERENCE_MODEL
from qwen3_tts_serving.checkpoints.reference import SHARED_REFERENCE_DIR
from qwen3_tts_serving.checkpoints.weights import SPEECH_CODES_START

qwen_tts = pytest.importorskip("qwen_tts")

SAMPLE_RATE = 24000
SAMPLES_PER_FRAME = 1920
MAX_NEW_TOKENS = 200
GREEDY = {"do_sample": False, "subtalker_dosample": False}
LAYOUT = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "speech_tokenizer/config.json",
    "speech_tokenizer/model.safetensors",
    "speech_tokenizer/preprocessor_config.json",
    MARKER,
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _frames(wav: np.ndarray) -> int:
    return len(wav) // SAMPLES_PER_FRAME


def _assert_audio(wav: np.ndarray, sample_rate: int) -> None:
    assert sample_rate == SAMPLE_RATE
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert 5 <= _frames(wav) < MAX_NEW_TOKENS - 1  # not empty, and ended by EOS, not by the token limit
    assert np.isfinite(wav).all()
    assert wav.std() > 1e-3 and np.unique(wav).size > 100  # not silent, not constant


def _reference_clip(seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    noise = np.random.default_rng(0).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * noise).astype(np.float32)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The tiny models gain nothing from threads; on a busy 2-core machine two threads run ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ensure_checkpoints(tmp_path_factory.mktemp("checkpoints") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def models(checkpoints: dict[str, Path]) -> dict[str, object]:
    return {
        flavour: qwen_tts.Qwen3TTSModel.from_pretrained(str(path)) for flavour, path in checkpoints.items()
    }


# ---- layout, ids, configs -----------------------------------------------------------------------------


def test_every_flavour_has_the_released_layout(checkpoints: dict[str, Path]) -> None:
    assert set(checkpoints) == set(FLAVOURS)
    for flavour, folder in checkpoints.items():
        assert folder.name == flavour
        missing = [name for name in LAYOUT if not (folder / name).is_file()]
        assert not missing, f"{flavour} lacks {missing}"
        size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
        assert size_mb < 40


TOP_LEVEL_IDS = (
    "assistant_token_id",
    "im_start_token_id",
    "im_end_token_id",
    "tts_bos_token_id",
    "tts_eos_token_id",
    "tts_pad_token_id",
    "tts_model_type",
    "tts_model_size",
    "tokenizer_type",
)
TALKER_IDS = (
    "codec_bos_id",
    "codec_eos_token_id",
    "codec_think_id",
    "codec_nothink_id",
    "codec_pad_id",
    "codec_think_bos_id",
    "codec_think_eos_id",
    "spk_id",
    "spk_is_dialect",
    "codec_language_id",
    "vocab_size",
    "text_vocab_size",
    "num_code_groups",
)


def test_ids_match_the_reference_configs(checkpoints: dict[str, Path]) -> None:
    reference = load_reference_configs()
    for flavour, folder in checkpoints.items():
        real_model = REFERENCE_MODEL["tiny"][flavour]
        real = reference.get(real_model, "config.json")
        ours = json.loads((folder / "config.json").read_text())
        assert {k: ours[k] for k in TOP_LEVEL_IDS} == {k: real[k] for k in TOP_LEVEL_IDS}
        assert ours["tts_model_size"] == "1b7"  # any substring of "0b6" would silently drop `instruct`
        talker, real_talker = ours["talker_config"], real["talker_config"]
        assert {k: talker[k] for k in TALKER_IDS} == {k: real_talker[k] for k in TALKER_IDS}
        assert talker["code_predictor_config"]["vocab_size"] == 2048
        assert ("speaker_encoder_config" in ours) == (flavour == "base")
        codec = json.loads((folder / "speech_tokenizer/config.json").read_text())
        real_codec = reference.get(real_model, "speech_tokenizer/config.json")
        for key in ("codebook_size", "num_quantizers", "upsample_rates", "upsampling_ratios"):
            assert codec["decoder_config"][key] == real_codec["decoder_config"][key]
        assert codec["decode_upsample_rate"] == SAMPLES_PER_FRAME


def test_every_loaded_tensor_comes_from_the_files(
    checkpoints: dict[str, Path], models: dict[str, object]
) -> None:
    """No missing key (which transformers would fill with fresh, unseeded noise) and no unused key."""
    for flavour, folder in checkpoints.items():
        model = models[flavour].model
        with safe_open(folder / "model.safetensors", "pt") as weights:
            assert set(weights.keys()) == set(model.state_dict())
        with safe_open(folder / "speech_tokenizer/model.safetensors", "pt") as weights:
            assert set(weights.keys()) == set(model.speech_tokenizer.model.state_dict())


def test_speaker_encoder_section_is_written_like_the_real_one(checkpoints: dict[str, Path]) -> None:
    section = json.loads((checkpoints["base"] / "config.json").read_text())["speaker_encoder_config"]
    assert "model_type" not in section  # save_pretrained writes "" here, which does not load back
    assert section["mel_dim"] == 128
    talker = json.loads((checkpoints["base"] / "config.json").read_text())["talker_config"]
    assert section["enc_dim"] == talker["hidden_size"]


@pytest.mark.skipif(not SHARED_REFERENCE_DIR.is_dir(), reason="no shared reference folder in this checkout")
def test_packaged_reference_configs_equal_the_shared_copy() -> None:
    assert load_reference_configs().digest() == load_reference_configs(SHARED_REFERENCE_DIR).digest()


@pytest.mark.parametrize("preset", ["full-1.7b", "full-0.6b"])
def test_full_presets_use_the_real_configs_unchanged(preset: str) -> None:
    reference = load_reference_configs()
    configs = preset_configs(preset)
    assert set(configs) == ({"custom_voice", "base"} | ({"voice_design"} if preset == "full-1.7b" else set()))
    for flavour, checkpoint in configs.items():
        assert checkpoint.files == reference.files[checkpoint.reference_model], flavour
        assert checkpoint.reference_model.startswith(preset.removeprefix("full-").upper())


def test_full_06b_has_no_voice_design() -> None:
    with pytest.raises(ValueError, match="voice_design"):
        preset_configs("full-0.6b", flavours=["voice_design"])


# ---- determinism and idempotence --------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    again = ensure_checkpoints(tmp_path / "again", seed=0, flavours=["custom_voice"])["custom_voice"]
    other = ensure_checkpoints(tmp_path / "other", seed=1, flavours=["custom_voice"])["custom_voice"]
    for name in ("model.safetensors", "speech_tokenizer/model.safetensors", "vocab.json", "config.json"):
        assert _sha256(again / name) == _sha256(checkpoints["custom_voice"] / name), name
    assert _sha256(other / "model.safetensors") != _sha256(again / "model.safetensors")
    assert _sha256(other / "speech_tokenizer/model.safetensors") != _sha256(
        again / "speech_tokenizer/model.safetensors"
    )


def test_complete_folders_are_kept_and_half_written_ones_rebuilt(tmp_path: Path) -> None:
    folder = ensure_checkpoints(tmp_path, flavours=["voice_design"])["voice_design"]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    ensure_checkpoints(tmp_path, flavours=["voice_design"])
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # complete: kept

    (folder / MARKER).unlink()  # as if a build died before finishing
    (folder / "model.safetensors").write_bytes(b"truncated")
    ensure_checkpoints(tmp_path, flavours=["voice_design"])
    assert (folder / MARKER).is_file() and (folder / "model.safetensors").stat().st_size > 1000
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".trash-*"))

    configs = preset_configs("tiny", ["voice_design"])["voice_design"]
    assert is_complete(folder, marker_payload(configs, 0, load_reference_configs()))
    assert not is_complete(
        folder, marker_payload(configs, 7, load_reference_configs())
    )  # other seed: rebuild


def test_cli_reuses_complete_checkpoints_and_writes_configs_only(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = checkpoints["base"].parent
    assert cli_main(["--out", str(out_dir), "--flavours", "base"]) == 0
    assert capsys.readouterr().out.split() == ["base", str(checkpoints["base"])]

    assert cli_main(["--out", str(tmp_path), "--preset", "full-0.6b", "--configs-only"]) == 0
    written = json.loads((tmp_path / "base" / "config.json").read_text())
    assert written["talker_config"]["hidden_size"] == 1024 and written["tts_model_size"] == "0b6"
    assert not (tmp_path / "base" / "model.safetensors").exists()


def test_device_cpu_builds_the_same_files_as_the_default(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """``--device cpu`` is the default build, byte for byte, marker included (existing builds are kept)."""
    assert cli_main(["--out", str(tmp_path), "--flavours", "custom_voice", "--device", "cpu"]) == 0
    built, default = tmp_path / "custom_voice", checkpoints["custom_voice"]
    names = sorted(str(p.relative_to(default)) for p in default.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(built)) for p in built.rglob("*") if p.is_file())
    for name in names:
        assert _sha256(built / name) == _sha256(default / name), name


def test_a_gpu_build_has_a_marker_of_its_own() -> None:
    """A CUDA generator draws other weights: a GPU build must not pass for the CPU build, nor the reverse."""
    configs = preset_configs("tiny", ["custom_voice"])["custom_voice"]
    reference = load_reference_configs()
    cpu = marker_payload(configs, 0, reference)
    assert marker_payload(configs, 0, reference, "cpu") == cpu and "device" not in cpu
    for device in ("cuda", "cuda:1"):
        gpu = marker_payload(configs, 0, reference, device)
        assert gpu["device"] == "cuda" and gpu["key"] != cpu["key"]


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu0"])
def test_device_option_names_the_valid_choices(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["--out", str(tmp_path), "--device", device])
    assert exited.value.code == 2
    assert f"device {device!r}; valid: cpu, cuda, cuda:N" in capsys.readouterr().err
    with pytest.raises(ValueError, match="valid: cpu, cuda, cuda:N"):
        ensure_checkpoints(tmp_path, flavours=["custom_voice"], device=device)
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_refused_before_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--out", str(tmp_path), "--device", "cuda"])
    assert "no CUDA device is available here; use cpu" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# ---- text tokenizer ---------------------------------------------------------------------------------------


def test_prompt_template_slices_like_the_model_expects(models: dict[str, object]) -> None:
    model = models["custom_voice"]
    config = json.loads(json.dumps(model.model.config.to_dict()))
    ids = model._tokenize_texts([model._build_assistant_text("Hello world.")])[0][0].tolist()
    role = [config["im_start_token_id"], config["assistant_token_id"], 198]  # 198 = "\n", as in Qwen
    assert ids[:3] == role
    assert ids[-5:] == [config["im_end_token_id"], 198, *role]
    assert model.processor.tokenizer.decode(ids[3:-5]) == "Hello world."


@pytest.mark.parametrize(
    "text", ["你好，世界！", "こんにちは", "안녕하세요", "Привет", "مرحبا", "😀🎉 ok", "ÄÖÜ ß\tx\n\ny"]
)
def test_any_script_tokenizes_below_the_text_vocab(models: dict[str, object], text: str) -> None:
    tokenizer = models["custom_voice"].processor.tokenizer
    ids = tokenizer(text)["input_ids"]
    assert ids and max(ids) < 151936
    assert tokenizer.decode(ids) == text


# ---- generation through the real package -------------------------------------------------------------------


def test_custom_voice_generates_and_greedy_is_deterministic(models: dict[str, object]) -> None:
    model = models["custom_voice"]
    first, sample_rate = model.generate_custom_voice(
        text="Hello world.", speaker="ryan", language="english", max_new_tokens=MAX_NEW_TOKENS, **GREEDY
    )
    second, _ = model.generate_custom_voice(
        text="Hello world.", speaker="ryan", language="english", max_new_tokens=MAX_NEW_TOKENS, **GREEDY
    )
    _assert_audio(first[0], sample_rate)
    np.testing.assert_array_equal(first[0], second[0])


def test_sampled_generation_ends_by_eos_and_longer_text_takes_longer(models: dict[str, object]) -> None:
    model = models["custom_voice"]
    torch.manual_seed(0)
    wavs, sample_rate = model.generate_custom_voice(
        text=["Hi.", "Good morning, how are you?"],
        speaker=["vivian", "dylan"],
        language=["english", "chinese"],  # dylan speaks a dialect: exercises spk_is_dialect
        max_new_tokens=MAX_NEW_TOKENS,
    )
    for wav in wavs:
        _assert_audio(wav, sample_rate)
    assert 10 <= _frames(wavs[1]) <= 60  # a short sentence: about 1.25 frames per text token
    assert _frames(wavs[1]) > _frames(wavs[0])


def test_streaming_text_mode_also_stops(models: dict[str, object]) -> None:
    wavs, sample_rate = models["custom_voice"].generate_custom_voice(
        text="The quick brown fox.", speaker="aiden", non_streaming_mode=False, max_new_tokens=MAX_NEW_TOKENS
    )
    _assert_audio(wavs[0], sample_rate)


def test_voice_design_generates(models: dict[str, object]) -> None:
    wavs, sample_rate = models["voice_design"].generate_voice_design(
        text="Hello.", instruct="A calm voice.", language="english", max_new_tokens=MAX_NEW_TOKENS
    )
    _assert_audio(wavs[0], sample_rate)


def test_base_clones_a_three_second_clip(models: dict[str, object]) -> None:
    model = models["base"]
    prompt = model.create_voice_clone_prompt(
        ref_audio=(_reference_clip(), SAMPLE_RATE), ref_text="A short clip."
    )
    ref_code = prompt[0].ref_code
    assert tuple(ref_code.shape) == (38, 16)  # 3 s at 12.5 Hz, 16 codebooks
    assert ref_code[:, 0].max() < SPEECH_CODES_START  # references use the lower half of codebook 0
    assert ref_code.unique().numel() > 100  # filled codebooks: encoding is not all code 0
    assert prompt[0].ref_spk_embedding.shape[-1] == model.model.config.talker_config.hidden_size
    for kwargs in ({}, GREEDY):
        wavs, sample_rate = model.generate_voice_clone(
            text="Hello there.",
            language="english",
            voice_clone_prompt=prompt,
            max_new_tokens=MAX_NEW_TOKENS,
            **kwargs,
        )
        _assert_audio(wavs[0], sample_rate)


def test_generated_codes_use_the_speech_half_of_codebook_zero(models: dict[str, object]) -> None:
    model = models["custom_voice"]
    input_ids = model._tokenize_texts([model._build_assistant_text("Hello world.")])
    codes, _ = model.model.generate(
        input_ids=input_ids,
        languages=["english"],
        speakers=["serena"],
        non_streaming_mode=True,
        **model._merge_generate_kwargs(max_new_tokens=MAX_NEW_TOKENS, **GREEDY),
    )
    first_codebook = codes[0][:, 0]
    assert first_codebook.min() >= SPEECH_CODES_START and first_codebook.max() < 2048
    assert first_codebook.unique().numel() > len(first_codebook) // 2  # greedy does not lock onto one code
