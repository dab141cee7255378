"""Streaming decoding: chunks decoded once each, with carried state, join into the whole decode."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from graph_rehearsal import rehearsed_graphs, replays
from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2DecoderConfig
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Decoder

from qwen3_tts_serving.checkpoints.weights import init_random
from qwen3_tts_serving.engine.requests import Capability
from qwen3_tts_serving.engine.streaming_decoder import StreamingDecoder

ATOL = 1e-4  # float rounding: the chunks run the same arithmetic in a different order


def _codes(frames: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2048, (frames, 16), generator=torch.Generator().manual_seed(seed))


def _whole(decoder: torch.nn.Module, codes: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return decoder(codes.T.unsqueeze(0))[0, 0].numpy()


def _stream(
    streaming: StreamingDecoder, codes: list[torch.Tensor], plans: list[list[int]]
) -> list[np.ndarray]:
    """Feed each row its chunks (sizes from ``plans``); rows whose chunks coincide share calls."""
    states = [streaming.new_state() for _ in codes]
    done = [0] * len(codes)
    audio: list[list[np.ndarray]] = [[] for _ in codes]
    for step in range(max(len(plan) for plan in plans)):
        rows = [row for row, plan in enumerate(plans) if step < len(plan)]
        items = [(states[r], codes[r][done[r] : done[r] + plans[r][step]], plans[r][step]) for r in rows]
        for row, chunk in zip(rows, streaming.decode(items), strict=True):
            audio[row].append(chunk)
            done[row] += plans[row][step]
    return [np.concatenate(parts) for parts in audio]


def _shim(decoder: torch.nn.Module) -> SimpleNamespace:
    """What StreamingDecoder reads of a speech tokenizer, around a stand-alone decoder."""
    model = SimpleNamespace(
        decoder=decoder, get_decode_upsample_rate=lambda: 1920, get_output_sample_rate=lambda: 24000
    )
    return SimpleNamespace(model=model)


def test_chunks_of_any_size_in_shared_calls_equal_the_whole_decode(load_tts):
    # Longer than the transformer's 72-frame window, rows at different positions sharing calls.
    tokenizer = load_tts(Capability.CUSTOM_VOICE).model.speech_tokenizer
    codes = [_codes(150, seed) for seed in range(3)]
    plans = [[2, 4, 4, 4, 60, 76], [2, 4, 4, 7, 1, 100, 32], [3, 1, 4, 4, 4, 4, 4, 4, 4, 4, 114]]
    streamed = _stream(StreamingDecoder(tokenizer, 72), codes, plans)
    for row, code in enumerate(codes):
        whole = _whole(tokenizer.model.decoder, code)
        assert streamed[row].shape == whole.shape
        np.testing.assert_allclose(streamed[row], whole, atol=ATOL)


@pytest.fixture(scope="module")
def deep_decoder(checkpoint_root) -> torch.nn.Module:
    """Two transformer layers, grouped-query attention and a 5-frame window: every cache path matters."""
    config = json.loads((checkpoint_root / "custom_voice/speech_tokenizer/config.json").read_text())
    values = config["decoder_config"] | {
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "sliding_window": 5,
        "layer_scale_initial_scale": 1.0,  # the transformer's share of the output is not negligible
    }
    decoder = Qwen3TTSTokenizerV2Decoder(Qwen3TTSTokenizerV2DecoderConfig(**values)).eval()
    generator = torch.Generator().manual_seed(5)
    init_random(decoder, generator, embedding_std=1.0)
    with torch.no_grad():
        for rvq in (decoder.quantizer.rvq_first, decoder.quantizer.rvq_rest):
            for layer in rvq.vq.layers:
                layer._codebook.embedding_sum.normal_(0.0, 1.0, generator=generator)
        # Random stacks blow up: scale every layer's input to O(1) so the output stays inside the final
        # clamp (where a wrong sample could hide) and float rounding stays small.
        _normalise_activations(decoder)
    return decoder


def _normalise_activations(decoder: torch.nn.Module) -> None:
    """Rescale each convolution so its output has unit RMS on random codes (last one: 0.1)."""
    convs = [m for m in decoder.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.ConvTranspose1d)]
    codes = _codes(40, 99).T.unsqueeze(0)
    for index, conv in enumerate(convs):
        seen: list[torch.Tensor] = []
        handle = conv.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        decoder(codes)
        handle.remove()
        if seen:  # the quantizer's input projection only runs when encoding
            target = 0.1 if index == len(convs) - 1 else 1.0
            conv.weight.mul_(target / float(seen[0].pow(2).mean().sqrt()))


def test_a_deep_decoder_with_a_short_window_streams_exactly(deep_decoder):
    codes = [_codes(40, 10), _codes(40, 11)]
    streamed = _stream(StreamingDecoder(_shim(deep_decoder), 0), codes, [[1] * 8 + [4] * 8, [2, 3] * 8])
    for row, code in enumerate(codes):
        whole = _whole(deep_decoder, code)
        assert np.abs(whole).max() < 0.99  # not clamped: a wrong cache would show
        np.testing.assert_allclose(streamed[row], whole, atol=ATOL)


def test_the_transformer_state_is_what_makes_it_exact(deep_decoder):
    # The same chunks without the cached keys/values (a fresh state per chunk) differ: the test above
    # is not passing on the convolutions alone.
    code = _codes(20, 12)
    streaming = StreamingDecoder(_shim(deep_decoder), 0)
    state = streaming.new_state()
    first = streaming.decode([(state, code[:10], 10)])[0]
    fresh = streaming.new_state()
    fresh.conv_history = state.conv_history
    fresh.frames = state.frames
    amnesic = streaming.decode([(fresh, code[10:], 10)])[0]
    whole = _whole(deep_decoder, code)
    np.testing.assert_allclose(first, whole[: first.size], atol=ATOL)
    assert np.abs(amnesic - whole[first.size :]).max() > 1e-3


def test_reference_codes_prime_the_state_like_a_whole_decode_of_both(load_tts):
    tokenizer = load_tts(Capability.CUSTOM_VOICE).model.speech_tokenizer
    reference, generated = _codes(30, 20), _codes(12, 21)
    streaming = StreamingDecoder(tokenizer, 72)
    stream = SimpleNamespace(
        frames=list(generated),
        frame_count=12,
        emitted_frames=0,
        context_codes=reference,
        decoder_state=None,
        request=SimpleNamespace(ref_codes=None),
    )
    (audio,) = streaming.decode_streams([stream])  # type: ignore[list-item]
    whole = _whole(tokenizer.model.decoder, torch.cat([reference, generated]))
    np.testing.assert_allclose(audio, whole[-audio.size :], atol=ATOL)
    assert audio.size == 12 * 1920


def test_a_reference_used_again_starts_from_the_cached_priming(load_tts):
    tokenizer = load_tts(Capability.CUSTOM_VOICE).model.speech_tokenizer
    reference, other = _codes(30, 30), _codes(30, 31)
    streaming = StreamingDecoder(tokenizer, 72, primed_cache_size=1)
    calls: list[int] = []
    decode_batch = streaming._decode_batch

    def counting(states, codes):
        calls.append(codes.shape[1])
        return decode_batch(states, codes)

    streaming._decode_batch = counting  # type: ignore[method-assign]

    def speak(context: torch.Tensor, seed: int, *, host: bool = False) -> np.ndarray:
        """``host``: the request brought its codes (a voice prompt), the cache key is taken from them."""
        generated = _codes(6, seed)
        stream = SimpleNamespace(
            frames=list(generated),
            frame_count=6,
            emitted_frames=0,
            context_codes=context,
            decoder_state=None,
            request=SimpleNamespace(ref_codes=context.numpy().copy() if host else None),
        )
        (audio,) = streaming.decode_streams([stream])  # type: ignore[list-item]
        whole = _whole(tokenizer.model.decoder, torch.cat([context, generated]))
        np.testing.assert_allclose(audio, whole[-audio.size :], atol=ATOL)
        return audio

    speak(reference, 1)
    assert calls == [30, 6]  # primed once, then the new frames
    speak(reference, 2, host=True)  # the same voice again, keyed by host codes: only its own frames
    assert calls == [30, 6, 6]
    speak(other, 3)  # another voice evicts the first (one entry)
    speak(reference, 4)
    assert calls == [30, 6, 6, 30, 6, 30, 6]


def test_captured_calls_with_padded_and_split_batches_stream_exactly(deep_decoder):
    """The captured path's bookkeeping, on the CPU: rows copied into static buffers of a larger bucket
    (the rows past them hold an earlier call's values), more rows than the largest bucket split over calls,
    and chunk lengths without a graph run eagerly; every row still equals its whole decode."""
    streaming = StreamingDecoder(_shim(deep_decoder), 0)
    with rehearsed_graphs():
        streaming.capture([1, 2, 4], [1, 2, 4])
    graphs = streaming._graphs  # (batch bucket, chunk frames) -> its rehearsed graph
    assert streaming.graphed and len(graphs) == 9
    rows_per_call: list[int] = []
    call = streaming._call

    def counting(codes, *args):
        rows_per_call.append(codes.shape[0])
        return call(codes, *args)

    streaming._call = counting  # type: ignore[method-assign]  # eager calls and replays alike
    codes = [_codes(40, 40 + row) for row in range(6)]
    plans = [[1, 1, 2, 4, 4, 4, 3]] * 4 + [[1, 2, 3, 1, 4, 4, 4], [2, 2, 2, 2, 2, 2, 2, 1]]
    streamed = _stream(streaming, codes, plans)
    for row, code in enumerate(codes):
        whole = _whole(deep_decoder, code[: sum(plans[row])])
        np.testing.assert_allclose(streamed[row], whole, atol=ATOL)
    # Five rows of one frame: a full bucket of 4, then one; the chunks of 3 frames had no graph.
    assert 0 < replays(graphs) < len(rows_per_call), "no graph replayed, or no call ran eagerly"
    assert max(rows_per_call) <= 4
    replayed = {shape: graph.replays for shape, graph in graphs.items()}
    assert replayed[(4, 1)] >= 1 and replayed[(1, 1)] >= 1 and replayed[(4, 4)] >= 1
