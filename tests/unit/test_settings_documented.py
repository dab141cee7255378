"""Every setting is in the README's settings table, with its default, and nothing else is."""

from __future__ import annotations

import json
import re

from qwen3_tts_serving.settings import PROJECT_ROOT, Settings

ROW = re.compile(r"^\| `QWEN3_TTS_([A-Z0-9_]+)` \| (.+?) \|", re.MULTILINE)


def _documented() -> dict[str, str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    return {name.lower(): default.strip() for name, default in ROW.findall(readme)}


def test_the_readme_lists_exactly_the_settings() -> None:
    documented = _documented()
    assert set(documented) == set(Settings.model_fields), set(documented) ^ set(Settings.model_fields)


def test_the_readme_defaults_are_the_code_defaults() -> None:
    documented = _documented()
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if default is None or name in ("cache_dir",):
            continue  # "unset" / a path computed from the checkout
        shown = documented[name].strip("`")
        if isinstance(default, dict | list):
            assert json.loads(shown) == default, name
        else:
            assert shown == str(default), (name, shown, default)
