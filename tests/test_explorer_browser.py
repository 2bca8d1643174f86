"""The explorer in a real browser: headless Chromium (Debian's package; .ci/run installs it) loads the
overview, the neuron index and a neuron page served by ``serve_results`` (and a heads results directory's
heads page), driven over the DevTools protocol.
Fails on any JavaScript exception or console error, any failed or 4xx/5xx request, audio elements whose
files are not served, or images that do not decode; saves a screenshot of each page under tmp_path."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from jaxneurons.report.serve import ViewConfig, serve_results
from tests.helpers import build_heads_results, build_results

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/run installs it)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]


class DevTools:
    """A minimal Chrome DevTools protocol client for one page target."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return res["result"].get("value")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        for _ in range(100):
            pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
            pages = [p for p in pages if p.get("type") == "page"]
            if pages:
                break
            time.sleep(0.2)
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        yield tools
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def load(tools: DevTools, url: str, shot: str) -> list[str]:
    """Navigate, wait for the load event, save a screenshot; returns every problem seen."""
    tools.events.clear()
    tools.call("Page.navigate", url=url)
    tools.wait_for("Page.loadEventFired")
    time.sleep(0.3)
    tools.evaluate("1")  # drain events that arrived meanwhile
    problems = []
    for e in tools.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            problems.append(f"exception: {p['exceptionDetails'].get('text')} {p['exceptionDetails'].get('exception')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            problems.append(f"console.{p['type']}: {p.get('args')}")
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            problems.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Network.loadingFailed":
            problems.append(f"request failed: {p.get('errorText')}")
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
            problems.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
    broken = tools.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                            ".map(i => i.src)")
    problems += [f"image does not decode: {s}" for s in broken]
    png = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    with open(shot, "wb") as f:
        f.write(base64.b64decode(png))
    return problems


def test_explorer_pages_in_headless_chromium(browser, tmp_path):
    scan = build_results(str(tmp_path / "scan"))
    server, url = serve_results(scan["out"], ViewConfig(port=0))
    try:
        base = url.rsplit("/", 1)[0]
        assert load(browser, url, str(tmp_path / "overview.png")) == []
        assert browser.evaluate("document.querySelectorAll('table').length") >= 3

        assert load(browser, f"{base}/neurons.html", str(tmp_path / "index.png")) == []
        assert browser.evaluate("document.getElementById('shown').textContent") == "4"
        browser.evaluate("var q = document.getElementById('f-query'); q.value = '1.40';"
                         "q.dispatchEvent(new Event('input'));")
        assert browser.evaluate("document.getElementById('shown').textContent") == "1"
        browser.evaluate("var q = document.getElementById('f-query'); q.value = '';"
                         "q.dispatchEvent(new Event('input'));"
                         "var g = document.getElementById('f-group'); g.value = 'gender/male';"
                         "g.dispatchEvent(new Event('change'));")
        assert browser.evaluate("document.getElementById('shown').textContent") == "2"

        assert load(browser, f"{base}/neurons/1.40.html", str(tmp_path / "neuron.png")) == []
        sources = browser.evaluate("Array.from(document.querySelectorAll('audio')).map(a => a.src)")
        assert len(sources) >= 1
        for src in sources:
            with urllib.request.urlopen(src) as r:
                assert r.status == 200 and r.read(4) == b"RIFF", src
        # the audio really decodes in the browser
        assert browser.evaluate("new Promise(r => { var a = document.querySelector('audio'); a.preload = 'auto';"
                                "a.addEventListener('loadedmetadata', () => r(a.duration)); a.load(); })"
                                ) == pytest.approx(0.5, abs=0.01)
    finally:
        server.shutdown()
    for name in ("overview", "index", "neuron"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_heads_page_in_headless_chromium(browser, tmp_path):

    heads = build_heads_results(str(tmp_path / "heads"))
    server, url = serve_results(heads["out"], ViewConfig(port=0))
    try:
        assert load(browser, url, str(tmp_path / "heads.png")) == []
        sources = browser.evaluate("Array.from(document.querySelectorAll('audio')).map(a => a.src)")
        assert len(set(sources)) == len({int(u) for u in heads["analysis"].metrics.top.utt.ravel() if u >= 0})
        for src in set(sources):
            with urllib.request.urlopen(src) as r:
                assert r.status == 200 and r.read(4) == b"RIFF", src
        duration = browser.evaluate("new Promise(r => { var a = document.querySelector('audio'); a.preload = 'auto';"
                                    "a.addEventListener('loadedmetadata', () => r(a.duration)); a.load(); })")
        assert 0 < duration <= 2.0 + 1e-3  # the clip: the utterance's first 2 s at most
    finally:
        server.shutdown()
    assert (tmp_path / "heads.png").stat().st_size > 1000
