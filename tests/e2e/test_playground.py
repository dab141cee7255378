"""The playground page at ``/`` in headless Chromium, against the real gateway and the real tritonserver.

Run with ``pytest tests/e2e/test_playground.py`` (``QWEN3_TTS_CHECKPOINT_DIR`` reuses prebuilt tiny
checkpoints). Screenshots land in pytest's temporary folder; their paths are printed (``-s`` shows them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .playground import (
    API_KEY,
    SPEAKERS,
    element,
    full_page_screenshot,
    premium_voices,
    script_errors,
    set_value,
    settled,
    stats,
    visible_error,
    wait,
    write_wav,
)

pytestmark = pytest.mark.e2e

SYNTHESIS_TIMEOUT_S = 240
# Short, reproducible utterances: the tiny random models on CPU take seconds per request.
FAST_SAMPLING = {"seed": "7", "max-new-tokens": "24"}


# --- tests ---------------------------------------------------------------------------------------------


def test_page_loads_lists_voices_and_keeps_the_key(browser: Any, playground_url: str) -> None:
    browser.get(playground_url + "/")
    browser.execute_script("localStorage.clear();")
    browser.refresh()
    assert browser.title == "Qwen3-TTS playground"
    # Auth is on and no key is saved: the gateway's 401 is shown, with what to do about it.
    message = wait(browser, visible_error("global"), message="no 401 shown without a key")
    assert "401" in message and "missing API key" in message and "enter it at the top" in message

    key = element(browser, "api-key")
    key.send_keys(API_KEY)
    element(browser, "text").click()  # leaving the field commits the key (change event)
    wait(browser, lambda d: len(premium_voices(d)) == len(SPEAKERS), message="voices were not listed")
    assert premium_voices(browser) == SPEAKERS
    assert not element(browser, "global-error").is_displayed()
    languages = browser.execute_script(
        "return [...document.querySelectorAll('#language option')].map(o => o.value);"
    )
    assert {"auto", "english", "chinese"} <= set(languages)
    # The limits come from the gateway's settings and are explained before any upload.
    assert "at least 3 seconds" in element(browser, "clone-help").text
    assert "/ 2000 characters" in element(browser, "text-count").text
    # Every form control has a label.
    unlabeled = browser.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter(el => !el.labels || el.labels.length === 0).map(el => el.id);"
    )
    assert unlabeled == []

    browser.refresh()  # the key survives a reload (localStorage)
    wait(browser, lambda d: len(premium_voices(d)) == len(SPEAKERS), message="voices not listed after reload")
    assert element(browser, "api-key").get_attribute("value") == API_KEY
    assert script_errors(browser) == []


def _options(driver: Any, select_id: str) -> list[str]:
    return driver.execute_script(
        "return [...document.getElementById(arguments[0]).options].map(o => o.textContent);", select_id
    )


def _banner(driver: Any) -> str | None:
    return visible_error("global")(driver)


def test_without_a_key_the_lists_say_why_and_every_401_shows_the_banner(
    browser: Any, playground_url: str, screenshot_dir: Path
) -> None:
    browser.get(playground_url + "/")
    browser.execute_script("localStorage.clear();")
    browser.refresh()
    # No key: the empty lists say what to do, and the banner names the gateway's 401.
    wait(
        browser,
        lambda d: _options(d, "voice") == ["Enter your API key to load voices"],
        message="no hint in the voice list",
    )
    assert _options(browser, "language") == ["Enter your API key to load languages"]
    assert _options(browser, "design-language") == ["Enter your API key to load languages"]
    assert element(browser, "voice-list").text == "Enter your API key to load your voices."
    banner = wait(browser, _banner, message="no 401 banner without a key")
    assert "401" in banner and "missing API key" in banner and "enter it at the top" in banner
    print(f"screenshot: {full_page_screenshot(browser, screenshot_dir / 'playground-no-key.png')}")
    # Speak has no voice to speak with: it says why instead of sending a request.
    requests = stats(browser)["requests"]
    element(browser, "speak").click()
    assert "Enter your API key" in wait(browser, visible_error("speak"))
    assert stats(browser)["requests"] == requests

    # A wrong key: the lists and the banner say the key is refused.
    set_value(browser, "api-key", "wrong-key")
    wait(browser, lambda d: "invalid API key" in (_banner(d) or ""), message="no banner for a wrong key")
    assert _options(browser, "voice") == ["Enter a valid API key to load voices"]

    # Every request answered 401 brings the banner back, whichever part of the page sent it.
    for action, transport in (("design", None), ("speak", "ws"), ("speak", "ndjson")):
        set_value(browser, "api-key", API_KEY)  # the lists load and the banner goes
        wait(browser, lambda d: premium_voices(d) == SPEAKERS, message="voices not listed with the key")
        assert _banner(browser) is None
        if transport:
            set_value(browser, "transport", transport)
        # A key typed but not yet committed (no change event): the request itself gets the 401.
        browser.execute_script("document.getElementById('api-key').value = 'wrong-key';")
        browser.execute_script("arguments[0].click();", element(browser, action))
        banner = wait(browser, _banner, message=f"no 401 banner after {action} ({transport})")
        assert "Error 401" in banner and "invalid API key" in banner and "enter it at the top" in banner
        assert "401" in wait(browser, visible_error(action))

    set_value(browser, "api-key", API_KEY)
    wait(browser, lambda d: premium_voices(d) == SPEAKERS, message="voices not listed after the 401s")
    assert "english" in browser.execute_script(
        "return [...document.querySelectorAll('#language option')].map(o => o.value);"
    )
    assert _banner(browser) is None
    assert script_errors(browser) == []


@pytest.mark.parametrize("transport", ["ws", "ndjson"])
def test_streamed_speech_reaches_the_audio_context(page: Any, transport: str, screenshot_dir: Path) -> None:
    set_value(page, "voice", "ryan")
    set_value(page, "language", "english")
    set_value(page, "transport", transport)
    set_value(page, "text", "Hello from the playground.")
    for field, value in FAST_SAMPLING.items():
        set_value(page, field, value)
    before = stats(page)

    element(page, "speak").click()
    state = wait(page, settled("speak"), SYNTHESIS_TIMEOUT_S, "speech did not finish")
    status = element(page, "speak-status").text
    assert state == "done", (status, element(page, "speak-error").text)
    after = stats(page)
    assert after["chunks"] > before["chunks"] and after["samples"] > before["samples"]
    assert after["requests"] == before["requests"] + 1
    clock = page.execute_script("return window.playground.audioClock();")
    assert clock["state"] == "running" and clock["time"] > 0  # the context really plays (no device here)
    assert status.startswith("Done:") and "chunks" in status
    assert not element(page, "speak-error").is_displayed()
    download = element(page, "speak-download")
    assert download.is_displayed() and download.get_attribute("href").startswith("blob:")
    if transport == "ws":
        print(f"screenshot: {full_page_screenshot(page, screenshot_dir / 'playground-after-speech.png')}")


def test_stop_cancels_the_stream(page: Any) -> None:
    set_value(page, "voice", "ryan")
    set_value(page, "text", "Hello from the playground. " * 6)
    set_value(page, "seed", "3")
    set_value(page, "max-new-tokens", "120")  # about 10 s of audio: still streaming when Stop is pressed
    element(page, "speak").click()
    wait(page, lambda d: stats(d)["chunks"] > 0, SYNTHESIS_TIMEOUT_S, "no audio arrived")
    element(page, "stop").click()
    state = wait(page, settled("speak", ("done", "stopped", "error")), SYNTHESIS_TIMEOUT_S)
    assert state == "stopped", element(page, "speak-status").text
    assert "cancelled" in element(page, "speak-status").text
    assert element(page, "speak").is_enabled() and not element(page, "stop").is_enabled()


def test_saved_voice_is_listed_spoken_and_deleted(page: Any, tmp_path: Path) -> None:
    element(page, "clone-file").send_keys(str(write_wav(tmp_path / "four-seconds.wav", 4.0)))
    wait(page, lambda d: element(d, "clone-save").is_enabled(), message="a 4 s clip was not accepted")
    assert "4.0 s" in element(page, "clone-clip").text
    set_value(page, "clone-name", "Test voice")
    element(page, "clone-save").click()
    state = wait(page, settled("clone"), SYNTHESIS_TIMEOUT_S, "saving did not finish")
    assert state == "done", element(page, "clone-error").text
    voice = page.execute_script("return document.getElementById('voice').value;")
    assert voice.startswith("qwen3-clone-") and voice in element(page, "clone-status").text
    assert page.execute_script(
        "return [...document.querySelectorAll('#cloned-voices option')].map(o => o.textContent);"
    ) == ["Test voice"]
    assert not element(page, "instruct").is_enabled()  # style instructions are for built-in timbres only

    set_value(page, "text", "Hello.")
    for field, value in FAST_SAMPLING.items():
        set_value(page, field, value)
    before = stats(page)["samples"]
    element(page, "speak").click()
    state = wait(page, settled("speak"), SYNTHESIS_TIMEOUT_S, "speech did not finish")
    assert state == "done", element(page, "speak-error").text
    assert stats(page)["samples"] > before

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions

    page.find_element(By.CSS_SELECTOR, "#voice-list button[aria-label='Delete Test voice']").click()
    wait(page, expected_conditions.alert_is_present()).accept()  # the page asks before deleting
    wait(page, lambda d: "No saved voices yet." in element(d, "voice-list").text, message="not deleted")
    assert page.execute_script("return document.getElementById('cloned-voices');") is None


def test_short_or_undecodable_clip_is_refused(page: Any, tmp_path: Path) -> None:
    # A 1-second WAV: the page measures it and refuses it before uploading, naming the minimum.
    element(page, "clone-file").send_keys(str(write_wav(tmp_path / "one-second.wav", 1.0)))
    message = wait(page, visible_error("clone"), message="no error for a 1 s clip")
    assert "1.0 s long" in message and "at least 3 s" in message
    assert not element(page, "clone-save").is_enabled()

    # Bytes the browser cannot decode go to the gateway, and its 400 is shown as it is.
    junk = tmp_path / "not-audio.wav"
    junk.write_bytes(b"this is not audio " * 64)
    element(page, "clone-file").send_keys(str(junk))
    wait(page, lambda d: element(d, "clone-save").is_enabled(), message="save stayed disabled")
    assert "length unknown" in element(page, "clone-clip").text
    element(page, "clone-save").click()
    assert wait(page, settled("clone"), message="upload did not settle") == "error"
    message = element(page, "clone-error").text
    assert "Error 400" in message and "unrecognised reference audio format" in message

    # A file over the upload limit (20 MiB by default) is refused before uploading, in a unit people read.
    big = tmp_path / "too-big.wav"
    big.write_bytes(b"x" * (20 * 2**20 + 2**19))
    element(page, "clone-file").send_keys(str(big))
    message = wait(page, visible_error("clone"), message="no error for a file over the limit")
    assert "This file is 20.5 MiB; the limit is 20 MiB." in message
    assert not element(page, "clone-save").is_enabled()


@pytest.mark.parametrize("transport", ["ws", "ndjson"])
def test_invalid_requests_show_the_reason(page: Any, transport: str, screenshot_dir: Path) -> None:
    set_value(page, "transport", transport)
    requests = stats(page)["requests"]

    set_value(page, "text", "   ")
    element(page, "speak").click()
    assert "Type some text" in wait(page, visible_error("speak"))
    assert stats(page)["requests"] == requests  # caught before any request

    set_value(page, "text", "a" * 2001)
    assert "over the limit" in element(page, "text-count").text
    element(page, "speak").click()
    assert wait(page, settled("speak"), SYNTHESIS_TIMEOUT_S) == "error"
    message = element(page, "speak-error").text
    assert "Error 422" in message and "longer than 2000 characters" in message

    # A voice the gateway does not know: its 422 lists the valid ones.
    page.execute_script(
        "const select = document.getElementById('voice');"
        "select.append(new Option('Nobody', 'nobody')); select.value = 'nobody';"
    )
    set_value(page, "text", "Hello.")
    element(page, "speak").click()
    wait(page, lambda d: "nobody" in element(d, "speak-error").text, SYNTHESIS_TIMEOUT_S)
    message = element(page, "speak-error").text
    assert "Error 422" in message and all(name in message for name in SPEAKERS)
    if transport == "ws":
        print(f"screenshot: {full_page_screenshot(page, screenshot_dir / 'playground-error.png')}")


def test_design_plays_through_the_audio_context(page: Any, screenshot_dir: Path) -> None:
    for field, value in FAST_SAMPLING.items():
        set_value(page, field, value)
    before = stats(page)
    element(page, "design").click()
    state = wait(page, settled("design"), SYNTHESIS_TIMEOUT_S, "design did not finish")
    assert state == "done", element(page, "design-error").text
    assert stats(page)["samples"] > before["samples"]
    assert element(page, "design-keep").is_displayed()
    assert element(page, "design-download").get_attribute("href").startswith("blob:")
    print(f"screenshot: {full_page_screenshot(page, screenshot_dir / 'playground-after-design.png')}")


def test_microphone_recording_becomes_a_wav_clip(page: Any) -> None:
    """Chromium's fake microphone (a beep): MediaRecorder -> decoded -> 24 kHz WAV, long enough to save."""
    record = element(page, "record")
    record.click()
    wait(page, lambda d: record.get_attribute("aria-pressed") == "true", message="recording did not start")
    wait(page, lambda d: float(element(d, "record-time").text.split()[0]) >= 3.5, timeout=15)
    record.click()
    wait(page, lambda d: "recording.wav" in element(d, "clone-clip").text, message="no clip from the mic")
    seconds = float(element(page, "clone-clip").text.split("(")[1].split()[0])
    assert seconds >= 3.0
    assert element(page, "clone-save").is_enabled()
    assert not element(page, "clone-error").is_displayed()
    preview = element(page, "clone-preview")
    assert preview.is_displayed() and preview.get_attribute("src").startswith("blob:")
