"""The contract module against the model templates: every model's inputs and outputs, types and dims."""

from __future__ import annotations

import re

import numpy as np
import pytest

from qwen3_tts_serving import contract
from qwen3_tts_serving.settings import PROJECT_ROOT

_TENSOR = re.compile(
    r'\{ name: "(?P<name>[a-z_]+)", data_type: (?P<type>TYPE_[A-Z0-9]+), dims: \[ (?P<dims>[-0-9, ]+) \]'
    r"(?P<rest>[^}]*)\}"
)


def _block(text: str, kind: str) -> str:
    match = re.search(rf"^{kind} \[\n(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    assert match, kind
    return match.group(1)


def _tensors(block: str) -> dict[str, tuple[str, list[int], bool]]:
    return {
        m["name"]: (m["type"], [int(d) for d in m["dims"].split(",")], "optional: true" in m["rest"])
        for m in _TENSOR.finditer(block)
    }


def _template(model: str) -> str:
    return (PROJECT_ROOT / "model_repository" / model / "config.pbtxt.template").read_text()


def test_every_model_of_the_repository_is_in_the_contract() -> None:
    served = {p.parent.name for p in (PROJECT_ROOT / "model_repository").glob("*/config.pbtxt.template")}
    assert served == {*contract.MODELS, contract.ENGINE_TEMPLATE}
    assert set(contract.MODEL_CHECKPOINTS) == set(contract.MODELS)


def test_the_engine_template_takes_every_input_and_sends_every_output() -> None:
    """A front forwards a request's inputs unchanged, so the engine must declare all of them (optional, but
    for the request kind), and every output a front relays."""
    text = _template(contract.ENGINE_TEMPLATE)
    declared = _tensors(_block(text, "input"))
    assert set(declared) == set(contract.ENGINE_INPUTS)
    for name, (config_type, dims, optional) in declared.items():
        spec = contract.ENGINE_INPUTS[name]
        assert (config_type, dims) == (spec.config_type, spec.dims), name
        assert optional == (name != "request_kind"), name
    outputs = _tensors(_block(text, "output"))
    assert {name: (t, d) for name, (t, d, _) in outputs.items()} == {
        name: (spec.config_type, spec.dims) for name, spec in contract.ENGINE_OUTPUTS.items()
    }


def test_engine_model_names_name_a_known_checkpoint() -> None:
    assert contract.engine_model_name("base", 1) == "base_engine_1"
    with pytest.raises(ValueError, match="valid: custom_voice, base, voice_design"):
        contract.engine_model_name("../etc", 0)


@pytest.mark.parametrize("model", contract.MODELS)
def test_the_templates_declare_exactly_the_contracts_inputs(model: str) -> None:
    declared = _tensors(_block(_template(model), "input"))
    assert set(declared) == set(contract.MODEL_INPUTS[model])
    for name, (config_type, dims, optional) in declared.items():
        spec = contract.INPUTS[name]
        assert (config_type, dims) == (spec.config_type, spec.dims), name
        assert optional == (name not in contract.REQUIRED_INPUTS[model]), name


@pytest.mark.parametrize("model", contract.MODELS)
def test_the_templates_declare_exactly_the_contracts_outputs(model: str) -> None:
    declared = _tensors(_block(_template(model), "output"))
    expected = contract.MODEL_OUTPUTS[model]
    assert set(declared) == set(expected)
    for name, (config_type, dims, _) in declared.items():
        assert (config_type, dims) == (expected[name].config_type, expected[name].dims), name


def test_request_arrays_have_the_contracts_types_and_a_batch_of_one() -> None:
    arrays = {
        name: (datatype, array)
        for name, datatype, array in contract.request_arrays(
            {
                "text": "héllo",
                "temperature": 0.7,
                "seed": 2**40,
                "do_sample": False,
                "ref_audio": [0.1, 0.2, 0.3],
                "ref_codes": np.zeros((2, 16)),
                "instruct": None,
            }
        )
    }
    assert "instruct" not in arrays
    assert arrays["text"][0] == "BYTES" and arrays["text"][1][0, 0] == "héllo".encode()
    assert arrays["temperature"][1].dtype == np.float32 and arrays["temperature"][1].shape == (1, 1)
    assert arrays["seed"][1].dtype == np.int64 and arrays["seed"][1][0, 0] == 2**40
    assert arrays["ref_audio"][1].shape == (1, 3)
    assert arrays["ref_codes"][1].shape == (1, 2, 16) and arrays["ref_codes"][1].dtype == np.int64
    with pytest.raises(ValueError, match="no input 'voice'.*valid: text"):
        contract.request_arrays({"voice": "x"})


@pytest.mark.filterwarnings("error")
def test_a_number_beyond_float32_becomes_inf_for_the_server_to_refuse_without_a_warning() -> None:
    ((_, _, array),) = contract.request_arrays({"temperature": 1e39})
    assert array.dtype == np.float32 and np.isinf(array[0, 0])


def test_a_chunk_round_trips_through_its_arrays() -> None:
    arrays = contract.chunk_arrays(
        sequence=3, audio=np.ones(5, np.float32), sample_rate=24000, is_last=True, finish_reason="stop"
    )
    chunk = contract.parse_chunk(arrays.get)
    assert (chunk.sequence, chunk.sample_rate, chunk.is_last, chunk.finish_reason) == (3, 24000, True, "stop")
    np.testing.assert_array_equal(chunk.audio, np.ones(5, np.float32))
    del arrays["is_last"]
    with pytest.raises(contract.MissingOutputError, match="is_last"):
        contract.parse_chunk(arrays.get)


@pytest.mark.parametrize(
    ("message", "code", "kind"),
    [
        ("unknown speaker 'x'; valid: ryan", None, contract.ErrorKind.INVALID),
        ("bad", "StatusCode.INVALID_ARGUMENT", contract.ErrorKind.INVALID),
        ("failed to connect to all addresses", "StatusCode.UNAVAILABLE", contract.ErrorKind.CONNECT),
        ("Deadline Exceeded", None, contract.ErrorKind.TIMEOUT),
        ("x", "CANCELLED", contract.ErrorKind.CANCELLED),
        ("Request for unknown model: 'custom_voice' is not found", None, contract.ErrorKind.NOT_FOUND),
        ("the server is out of GPU memory; retry shortly", None, contract.ErrorKind.OUT_OF_MEMORY),
        (
            "the model's queue is full (256 requests waiting); retry shortly",
            None,
            contract.ErrorKind.OVERLOADED,
        ),
        ("the model is shutting down; retry", None, contract.ErrorKind.UNAVAILABLE),
        ("x", "RESOURCE_EXHAUSTED", contract.ErrorKind.UNAVAILABLE),
        (
            "internal error: this request's generation produced non-finite values",
            None,
            contract.ErrorKind.INTERNAL,
        ),
        ("Failed to process the request(s) for model instance", None, contract.ErrorKind.INTERNAL),
        ("weird", "StatusCode.UNKNOWN", contract.ErrorKind.INTERNAL),
    ],
)
def test_errors_are_classified_once_for_every_caller(message: str, code: str | None, kind) -> None:
    assert contract.classify_error(message, code) is kind
