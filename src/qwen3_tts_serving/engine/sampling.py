"""Batched token sampling where every row keeps its own parameters and its own random stream.

Random numbers come from a counter-based hash of (seed, frame, codebook, token id) rather than a shared
torch generator, so a seeded request samples the same tokens whether it runs alone or in a batch of 64,
and the whole batch is sampled with a handful of tensor ops (Gumbel-max), with no loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

_MASK32 = 0xFFFFFFFF


@dataclass
class SamplerRows:
    """Per-row sampling parameters, aligned with the rows of the batch."""

    do_sample: torch.Tensor  # bool [B]
    temperature: torch.Tensor  # float [B]
    top_k: torch.Tensor  # long [B], 0 = off
    top_p: torch.Tensor  # float [B], 1 = off
    seed: torch.Tensor  # long [B]
    # Host-side facts, known when the rows are built, so the eager sampler can take shortcuts without
    # reading tensors back from the device.
    any_sample: bool = True
    candidates: int | None = None  # the largest top_k among sampling rows; None: one of them has it off
    same_top_k: bool = False  # every sampling row has the same top_k: the candidates are exactly the top-k
    any_top_p: bool = True  # some sampling row has top_p < 1

    @classmethod
    def build(
        cls,
        *,
        do_sample: list[bool],
        temperature: list[float],
        top_k: list[int],
        top_p: list[float],
        seed: list[int],
        device: torch.device,
    ) -> SamplerRows:
        return cls(
            **host_facts(do_sample, top_k, top_p),
            do_sample=torch.tensor(do_sample, dtype=torch.bool, device=device),
            temperature=torch.tensor(temperature, dtype=torch.float32, device=device),
            top_k=torch.tensor(top_k, dtype=torch.long, device=device),
            top_p=torch.tensor(top_p, dtype=torch.float32, device=device),
            seed=torch.tensor(seed, dtype=torch.long, device=device),
        )


def host_facts(do_sample: list[bool], top_k: list[int], top_p: list[float]) -> dict[str, Any]:
    """The host-side shortcut facts of ``SamplerRows`` for rows with these parameters."""
    sampling_top_k = [k for k, on in zip(top_k, do_sample, strict=True) if on]
    return {
        "any_sample": bool(sampling_top_k),
        "candidates": max(sampling_top_k) if sampling_top_k and min(sampling_top_k) > 0 else None,
        "same_top_k": len(set(sampling_top_k)) == 1,
        "any_top_p": any(p < 1 for p, on in zip(top_p, do_sample, strict=True) if on),
    }


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's finaliser on int64 tensors holding 32-bit values (products wrap; we keep low bits)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def uniform_noise_at(seed: torch.Tensor, step: torch.Tensor, group: int, ids: torch.Tensor) -> torch.Tensor:
    """Uniform (0, 1) numbers for token ``ids`` ([B, N] or [1, N]), a pure function of (seed, step, group,
    token id): the number a token gets does not depend on which other tokens are drawn for."""
    seed32 = (seed ^ (seed >> 32)) & _MASK32
    key = _fmix32((seed32 * 0x9E3779B1 + step * 0x85EBCA77 + group * 0xC2B2AE3D) & _MASK32).unsqueeze(1)
    bits = _fmix32((key + ids * 0x27D4EB2F) & _MASK32)
    bits = _fmix32(bits ^ key)
    return (bits.to(torch.float64) + 0.5) / 4294967296.0


def uniform_noise(seed: torch.Tensor, step: torch.Tensor, group: int, vocab: int) -> torch.Tensor:
    """``uniform_noise_at`` for every token id: [B, vocab]."""
    ids = torch.arange(vocab, device=seed.device, dtype=torch.long).unsqueeze(0)
    return uniform_noise_at(seed, step, group, ids)


def _gumbel(uniform: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(uniform))


def _mask_top_k(scores: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    vocab = scores.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), torch.full_like(top_k, vocab))
    sorted_scores = scores.sort(dim=-1, descending=True).values
    kth = sorted_scores.gather(1, (k - 1).unsqueeze(1))
    return scores.masked_fill(scores < kth, float("-inf"))


def _mask_top_p(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    # Same rule as transformers' TopPLogitsWarper: drop the low tail whose mass is <= 1 - top_p,
    # always keeping the most likely token.
    sorted_scores, order = scores.sort(dim=-1, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p).unsqueeze(1)
    remove_sorted[:, -1] = False
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return scores.masked_fill(remove & (top_p < 1).unsqueeze(1), float("-inf"))


def sample(logits: torch.Tensor, rows: SamplerRows, step: torch.Tensor, group: int) -> torch.Tensor:
    """One token per row: argmax where ``do_sample`` is off, else temperature / top-k / top-p sampling.

    Takes the cheapest exact route the host-side facts allow: argmax alone when no row samples, and only
    the top-k candidates when every sampling row has a top-k (the usual case: 50 of 2,048 codes)."""
    if not rows.any_sample:
        return logits.float().argmax(dim=-1)
    if rows.candidates is not None and rows.candidates < logits.shape[-1]:
        return _sample_candidates(logits, rows, step, group, rows.candidates)
    return sample_tokens(logits, rows, step, group)


def _scaled(logits: torch.Tensor, rows: SamplerRows) -> torch.Tensor:
    # Greedy rows may carry any temperature (even 0); they take the argmax, so divide them by 1.
    temperature = torch.where(rows.do_sample, rows.temperature, torch.ones_like(rows.temperature))
    return logits / temperature.unsqueeze(1)


def sample_tokens(logits: torch.Tensor, rows: SamplerRows, step: torch.Tensor, group: int) -> torch.Tensor:
    """``sample`` over the whole vocabulary, without data-dependent control flow or host syncs (what a
    CUDA graph can capture)."""
    logits = logits.float()
    scores = _mask_top_p(_mask_top_k(_scaled(logits, rows), rows.top_k), rows.top_p)
    gumbel = _gumbel(uniform_noise(rows.seed, step, group, logits.shape[-1]))
    sampled = (scores.double() + gumbel).argmax(dim=-1)
    return torch.where(rows.do_sample, sampled, logits.argmax(dim=-1))


def _sample_candidates(
    logits: torch.Tensor, rows: SamplerRows, step: torch.Tensor, group: int, candidates: int
) -> torch.Tensor:
    """``sample_tokens`` restricted to each row's ``candidates`` best tokens: the tokens top-k would keep
    are among them, and every kept token gets the same score and noise as in the full computation."""
    logits = logits.float()
    scores, ids = _scaled(logits, rows).topk(candidates, dim=-1)
    # Masks that cannot remove anything are skipped (host-side facts): with one top_k for every sampling
    # row the candidates are its top-k, and top_p = 1 keeps everything.
    if not rows.same_top_k:
        scores = _mask_top_k(scores, rows.top_k)
    if rows.any_top_p:
        scores = _mask_top_p(scores, rows.top_p)
    gumbel = _gumbel(uniform_noise_at(rows.seed, step, group, ids))
    sampled = ids.gather(1, (scores.double() + gumbel).argmax(dim=-1, keepdim=True)).squeeze(1)
    return torch.where(rows.do_sample, sampled, logits.argmax(dim=-1))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor, batched with a [B, V] mask of tokens seen so far."""
    penalty = penalty.unsqueeze(1)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)
