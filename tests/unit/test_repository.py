"""Model repository builds: every placeholder filled, the I/O contract kept. Triton loading every filled
template is tested in tests/e2e/test_repository_loads.py."""

from __future__ import annotations

import shutil
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2
from unit.repository_helpers import ALL_MODELS, ENGINE_PARAMETERS, TEMPLATES, _parse, _settings

from qwen3_tts_serving.contract import CHECKPOINTS, MODEL_CHECKPOINTS, MODEL_INPUTS
from qwen3_tts_serving.launcher import repository
from qwen3_tts_serving.launcher.repository import (
    BUILD_MARKER,
    MODEL_REPOSITORY,
    TEMPLATE_NAME,
    UnfilledPlaceholderError,
    build_model_repository,
    check_checkpoints,
    ensure_checkpoint_dir,
    fill_template,
)
from qwen3_tts_serving.settings import Settings

# The models of docs/triton-io-contract.md; the generic checks cover every template (TEMPLATES).
MODELS = ("custom_voice", "voice_design", "voice_clone", "voice_prompt")
FLAVOURS = {
    "custom_voice": "custom_voice",
    "voice_design": "voice_design",
    "voice_clone": "base",
    "voice_prompt": "base",
}
SAMPLING = {
    "do_sample": ("TYPE_BOOL", [1]),
    "temperature": ("TYPE_FP32", [1]),
    "top_k": ("TYPE_INT32", [1]),
    "top_p": ("TYPE_FP32", [1]),
    "repetition_penalty": ("TYPE_FP32", [1]),
    "max_new_tokens": ("TYPE_INT32", [1]),
    "seed": ("TYPE_INT64", [1]),
    "stream": ("TYPE_BOOL", [1]),  # false: the whole clip in one response (model code's extension)
}
STRING = ("TYPE_STRING", [1])
# docs/triton-io-contract.md: (required inputs, optional inputs) per model.
CONTRACT = {
    "custom_voice": (
        {"text": STRING, "speaker": STRING},
        {"language": STRING, "instruct": STRING, **SAMPLING},
    ),
    "voice_design": ({"text": STRING, "instruct": STRING}, {"language": STRING, **SAMPLING}),
    "voice_clone": (
        {"text": STRING},
        {
            "ref_audio": ("TYPE_FP32", [-1]),
            "ref_sample_rate": ("TYPE_INT32", [1]),
            "speaker_embedding": ("TYPE_FP32", [-1]),
            "language": STRING,
            "ref_text": STRING,
            "x_vector_only": ("TYPE_BOOL", [1]),
            "ref_codes": ("TYPE_INT64", [-1, 16]),
            **SAMPLING,
        },
    ),
    "voice_prompt": (
        {"ref_audio": ("TYPE_FP32", [-1]), "ref_sample_rate": ("TYPE_INT32", [1])},
        {"ref_text": STRING, "x_vector_only": ("TYPE_BOOL", [1])},
    ),
}
STREAM_OUTPUTS = {
    "audio": ("TYPE_FP32", [-1]),
    "sample_rate": ("TYPE_INT32", [1]),
    "sequence": ("TYPE_INT32", [1]),
    "is_last": ("TYPE_BOOL", [1]),
    "finish_reason": STRING,
}
OUTPUTS = {
    **dict.fromkeys(("custom_voice", "voice_design", "voice_clone"), STREAM_OUTPUTS),
    "voice_prompt": {"speaker_embedding": ("TYPE_FP32", [-1]), "ref_codes": ("TYPE_INT64", [-1, 16])},
}


@pytest.fixture
def source(tmp_path: Path, write_python_model: Callable[..., Path]) -> Path:
    """The project's real templates, each beside a throwaway model.py (no model is loaded)."""
    source = tmp_path / "source"
    for model in TEMPLATES:
        write_python_model(source / model, with_config=False)
        shutil.copy(MODEL_REPOSITORY / model / TEMPLATE_NAME, source / model / TEMPLATE_NAME)
    return source


def _tensors(
    entries: Iterable[model_config_pb2.ModelInput | model_config_pb2.ModelOutput],
) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in entries}


def test_the_contract_models_have_templates() -> None:
    assert set(MODELS) <= set(ALL_MODELS)


def test_every_template_fills_and_parses(tmp_path: Path, checkpoints: Path, source: Path) -> None:
    settings = _settings(tmp_path, checkpoints, device="cpu", max_entry_batch=7, dtype="float32")
    out = build_model_repository(settings, tmp_path / "build", source=source)
    built = sorted(p.parent.name for p in out.glob("*/config.pbtxt"))
    engines = [f"{checkpoint}_engine_0" for checkpoint in CHECKPOINTS]
    assert built == sorted([*ALL_MODELS, *engines])
    for model in built:
        assert "${" not in (out / model / "config.pbtxt").read_text()
        config = _parse(out / model / "config.pbtxt")
        assert (config.name, config.backend, config.max_batch_size) == (model, "python", 7)
        parameters = {k: v.string_value for k, v in config.parameters.items()}
        if model in engines:
            assert set(parameters) >= ENGINE_PARAMETERS | {"checkpoint"}
            # Every engine needs a checkpoint flavour: the bare checkpoint root would not load.
            assert parameters["checkpoint_dir"] == str(checkpoints / parameters["checkpoint"])
            assert parameters["dtype"] == "float32"
        else:  # a front: no weights, only where its engines are (voice_prompt: how many it forwards at once)
            assert parameters["engines"] == f"{MODEL_CHECKPOINTS[model]}_engine_0"
            extra = {"voice_prompt_batch"} if model == "voice_prompt" else set()
            if "ref_audio" in MODEL_INPUTS[model]:  # it refuses an over-long clip before forwarding it
                extra.add("max_ref_audio_seconds")
                assert parameters["max_ref_audio_seconds"] == str(settings.max_ref_audio_seconds)
            assert set(parameters) == {"engines", "drain_timeout_s", *extra}


def test_filled_configs_parse_and_follow_the_contract(
    tmp_path: Path, checkpoints: Path, source: Path
) -> None:
    settings = _settings(tmp_path, checkpoints, device="cpu", max_entry_batch=7, batch_delay_us=1234)
    out = build_model_repository(settings, tmp_path / "build", source=source)
    for model in MODELS:
        text = (out / model / "config.pbtxt").read_text()
        assert "${" not in text
        config = _parse(out / model / "config.pbtxt")
        assert config.name == model
        assert config.backend == "python"
        assert config.max_batch_size == 7
        assert config.dynamic_batching.max_queue_delay_microseconds == 1234
        assert config.model_transaction_policy.decoupled is (model != "voice_prompt")
        required, optional = CONTRACT[model]
        assert _tensors(config.input) == {**required, **optional}
        assert {t.name for t in config.input if t.optional} == set(optional)
        assert {t.name for t in config.input if t.allow_ragged_batch} == {
            name for name, (_, dims) in _tensors(config.input).items() if -1 in dims
        }
        assert _tensors(config.output) == OUTPUTS[model]


def test_engine_parameters_come_from_the_settings(tmp_path: Path, checkpoints: Path, source: Path) -> None:
    settings = _settings(
        tmp_path, checkpoints, device="cpu", chunk_frames=9, frames_per_char=2.5, dtype="float32"
    )
    out = build_model_repository(settings, tmp_path / "build", source=source)
    for model in MODELS:
        engine = f"{FLAVOURS[model]}_engine_0"
        parameters = {k: v.string_value for k, v in _parse(out / engine / "config.pbtxt").parameters.items()}
        assert set(parameters) >= ENGINE_PARAMETERS
        assert parameters["checkpoint_dir"] == str(checkpoints / FLAVOURS[model])  # the contract's mapping
        assert parameters["chunk_frames"] == "9"
        assert parameters["frames_per_char"] == "2.5"
        assert parameters["dtype"] == "float32"
        assert parameters["device"] == "cpu"
        assert parameters["max_ref_audio_seconds"] == str(settings.max_ref_audio_seconds)


@pytest.mark.parametrize(
    ("device", "gpu", "kind"),
    [
        ("cpu", True, "KIND_CPU"),
        ("cuda", False, "KIND_GPU"),
        ("auto", True, "KIND_GPU"),
        ("auto", False, "KIND_CPU"),
    ],
)
def test_engines_go_one_per_gpu_and_fronts_stay_on_the_cpu(
    tmp_path: Path,
    checkpoints: Path,
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
    device: str,
    gpu: bool,
    kind: str,
) -> None:
    monkeypatch.setattr(repository, "gpu_present", lambda: gpu)
    monkeypatch.setattr(repository, "visible_gpu_count", lambda: 2)
    settings = _settings(tmp_path, checkpoints, device=device)
    out = build_model_repository(
        settings, tmp_path / "build", ["custom_voice", "custom_voice_session"], source=source
    )
    engines = (
        ["custom_voice_engine_0", "custom_voice_engine_1"]
        if kind == "KIND_GPU"
        else ["custom_voice_engine_0"]
    )
    assert sorted(p.parent.name for p in out.glob("*/config.pbtxt")) == sorted(
        ["custom_voice", "custom_voice_session", *engines]
    )
    for index, engine in enumerate(engines):
        config = _parse(out / engine / "config.pbtxt")
        [group] = config.instance_group
        assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == kind
        assert group.count == 1
        assert list(group.gpus) == ([index] if kind == "KIND_GPU" else [])
        assert config.parameters["device"].string_value == ("cuda" if kind == "KIND_GPU" else "cpu")
    for front in ("custom_voice", "custom_voice_session"):
        config = _parse(out / front / "config.pbtxt")
        [group] = config.instance_group
        assert (model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind), group.count) == ("KIND_CPU", 1)
        assert config.parameters["engines"].string_value == ",".join(engines)
    session = _parse(out / "custom_voice_session" / "config.pbtxt")
    # Sessions are plain inputs: no sequence batcher, whose open sequences held a stopping server.
    assert not session.HasField("sequence_batching") and session.HasField("dynamic_batching")


def test_engines_per_checkpoint_overrides_the_gpu_count(
    tmp_path: Path, checkpoints: Path, source: Path
) -> None:
    settings = _settings(tmp_path, checkpoints, device="cpu", engines_per_checkpoint=2)
    out = build_model_repository(settings, tmp_path / "build", ["voice_prompt", "voice_clone"], source=source)
    assert sorted(p.parent.name for p in out.glob("*/config.pbtxt")) == [
        "base_engine_0", "base_engine_1", "voice_clone", "voice_prompt"
    ]  # fmt: skip


def test_visible_gpus_are_counted_from_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,3")
    assert repository.visible_gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert repository.visible_gpu_count() == 0


def test_no_gpu_when_cuda_visible_devices_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert repository.gpu_present() is False


def test_a_placeholder_without_a_value_fails_the_build(
    tmp_path: Path, checkpoints: Path, source: Path
) -> None:
    template = source / "voice_design" / TEMPLATE_NAME
    template.write_text(
        template.read_text() + 'parameters { key: "x" value { string_value: "${no_such_setting}" } }\n'
    )
    with pytest.raises(UnfilledPlaceholderError, match="no_such_setting"):
        build_model_repository(_settings(tmp_path, checkpoints), tmp_path / "build", source=source)


@pytest.mark.parametrize("text", ["a ${unclosed", "cost: $5"])
def test_malformed_placeholders_are_rejected(text: str) -> None:
    with pytest.raises(UnfilledPlaceholderError):
        fill_template(text, {})


def test_values_cannot_break_out_of_a_string() -> None:
    filled = fill_template('string_value: "${path}"', {"path": 'we"ird\\dir'})
    assert filled == 'string_value: "we\\"ird\\\\dir"'


def test_build_is_self_contained(tmp_path: Path, checkpoints: Path, source: Path) -> None:
    (source / "custom_voice" / "1" / "helper_module.py").write_text("VALUE = 1\n")
    (source / "custom_voice" / "1" / "__pycache__").mkdir()
    out = build_model_repository(_settings(tmp_path, checkpoints), tmp_path / "build", source=source)
    model_py = out / "custom_voice" / "1" / "model.py"
    assert not model_py.is_symlink()
    assert model_py.read_text() == (source / "custom_voice" / "1" / "model.py").read_text()
    assert (out / "custom_voice" / "1" / "helper_module.py").is_file()
    assert not (out / "custom_voice" / "1" / "__pycache__").exists()
    assert not (out / "custom_voice" / TEMPLATE_NAME).exists()


def test_default_models_are_those_with_model_code(tmp_path: Path, checkpoints: Path, source: Path) -> None:
    shutil.rmtree(source / "voice_prompt" / "1")
    out = build_model_repository(_settings(tmp_path, checkpoints), tmp_path / "build", source=source)
    engines = [f"{checkpoint}_engine_0" for checkpoint in CHECKPOINTS]
    built = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert built == sorted({*ALL_MODELS, *engines} - {"voice_prompt"})
    with pytest.raises(FileNotFoundError, match="model.py"):
        build_model_repository(
            _settings(tmp_path, checkpoints), tmp_path / "build", ["voice_prompt"], source=source
        )


def test_rebuild_replaces_an_earlier_build_only(tmp_path: Path, checkpoints: Path, source: Path) -> None:
    settings = _settings(tmp_path, checkpoints)
    out = build_model_repository(settings, tmp_path / "build", ["custom_voice"], source=source)
    assert (out / BUILD_MARKER).exists()
    build_model_repository(settings, out, ["voice_design"], source=source)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["voice_design", "voice_design_engine_0"]
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_model_repository(settings, foreign, source=source)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_missing_checkpoint_flavour_is_reported(tmp_path: Path, checkpoints: Path) -> None:
    settings = _settings(tmp_path, checkpoints)
    check_checkpoints(settings, MODELS)
    shutil.rmtree(checkpoints / "voice_design")
    check_checkpoints(settings, ["voice_clone", "voice_prompt", "custom_voice"])
    with pytest.raises(FileNotFoundError, match="voice_design"):
        check_checkpoints(settings, MODELS)


def test_ensure_checkpoint_dir(tmp_path: Path, checkpoints: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ensure_checkpoint_dir(_settings(tmp_path, checkpoints)) == checkpoints
    with pytest.raises(FileNotFoundError):
        ensure_checkpoint_dir(_settings(tmp_path, tmp_path / "nowhere"))
    calls: list[tuple[Path, str]] = []
    fake = types.ModuleType("qwen3_tts_serving.checkpoints")
    fake.ensure_checkpoints = lambda out_dir, preset: calls.append((out_dir, preset))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "qwen3_tts_serving.checkpoints", fake)
    unset = Settings(cache_dir=tmp_path / "cache", checkpoint_dir=None)
    assert ensure_checkpoint_dir(unset) == tmp_path / "cache" / "checkpoints" / "tiny"
    assert calls == [(tmp_path / "cache" / "checkpoints" / "tiny", "tiny")]
