"""Paths of tests and source files that docs and config comments point at exist (a reader follows them)."""

from __future__ import annotations

import re
import subprocess

from qwen3_tts_serving.settings import PROJECT_ROOT

_PATH = re.compile(r"\b((?:tests|src|gateway|client|benchmarks)/[\w/.-]+\.py)\b")
_DOCUMENTS = ("*.md", "docker/*", "mk/*", "terraform/**/*.tf", "Makefile", "model_repository/**/*.template")


def _documents() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--", *_DOCUMENTS], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    return [line for line in listed.stdout.splitlines() if line]


def test_paths_named_in_docs_and_configs_exist() -> None:
    documents = _documents()
    assert "README.md" in documents and "docker/requirements-gateway.txt" in documents
    missing = {
        f"{document}: {path}"
        for document in documents
        for path in _PATH.findall((PROJECT_ROOT / document).read_text(errors="replace"))
        if not (PROJECT_ROOT / path).exists()
    }
    assert not missing, sorted(missing)
