"""A small WebDriver client for headless Chromium (Debian's chromium + chromium-driver).

Enough to drive the dashboard like a person: open a page, find, click and type, run a script,
wait for a condition, take a screenshot. Only the standard library: chromedriver speaks JSON
over HTTP (the W3C WebDriver protocol).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
KEYS = {"Escape": "\ue00c", "Enter": "\ue007"}  # WebDriver's code points for named keys
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1100",
]


class BrowserUnavailable(RuntimeError):
    """Chromium or chromedriver is not installed (or would not start)."""


def find_chromium() -> tuple[str, str]:
    """The chromium binary and chromedriver, or BrowserUnavailable saying what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise BrowserUnavailable(
            "chromium and chromium-driver are not installed "
            "(apt-get install -y chromium chromium-driver)"
        )
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Browser:
    """One headless Chromium session through chromedriver, with a fresh profile."""

    def __init__(self) -> None:
        chromium, driver = find_chromium()
        self.workdir = Path(tempfile.mkdtemp(prefix="mesh-browser-"))
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.driver = subprocess.Popen(
            [driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.session = ""
        try:
            self._wait_ready()
            capabilities = {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [*CHROMIUM_FLAGS, f"--user-data-dir={self.workdir / 'profile'}"],
                },
            }
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
            self.session = value["sessionId"]
        except Exception:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.driver.poll() is not None:
                raise BrowserUnavailable(f"chromedriver exited with {self.driver.returncode}")
            try:
                if self._call("GET", "/status").get("ready"):
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise BrowserUnavailable("chromedriver did not become ready in 20 s")

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(  # noqa: S310 -- chromedriver on loopback, http only
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 -- chromedriver on loopback
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise RuntimeError(f"WebDriver {method} {path}: HTTP {exc.code}: {detail}") from None

    def _session(self, method: str, path: str, payload: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", payload)

    # ---- what a test does -------------------------------------------------------------------

    def get(self, url: str) -> None:
        """Open `url` and wait for it to load."""
        self._session("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run JavaScript in the page (`return ...` gives a value back)."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, timeout: float = 10.0, *args: Any) -> Any:
        """Until `script` returns something truthy; its value, or AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for: {script}")
            time.sleep(0.05)

    def find(self, css: str) -> str:
        """The element matching `css` (its WebDriver id)."""
        value = self._session("POST", "/element", {"using": "css selector", "value": css})
        element: str = value[ELEMENT]
        return element

    def _on_element(self, css: str, action: str, payload: dict[str, Any]) -> None:
        """`action` on the element matching `css`, found anew if the page replaced it between
        the find and the action (the live page redraws a card when its task changes: a person
        would click the card now on screen, so the test does too)."""
        for attempt in range(5):
            try:
                self._session("POST", f"/element/{self.find(css)}/{action}", payload)
                return
            except RuntimeError as exc:
                if "stale element reference" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.05)

    def click(self, css: str) -> None:
        """Click the element, as a person would."""
        self._on_element(css, "click", {})

    def type(self, css: str, text: str) -> None:
        """Type `text` into the element."""
        self._on_element(css, "value", {"text": text})

    def press(self, key: str) -> None:
        """Press and release `key` (a character, or `Escape`/`Enter`) on the keyboard, wherever
        the focus is (as a person does)."""
        key = KEYS.get(key, key)
        actions = [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self._session(
            "POST", "/actions", {"actions": [{"type": "key", "id": "keys", "actions": actions}]}
        )

    def screenshot(self) -> bytes:
        """The visible page as PNG."""
        return base64.b64decode(self._session("GET", "/screenshot"))

    def full_screenshot(self) -> bytes:
        """The whole page as PNG (the window is resized to the page's height first)."""
        height = int(self.run("return document.documentElement.scrollHeight"))
        self._session("POST", "/window/rect", {"width": 1440, "height": min(height + 140, 4000)})
        return self.screenshot()

    def resize(self, width: int, height: int) -> None:
        """Set the window to `width` x `height` pixels (the viewport is a little smaller)."""
        self._session("POST", "/window/rect", {"width": width, "height": height})

    def viewport(self, width: int, height: int) -> None:
        """Size the window so that the page's viewport is `width` x `height` pixels."""
        self.resize(width, height)
        inner = self.run("return [window.innerWidth, window.innerHeight]")
        self.resize(2 * width - int(inner[0]), 2 * height - int(inner[1]))

    def close(self) -> None:
        """End the session, chromedriver and the profile."""
        if self.session:
            with contextlib.suppress(OSError, RuntimeError, urllib.error.URLError):
                self._session("DELETE", "")
            self.session = ""
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def available() -> str | None:
    """None when the browser tests can run, else why not."""
    try:
        find_chromium()
    except BrowserUnavailable as exc:
        return str(exc)
    if os.environ.get("MESH_SKIP_BROWSER"):
        return "MESH_SKIP_BROWSER is set"
    return None
