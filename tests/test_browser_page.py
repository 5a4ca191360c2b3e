"""The script's page in headless Chromium, used as a person uses it: no page error under gradio 4.40.0 (Forge)
and 3.41.2 (A1111, reForge).

Marked slow (outside the default run; the CI job .ci/run runs it). Needs:
  * Chromium: Debian's package (`apt-get install chromium`, /usr/bin/chromium) or $UG_CHROMIUM;
  * the driver: Playwright for Python (`pip install playwright`; only its driver is used, no browser
    download: the system Chromium is launched by path);
  * the gradio environments of tests/test_forge_gradio_ui.py (created on first use).
With UG_REQUIRE_GRADIO=1 (CI) anything missing is a failure, never a skip.

The page is built from our UI module by tests/_gradio_ui_driver.py --serve (txt2img and img2img, with the A1111
InputAccordion stand-in and javascript/upsample_guidance.js), served by that gradio version in a subprocess.
In each tab the test types 128 + Enter into Base resolution (the accordion is served enabled and open),
picks a preset, closes and reopens the accordion, and changes the scale and eta; any uncaught page error or console error (other than
the offline page's failed font downloads) fails it, and the readout must follow the typed base.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_forge_gradio_ui import DRIVER, _gradio_python

HERE = Path(__file__).resolve().parent
REQUIRED = bool(os.environ.get("UG_REQUIRE_GRADIO"))
OFFLINE_NOISE = ("net::ERR_NAME_NOT_RESOLVED", "net::ERR_INTERNET_DISCONNECTED", "fonts.googleapis.com")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def _missing(why: str):
    if REQUIRED:  # CI: a missing browser or driver is a failure
        pytest.fail(why)
    pytest.skip(why)


def _chromium() -> str:
    path = os.environ.get("UG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        _missing("no Chromium (apt-get install chromium, or set UG_CHROMIUM)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """tests/_gradio_ui_driver.py --serve PORT in the given python; stopped (by its pid) on exit."""

    def __init__(self, python: Path):
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["GRADIO_ANALYTICS_ENABLED"] = "False"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"ug_page_{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [str(python), str(DRIVER), "--serve", str(self.port)],
            cwd=str(HERE.parent),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait(self, timeout: float = 240.0) -> str:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if "SERVING " in self.output():
                return f"http://127.0.0.1:{self.port}/"
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"the page server did not start:\n{self.output()[-3000:]}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _errors_of(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))

    def console(message):
        if message.type == "error" and not any(n in message.text for n in OFFLINE_NOISE):
            errors.append(f"console error: {message.text}")

    page.on("console", console)
    return errors


def _use_tab(page, tab: str, errors: list[str]) -> list[str]:
    from playwright.sync_api import expect

    """Drive one tab's controls; returns the readout texts seen (after typing 128, after the preset)."""
    prefix = f"#script_{tab}_upsample_guidance"
    page.locator(f"#tab_{tab}-button, button", has_text=tab).first.click()
    base = page.locator(f"{prefix}_base input").first
    header = page.locator(f"{prefix}_enable .label-wrap").first
    readout = page.locator(f"{prefix}_readout .ug-readout-text").first
    base.wait_for(state="visible", timeout=30000)  # served enabled and open
    seen = []

    base.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("128", delay=40)
    page.keyboard.press("Enter")
    page.keyboard.press(
        "Tab"
    )  # leaving the box refreshes the readout from the final value (ui._refresh_on_blur)
    expect(readout).to_contain_text("x128 (", timeout=30000)
    seen.append(readout.inner_text())

    base.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Backspace")  # gradio 3 filters the presets by the text in the box
    page.locator("ul.options li", has_text="768").first.click()  # a preset
    expect(readout).not_to_contain_text("x128 (", timeout=30000)
    seen.append(readout.inner_text())

    header.click()  # close
    page.wait_for_timeout(500)
    header.click()  # and open again
    base.wait_for(state="visible", timeout=30000)

    for control, value in (("scale", "1.3"), ("eta", "0.8")):
        box = page.locator(f"{prefix}_{control} input[type=number]").first
        box.fill(value)
        box.press("Enter")
    expect(readout).to_contain_text("80%", timeout=30000)
    seen.append(readout.inner_text())
    page.wait_for_timeout(1000)  # late errors (responses, re-renders)
    assert not errors, errors
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("version", ["4.40.0", "3.41.2"])
def test_page_has_no_error_while_the_controls_are_used(version):
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("no Playwright for Python (pip install playwright)")
    python = _gradio_python(version)
    with _Server(python) as server:
        url = server.wait()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                errors = _errors_of(page)
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_selector(
                    "#script_txt2img_upsample_guidance_base", state="attached", timeout=60000
                )
                for tab in ("txt2img", "img2img"):
                    typed, preset, changed = _use_tab(page, tab, errors)
                    assert "guided from" in typed and "128" in typed, typed
                    assert "768" in preset, preset
                    assert "80%" in changed, changed
            finally:
                browser.close()
        assert "Traceback" not in server.output(), server.output()[-3000:]
    assert sys.executable  # the driver ran in this interpreter; gradio in the throwaway one
