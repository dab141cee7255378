"""The real configs of the five released Qwen3-TTS models (data only, no weights).

Every id the generator writes (text special tokens, codec control ids, speakers, languages) and every
full-size architecture comes from these files, never from constants typed into this package.

Sources, first match wins:
1. an explicit ``reference_dir`` argument (a folder laid out like the released models, one sub-folder per
   model: ``1.7B-CustomVoice/config.json``, ``.../speech_tokenizer/config.json``, ...);
2. the environment variable ``QWEN3_TTS_REFERENCE_CONFIGS`` (same layout);
3. the bundle shipped inside this package (``reference_configs.json``), a copy of those files made with
   :func:`bundle_reference_dir`. It is a single JSON file because the project's package-data globs
   (``*.json``) do not reach into sub-folders, and a clean clone or a container has no ``../shared``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

ENV_VAR = "QWEN3_TTS_REFERENCE_CONFIGS"
BUNDLE_NAME = "reference_configs.json"

MODELS = ("1.7B-CustomVoice", "1.7B-Base", "1.7B-VoiceDesign", "0.6B-CustomVoice", "0.6B-Base")

# The files of a released model folder that carry no weights (relative paths inside the model folder).
REFERENCE_FILES = (
    "config.json",
    "configuration.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "speech_tokenizer/config.json",
    "speech_tokenizer/configuration.json",
    "speech_tokenizer/preprocessor_config.json",
)

# Where the shared checkout keeps them: <project root>/../shared/reference/qwen3-tts-configs.
SHARED_REFERENCE_DIR = Path(__file__).resolve().parents[3].parent / "shared/reference/qwen3-tts-configs"

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class ReferenceConfigs:
    """Parsed reference files: ``files[model][relative_path]`` is the JSON object of that file."""

    files: dict[str, dict[str, JsonDict]]
    source: str

    def get(self, model: str, relative_path: str) -> JsonDict:
        """A deep copy, so callers may edit it freely."""
        try:
            return copy.deepcopy(self.files[model][relative_path])
        except KeyError as exc:
            raise KeyError(f"reference configs from {self.source} lack {model}/{relative_path}") from exc

    def digest(self) -> str:
        """Hash of the parsed content: part of the build marker, so edited configs trigger a rebuild."""
        blob = json.dumps(self.files, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def bundle_reference_dir(reference_dir: Path) -> dict[str, dict[str, JsonDict]]:
    """Read every reference file of every model under ``reference_dir``."""
    files: dict[str, dict[str, JsonDict]] = {}
    for model in MODELS:
        model_dir = reference_dir / model
        if not model_dir.is_dir():
            raise FileNotFoundError(f"reference model folder missing: {model_dir}")
        files[model] = {rel: json.loads((model_dir / rel).read_text("utf-8")) for rel in REFERENCE_FILES}
    return files


def _load_bundle() -> dict[str, dict[str, JsonDict]]:
    text = resources.files(__package__).joinpath(BUNDLE_NAME).read_text("utf-8")
    return json.loads(text)["models"]


def load_reference_configs(reference_dir: Path | str | None = None) -> ReferenceConfigs:
    """Load the reference configs from the argument, the environment, or the packaged bundle."""
    chosen = reference_dir if reference_dir is not None else os.environ.get(ENV_VAR) or None
    if chosen is not None:
        path = Path(chosen)
        return ReferenceConfigs(files=bundle_reference_dir(path), source=str(path))
    return ReferenceConfigs(files=_load_bundle(), source=f"package data {__package__}/{BUNDLE_NAME}")


def write_bundle(reference_dir: Path, bundle_path: Path) -> None:
    """Refresh the packaged bundle from a reference folder (maintenance helper, used once by hand)."""
    payload = {
        "about": "Copy of the weight-free files of the released Qwen3-TTS models; see reference.py.",
        "models": bundle_reference_dir(reference_dir),
    }
    bundle_path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", "utf-8")
