"""Fixtures of the deploy checks: the repository, the lint-tool venv (.venv-deploy) and parsers in it.

`make deploy-lint` (called by `make test`) creates .venv-deploy from docker/requirements-deploy-lint.txt.
Without it these tests skip with a message, except under CI=true, where a missing venv is a failure:
CI always goes through `make test`, so a skip there would hide a broken make fragment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .helpers import DEPLOY_VENV, REPO, run

HCL2_LIB = DEPLOY_VENV / "hcl2-lib"
TOOL_DUMP = Path(__file__).with_name("tool_dump.py")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def deploy_venv() -> Path:
    if not (DEPLOY_VENV / "bin" / "python").exists():
        message = (
            f"{DEPLOY_VENV} is missing: run `make .venv-deploy` (make deploy-lint and make test create it)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return DEPLOY_VENV


@pytest.fixture(scope="session")
def tool(deploy_venv: Path) -> Callable[[str], str]:
    """Path of a binary in the lint venv; a missing one is an install error, not a reason to skip."""

    def find(name: str) -> str:
        path = deploy_venv / "bin" / name
        assert path.exists(), f"{path} missing: rerun `make .venv-deploy`"
        return str(path)

    return find


@pytest.fixture(scope="session")
def parse(deploy_venv: Path) -> Callable[..., dict[str, Any]]:
    """parse("hcl"|"yaml"|"yaml-all", *paths) -> {path: data}, by the pinned parsers in the lint venv."""

    def load(kind: str, *paths: Path) -> dict[str, Any]:
        env = dict(os.environ, PYTHONPATH=str(HCL2_LIB))
        proc = run([str(deploy_venv / "bin" / "python"), str(TOOL_DUMP), kind, *map(str, paths)], env=env)
        assert proc.returncode == 0, f"parsing {kind} failed:\n{proc.stderr}"
        out = json.loads(proc.stdout)
        if kind == "hcl":
            assert out["parser"] == "8.1.4", f"python-hcl2 8.1.4 expected, got {out['parser']}"
        return {Path(k): v for k, v in out["files"].items()}

    return load
