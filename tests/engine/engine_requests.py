"""What the engine tests do again and again: the request they build, running requests to the end, a
package that refuses some texts, a talker forced to one code (a module, not fixtures: parametrize lists
and module-level helpers need them too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from qwen3_tts_serving.engine.requests import Capability, SynthesisRequest
from qwen3_tts_serving.engine.streams import CollectingSink


def custom_voice(text: str, **sampling: object) -> SynthesisRequest:
    """A greedy CustomVoice request in ryan's voice, in English; ``sampling`` adds or overrides values."""
    return SynthesisRequest(
        capability=Capability.CUSTOM_VOICE,
        text=text,
        speaker="ryan",
        language="english",
        sampling={"do_sample": False, **sampling},
    )


def run_to_end(
    engine: Any, requests: list[SynthesisRequest], *, errors: bool = False
) -> list[CollectingSink]:
    """Submit ``requests`` together and step until the engine is idle; every stream must end without an
    error unless ``errors``."""
    sinks = [CollectingSink() for _ in requests]
    engine.submit([engine.make_stream(engine.validate(r), s) for r, s in zip(requests, sinks, strict=True)])
    engine.run_until_idle()
    for sink in sinks:
        assert errors or sink.error is None, sink.error
    return sinks


def refusing(build: Callable[..., Any], marker: str) -> Callable[..., Any]:
    """``PromptBuilder.build`` that raises ValueError, as the package does, for a group holding ``marker``."""

    def build_unless_marked(requests: list[SynthesisRequest], items: Any = None) -> Any:
        if any(marker in r.text for r in requests):
            raise ValueError("the package refused this text")
        return build(requests, items)

    return build_unless_marked


@contextmanager
def forced_codebook0(tts: Any, favourite: int) -> Iterator[None]:
    """The talker always prefers one codebook-0 id (end-of-speech, or a code it then loops on); restored
    after. Build the engine inside: a captured graph keeps the head it was captured with, as on a GPU."""
    talker = tts.model.talker
    original = talker.codec_head
    forced = torch.nn.Linear(original.in_features, original.out_features, bias=True)
    with torch.no_grad():
        forced.weight.copy_(original.weight)
        forced.bias.zero_()
        forced.bias[favourite] = 1e4
    talker.codec_head = forced
    try:
        yield
    finally:
        talker.codec_head = original
