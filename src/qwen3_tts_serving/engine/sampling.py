"""Batched token sampling where every row keeps its own parameters and its own random stream.

Random numbers come from a counter-based hash of (seed, frame, codebook, token id) rather than a shared
torch generator, so a seeded request samples the same tokens whether it runs alone or in a batch of 64,
and the whole batch is sampled with a handful of tensor ops (Gumbel-max), with no loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

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
            do_sample=torch.tensor(do_sample, dtype=torch.bool, device=device),
            temperature=torch.tensor(temperature, dtype=torch.float32, device=device),
            top_k=torch.tensor(top_k, dtype=torch.long, device=device),
            top_p=torch.tensor(top_p, dtype=torch.float32, device=device),
            seed=torch.tensor(seed, dtype=torch.long, device=device),
        )


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's finaliser on int64 tensors holding 32-bit values (products wrap; we keep low bits)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def uniform_noise(seed: torch.Tensor, step: torch.Tensor, group: int, vocab: int) -> torch.Tensor:
    """Uniform (0, 1) numbers [B, vocab], a pure function of (seed, step, group, token id)."""
    seed32 = (seed ^ (seed >> 32)) & _MASK32
    key = _fmix32((seed32 * 0x9E3779B1 + step * 0x85EBCA77 + group * 0xC2B2AE3D) & _MASK32)
    ids = torch.arange(vocab, device=seed.device, dtype=torch.long)
    bits = _fmix32((key.unsqueeze(1) + ids.unsqueeze(0) * 0x27D4EB2F) & _MASK32)
    bits = _fmix32(bits ^ key.unsqueeze(1))
    return (bits.to(torch.float64) + 0.5) / 4294967296.0


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
    """One token per row: argmax where ``do_sample`` is off, else temperature / top-k / top-p sampling."""
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    if not bool(rows.do_sample.any()):
        return greedy
    scores = logits / rows.temperature.unsqueeze(1)
    scores = _mask_top_k(scores, rows.top_k)
    scores = _mask_top_p(scores, rows.top_p)
    gumbel = -torch.log(-torch.log(uniform_noise(rows.seed, step, group, logits.shape[-1])))
    sampled = (scores.double() + gumbel).argmax(dim=-1)
    return torch.where(rows.do_sample, sampled, greedy)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor, batched with a [B, V] mask of tokens seen so far."""
    penalty = penalty.unsqueeze(1)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)
