"""Seeded random weights for the TTS model and its 12 Hz speech tokenizer.

Initialisation (same rule for every preset, so tiny and full models behave alike):
- every Linear / Conv weight ~ N(0, gain^2 / fan_in), biases 0: activations keep an O(1) scale at any width
  (for a 2048-wide layer this is the usual std 0.02);
- codec embeddings N(0, 0.25^2): the talker input sums 16 of them, giving O(1) per dimension; text
  embeddings N(0, 1);
- codebooks (decoder ``embedding_sum``, Mimi ``embed_sum``) are zero in a fresh module, which would make
  every code decode to the same vector and every encoding yield code 0: they get seeded noise;
- the decoder's last convolution is rescaled so decoded random codes have an RMS of about 0.1 (random
  convolution stacks otherwise saturate the final clamp to +-1).

Stopping ("EOS clock"): random weights either emit EOS at once or never. Instead the talker gets a small
hand-wired circuit, the same for every seed and size, so that codebook-0 EOS wins once
``generated frames >= frames_per_text_token (1.25) * text tokens``. Text tokens are every text token of
the prompt and of the trailing text: the 3 role tokens, the text, a clone's reference text and a design
instruction (with its role tokens). Greedy and sampled decoding both stop within a frame or two of that
point; a text of T tokens gives about 1.25 * (T + 3) frames (e.g. "Hello world." -> 15 frames).
- four residual dimensions are reserved and no random weight writes into them: CODEC (a marker on every
  generated speech frame), TEXT (a marker on every text token except tts_pad/bos/eos), CLOCK and LEVEL;
- LEVEL holds a large constant at every input position, so every RMSNorm divides by nearly the same value
  (the norms weight LEVEL 0 and scale the other dimensions back up): the markers read in layer 0 do not
  depend on what else a position holds;
- in layer 0 the query heads of key/value group 0 get zero queries, so they average uniformly over the
  causal past; their values read CODEC and TEXT and ``o_proj`` writes ``mean(CODEC) - r * mean(TEXT)``
  into CLOCK, which only changes sign when frames = r * text tokens;
- ``codec_head``'s EOS row reads only CLOCK with a large gain; the final norm's CLOCK weight is calibrated
  with a forward pass so the EOS logit climbs 10 or more per frame near the crossing at any depth;
- codebook 0 is split: the speech tokenizer's encoder only emits ids below 1024 and the talker only
  generates ids from 1024 to 2047, so a voice-clone reference's frames are not counted as spoken;
- streaming-text mode feeds one text token per frame, so the text count grows with the frames until the
  text ends; ``r >= 1`` keeps it from stopping mid-text.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from qwen3_tts_serving.checkpoints.presets import CheckpointConfigs

logger = logging.getLogger(__name__)

REGULAR_CODES = 2048  # codebook-0 ids below this are audio codes; above are control / speaker / language ids
# Codebook 0 is split: the encoder (voice-clone references) emits ids below this, the talker ids above.
SPEECH_CODES_START = 1024
SUPPRESS_LOGIT = 200.0
# Entries of the encoder's codebook 0 that must never be nearest get this offset in every dimension.
FAR_AWAY = 1.0e3
CODEC_EMBED_STD = 0.25
TEXT_EMBED_STD = 1.0
AUDIO_TARGET_RMS = 0.1
DECODER_CODEBOOK_STD = 1.0
# Small relative to the encoder's latents: the nearest entry is then decided by direction, not norm, so
# encoding spreads over many codes at every residual stage.
ENCODER_CODEBOOK_STD = 0.01


@dataclass(frozen=True)
class EosClock:
    """Gains of the hand-wired stopping circuit (see the module docstring)."""

    frames_per_text_token: float = 1.25  # must be >= 1 for streaming-text mode
    marker: float = 1.0  # value of the CODEC / TEXT markers in the residual stream
    level: float = 3.0  # LEVEL's share of the input RMS, in units of the other dimensions' RMS (~1)
    clock_gain: float = 1.0
    eos_gain: float = 6000.0  # EOS logit slope near the crossing ~ eos_gain * marker / (level^2 * positions)


def derive_seed(seed: int, component: str) -> int:
    """Independent, stable seed per component (torch's generator takes 64-bit ints)."""
    digest = hashlib.sha256(f"{seed}:{component}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def check_device(device: str | torch.device) -> torch.device:
    """The device to build on: ``cpu``, ``cuda`` or ``cuda:N``, and present on this machine."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r}; valid: cpu, cuda, cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: no CUDA device is available here; use cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}; valid: cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device``: weights are drawn where they live (a CPU draw of a 1.7B model takes
    minutes on two cores, on a GPU seconds). A CUDA generator draws other numbers than a CPU one."""
    return torch.Generator(device=device).manual_seed(seed)


@contextlib.contextmanager
def _construction(seed: int, dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Build modules with a fixed global RNG, default dtype and default device, restoring them afterwards."""
    previous = torch.get_default_dtype()
    forked = []  # the CPU's RNG is always forked; a GPU's only when building there
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            with device:
                yield
        finally:
            torch.set_default_dtype(previous)


def _fan_in(module: nn.Module) -> int:
    weight = module.weight
    if isinstance(module, nn.Linear):
        return weight.shape[1]
    if isinstance(module, nn.ConvTranspose1d):
        # Each output sample sums in_channels * kernel / stride inputs.
        return max(1, weight.shape[0] * weight.shape[2] // module.stride[0])
    return weight.shape[1] * weight.shape[2]  # Conv1d: (in / groups) * kernel


@torch.no_grad()
def init_random(
    model: nn.Module, generator: torch.Generator, embedding_std: float, gain: float = 1.0
) -> None:
    """Fan-in scaled normal init of every Linear/Conv, zero biases, N(0, embedding_std^2) embeddings."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv1d | nn.ConvTranspose1d):
            module.weight.normal_(0.0, gain / _fan_in(module) ** 0.5, generator=generator)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, embedding_std, generator=generator)


# --------------------------------------------------------------------------------------------------------
# TTS model
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dims:
    """Reserved residual dimensions of the talker and the text-projection unit that carries TEXT."""

    codec: int
    text: int
    clock: int
    level: int
    text_unit: int

    @property
    def reserved(self) -> list[int]:
        return [self.codec, self.text, self.clock, self.level]

    @classmethod
    def for_config(cls, talker_config: dict) -> _Dims:
        hidden = talker_config["hidden_size"]
        return cls(hidden - 1, hidden - 2, hidden - 3, hidden - 4, talker_config["text_hidden_size"] - 1)


def _talker_norms(talker: nn.Module) -> list[nn.Module]:
    """The RMSNorms over the residual stream (not the per-head q/k norms)."""
    model = talker.model
    norms = [model.norm]
    for layer in model.layers:
        norms += [layer.input_layernorm, layer.post_attention_layernorm]
    return norms


@torch.no_grad()
def _isolate_reserved_dims(talker: nn.Module, speaker_encoder: nn.Module | None, dims: _Dims) -> None:
    """Nothing random writes into the reserved dimensions, and codec_head reads none of them."""
    reserved = dims.reserved
    talker.model.codec_embedding.weight[:, reserved] = 0.0
    for embedding in talker.code_predictor.model.codec_embedding:
        embedding.weight[:, reserved] = 0.0
    for layer in talker.model.layers:
        layer.self_attn.o_proj.weight[reserved, :] = 0.0
        layer.mlp.down_proj.weight[reserved, :] = 0.0
    talker.codec_head.weight[:, reserved] = 0.0
    projection = talker.text_projection
    projection.linear_fc2.weight[reserved, :] = 0.0
    projection.linear_fc2.bias[reserved] = 0.0
    if speaker_encoder is not None:
        # The x-vector is spliced into the talker input like a codec embedding.
        speaker_encoder.fc.weight[reserved] = 0.0
        speaker_encoder.fc.bias[reserved] = 0.0


@torch.no_grad()
def _wire_level(talker: nn.Module, talker_config: dict, dims: _Dims, clock: EosClock) -> None:
    """A large constant in LEVEL at every position makes every RMSNorm divide by nearly the same value.

    Each input position holds exactly one text-projection output (a text token, tts_pad, tts_bos or
    tts_eos), so the projection's bias reaches every position once. The norms then give LEVEL weight 0
    (no layer sees the constant) and scale the other dimensions back up by the factor LEVEL costs them.
    """
    hidden = talker_config["hidden_size"]
    talker.text_projection.linear_fc2.bias[dims.level] = clock.level * hidden**0.5
    restore = (1.0 + clock.level**2) ** 0.5
    for norm in _talker_norms(talker):
        norm.weight.mul_(restore)
        norm.weight[dims.reserved] = 1.0
        norm.weight[dims.level] = 0.0


@torch.no_grad()
def _split_codebook_zero(talker: nn.Module, dims: _Dims, final_rms: float) -> None:
    """The talker only generates codebook-0 ids in [SPEECH_CODES_START, 2048).

    The speech tokenizer's encoder only emits ids below SPEECH_CODES_START (see _fill_codebooks), so a
    voice-clone reference's frames never count as spoken frames. The final norm lets LEVEL through (a
    positive, nearly constant value) and codec_head turns it into a logit of about -SUPPRESS_LOGIT for
    the reference-only ids.
    """
    level_after_norm = talker.text_projection.linear_fc2.bias[dims.level].item() / final_rms
    talker.model.norm.weight[dims.level] = 1.0
    talker.codec_head.weight[:SPEECH_CODES_START, dims.level] = -SUPPRESS_LOGIT / level_after_norm


@torch.no_grad()
def _wire_markers(talker: nn.Module, config: dict, dims: _Dims, clock: EosClock) -> None:
    """CODEC = marker on generated codec frames, TEXT = marker on text tokens (not tts_pad/bos/eos)."""
    talker.model.codec_embedding.weight[SPEECH_CODES_START:REGULAR_CODES, dims.codec] = clock.marker
    text_embedding = talker.model.text_embedding.weight
    text_embedding[:, dims.text_unit] = 1.0
    tts_ids = [config["tts_pad_token_id"], config["tts_bos_token_id"], config["tts_eos_token_id"]]
    text_embedding[tts_ids, dims.text_unit] = 0.0
    # A private unit of the text projection: it reads only that embedding column (silu(0) = 0 keeps the
    # tts tokens unmarked) and writes only TEXT.
    fc1, fc2 = talker.text_projection.linear_fc1, talker.text_projection.linear_fc2
    fc1.weight[dims.text_unit, :] = 0.0
    fc1.weight[:, dims.text_unit] = 0.0
    fc1.weight[dims.text_unit, dims.text_unit] = 1.0
    fc1.bias[dims.text_unit] = 0.0
    fc2.weight[:, dims.text_unit] = 0.0
    fc2.weight[dims.text, dims.text_unit] = clock.marker / torch.nn.functional.silu(torch.tensor(1.0)).item()


@torch.no_grad()
def _wire_clock(talker: nn.Module, talker_config: dict, dims: _Dims, clock: EosClock) -> None:
    """Uniform-attention heads of the first layer turn the markers' running means into CLOCK.

    The first layer reads the embeddings themselves, whose scale this module controls; later layers
    would add the random layers' variation to the per-position normalisation.
    """
    attn = talker.model.layers[0].self_attn
    head_dim = talker_config["head_dim"]
    group = talker_config["num_attention_heads"] // talker_config["num_key_value_heads"]
    heads = slice(0, group * head_dim)  # the query heads sharing key/value head 0
    attn.q_proj.weight[heads, :] = 0.0  # zero queries -> equal scores -> uniform causal average
    attn.v_proj.weight[0:head_dim, :] = 0.0
    attn.v_proj.weight[0, dims.codec] = 1.0
    attn.v_proj.weight[1, dims.text] = 1.0
    attn.o_proj.weight[:, heads] = 0.0
    attn.o_proj.weight[dims.clock, 0] = clock.clock_gain
    attn.o_proj.weight[dims.clock, 1] = -clock.clock_gain * clock.frames_per_text_token
    eos = talker_config["codec_eos_token_id"]
    talker.codec_head.weight[eos, :] = 0.0
    talker.codec_head.weight[eos, dims.clock] = clock.eos_gain


@torch.no_grad()
def _calibrate_clock_readout(
    talker: nn.Module, dims: _Dims, clock: EosClock, generator: torch.Generator
) -> float:
    """RMS of the final norm's input over generation-like inputs (speech frames plus text).

    It grows with the number of random layers (2 in tiny, 28 in 1.7B); CLOCK's final-norm weight cancels
    it, otherwise the EOS logit would climb several times more slowly per frame in a full model.
    """
    length = 32
    embeds = talker.model.codec_embedding(
        torch.randint(
            SPEECH_CODES_START, REGULAR_CODES, (1, length), generator=generator, device=generator.device
        )
    )
    for embedding in talker.code_predictor.model.codec_embedding:
        embeds = embeds + embedding(
            torch.randint(
                0, embedding.num_embeddings, (1, length), generator=generator, device=generator.device
            )
        )
    text = torch.randint(0, 256, (1, length), generator=generator, device=generator.device)  # byte tokens
    embeds = embeds + talker.text_projection(talker.model.text_embedding(text))
    captured: list[torch.Tensor] = []
    hook = talker.model.norm.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        talker.model(inputs_embeds=embeds, use_cache=False)
    finally:
        hook.remove()
    rms = captured[0].float().pow(2).mean(-1).sqrt().median().item()
    talker.model.norm.weight[dims.clock] = rms / (1.0 + clock.level**2) ** 0.5
    return rms


def install_eos_clock(
    model: nn.Module, config: dict, generator: torch.Generator, clock: EosClock = EosClock()
) -> None:
    """Wire the stopping circuit into a randomly initialised Qwen3TTSForConditionalGeneration."""
    talker_config = config["talker_config"]
    dims = _Dims.for_config(talker_config)
    _isolate_reserved_dims(model.talker, model.speaker_encoder, dims)
    _wire_level(model.talker, talker_config, dims, clock)
    _wire_markers(model.talker, config, dims, clock)
    _wire_clock(model.talker, talker_config, dims, clock)
    final_rms = _calibrate_clock_readout(model.talker.eval(), dims, clock, generator)
    _split_codebook_zero(model.talker, dims, final_rms)
    logger.debug("talker: final-norm input RMS %.3g", final_rms)


def build_tts_model(
    configs: CheckpointConfigs, seed: int, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> nn.Module:
    """Random Qwen3TTSForConditionalGeneration for one flavour, EOS clock installed."""
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    component = f"tts:{configs.flavour}"
    config = Qwen3TTSConfig.from_dict(copy.deepcopy(configs.model_config))
    device = check_device(device)
    with _construction(derive_seed(seed, component + ":construct"), dtype, device):
        model = Qwen3TTSForConditionalGeneration(config)
    generator = seeded_generator(derive_seed(seed, component), device)
    init_random(model.talker, generator, embedding_std=CODEC_EMBED_STD)
    with torch.no_grad():
        model.talker.model.text_embedding.weight.normal_(0.0, TEXT_EMBED_STD, generator=generator)
    if model.speaker_encoder is not None:
        init_random(model.speaker_encoder, generator, embedding_std=1.0, gain=2**0.5)  # ReLU network
    install_eos_clock(model, configs.model_config, generator)
    return model.eval()


# --------------------------------------------------------------------------------------------------------
# Speech tokenizer (12 Hz codec)
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _fill_codebooks(tokenizer: nn.Module, generator: torch.Generator) -> None:
    quantizer = tokenizer.decoder.quantizer
    for rvq in (quantizer.rvq_first, quantizer.rvq_rest):
        for layer in rvq.vq.layers:
            layer._codebook.embedding_sum.normal_(0.0, DECODER_CODEBOOK_STD, generator=generator)
    mimi = tokenizer.encoder.quantizer
    for rvq in (mimi.semantic_residual_vector_quantizer, mimi.acoustic_residual_vector_quantizer):
        for layer in rvq.layers:
            layer.codebook.embed_sum.normal_(0.0, ENCODER_CODEBOOK_STD, generator=generator)
            layer.codebook._embed = None  # drop the cached embed computed from the zeros
    # Codebook 0 of an encoded reference stays below SPEECH_CODES_START (see _split_codebook_zero).
    mimi.semantic_residual_vector_quantizer.layers[0].codebook.embed_sum[SPEECH_CODES_START:] += FAR_AWAY


@torch.no_grad()
def _calibrate_output_level(tokenizer: nn.Module, generator: torch.Generator) -> float:
    """Scale the decoder's last conv so random codes decode at AUDIO_TARGET_RMS (before the clamp)."""
    decoder = tokenizer.decoder
    last_conv = decoder.decoder[-1].conv
    probe = 1e-3  # the output is linear in this conv: shrink it first so the probe never hits the clamp
    last_conv.weight.mul_(probe)
    codes = torch.randint(
        0,
        decoder.config.codebook_size,
        (1, decoder.config.num_quantizers, 8),
        generator=generator,
        device=generator.device,
    )
    level = decoder(codes).float().pow(2).mean().sqrt().item()
    scale = AUDIO_TARGET_RMS / max(level, 1e-12)
    last_conv.weight.mul_(scale)
    return level / probe


def build_speech_tokenizer(
    configs: CheckpointConfigs, seed: int, device: str | torch.device = "cpu"
) -> nn.Module:
    """Random Qwen3TTSTokenizerV2Model (float32; the caller casts when saving)."""
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model

    config = Qwen3TTSTokenizerV2Config.from_dict(copy.deepcopy(configs.speech_tokenizer_config))
    device = check_device(device)
    with _construction(derive_seed(seed, "speech_tokenizer:construct"), torch.float32, device):
        tokenizer = Qwen3TTSTokenizerV2Model(config)
    generator = seeded_generator(derive_seed(seed, "speech_tokenizer"), device)
    init_random(tokenizer, generator, embedding_std=1.0)
    _fill_codebooks(tokenizer, generator)
    raw_level = _calibrate_output_level(tokenizer.eval(), generator)
    logger.debug("speech tokenizer: raw decoder RMS %.3g rescaled to %.2g", raw_level, AUDIO_TARGET_RMS)
    return tokenizer


def state_dict_for_saving(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Persistent tensors (floating ones cast to ``dtype``), contiguous and in host memory, as safetensors
    wants them."""
    return {
        name: (tensor.detach().to(dtype) if tensor.is_floating_point() else tensor.detach())
        .to("cpu")
        .contiguous()
        for name, tensor in model.state_dict().items()
    }
