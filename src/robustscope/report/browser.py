"""Open a report in headless Chromium: check that it loads cleanly and take screenshots.

The browser is driven through the Chrome DevTools Protocol over a pipe
(``--remote-debugging-pipe``): Chromium reads JSON commands from file
descriptor 3 and writes replies and events to file descriptor 4, each message
ending in a NUL byte. This needs only the standard library and a Chromium or
Chrome executable, found by :func:`find_chromium`.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._logging import get_logger

log = get_logger("report.browser")

# Environment variable that names the browser executable, checked before PATH.
CHROMIUM_ENV = "ROBUSTSCOPE_CHROMIUM"
_EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Seconds to wait for one DevTools reply or for a page's load event.
DEFAULT_TIMEOUT = 60.0

_IMAGES_SCRIPT = """
Array.from(document.images, (image, index) => ({
  index: index,
  alt: image.alt.slice(0, 80),
  complete: image.complete,
  naturalWidth: image.naturalWidth,
  naturalHeight: image.naturalHeight,
}))
"""


class BrowserError(RuntimeError):
    """Chromium could not be started, stopped replying, or rejected a command."""


@dataclass
class PageCheck:
    """What a page did while it loaded in the browser.

    ``errors`` holds console errors, uncaught exceptions and browser log
    entries at error level (for example a resource that failed to load).
    ``images`` has one entry per ``<img>`` with ``complete``,
    ``naturalWidth`` and ``naturalHeight`` (0 when the image did not decode).
    """

    url: str
    load_seconds: float
    errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        """Images that did not finish loading or decoded to zero width."""
        return [image for image in self.images if not image["complete"] or image["naturalWidth"] <= 0]


def find_chromium() -> str | None:
    """Return the path of a Chromium or Chrome executable, or None when none is found.

    ``$ROBUSTSCOPE_CHROMIUM`` is used when it names an executable file;
    otherwise the names ``chromium``, ``chromium-browser``, ``google-chrome``,
    ``google-chrome-stable`` and ``chrome`` are looked up on ``PATH``.
    """
    configured = os.environ.get(CHROMIUM_ENV)
    if configured and Path(configured).is_file() and os.access(configured, os.X_OK):
        return configured
    for name in _EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    return None


class HeadlessChromium:
    """A headless Chromium process with one page, controlled over the DevTools pipe.

    Use it as a context manager; leaving the block closes the browser and
    removes its temporary profile.

    Parameters
    ----------
    executable
        Browser to run; :func:`find_chromium` by default.
    width, height
        Size of the page's viewport in CSS pixels.
    timeout
        Seconds to wait for each reply and for each page load.

    Raises
    ------
    BrowserError
        When no browser is found or it does not start.
    """

    def __init__(self, executable: str | None = None, *, width: int = 1280, height: int = 800, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError(f"no Chromium or Chrome executable found; install one or set {CHROMIUM_ENV}")
        self.width = width
        self.height = height
        self.timeout = timeout
        self._next_id = 0
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._events: list[dict[str, Any]] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._session: str | None = None

    def __enter__(self) -> HeadlessChromium:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the browser and open one blank page with the configured viewport."""
        self._profile = tempfile.TemporaryDirectory(prefix="robustscope-chromium-")
        self._stderr = tempfile.TemporaryFile()
        command_read, command_write = os.pipe()
        reply_read, reply_write = os.pipe()

        def place_pipes() -> None:
            # Runs in the child before exec: Chromium expects its command pipe on fd 3 and its reply pipe on fd 4.
            command_copy, reply_copy = os.dup(command_read), os.dup(reply_write)
            os.dup2(command_copy, 3)
            os.dup2(reply_copy, 4)

        arguments = [
            self.executable,
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile.name}",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            "--mute-audio",
            "about:blank",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Chromium's sandbox refuses to run as root.
            arguments.insert(2, "--no-sandbox")
        try:
            self._process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(3, 4),
                preexec_fn=place_pipes,  # noqa: PLW1509 (no threads of ours run yet)
            )
        except OSError as error:
            raise BrowserError(f"could not start {self.executable}: {error}") from error
        finally:
            os.close(command_read)
            os.close(reply_write)
        self._commands = os.fdopen(command_write, "wb", buffering=0)
        self._replies = os.fdopen(reply_read, "rb", buffering=0)
        self._reader = threading.Thread(target=self._read_replies, name="chromium-devtools-reader", daemon=True)
        self._reader.start()

        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )
        log.debug("started %s with a %dx%d viewport", self.executable, self.width, self.height)

    def _read_replies(self) -> None:
        buffer = b""
        while True:
            chunk = self._replies.read(65536)
            if not chunk:
                self._messages.put(None)
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                self._messages.put(json.loads(message))

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-2000:]

    def _receive(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        try:
            message = self._messages.get(timeout=max(0.0, remaining))
        except queue.Empty:
            raise BrowserError(f"Chromium sent nothing for {self.timeout:.0f} s") from None
        if message is None:
            raise BrowserError(f"Chromium closed the DevTools pipe; its last output: {self._stderr_tail()}")
        return message

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False) -> dict[str, Any]:
        """Send one DevTools command and return its result; events that arrive meanwhile are kept.

        Raises
        ------
        BrowserError
            When the browser replies with an error or does not reply within the timeout.
        """
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        self._commands.write(json.dumps(message).encode("utf-8") + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") != self._next_id:
                self._events.append(reply)
                continue
            if "error" in reply:
                raise BrowserError(f"{method} failed: {reply['error'].get('message')}")
            return reply.get("result", {})

    def _wait_for_event(self, method: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(event.get("method") == method for event in self._events):
            self._events.append(self._receive(deadline))

    def open(self, path: str | Path) -> PageCheck:
        """Load a local HTML file, wait for its load event, and return what the page reported.

        Raises
        ------
        BrowserError
            When the page does not finish loading within the timeout.
        """
        url = Path(path).resolve().as_uri()
        self._events.clear()
        started = time.perf_counter()
        result = self.send("Page.navigate", {"url": url}, session=True)
        if result.get("errorText"):
            raise BrowserError(f"Chromium could not open {url}: {result['errorText']}")
        self._wait_for_event("Page.loadEventFired")
        load_seconds = time.perf_counter() - started
        evaluated = self.send("Runtime.evaluate", {"expression": _IMAGES_SCRIPT, "returnByValue": True}, session=True)
        images = evaluated["result"].get("value", [])
        return PageCheck(url=url, load_seconds=load_seconds, errors=_error_messages(self._events), images=images)

    def screenshot(self) -> bytes:
        """Return a PNG of the visible viewport (the first screen) of the open page."""
        result = self.send("Page.captureScreenshot", {"format": "png"}, session=True)
        return base64.b64decode(result["data"])

    def close(self) -> None:
        """Close the browser, wait for it to exit, and remove its temporary profile."""
        if self._process is not None:
            try:
                self.send("Browser.close")
            except (BrowserError, OSError):
                log.debug("Chromium did not acknowledge Browser.close; stopping the process")
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._commands.close()
            self._process = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None


def _error_messages(events: list[dict[str, Any]]) -> list[str]:
    """Return the console errors, uncaught exceptions and error-level log entries among DevTools events."""
    errors = []
    for event in events:
        method = event.get("method")
        params = event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text", "")
            errors.append(f"uncaught exception: {description}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('source', 'browser')}: {entry.get('text', '')} {entry.get('url', '')}".strip())
    return errors


def check_page(path: str | Path, *, executable: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> PageCheck:
    """Open one HTML file in a fresh headless Chromium and return its :class:`PageCheck`."""
    with HeadlessChromium(executable, timeout=timeout) as browser:
        return browser.open(path)


def screenshot_page(
    path: str | Path,
    output: str | Path,
    *,
    width: int = 1280,
    height: int = 800,
    executable: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PageCheck:
    """Save a PNG of the first screen (``width`` x ``height`` CSS pixels) of an HTML file.

    Returns the page check of the same load, so a caller can refuse a
    screenshot of a page with errors.
    """
    from .._io import write_bytes

    with HeadlessChromium(executable, width=width, height=height, timeout=timeout) as browser:
        check = browser.open(path)
        write_bytes(Path(output), browser.screenshot())
    return check


__all__ = ["BrowserError", "HeadlessChromium", "PageCheck", "check_page", "find_chromium", "screenshot_page"]
