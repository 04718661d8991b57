"""Headless Chromium (Debian's package) driven through the DevTools protocol: open a page, type and click as a person
does, read the page's state, and collect every script error and failed load on the way. And a page checked once
loaded, without the protocol (`open_in_chromium`): its errors and how many of its images decoded."""

from __future__ import annotations

import contextlib
import html
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from acgan.process import stop_process

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
# open_in_chromium's: every error recorded, and once loaded, how many images decoded
CATCH_ERRORS = ("<script>window.__errors = []; window.addEventListener('error', e => window.__errors.push("
                "String(e.message || (e.target && e.target.src))), true);</script>")
CHECK_IMAGES = ("<script>window.addEventListener('load', () => { const images = [...document.images]; "
                "document.body.setAttribute('data-check', JSON.stringify({images: images.length, loaded: "
                "images.filter(i => i.complete && i.naturalWidth > 0).length, errors: window.__errors})); });</script>")


class Page:
    def __init__(self, socket):
        self.socket, self.next_id, self.events = socket, 0, []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, (method, message["error"])
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        """The value of `expression` once it is truthy."""
        deadline = time.time() + timeout
        while not (value := self.evaluate(expression)):
            assert time.time() < deadline, f"waited {timeout} s for {expression}"
            time.sleep(0.1)
        return value

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def errors(self) -> list[str]:
        """Script exceptions, console errors and failed loads seen so far."""
        self.evaluate("0")  # take in the events sent meanwhile
        found = []
        for e in self.events:
            params = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("exception", {}).get("description")
                             or params["exceptionDetails"]["text"])
            elif e.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif e.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
            elif e.get("method") == "Network.loadingFailed":
                found.append(f"load failed: {params.get('errorText')}")
        return found


@contextlib.contextmanager
def chromium(profile: Path):
    """A fresh headless Chromium (its own profile); yields its one page, with errors and loads recorded."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: the README's test command installs it (Debian's `chromium`)")
    log = profile.with_name(f"{profile.name}.log")  # a file, not a pipe: nothing blocks on what nobody reads
    with open(log, "w") as out:
        proc = subprocess.Popen(["chromium", *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                 "about:blank"], stdout=subprocess.DEVNULL, stderr=out)
    try:
        port, deadline = None, time.time() + 60
        while port is None:
            assert proc.poll() is None, f"chromium exited: {log.read_text()[-2000:]}"
            assert time.time() < deadline, f"chromium did not start its DevTools server: {log.read_text()[-2000:]}"
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", log.read_text())
            port = found and found.group(1)
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
            target = next(t for t in json.load(answer) if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as socket:
            page = Page(socket)
            for domain in ("Page", "Runtime", "Log", "Network"):
                page.call(f"{domain}.enable")
            yield page
    finally:
        stop_process(proc, 20)


def open_in_chromium(page, tmp_path) -> dict:
    """Loads a copy of `page` in headless Chromium (a fresh profile, nothing fetched but the page) with a script that
    records every error (script or resource) and, once loaded, how many images decoded; returns that record."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: the README's test command installs it (Debian's `chromium`)")
    text = page.read_text()
    assert "<head>" in text and "</body>" in text
    copy = tmp_path / f"checked-{page.name}.html"
    copy.write_text(text.replace("<head>", "<head>" + CATCH_ERRORS, 1).replace("</body>", CHECK_IMAGES + "</body>", 1))
    done = subprocess.run(
        ["chromium", *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000",
         "--dump-dom", copy.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r'data-check="([^"]*)"', done.stdout)
    assert match, f"the page never finished loading: {done.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))
