"""The request the engine tests build again and again (a module, not a fixture: parametrize lists and
helpers at module level need it too)."""

from __future__ import annotations

from qwen3_tts_serving.engine.requests import Capability, SynthesisRequest


def custom_voice(text: str, **sampling: object) -> SynthesisRequest:
    """A greedy CustomVoice request in ryan's voice, in English; ``sampling`` adds or overrides values."""
    return SynthesisRequest(
        capability=Capability.CUSTOM_VOICE,
        text=text,
        speaker="ryan",
        language="english",
        sampling={"do_sample": False, **sampling},
    )
