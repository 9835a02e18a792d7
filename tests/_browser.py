"""Open a local HTML file in real headless Chromium, through the DevTools protocol over a pipe.

No browser-automation package is needed: Chromium's ``--remote-debugging-pipe`` reads
NUL-terminated JSON commands on file descriptor 3 and writes replies and events on descriptor 4.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")

# Flags that keep a headless Chromium quiet on a machine with no network and no display.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)

# Decodes every <img> and reports, per image, its natural width or the decode error.
_IMAGES_JS = """
Promise.all(Array.from(document.images).map(img =>
  img.decode().then(() => ({src: img.src.slice(0, 40), width: img.naturalWidth, error: null}),
                    e => ({src: img.src.slice(0, 40), width: 0, error: String(e)}))))
"""


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    """What the browser saw: console errors, uncaught exceptions, images, visible text, script count."""

    errors: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    text: str = ""
    n_scripts: int = 0
    title: str = ""


class _DevToolsPipe:
    def __init__(self, chromium: str, profile: str) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Move the child's ends above 10 so that placing them on 3 and 4 cannot clobber each other.
        child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def place_pipes() -> None:
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.process = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=place_pipes,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(child_r)
        os.close(child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], remaining)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _console_errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:300])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console.error: " + json.dumps(params.get("args", []))[:300])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append("log: " + params["entry"].get("text", "")[:300])
    return errors


def open_page(path: Path, chromium: str, timeout: float = 60) -> PageReport:
    """Load ``path`` in headless Chromium and report what happened.

    Parameters
    ----------
    path
        A local HTML file.
    chromium
        The browser executable (see ``find_chromium``).
    timeout
        Seconds allowed for each protocol step.
    """
    with tempfile.TemporaryDirectory() as profile:
        pipe = _DevToolsPipe(chromium, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired", timeout=timeout)
            evaluate = lambda expr, wait=False: pipe.send(  # noqa: E731
                "Runtime.evaluate",
                {"expression": expr, "awaitPromise": wait, "returnByValue": True},
                session=session,
                timeout=timeout,
            )["result"].get("value")
            report = PageReport(
                images=evaluate(_IMAGES_JS, wait=True),
                text=evaluate("document.body.innerText"),
                n_scripts=evaluate("document.scripts.length"),
                title=evaluate("document.title"),
            )
            report.errors = _console_errors(pipe.events)
            return report
        finally:
            pipe.close()


# Every element that sticks out of its parent, or whose content is wider than its own box, outside
# explicit scroll wrappers (those must fit themselves; what scrolls inside them is fine).
_OVERFLOW_JS = """
((wrapperSelector) => {
  const found = [];
  const describe = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
      + (el.classList.length ? '.' + Array.from(el.classList).join('.') : '');
  const insideWrapper = el => {
    for (let a = el.parentElement; a; a = a.parentElement) if (a.matches(wrapperSelector)) return true;
    return false;
  };
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth + 1)
    found.push({element: 'html', problem: 'page scrolls sideways', width: root.scrollWidth, limit: root.clientWidth});
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;  // not rendered (display: none, closed <details>)
    if (insideWrapper(el)) continue;
    const parent = el.parentElement.getBoundingClientRect();
    if (box.right > parent.right + 1 || box.left < parent.left - 1)
      found.push({element: describe(el), problem: 'wider than its container', width: Math.round(box.width),
                  limit: Math.round(parent.width)});
    if (!el.matches(wrapperSelector) && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
      found.push({element: describe(el), problem: 'content wider than the box', width: el.scrollWidth,
                  limit: el.clientWidth});
  }
  return found;
})
"""


@contextmanager
def loaded_page(path: Path, chromium: str, width: int = 1280, height: int = 900, timeout: float = 60):
    """Load ``path`` in headless Chromium with a window ``width`` × ``height`` CSS pixels wide.

    Yields
    ------
    callable
        ``send(method, params)``: a DevTools command in the page's session, returning its result;
        ``send.evaluate(expression)`` returns a JavaScript expression's value.
    """
    with tempfile.TemporaryDirectory() as profile:
        pipe = _DevToolsPipe(chromium, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

            def send(method: str, params: dict | None = None) -> dict:
                return pipe.send(method, params, session=session, timeout=timeout)

            send("Page.enable")
            send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            send("Page.navigate", {"url": Path(path).resolve().as_uri()})
            pipe.wait_for("Page.loadEventFired", timeout=timeout)
            send.evaluate = lambda expression: send(  # type: ignore[attr-defined]
                "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}
            )["result"].get("value")
            send.evaluate("Promise.all(Array.from(document.images).map(img => img.decode().catch(() => null)))")
            yield send
        finally:
            pipe.close()


def find_overflows(path: Path, chromium: str, width: int, wrappers: str = ".scroll-x, pre") -> list[dict]:
    """Elements of the page that overflow at a window ``width`` CSS pixels wide.

    An element overflows when its box sticks out of its parent's box, or when its content is wider
    than its box (hidden or scrolled away). Elements inside a scroll wrapper (matching the CSS
    selector ``wrappers``) are exempt; the wrapper itself must fit.

    Returns
    -------
    list of dict
        One ``{"element", "problem", "width", "limit"}`` per finding (pixels); empty when nothing overflows.
    """
    with loaded_page(path, chromium, width) as page:
        return page.evaluate(f"{_OVERFLOW_JS}({json.dumps(wrappers)})")


def screenshot(path: Path, chromium: str, width: int, out: Path, max_height: int = 16000) -> Path:
    """Save a PNG of the whole page (up to ``max_height`` pixels tall) at a window ``width`` pixels wide."""
    import base64

    with loaded_page(path, chromium, width) as page:
        height = min(int(page.evaluate("document.documentElement.scrollHeight")), max_height)
        shot = page("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        })
    Path(out).write_bytes(base64.b64decode(shot["data"]))
    return Path(out)
