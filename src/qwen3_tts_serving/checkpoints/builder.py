"""Write checkpoint folders in the released models' layout, atomically and idempotently.

Each flavour is assembled in a hidden temporary folder next to its destination, the marker file
(``.complete``) is written last, and only then is the folder renamed into place: a crash leaves either no
folder or a complete one. A folder whose marker matches the request (generator version, preset, seed,
flavour, reference configs, and the device when it is not the CPU) is reused; anything else there is
rebuilt. A lock file serialises concurrent
builders (test workers, the launcher) on the same output folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from qwen3_tts_serving.checkpoints.presets import CheckpointConfigs, available_flavours, checkpoint_configs
from qwen3_tts_serving.checkpoints.reference import ReferenceConfigs, load_reference_configs
from qwen3_tts_serving.checkpoints.text_tokenizer import build_text_tokenizer
from qwen3_tts_serving.checkpoints.weights import (
    build_speech_tokenizer,
    build_tts_model,
    check_device,
    state_dict_for_saving,
)

logger = logging.getLogger(__name__)

# Bump whenever the bytes written for a given (preset, seed) change: existing folders are then rebuilt.
GENERATOR_VERSION = "2"
# The marker also hashes the generator's own source, so a forgotten bump cannot keep stale weights.
GENERATOR_SOURCES = ("builder.py", "presets.py", "text_tokenizer.py", "weights.py")
MARKER = ".complete"
LOCK = ".build.lock"
# A marker-less folder holding a file this large is most likely a real downloaded checkpoint: never
# delete it without --force.
FOREIGN_FILE_BYTES = 512 * 1024 * 1024


def weight_dtype(preset: str) -> torch.dtype:
    """float32 for tiny (exact CPU tests), bfloat16 for full presets (halves disk and build memory)."""
    return torch.float32 if preset == "tiny" else torch.bfloat16


def generator_digest() -> str:
    digest = hashlib.sha256()
    for name in GENERATOR_SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def marker_payload(
    configs: CheckpointConfigs, seed: int, reference: ReferenceConfigs, device: str = "cpu"
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "generator_digest": generator_digest(),
        "preset": configs.preset,
        "flavour": configs.flavour,
        "seed": seed,
        "reference_model": configs.reference_model,
        "reference_digest": reference.digest(),
    }
    device_type = torch.device(device).type
    if device_type != "cpu":
        # A GPU's generators draw other weights than the CPU's: such a folder is not the CPU build. CPU
        # markers stay as they were, so existing CPU builds are kept.
        payload["device"] = device_type
    payload["key"] = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return payload


def is_complete(folder: Path, payload: dict[str, Any]) -> bool:
    """True when ``folder`` holds a finished build of exactly this request."""
    try:
        found = json.loads((folder / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and found.get("key") == payload["key"]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")


def write_config_files(folder: Path, configs: CheckpointConfigs) -> None:
    """Every file except the weights: JSON configs and the text tokenizer."""
    for relative, data in configs.files.items():
        if relative != "tokenizer_config.json":
            _write_json(folder / relative, data)
    model_config = configs.model_config
    build_text_tokenizer(
        configs.files["tokenizer_config.json"],
        model_config["talker_config"]["text_vocab_size"],
        pinned={"assistant": model_config["assistant_token_id"]},
    ).write(folder)


def _save_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})


@dataclass
class _SpeechTokenizerCache:
    """The 12 Hz codec is the same for every flavour (as in the releases): build it once per call."""

    seed: int
    device: str = "cpu"
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def get(self, configs: CheckpointConfigs) -> dict[str, torch.Tensor]:
        key = json.dumps(configs.speech_tokenizer_config, sort_keys=True)
        if key not in self.tensors:
            model = build_speech_tokenizer(configs, self.seed, self.device)
            self.tensors[key] = state_dict_for_saving(model, weight_dtype(configs.preset))
        return self.tensors[key]


def _write_checkpoint(
    folder: Path, configs: CheckpointConfigs, seed: int, payload: dict[str, Any], codec: _SpeechTokenizerCache
) -> None:
    write_config_files(folder, configs)
    model = build_tts_model(configs, seed, weight_dtype(configs.preset), codec.device)
    _save_weights(folder / "model.safetensors", state_dict_for_saving(model, weight_dtype(configs.preset)))
    del model  # full presets: free the talker before the codec tensors are written
    if torch.device(codec.device).type == "cuda":
        torch.cuda.empty_cache()  # whoever loads the checkpoint next on this GPU gets the memory back
    _save_weights(folder / "speech_tokenizer" / "model.safetensors", codec.get(configs))
    _write_json(folder / MARKER, payload)  # last: its presence means "complete"


def _check_replaceable(folder: Path) -> None:
    if (folder / MARKER).exists():
        return  # ours, from another seed / version / preset
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_size >= FOREIGN_FILE_BYTES:
            raise FileExistsError(
                f"{folder} has no {MARKER} marker but holds {path.name} ({path.stat().st_size} bytes): "
                "it does not look like a generated checkpoint; pass force=True / --force to replace it"
            )


def _make_readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders and safetensors 0600 files; the server may run as another user."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _replace_folder(temporary: Path, destination: Path) -> None:
    """Move ``temporary`` into place; the destination is never half-written, only briefly absent."""
    trash = None
    if destination.exists():
        trash = destination.with_name(f".trash-{destination.name}-{os.getpid()}-{time.monotonic_ns()}")
        destination.rename(trash)
    temporary.rename(destination)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(out_dir: Path, flavour: str) -> None:
    """Temporary / trash folders of crashed builds (safe: callers hold the lock)."""
    for pattern in (f".tmp-{flavour}-*", f".trash-{flavour}-*"):
        for leftover in out_dir.glob(pattern):
            logger.info("removing leftover %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _kept(destination: Path, configs: CheckpointConfigs, seed: int) -> Path:
    logger.info("checkpoint %s is complete (%s, seed %d): kept", destination, configs.preset, seed)
    return destination


def build_flavour(
    out_dir: Path,
    configs: CheckpointConfigs,
    seed: int,
    reference: ReferenceConfigs,
    *,
    force: bool = False,
    codec: _SpeechTokenizerCache | None = None,
) -> Path:
    """Build ``out_dir/<flavour>`` unless an identical complete build is already there. The weights are
    drawn on ``codec.device`` (default: the CPU)."""
    codec = codec or _SpeechTokenizerCache(seed)
    destination = out_dir / configs.flavour
    payload = marker_payload(configs, seed, reference, codec.device)
    # Checked before taking the lock too: a read-only folder of prebuilt checkpoints needs no lock file.
    if not force and is_complete(destination, payload):
        return _kept(destination, configs, seed)
    with _locked(out_dir):
        if not force and is_complete(destination, payload):  # built by another process meanwhile
            return _kept(destination, configs, seed)
        if destination.exists() and not force:
            _check_replaceable(destination)
            logger.warning("checkpoint %s is incomplete or from another request: rebuilding", destination)
        _remove_leftovers(out_dir, configs.flavour)
        started = time.perf_counter()
        temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{configs.flavour}-", dir=out_dir))
        try:
            _write_checkpoint(temporary, configs, seed, payload, codec)
            _make_readable(temporary)
            _replace_folder(temporary, destination)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    logger.info(
        "built %s checkpoint %s (seed %d, on %s) in %.1f s",
        configs.preset,
        destination,
        seed,
        codec.device,
        time.perf_counter() - started,
    )
    return destination


def preset_configs(
    preset: str = "tiny",
    flavours: Iterable[str] | None = None,
    reference_dir: Path | str | None = None,
) -> dict[str, CheckpointConfigs]:
    """The config files of each flavour of a preset, without building weights."""
    reference = load_reference_configs(reference_dir)
    chosen = tuple(flavours) if flavours is not None else available_flavours(preset)
    return {flavour: checkpoint_configs(preset, flavour, reference) for flavour in chosen}


def write_configs_only(
    out_dir: Path,
    preset: str = "tiny",
    flavours: Iterable[str] | None = None,
    reference_dir: Path | str | None = None,
) -> dict[str, Path]:
    """Config and tokenizer files only (no weights, no marker: not loadable, for inspection)."""
    written = {}
    for flavour, configs in preset_configs(preset, flavours, reference_dir).items():
        write_config_files(out_dir / flavour, configs)
        written[flavour] = out_dir / flavour
    return written


def ensure_checkpoints(
    out_dir: Path,
    preset: str = "tiny",
    seed: int = 0,
    *,
    flavours: Iterable[str] | None = None,
    force: bool = False,
    reference_dir: Path | str | None = None,
    device: str = "cpu",
) -> dict[str, Path]:
    """Make sure ``out_dir/<flavour>`` holds a complete random checkpoint for each flavour.

    Returns ``{flavour: folder}``. ``flavours`` defaults to every flavour the preset has (``full-0.6b``
    has no voice_design). Builds only what is missing or stale; ``force`` rebuilds everything.
    ``device`` (``cpu``, ``cuda``, ``cuda:N``) is where modules are built and weights drawn: a full
    preset takes seconds on a GPU against minutes on a few CPU cores, and its weights differ from the
    CPU build's (other generators), so the marker records it and each is reused only by its own kind.
    """
    out_dir = Path(out_dir)
    check_device(device)
    reference = load_reference_configs(reference_dir)
    chosen = tuple(flavours) if flavours is not None else available_flavours(preset)
    codec = _SpeechTokenizerCache(seed, device)
    folders = {}
    for flavour in chosen:
        configs = checkpoint_configs(preset, flavour, reference)
        folders[flavour] = build_flavour(out_dir, configs, seed, reference, force=force, codec=codec)
    return folders
