"""The valid range of every sampling value a request can carry: one definition for the gateway's schema
(422 naming the range) and the engine's own check (Triton clients bypass the gateway).

Every range is finite: a value that overflows float32 (a temperature of 1e39 becomes inf on the device)
would turn a row's logits into NaN, and one bad row must never reach the batch it would share.
Plain Python, no numpy or torch, so the gateway can import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """``low`` to ``high``, both inclusive. A positive lower bound is a real number, not "greater than 0":
    1e-300 passes "> 0" but is 0 in the float32 the engine computes in."""

    low: float
    high: float
    integer: bool = False
    meaning: str = ""

    def contains(self, value: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} between {_number(self.low)} and {_number(self.high)}"

    def error(self, name: str, value: object) -> str:
        meaning = f" ({self.meaning})" if self.meaning else ""
        return f"{name} must be {self.describe()}{meaning}, got {value!r}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


INT64_MAX = 2**63 - 1

# Names as in the Triton contract and the gateway's JSON bodies.
SAMPLING_RANGES: dict[str, Range] = {
    "temperature": Range(1e-5, 10.0, meaning="greedy decoding is do_sample=false"),
    "top_k": Range(0, 4096, integer=True, meaning="0 disables top-k"),
    "top_p": Range(1e-5, 1.0, meaning="1 disables top-p"),
    "repetition_penalty": Range(0.1, 10.0, meaning="1 disables it"),
    "max_new_tokens": Range(1, 32768, integer=True, meaning="capped by the server's max_new_tokens"),
    "seed": Range(0, INT64_MAX, integer=True),
}

# The sample rates a reference clip may have: the engine's ``ref_sample_rate`` input and any clip the
# gateway decodes. Below it is not speech audio; above it resampling to 24 kHz costs ever more (the
# polyphase filter has 20 taps per Hz of a rate prime to 24 kHz: a 6 MB clip at 1 MHz took 1 GB and
# seconds of CPU).
REF_SAMPLE_RATES = Range(8000, 192_000, integer=True, meaning="Hz")

# The code predictor's own values (not exposed as request inputs) follow the same rules.
SUBTALKER_RANGES: dict[str, Range] = {
    "subtalker_temperature": SAMPLING_RANGES["temperature"],
    "subtalker_top_k": SAMPLING_RANGES["top_k"],
    "subtalker_top_p": SAMPLING_RANGES["top_p"],
}


def check_sampling_value(name: str, value: object) -> str | None:
    """The error message for a value outside its range, or None when it is valid (or has no range)."""
    spec = SAMPLING_RANGES.get(name) or SUBTALKER_RANGES.get(name)
    if spec is None or value is None:
        return None
    if not spec.contains(value):  # type: ignore[arg-type]
        return spec.error(name, value)
    return None
