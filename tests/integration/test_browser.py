"""The reports in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run) opens a
single-run report and a compare report, under their own Content-Security-Policy, and the test asserts that no
console error, uncaught exception or CSP violation is reported and that every figure decodes with a non-zero
size. Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: no network port, no
websocket client); the page's own CSP stays as it is, since DevTools' Runtime.evaluate is not page script."""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from replearn.cli.main import main

from helpers import default_digits_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (.ci/run installs Debian's chromium)")

IMAGES = "JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]))"
PROBLEMS = {"Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded"}


class Browser:
    """Headless Chromium with the DevTools protocol on file descriptors 3 (commands) and 4 (replies, events)."""

    def __init__(self, profile: Path) -> None:
        commands_read, self.commands = os.pipe()
        self.replies, replies_write = os.pipe()

        def child() -> None:  # move the pipe ends to fds 3 and 4 without clobbering either on the way
            a = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                         "--disable-dev-shm-usage", "--remote-debugging-pipe",
                                         f"--user-data-dir={profile}", "about:blank"],
                                        preexec_fn=child, close_fds=False, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(replies_write)
        self.buffer, self.last_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {},
                   **({"sessionId": session} if session else {})}
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.last_id:
                assert "error" not in reply, reply
                return reply["result"]

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    def settle(self, seconds: float) -> None:
        """Collect the events of the next ``seconds`` (late console messages, image decoding)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._read(deadline)
        except TimeoutError:
            pass

    def open(self, page: Path) -> tuple[list[list], list[dict]]:
        """Load ``page``; its images as [complete, naturalWidth, naturalHeight, alt] and the problems reported."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.session = session  # the page last opened, for ``evaluate``
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session=session)
        self.events.clear()
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        deadline = time.monotonic() + 60
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            self._read(deadline)
        self.settle(1.0)
        images = self.send("Runtime.evaluate", {"expression": IMAGES, "returnByValue": True}, session=session)
        return json.loads(images["result"]["value"]), [e for e in self.events if is_problem(e)]

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression on the page last opened."""
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                         session=self.session)["result"]["value"]

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(timeout=20)
        except (OSError, EOFError, TimeoutError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        os.close(self.commands)
        os.close(self.replies)


def is_problem(event: dict) -> bool:
    """An uncaught exception, a console error or assertion, or a browser log error (CSP violations are these)."""
    params = event.get("params", {})
    if event["method"] == "Runtime.exceptionThrown":
        return True
    if event["method"] == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    if event["method"] == "Log.entryAdded":
        return params.get("entry", {}).get("level") == "error"
    return False


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """The default digits run (every report section, figures in every format), shared with the reference test."""
    return default_digits_run(tmp_path_factory)


def assert_clean(images: list[list], problems: list[dict], least: int) -> None:
    assert not problems, json.dumps(problems, indent=1)[:3000]
    assert len(images) >= least, f"only {len(images)} images"
    broken = [alt for complete, width, height, alt in images if not (complete and width > 0 and height > 0)]
    assert not broken, f"images that did not decode: {broken}"


def test_run_report_has_no_console_error_or_csp_violation_and_every_figure_decodes(browser, digits_run):
    html = (digits_run / "report.html").read_text()
    assert "Content-Security-Policy" in html  # the report's own policy is in force, not weakened for the test
    images, problems = browser.open(digits_run / "report.html")
    assert_clean(images, problems, least=html.count("<img"))
    assert html.count("<img") >= 8


def test_the_check_sees_csp_violations_console_errors_and_broken_images(browser, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\""
                    "default-src 'none'; img-src data:\"></head><body><img alt=broken src=\"data:image/png;base64,AAAA\">"
                    "<img alt=remote src=\"https://example.invalid/x.png\"><script>console.error('x')</script>"
                    "</body></html>")
    images, problems = browser.open(page)
    texts = " ".join(e["params"].get("entry", {}).get("text", "") for e in problems)
    assert "Content Security Policy" in texts and "inline script" in texts
    assert [w for _, w, _, _ in images] == [0, 0]


def test_compare_report_has_no_console_error_or_csp_violation_and_every_figure_decodes(browser, digits_run,
                                                                                        tmp_path):
    pytest.importorskip("replearn.studies.compare", reason="replearn compare is not built yet")
    assert main(["compare", str(digits_run), "--out", str(tmp_path / "compare")]) == 0  # one run: every figure
    page = tmp_path / "compare" / "compare.html"
    html = page.read_text()
    assert "Content-Security-Policy" in html and html.count("<img") >= 3
    images, problems = browser.open(page)
    assert_clean(images, problems, least=html.count("<img"))


STICKY = """(() => {
  window.scrollTo(0, document.body.scrollHeight);
  const nav = document.querySelector('nav').getBoundingClientRect();
  const config = document.querySelector('#config details');
  return JSON.stringify({top: nav.top, height: nav.height, scrolled: window.scrollY,
                         sections: document.querySelectorAll('section > details[open]').length,
                         configOpen: config ? config.open : null});
})()"""


def test_the_navigation_stays_on_screen_and_sections_collapse(browser, digits_run):
    browser.open(digits_run / "report.html")
    state = json.loads(browser.evaluate(STICKY))
    assert state["scrolled"] > 1000  # the page did scroll
    assert state["top"] == 0 and 0 < state["height"] < 80  # the navigation is still at the top, one line high
    assert state["sections"] >= 8 and state["configOpen"] is False  # sections open, the configuration collapsed
