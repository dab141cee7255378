"""Build a Triton model repository for one run from the templates in ``model_repository/``.

Each model folder holds ``config.pbtxt.template`` with ``${placeholders}`` and ``1/model.py``. A build
copies the folders (files, not links, so the result is self-contained), fills every placeholder from the
settings and refuses to leave one unfilled. The same templates serve the tiny CPU default and real
checkpoints on a GPU: only the settings differ.

The client-facing models are fronts; ``model_repository/engine/`` is filled once per checkpoint they need
and per GPU (``<checkpoint>_engine_<n>``, instance group on GPU n): one copy of the weights and one running
batch per checkpoint per GPU, and each front is told which engines it may place streams on.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import string
import subprocess
from collections.abc import Iterable
from pathlib import Path

from qwen3_tts_serving.contract import (
    ENGINE_TEMPLATE,
    MODEL_CHECKPOINTS,
    MODEL_INPUTS,
    VOICE_PROMPT,
    engine_model_name,
)
from qwen3_tts_serving.engine.config import EngineConfig, engine_parameters
from qwen3_tts_serving.settings import PROJECT_ROOT, Settings

logger = logging.getLogger(__name__)

MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
TEMPLATE_NAME = "config.pbtxt.template"
# Written into every build; a folder without it is never deleted by a rebuild.
BUILD_MARKER = ".qwen3-tts-build"
_IGNORED = shutil.ignore_patterns(TEMPLATE_NAME, "__pycache__", "*.pyc")


class UnfilledPlaceholderError(ValueError):
    pass


def gpu_present() -> bool:
    """Whether a CUDA GPU is visible, decided without importing torch (the launcher stays light)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    if glob.glob("/dev/nvidia[0-9]*"):
        return True
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


def resolve_device(settings: Settings) -> str:
    if settings.device != "auto":
        return settings.device
    return "cuda" if gpu_present() else "cpu"


def visible_gpu_count() -> int:
    """GPUs this host's Triton may use, counted without torch (CUDA_VISIBLE_DEVICES first)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([part for part in visible.split(",") if part.strip() and part.strip() != "-1"])
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        )
        if listing.returncode == 0:
            return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return len(glob.glob("/dev/nvidia[0-9]*"))


def engine_count(settings: Settings, device: str) -> int:
    """Engine models per checkpoint: the setting, or one per visible GPU (one on a CPU host)."""
    if settings.engines_per_checkpoint > 0:
        return settings.engines_per_checkpoint
    return max(1, visible_gpu_count()) if device == "cuda" else 1


def _parameter_lines(parameters: dict[str, str]) -> str:
    return "\n".join(
        f'parameters {{ key: "{name}" value {{ string_value: "{_pbtxt_escape(value)}" }} }}'
        for name, value in parameters.items()
    )


def template_values(settings: Settings, model: str, device: str, engines: int = 1) -> dict[str, str]:
    """Every value a front's template may use (``engines``: engine models per checkpoint)."""
    checkpoint = MODEL_CHECKPOINTS[model]
    values: dict[str, object] = {
        "max_batch_size": settings.max_entry_batch,
        "max_queue_delay_microseconds": settings.batch_delay_us,
        "front_parameters": _parameter_lines(
            {
                "engines": ",".join(engine_model_name(checkpoint, index) for index in range(engines)),
                "drain_timeout_s": str(settings.triton_drain_timeout_s),
                **({"voice_prompt_batch": str(settings.voice_prompt_batch)} if model == VOICE_PROMPT else {}),
                # The front refuses an over-long clip itself: forwarded, its samples are copied into the
                # engine's shared memory, which grows to hold them and never shrinks.
                **(
                    {"max_ref_audio_seconds": str(settings.max_ref_audio_seconds)}
                    if "ref_audio" in MODEL_INPUTS[model]
                    else {}
                ),
            }
        ),
    }
    return {key: str(value) for key, value in values.items()}


def engine_template_values(settings: Settings, checkpoint: str, index: int, device: str) -> dict[str, str]:
    """The values of engine model ``index`` of ``checkpoint``; model code reads its ``parameters``."""
    if device == "cuda":
        group = f"{{ count: 1, kind: KIND_GPU, gpus: [ {index % max(1, visible_gpu_count())} ] }}"
    else:
        group = "{ count: 1, kind: KIND_CPU }"
    parameters = engine_parameters(
        settings, checkpoint_dir=settings.resolved_checkpoint_dir / checkpoint, device=device
    )
    values: dict[str, object] = {
        "model_name": engine_model_name(checkpoint, index),
        "max_batch_size": settings.max_entry_batch,
        "max_queue_delay_microseconds": settings.batch_delay_us,
        "engine_instance_group": group,
        "engine_parameters": _parameter_lines({"checkpoint": checkpoint, **parameters}),
    }
    return {key: str(value) for key, value in values.items()}


# Filled as they are: the generated blocks escape their own values.
_RAW_VALUES = frozenset({"engine_parameters", "front_parameters", "engine_instance_group"})


def _pbtxt_escape(value: str) -> str:
    # Values land inside "..." in the templates; a path with a quote or backslash must not break out.
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _placeholders(template: string.Template) -> set[str]:
    names: set[str] = set()
    for match in template.pattern.finditer(template.template):
        if match.group("invalid") is not None:
            raise UnfilledPlaceholderError(f"malformed placeholder at offset {match.start('invalid')}")
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def fill_template(text: str, values: dict[str, str], source: str = "<template>") -> str:
    """Substitute ``${name}``; raise :class:`UnfilledPlaceholderError` naming any placeholder left over."""
    template = string.Template(text)
    missing = sorted(_placeholders(template) - values.keys())
    if missing:
        raise UnfilledPlaceholderError(f"{source}: no value for placeholder(s) {', '.join(missing)}")
    return template.substitute(
        {key: value if key in _RAW_VALUES else _pbtxt_escape(value) for key, value in values.items()}
    )


def discover_models(source: Path = MODEL_REPOSITORY) -> list[str]:
    """Models with a template and a ``1/model.py``; templates whose model code is missing are skipped."""
    models = []
    for template in sorted(source.glob(f"*/{TEMPLATE_NAME}")):
        model_dir = template.parent
        if model_dir.name == ENGINE_TEMPLATE:
            continue  # filled per checkpoint and GPU, for the models that need it
        if (model_dir / "1" / "model.py").is_file():
            models.append(model_dir.name)
        else:
            logger.warning("skipping model %s: %s/1/model.py is missing", model_dir.name, model_dir)
    return models


def _check_model_sources(source: Path, models: Iterable[str]) -> None:
    for model in models:
        for required in (source / model / TEMPLATE_NAME, source / model / "1" / "model.py"):
            if not required.is_file():
                raise FileNotFoundError(f"model {model!r}: {required} is missing")


def check_checkpoints(settings: Settings, models: Iterable[str]) -> None:
    """Raise FileNotFoundError unless each model's checkpoint flavour folder exists.

    Not part of the build: images fill the repository before their checkpoints are synced.
    """
    root = settings.resolved_checkpoint_dir
    for model in models:
        flavour = MODEL_CHECKPOINTS.get(model)
        if flavour and not (root / flavour).is_dir():
            raise FileNotFoundError(
                f"model {model!r} needs checkpoints in {root / flavour}; point QWEN3_TTS_CHECKPOINT_DIR at a "
                "folder with custom_voice/, base/ and voice_design/, or serve fewer models"
            )


# A loadable checkpoint folder (the released models' layout): the model's config and weights, and the
# speech tokenizer's (a folder's name is its flavour, which is also config.json's ``tts_model_type``).
_CHECKPOINT_CONFIGS = ("config.json", "speech_tokenizer/config.json")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def check_checkpoint_contents(settings: Settings, models: Iterable[str]) -> None:
    """Raise ValueError naming the first flavour folder of ``models`` that is not a complete checkpoint of
    its flavour, before tritonserver starts (there the reason would sit in an engine model's load error,
    after the other engines have loaded their weights). Serving only: a built repository may come first
    and its checkpoints later (images sync them at start)."""
    root = settings.resolved_checkpoint_dir
    for flavour in sorted({MODEL_CHECKPOINTS[model] for model in models if model in MODEL_CHECKPOINTS}):
        folder = root / flavour
        missing = [name for name in _CHECKPOINT_CONFIGS if not (folder / name).is_file()]
        for weights in (folder, folder / "speech_tokenizer"):
            if not any((weights / name).is_file() for name in _WEIGHT_FILES):
                missing.append(str((weights / _WEIGHT_FILES[0]).relative_to(folder)))
        if missing:
            raise ValueError(
                f"{folder} is not a complete Qwen3-TTS checkpoint: it has no {', '.join(missing)} (a "
                f"{flavour} checkpoint folder holds config.json, model.safetensors, the tokenizer files and "
                "speech_tokenizer/)"
            )
        try:
            model_type = json.loads((folder / "config.json").read_text("utf-8")).get("tts_model_type")
        except (OSError, ValueError, AttributeError) as error:
            raise ValueError(f"{folder / 'config.json'} cannot be read as a model config: {error}") from None
        if model_type != flavour:
            raise ValueError(
                f"{folder} holds a {model_type} checkpoint (config.json tts_model_type); {flavour}/ needs a "
                f"{flavour} one"
            )


def check_engine_settings(settings: Settings) -> None:
    """Raise ValueError naming every engine setting the engine models would refuse at load time, where
    the reason sits deep in tritonserver's log (needs an existing checkpoint folder)."""
    parameters = engine_parameters(
        settings, checkpoint_dir=settings.resolved_checkpoint_dir, device=resolve_device(settings)
    )
    try:
        EngineConfig.from_parameters(parameters)
    except ValueError as error:
        raise ValueError(f"invalid setting(s) (QWEN3_TTS_ + the name in capitals): {error}") from None


def check_serving_setup(settings: Settings, models: Iterable[str]) -> None:
    """Everything checked before tritonserver starts (``qwen3-tts-serve``, and the image at start once its
    checkpoints are synced): each model's checkpoint folder exists (FileNotFoundError), the engine settings
    are valid and each folder holds a complete checkpoint of its flavour (ValueError)."""
    models = list(models)
    check_checkpoints(settings, models)
    check_engine_settings(settings)
    check_checkpoint_contents(settings, models)


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if any(out_dir.iterdir()) and not (out_dir / BUILD_MARKER).exists():
            raise FileExistsError(f"{out_dir} is not empty and was not built here; refusing to delete it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / BUILD_MARKER).write_text("built by qwen3_tts_serving.launcher.repository; safe to delete\n")


def build_model_repository(
    settings: Settings,
    out_dir: Path,
    models: Iterable[str] | None = None,
    *,
    source: Path = MODEL_REPOSITORY,
) -> Path:
    """Fill the templates of ``models`` (default: all complete ones in ``source``) into ``out_dir``.

    ``out_dir`` is replaced if it holds an earlier build. Returns ``out_dir``.
    """
    selected = list(models) if models is not None else discover_models(source)
    unknown = [model for model in selected if model not in MODEL_CHECKPOINTS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; valid: {', '.join(MODEL_CHECKPOINTS)}")
    _check_model_sources(source, [*selected, ENGINE_TEMPLATE])
    device = resolve_device(settings)
    engines = engine_count(settings, device)
    _prepare_out_dir(out_dir)
    built = []
    for model in selected:
        _fill(source / model, out_dir / model, template_values(settings, model, device, engines))
        built.append(model)
    for checkpoint in sorted({MODEL_CHECKPOINTS[model] for model in selected}):
        for index in range(engines):
            values = engine_template_values(settings, checkpoint, index, device)
            _fill(source / ENGINE_TEMPLATE, out_dir / values["model_name"], values)
            built.append(values["model_name"])
    logger.info("model repository %s: %s (device %s)", out_dir, ", ".join(built) or "no models", device)
    return out_dir


def _fill(source: Path, target: Path, values: dict[str, str]) -> None:
    shutil.copytree(source, target, ignore=_IGNORED)
    template_path = source / TEMPLATE_NAME
    (target / "config.pbtxt").write_text(fill_template(template_path.read_text(), values, str(template_path)))


def ensure_checkpoint_dir(settings: Settings) -> Path:
    """The checkpoint folder to serve: the configured one, or the tiny random set (built on first use)."""
    if settings.checkpoint_dir is not None:
        if not settings.checkpoint_dir.is_dir():
            raise FileNotFoundError(f"QWEN3_TTS_CHECKPOINT_DIR={settings.checkpoint_dir} does not exist")
        return settings.checkpoint_dir
    # Imported here: building checkpoints needs torch, which nothing else in the launcher loads.
    from qwen3_tts_serving.checkpoints import ensure_checkpoints

    out_dir = settings.resolved_checkpoint_dir
    ensure_checkpoints(out_dir, preset="tiny")
    return out_dir
