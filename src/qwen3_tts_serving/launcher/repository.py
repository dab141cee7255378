"""Build a Triton model repository for one run from the templates in ``model_repository/``.

Each model folder holds ``config.pbtxt.template`` with ``${placeholders}`` and ``1/model.py``. A build
copies the folders (files, not links, so the result is self-contained), fills every placeholder from the
settings and refuses to leave one unfilled. The same templates serve the tiny CPU default and real
checkpoints on a GPU: only the settings differ.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import string
import subprocess
from collections.abc import Iterable
from pathlib import Path

from qwen3_tts_serving.engine.config import engine_parameters
from qwen3_tts_serving.settings import PROJECT_ROOT, Settings

logger = logging.getLogger(__name__)

MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
TEMPLATE_NAME = "config.pbtxt.template"
# Written into every build; a folder without it is never deleted by a rebuild.
BUILD_MARKER = ".qwen3-tts-build"
# Which checkpoint flavour (sub-folder of the checkpoint dir) each model loads.
CHECKPOINT_FLAVOURS = {
    "custom_voice": "custom_voice",
    "voice_design": "voice_design",
    "voice_clone": "base",
    "voice_prompt": "base",
    "custom_voice_session": "custom_voice",
    "voice_clone_session": "base",
}
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


def template_values(settings: Settings, model: str, device: str) -> dict[str, str]:
    """Every value a template may use. Model code reads the ``parameters`` ones at initialize()."""
    checkpoint_root = settings.resolved_checkpoint_dir
    flavour = CHECKPOINT_FLAVOURS.get(model)
    values: dict[str, object] = {
        "max_batch_size": settings.max_entry_batch,
        "max_queue_delay_microseconds": settings.batch_delay_us,
        "instance_kind": "KIND_GPU" if device == "cuda" else "KIND_CPU",
        "instance_count": settings.triton_instance_count,
        # The session models' sequence batcher holds as many sessions as the engine has slots.
        "max_active_streams": settings.max_active_streams,
        # Triton forgets an idle sequence a little after the engine has ended it.
        "max_sequence_idle_microseconds": int((settings.session_idle_timeout_s + 30) * 1_000_000),
    }
    checkpoint_dir = checkpoint_root / flavour if flavour else checkpoint_root
    parameters = engine_parameters(settings, checkpoint_dir=checkpoint_dir, device=device)
    values["engine_parameters"] = "\n".join(
        f'parameters {{ key: "{name}" value {{ string_value: "{_pbtxt_escape(value)}" }} }}'
        for name, value in parameters.items()
    )
    return {key: str(value) for key, value in values.items()}


# Filled as they are: the block of generated lines escapes its own values.
_RAW_VALUES = frozenset({"engine_parameters"})


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
        flavour = CHECKPOINT_FLAVOURS.get(model)
        if flavour and not (root / flavour).is_dir():
            raise FileNotFoundError(
                f"model {model!r} needs checkpoints in {root / flavour}; point QWEN3_TTS_CHECKPOINT_DIR at a "
                "folder with custom_voice/, base/ and voice_design/, or serve fewer models"
            )


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
    _check_model_sources(source, selected)
    device = resolve_device(settings)
    _prepare_out_dir(out_dir)
    for model in selected:
        target = out_dir / model
        shutil.copytree(source / model, target, ignore=_IGNORED)
        template_path = source / model / TEMPLATE_NAME
        config = fill_template(
            template_path.read_text(), template_values(settings, model, device), str(template_path)
        )
        (target / "config.pbtxt").write_text(config)
    logger.info("model repository %s: %s (device %s)", out_dir, ", ".join(selected) or "no models", device)
    return out_dir


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
