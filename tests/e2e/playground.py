"""Selenium helpers of the playground tests (selenium is imported lazily: a fixture may install it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

API_KEY = "playground-key"
KEY_STORAGE = "qwen3-tts-playground.api-key"  # as in static/app.js
SPEAKERS = ["serena", "vivian", "uncle_fu", "ryan", "aiden", "ono_anna", "sohee", "eric", "dylan"]
UI_TIMEOUT_S = 20


def wait(driver: Any, condition: Any, timeout: float = UI_TIMEOUT_S, message: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def element(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def set_value(driver: Any, element_id: str, value: str) -> None:
    """Set a field and fire the events a user's typing would (fast, also for hidden/closed fields)."""
    driver.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input', {bubbles: true}));"
        "el.dispatchEvent(new Event('change', {bubbles: true}));",
        element_id,
        value,
    )


def stats(driver: Any) -> dict[str, int]:
    return driver.execute_script("return {...window.playground.stats};")


def premium_voices(driver: Any) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#premium-voices option')].map(o => o.value);"
    )


def settled(section: str, states: tuple[str, ...] = ("done", "error")) -> Any:
    """A wait condition: the section's status line reached one of ``states``."""

    def check(driver: Any) -> str | None:
        state = element(driver, f"{section}-status").get_attribute("data-state")
        return state if state in states else None

    return check


def visible_error(section: str) -> Any:
    def check(driver: Any) -> str | None:
        box = element(driver, f"{section}-error")
        return box.text if box.is_displayed() and box.text else None

    return check


def script_errors(driver: Any) -> list[str]:
    """Uncaught errors in the page; the browser's own 'Failed to load resource' lines for the 4xx answers
    the tests provoke on purpose are not errors of the page."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


def write_wav(path: Path, seconds: float, sample_rate: int = 24_000) -> Path:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def full_page_screenshot(driver: Any, path: Path) -> Path:
    """The whole page, not only the viewport: the window is grown to the page's height for the shot."""
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.set_window_size(
        size["width"], height + size["height"] - driver.execute_script("return innerHeight;")
    )
    try:
        assert driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
    return path
