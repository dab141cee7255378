"""A stand-in for ``triton_python_backend_utils``, which exists only inside Triton's Python stub, for the unit
tests of the code that runs there (the engine models' adapter, the fronts). Same names and call shapes as
the real module, for what that code uses."""

from __future__ import annotations

import types
from typing import Any

import numpy as np

FINAL = 1


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonError:
    INVALID_ARG, UNAVAILABLE, INTERNAL, NOT_FOUND, CANCELLED = (
        "INVALID_ARG", "UNAVAILABLE", "INTERNAL", "NOT_FOUND", "CANCELLED"
    )  # fmt: skip

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> str:
        return self._code


class Response:
    def __init__(self, output_tensors: Any = None, error: Any = None) -> None:
        self._tensors, self._error = list(output_tensors or []), error

    def output_tensors(self) -> list[Tensor]:
        return self._tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> Any:
        return self._error

    def output(self, name: str) -> np.ndarray | None:
        """Not in the real API: the test's way to read one output."""
        return next((t.as_numpy() for t in self._tensors if t.name() == name), None)


def module(**extra: Any) -> types.ModuleType:
    """The stand-in module; ``extra`` adds names (e.g. a scripted ``InferenceRequest``)."""
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = Tensor
    fake.TritonError = TritonError
    fake.TritonModelException = type("TritonModelException", (Exception,), {})
    fake.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    fake.InferenceResponse = Response
    fake.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    fake.using_decoupled_model_transaction_policy = lambda config: True
    for name, value in extra.items():
        setattr(fake, name, value)
    return fake
