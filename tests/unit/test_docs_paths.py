"""Paths of tests and source files that docs and config comments point at exist (a reader follows them)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import PurePosixPath

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


def test_the_readme_lists_every_end_to_end_suite() -> None:
    """README, "Tests", names where each end-to-end suite lives (a path, or a pattern that matches it)."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("## Tests") :]
    section = section[: section.index("\n## ", 1)]
    named = re.findall(r"`(tests/[^`]+?\.py)`", section)
    folders = {str(PurePosixPath(name).parent) for name in named}
    # A cell names its folder once and then bare file names: `tests/e2e/test_agent_*.py`, `test_x.py`.
    bare = re.findall(r"`(test_[^`/]+?\.py)`", section)
    patterns = named + [f"{folder}/{name}" for folder in folders for name in bare]
    suites = [
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in sorted((PROJECT_ROOT / "tests").rglob("test_*.py"))
        if path.parent.name == "e2e" or path.name.startswith("test_e2e_")
    ]
    assert suites
    unlisted = [suite for suite in suites if not any(fnmatch.fnmatch(suite, p) for p in patterns)]
    assert not unlisted, unlisted
