"""The device step: one frame for every active stream, as one function of static-shape device tensors.

For slots ``[0, batch)`` (a batch-size bucket) and keys ``[0, length)`` (a length bucket) one call runs:
the code predictor's 15 steps for each slot's pending codebook-0 token (the frame's codes), the next
talker input (the frame's summed embedding plus the row's text embedding, which the host put in
``text_input``), the talker step on the slot cache, the codec head, the codebook-0 logits processors
(repetition penalty over a per-slot seen mask, suppressed control codes, end-of-speech held back) and
sampling with per-slot parameters and per-slot counters for the counter-based noise. Everything a frame
changes is advanced in place, for active slots only (``active``): a free slot or a voice-agent session
paused for text inside the range is computed and left as it was.

The outputs (codes, next codebook-0 token, a per-row "bad" flag) land in one report buffer that reaches
the host with one asynchronous copy into pinned memory and an event: no host synchronisation inside the
step. On a GPU each (batch, length) bucket pair is captured once at start-up as a CUDA graph and replayed
per frame; on a CPU (or when capture fails under ``cuda_graphs=auto``) the same function runs eagerly.
Attention runs on backends chosen explicitly (flash, memory-efficient or math), never cuDNN's, which
re-plans for every new key length.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from qwen_tts.core.models.modeling_qwen3_tts import apply_multimodal_rotary_pos_emb

from . import graphs
from .attention import attention_backends, project_qkv
from .code_predictor import CodePredictor, StaticCodePredictor
from .requests import NUM_CODE_GROUPS, SamplingParams
from .sampling import SamplerRows, apply_repetition_penalty, host_facts, sample
from .slot_cache import SlotKVCache
from .transfer import to_device

logger = logging.getLogger(__name__)

# Report columns: the frame's 16 codes, the next codebook-0 token, the row's bad flag.
NEXT_CB0 = NUM_CODE_GROUPS
BAD = NUM_CODE_GROUPS + 1
REPORT_WIDTH = NUM_CODE_GROUPS + 2


def bucket_for(buckets: list[int], needed: int) -> int:
    """The smallest bucket holding ``needed``; ValueError past the largest (callers bound it first)."""
    for bucket in buckets:
        if bucket >= needed:
            return bucket
    raise ValueError(f"{needed} is past the largest bucket {buckets[-1]}")


def _sampler_columns(rows: list[JoinRow], *, prefix: str) -> dict[str, list[Any]]:
    """One sampler's per-slot values for the joining ``rows``: the talker's (``prefix`` "") or the code
    predictor's ("subtalker_") fields of their SamplingParams, and their seeds."""
    columns: dict[str, list[Any]] = {
        name: [getattr(r.sampling, prefix + name) for r in rows]
        for name in ("do_sample", "temperature", "top_k", "top_p")
    }
    return {**columns, "seed": [r.seed for r in rows]}


class _SlotSampling:
    """One sampler's per-slot parameters (set when a stream joins)."""

    def __init__(self, slots: int, device: torch.device) -> None:
        self.do_sample = torch.zeros(slots, dtype=torch.bool, device=device)
        self.temperature = torch.ones(slots, dtype=torch.float32, device=device)
        self.top_k = torch.zeros(slots, dtype=torch.long, device=device)
        self.top_p = torch.ones(slots, dtype=torch.float32, device=device)
        self.seed = torch.zeros(slots, dtype=torch.long, device=device)

    def rows(self, index: slice | torch.Tensor) -> SamplerRows:
        """The rows at ``index``, with the safe host facts (no shortcut: what a captured graph needs)."""
        return SamplerRows(
            do_sample=self.do_sample[index],
            temperature=self.temperature[index],
            top_k=self.top_k[index],
            top_p=self.top_p[index],
            seed=self.seed[index],
        )

    def set(self, index: torch.Tensor, values: dict[str, list[Any]]) -> None:
        for name, column in values.items():
            target = getattr(self, name)
            target.index_copy_(0, index, to_device(column, target.dtype, target.device))


@dataclass
class JoinRow:
    """What the step needs of a stream entering its slot."""

    slot: int
    sampling: SamplingParams
    seed: int
    text_open: bool  # end-of-speech is held back while the stream's text is still arriving


class SlotState:
    """Per-slot device state the step reads and advances; rows are slots."""

    def __init__(self, slots: int, hidden_size: int, vocab: int, dtype: torch.dtype, device: torch.device):
        def flags() -> torch.Tensor:
            return torch.zeros(slots, dtype=torch.bool, device=device)

        def counters() -> torch.Tensor:
            return torch.zeros(slots, dtype=torch.long, device=device)

        self.active = flags()
        self.text_open = flags()
        self.faulted = flags()  # found bad outside a frame (its first token): reported with the next one
        self.poisoned = flags()  # fault injection (tests only)
        self.past_hidden = torch.zeros(slots, 1, hidden_size, dtype=dtype, device=device)
        self.text_input = torch.zeros(slots, hidden_size, dtype=dtype, device=device)
        self.next_cb0 = counters()
        self.drawn = counters()  # codebook-0 tokens sampled: the talker sampler's noise counter
        self.frame_index = counters()  # frames made: the code predictor's noise counter
        self.seen = torch.zeros(slots, vocab, dtype=torch.bool, device=device)
        self.penalty = torch.ones(slots, dtype=torch.float32, device=device)
        self.talker = _SlotSampling(slots, device)
        self.subtalker = _SlotSampling(slots, device)
        self.report = torch.zeros(slots, REPORT_WIDTH, dtype=torch.long, device=device)


@dataclass
class FrameHandle:
    """A launched frame: its rows, the codes on the device (for the decoder) and the host copy's event."""

    batch: int
    length: int
    codes: torch.Tensor  # [batch, 16] on the device, a copy the next frame does not overwrite
    host: torch.Tensor  # [batch, REPORT_WIDTH] the report's host copy (pinned memory on a GPU)
    event: Any = None  # torch.cuda.Event recorded after the copy (GPU)


class FrameStep:
    def __init__(
        self,
        talker: Any,
        cache: SlotKVCache,
        *,
        eos: int,
        batch_buckets: list[int],
        length_buckets: list[int],
        predictor: CodePredictor | None = None,
        fault_injection: bool = False,
    ) -> None:
        self._talker = talker
        self._model = talker.model
        config = self._model.config
        if getattr(config, "sliding_window", None) is not None:
            raise ValueError("the talker step supports full attention only")
        self._layers = list(self._model.layers)
        scaling = config.rope_scaling
        self._rotate = functools.partial(
            apply_multimodal_rotary_pos_emb,
            mrope_section=scaling["mrope_section"],
            mrope_interleaved=scaling["interleaved"],
        )
        self.cache = cache
        self._eos = eos
        self._fault_injection = fault_injection
        weight = talker.codec_head.weight
        self._device = weight.device
        vocab = int(talker.config.vocab_size)
        # Codebook-0 ids above the codebook are control codes; only end-of-speech may be generated.
        self._suppressed = torch.zeros(vocab, dtype=torch.bool, device=self._device)
        self._suppressed[vocab - 1024 :] = True
        self._suppressed[eos] = False
        self.state = SlotState(
            cache.num_slots, int(talker.config.hidden_size), vocab, weight.dtype, self._device
        )
        # The static predictor samples with ``sample``: with the rows' default host facts that is the
        # graph-safe full computation, with an eager step's facts it takes the exact shortcuts.
        self.predictor = predictor or StaticCodePredictor(talker)
        self.batch_buckets = sorted({b for b in batch_buckets if b <= cache.num_slots} | {cache.num_slots})
        self.length_buckets = sorted(
            {n for n in length_buckets if n <= cache.max_length} | {cache.max_length}
        )
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        # Two pinned report buffers, used in turn: frame N's is read while frame N + 1's copy is under way.
        self._host_reports = (
            [torch.zeros(cache.num_slots, REPORT_WIDTH, dtype=torch.long, pin_memory=True) for _ in range(2)]
            if self._device.type == "cuda"
            else []
        )
        self._launches = 0

    @property
    def graphed(self) -> bool:
        return bool(self._graphs)

    # --------------------------------------------------------------------------------------- graphs
    def capture(self) -> None:
        """Capture every (batch, length) bucket pair; call at start-up, while no slot is active (a warm-up
        run then changes nothing but scratch columns of free slots)."""
        # One family (memory pool, capture stream) for all of them: every output is copied into buffers
        # allocated outside the graphs, so nothing a graph allocates is read after its replay, and they
        # never run at once.
        family = graphs.new_family(self._device)
        with torch.inference_mode(), attention_backends(self._device):
            for batch in self.batch_buckets:
                for length in self.length_buckets:
                    run = functools.partial(self._frame, batch, length)
                    self._graphs[(batch, length)], _ = graphs.capture_graph(run, family)
        logger.info(
            "frame step captured as %d CUDA graphs (batch %s x keys %s)",
            len(self._graphs),
            self.batch_buckets,
            self.length_buckets,
        )

    def drop_graphs(self) -> None:
        self._graphs.clear()

    # ---------------------------------------------------------------------------------------- frames
    def launch(self, rows: int, longest: int, sampling: list[SamplingParams] | None = None) -> FrameHandle:
        """Start one frame for slots ``[0, rows)`` whose longest active cache holds ``longest`` columns.
        ``sampling``: the active streams' parameters, for the exact shortcuts an eager step may take
        (argmax only when none samples, top-k candidates only); a captured graph has all cases inside."""
        batch = bucket_for(self.batch_buckets, rows)
        # + the column this frame writes; a full slot (its stream ends with this frame's predecessor)
        # writes its last column again, harmlessly.
        length = bucket_for(self.length_buckets, min(longest + 1, self.cache.max_length))
        graph = self._graphs.get((batch, length))
        if graph is not None:
            graph.replay()
        else:
            facts = None if sampling is None else _facts(sampling)
            with attention_backends(self._device):
                self._frame(batch, length, facts)
        report = self.state.report[:batch]
        codes = report[:, :NUM_CODE_GROUPS].clone()  # the next frame overwrites the report
        self._launches += 1
        if not self._host_reports:
            return FrameHandle(batch=batch, length=length, codes=codes, host=report.clone())
        host = self._host_reports[self._launches % 2][:batch]
        host.copy_(report, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self._device))
        return FrameHandle(batch=batch, length=length, codes=codes, host=host, event=event)

    def collect(self, handle: FrameHandle) -> list[list[int]]:
        """The launched frame's report rows on the host (waits for that frame only). Collect a frame
        before launching the one after next: the pinned buffers are used in turn."""
        if handle.event is not None:
            handle.event.synchronize()
        return handle.host.tolist()

    def _frame(
        self, batch: int, length: int, facts: tuple[dict[str, Any], dict[str, Any]] | None = None
    ) -> None:
        state = self.state
        active = state.active[:batch]
        advance = active.long()
        talker_rows, subtalker_rows = (
            state.talker.rows(slice(0, batch)),
            state.subtalker.rows(slice(0, batch)),
        )
        if facts is not None:
            talker_rows, subtalker_rows = (
                replace(talker_rows, **facts[0]),
                replace(subtalker_rows, **facts[1]),
            )
        codes = self.predictor.predict(
            state.past_hidden[:batch], state.next_cb0[:batch], subtalker_rows, state.frame_index[:batch]
        )
        inputs = self.frame_embeddings(codes) + state.text_input[:batch].unsqueeze(1)
        hidden = self._talker_step(inputs, batch, length)
        self.cache.lengths[:batch].add_(advance)
        self.cache.positions[:batch].add_(advance)
        logits = self._talker.codec_head(hidden[:, -1])
        if self._fault_injection:
            logits = logits.masked_fill(state.poisoned[:batch].unsqueeze(1), float("nan"))
        bad = ~torch.isfinite(logits).all(dim=-1) | state.faulted[:batch]
        tokens = self._choose_cb0(
            logits,
            state.seen[:batch],
            state.penalty[:batch],
            state.drawn[:batch],
            state.text_open[:batch],
            talker_rows,
        )
        seen = state.seen[:batch]
        chosen = tokens.unsqueeze(1)
        seen.scatter_(1, chosen, seen.gather(1, chosen) | active.unsqueeze(1))
        state.next_cb0[:batch].copy_(torch.where(active, tokens, state.next_cb0[:batch]))
        past = state.past_hidden[:batch]
        past.copy_(torch.where(active.view(-1, 1, 1), hidden, past))
        state.drawn[:batch].add_(advance)
        state.frame_index[:batch].add_(advance)
        report = state.report[:batch]
        report[:, :NUM_CODE_GROUPS].copy_(codes)
        report[:, NEXT_CB0].copy_(tokens)
        report[:, BAD].copy_(bad.long())

    def frame_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        """The talker input of a frame [B, 1, D]: its 16 code embeddings, summed the way the package sums
        them (concatenate, then sum) so greedy output matches it."""
        embeddings = self._talker.code_predictor.get_input_embeddings()
        parts = [self._talker.get_input_embeddings()(codes[:, :1])]
        parts += [embeddings[i](codes[:, i + 1 : i + 2]) for i in range(NUM_CODE_GROUPS - 1)]
        return torch.cat(parts, dim=1).sum(1, keepdim=True)

    def _talker_step(self, inputs: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """The talker's layers for one token per slot: the new key/value written at column
        ``lengths[slot]`` of each slot, attention over the slot's columns up to and including it."""
        cache = self.cache
        columns = cache.lengths[:batch].clamp(max=cache.max_length - 1)
        # The three rotary sections (time, height, width) share the text position of a speech frame.
        position_ids = cache.positions[:batch].view(1, -1, 1).expand(3, -1, -1)
        cos, sin = self._model.rotary_emb(inputs, position_ids)
        visible = torch.arange(length, device=inputs.device).unsqueeze(0) <= columns.unsqueeze(1)
        visible = visible[:, None, None, :]  # [B, 1, 1, L]
        keys0 = cache.keys[0]
        write_at = columns.view(-1, 1, 1, 1).expand(-1, keys0.shape[1], 1, keys0.shape[3])
        hidden = inputs
        for index, layer in enumerate(self._layers):
            attention = layer.self_attn
            query, key, value = project_qkv(attention, layer.input_layernorm(hidden), cos, sin, self._rotate)
            keys, values = cache.keys[index][:batch], cache.values[index][:batch]
            keys.scatter_(2, write_at, key.to(keys.dtype))
            values.scatter_(2, write_at, value.to(values.dtype))
            hidden = hidden + _attend_grouped(
                attention, query, keys[:, :, :length], values[:, :, :length], visible
            )
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self._model.norm(hidden)

    def _choose_cb0(
        self,
        logits: torch.Tensor,
        seen: torch.Tensor,
        penalty: torch.Tensor,
        drawn: torch.Tensor,
        text_open: torch.Tensor,
        rows: SamplerRows,
    ) -> torch.Tensor:
        """The talker's logits processors (as the package configures transformers' generate), then one
        token per row. End-of-speech is held back for the first two tokens (as the package does) and while
        a session's text is still arriving: the talker cannot have finished a sentence it has not seen."""
        scores = apply_repetition_penalty(logits.float(), seen, penalty)
        scores = scores.masked_fill(self._suppressed, float("-inf"))
        held = (drawn < 2) | text_open
        scores[:, self._eos] = scores[:, self._eos].masked_fill(held, float("-inf"))
        return sample(scores, rows, drawn, 0)

    # --------------------------------------------------------------------------------------- slots
    def join(self, rows: list[JoinRow], hidden: torch.Tensor) -> None:
        """Streams enter their slots (their prefill already in the cache): parameters and counters set,
        the first codebook-0 token sampled from the prefill's last hidden state ``hidden`` [n, 1, D]."""
        state = self.state
        index = to_device([row.slot for row in rows], torch.long, self._device)
        state.talker.set(index, _sampler_columns(rows, prefix=""))
        state.subtalker.set(index, _sampler_columns(rows, prefix="subtalker_"))
        penalty = [r.sampling.repetition_penalty for r in rows]
        state.penalty.index_copy_(0, index, to_device(penalty, state.penalty.dtype, self._device))
        text_open = [r.text_open for r in rows]
        state.text_open.index_copy_(0, index, to_device(text_open, torch.bool, self._device))
        for flags in (state.faulted, state.poisoned, state.seen):
            flags.index_fill_(0, index, False)
        for counter in (state.drawn, state.frame_index):
            counter.index_fill_(0, index, 0)
        hidden = hidden.to(state.past_hidden.dtype)
        state.past_hidden.index_copy_(0, index, hidden)
        logits = self._talker.codec_head(hidden[:, -1])
        tokens = self._choose_cb0(
            logits,
            state.seen.index_select(0, index),
            state.penalty.index_select(0, index),
            state.drawn.index_select(0, index),
            state.text_open.index_select(0, index),
            state.talker.rows(index),
        )
        state.seen.index_put_((index, tokens), torch.ones((), dtype=torch.bool, device=self._device))
        state.next_cb0.index_copy_(0, index, tokens)
        state.drawn.index_fill_(0, index, 1)
        state.faulted.index_copy_(0, index, ~torch.isfinite(logits).all(dim=-1))
        state.active.index_fill_(0, index, True)

    def set_active(self, slot: int, active: bool) -> None:
        self.state.active[slot].fill_(active)  # fill_ on a view: a kernel, never a copy from the host

    def close_text(self, slot: int) -> None:
        """The stream's text is complete: end-of-speech may be sampled from now on."""
        self.state.text_open[slot].fill_(False)

    def poison(self, slot: int) -> None:
        """Tests only (``fault_injection``): the slot's logits turn non-finite from the next frame."""
        self.state.poisoned[slot].fill_(True)

    def set_text_inputs(self, embeddings: list[torch.Tensor]) -> None:
        """The text embedding each of slots ``[0, len(embeddings))`` adds to its next talker input."""
        if embeddings:
            self.state.text_input[: len(embeddings)].copy_(torch.stack(embeddings))

    def release(self, slot: int, *, scrub: bool = False) -> None:
        """The slot's stream left; ``scrub`` (a row that went bad) also clears what could keep a free
        slot's ignored computation non-finite."""
        self.state.active[slot].fill_(False)
        if scrub:
            self.state.past_hidden[slot].zero_()
            self.state.text_input[slot].zero_()
        self.cache.release(slot, scrub=scrub)

    def release_all(self) -> None:
        self.state.active.fill_(False)
        self.state.past_hidden.zero_()
        self.cache.release_all()


def _facts(sampling: list[SamplingParams]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Host facts of the talker's and the code predictor's sampler for streams with these parameters."""
    talker = host_facts(
        [p.do_sample for p in sampling], [p.top_k for p in sampling], [p.top_p for p in sampling]
    )
    subtalker = host_facts(
        [p.subtalker_do_sample for p in sampling],
        [p.subtalker_top_k for p in sampling],
        [p.subtalker_top_p for p in sampling],
    )
    return talker, subtalker


def _attend_grouped(
    attention: Any, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor
) -> torch.Tensor:
    """One query token per row against its slot's keys, grouped-query attention as plain attention: the
    query heads sharing a key/value head become that head's query rows ([B, kv_heads, group, head_dim]),
    which every backend takes with a mask (no ``enable_gqa``, no repeated keys)."""
    batch, heads, _, head_dim = query.shape
    kv_heads = keys.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=visible, scale=attention.scaling)
    return attention.o_proj(out.reshape(batch, 1, heads * head_dim))
