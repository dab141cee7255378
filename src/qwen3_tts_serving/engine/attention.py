"""The pieces of an HF attention ``forward`` we run ourselves around our own K/V buffers.

Used by the static code predictor and the streaming codec decoder: the module's own projections, q/k norms
and rotary function, so the numbers are the module's; only where keys and values live is ours.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

RotaryFunction = Callable[..., tuple[torch.Tensor, torch.Tensor]]

# cuDNN attention plans per key length (2 ms of host time per call, measured on an H200) and is not safe to
# capture: never on a step's path.
_CUDA_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention_backends(device: torch.device) -> AbstractContextManager[Any]:
    """The attention backends the engine's own calls may use on ``device`` (on a CPU every backend is plain
    kernels, nothing is planned: torch chooses)."""
    return sdpa_kernel(_CUDA_ATTENTION) if device.type == "cuda" else nullcontext()


def project_qkv(
    attention: Any, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotate: RotaryFunction
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key, value [B, heads, T, head_dim] of ``hidden`` [B, T, D], rotary embedding applied."""
    batch, length, _ = hidden.shape
    shape = (batch, length, -1, attention.head_dim)
    query = attention.q_norm(attention.q_proj(hidden).view(shape)).transpose(1, 2)
    key = attention.k_norm(attention.k_proj(hidden).view(shape)).transpose(1, 2)
    value = attention.v_proj(hidden).view(shape).transpose(1, 2)
    query, key = rotate(query, key, cos, sin)
    return query, key, value


def attend(
    attention: Any, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, **options: Any
) -> torch.Tensor:
    """Scaled dot-product attention (grouped-query aware) and the output projection: [B, T, D]."""
    batch, _, length, _ = query.shape
    out = F.scaled_dot_product_attention(
        query, keys, values, scale=attention.scaling, enable_gqa=True, **options
    )
    return attention.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
