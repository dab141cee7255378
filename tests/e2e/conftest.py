"""Fixtures of the end-to-end tests: the real gateway (``create_app()`` under uvicorn on a free port) in front
of the session's real ``triton_server`` (tests/conftest.py), reached over real sockets, and headless Chromium
for the playground page.

* ``gateway_server``: the gateway as the Python client tests use it (default settings, no API keys).
* ``agent_gateway``: long request and idle timeouts, for voice-agent sessions and long texts.
* ``idle_gateway``: a short idle timeout (the gateway's own websocket idle timeout,
  ``Settings.session_idle_timeout_s``). All of them share the one Triton.
* ``chromium_paths``, ``browser``, ``page``, ``playground_url``: the browser tests of the playground. When
  Chromium, its driver or selenium is missing, ``make playground-deps`` is run once to install them; the
  tests skip only when that fails too (not root, no apt-get, no registry), with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from qwen3_tts_gateway.embedded import serve_in_thread

from gateway.conftest import gateway_settings
from qwen3_tts_serving.launcher import TritonServer, build_model_repository
from qwen3_tts_serving.settings import PROJECT_ROOT, Settings

from .playground import API_KEY, KEY_STORAGE, SPEAKERS, premium_voices, script_errors, wait

IDLE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Gateway:
    url: str
    app: Any
    settings: Any

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")


@contextmanager
def running_gateway(triton_server: Any, cache_dir: Path, **overrides: Any) -> Iterator[Gateway]:
    """The real gateway in front of ``triton_server``, its state in ``cache_dir``; always stopped."""
    from qwen3_tts_gateway import create_app

    settings = gateway_settings(triton_server.grpc_url, cache_dir, **overrides)
    app = create_app(settings=settings)
    with serve_in_thread(app) as url:
        yield Gateway(url, app, settings)


@pytest.fixture(scope="session")
def gateway_server(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(triton_server, tmp_path_factory.mktemp("gateway")) as gateway:
        yield gateway


# Sessions and long texts: no request or idle session is cut short while the tiny models run on the CPU.
_AGENT_TIMEOUTS = {"request_timeout_s": 600.0, "session_idle_timeout_s": 120.0}


@pytest.fixture(scope="session")
def agent_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(triton_server, tmp_path_factory.mktemp("agents"), **_AGENT_TIMEOUTS) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def idle_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    cache_dir = tmp_path_factory.mktemp("agents-idle")
    timeouts = {**_AGENT_TIMEOUTS, "session_idle_timeout_s": IDLE_TIMEOUT_S}
    with running_gateway(triton_server, cache_dir, **timeouts) as gateway:
        yield gateway


# --- the playground in headless Chromium -----------------------------------------------------------------
_BROWSERS = ("chromium", "chromium-browser")
_DRIVERS = ("chromedriver", "chromium-driver")
_INSTALL_TIMEOUT_S = 900
# The flags the brief asks for, plus a fake microphone that needs no permission prompt (the recording test).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--window-size=1280,1500",
)


def _which(names: tuple[str, ...]) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


def _selenium_installed() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return True


def _missing() -> list[str]:
    wanted = {
        "chromium": _which(_BROWSERS),
        "chromedriver": _which(_DRIVERS),
        "selenium": _selenium_installed(),
    }
    return [name for name, found in wanted.items() if not found]


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver); installs them (and selenium) with `make playground-deps` when missing."""
    missing = _missing()
    if missing:
        command = ["make", "--no-print-directory", "playground-deps", f"PLAYGROUND_PYTHON={sys.executable}"]
        try:
            result = subprocess.run(
                command,
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=_INSTALL_TIMEOUT_S,
                check=False,
            )
            output = (result.stdout + result.stderr).strip()[-800:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            output = str(exc)
        still = _missing()
        if still:
            pytest.skip(
                f"playground browser tests need {', '.join(still)}, which `make playground-deps` could not "
                f"install here (it needs root and apt-get for Chromium): {output}"
            )
    return _which(_BROWSERS), _which(_DRIVERS)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def playground_url(
    chromium_paths: tuple[str, str], triton_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The real gateway, with API keys on (the page's key field is part of what is tested)."""
    state = tmp_path_factory.mktemp("playground-gateway")
    with running_gateway(triton_server, state, request_timeout_s=300.0, api_keys=[API_KEY]) as gateway:
        yield gateway.url


@pytest.fixture(scope="module")
def browser(chromium_paths: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Explicit paths: selenium never runs Selenium Manager (which would go online for a driver).
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("playground-screenshots")


@pytest.fixture
def page(browser: Any, playground_url: str) -> Iterator[Any]:
    """The page, loaded with the API key already saved, its voices listed; no script errors afterwards."""
    browser.get(playground_url + "/")
    browser.execute_script("localStorage.setItem(arguments[0], arguments[1]);", KEY_STORAGE, API_KEY)
    browser.refresh()
    wait(browser, lambda d: len(premium_voices(d)) == len(SPEAKERS), message="voices were not listed")
    browser.get_log("browser")  # start each test with an empty console
    yield browser
    assert script_errors(browser) == []


def own_server_settings(work: Path, checkpoints: Path, **overrides: Any) -> Settings:
    """Settings of a test's own tritonserver: its cache under ``work``, ``checkpoints``, every port picked
    free, and no real-time admission guard (a loaded CI machine must not hold newcomers back)."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        cache_dir=work / "cache",
        checkpoint_dir=checkpoints,
        triton_http_port=0,
        triton_grpc_port=0,
        triton_metrics_port=0,
        realtime_step_budget_s=0.0,
        **overrides,
    )


@contextmanager
def own_server(settings: Settings, work: Path, models: list[str]) -> Iterator[TritonServer]:
    """A real tritonserver serving ``models`` from a repository built under ``work``; always stopped."""
    repository = build_model_repository(settings, work / "model_repository", models)
    with TritonServer(repository, settings, log_path=work / "triton.log") as server:
        yield server
