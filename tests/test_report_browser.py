"""The report as a user sees it: rendered by headless Chromium at 1280 and 800 px wide.

Chromium is driven over its DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), with the standard library only.
At each width the page must show no broken image, no horizontal scroll, no console message
of level error, figures not shrunk below 70% of their design size (so ticks stay readable), and
the headline within the first screen; a full-page screenshot is saved (to $VAEKIT_ARTIFACTS
when set) for a person to look at.

Needs Debian's ``chromium``; ``.ci/run`` installs it and sets VAEKIT_REQUIRE_BROWSER=1, so in CI
these tests cannot silently skip.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaekit.cli.main import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--remote-debugging-pipe"]
WIDTHS = (1280, 800)
HEIGHT = 900  # a laptop screen's visible height, CSS px
MIN_SCALE = 0.7  # a figure shown below this fraction of its design width has unreadable ticks

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("VAEKIT_REQUIRE_BROWSER"),
    reason="chromium is not installed (apt-get install chromium)")

# What the page looks like, measured in the page (CSS px).
PROBE = """(() => {
  const imgs = [...document.images];
  const shown = imgs.filter(i => i.hasAttribute('width') && !i.classList.contains('pixels'));
  const r = e => e.getBoundingClientRect();
  const summary = document.getElementById('summary'), config = document.getElementById('configuration');
  return {
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    tooWide: [...document.querySelectorAll('body *')].filter(e => r(e).right > window.innerWidth + 0.5
              && !e.closest('.scroll')).map(e => e.tagName + '.' + e.className).slice(0, 5),
    minScale: Math.min(...shown.map(i => r(i).width / i.getAttribute('width'))),
    upscaled: shown.filter(i => r(i).width > +i.getAttribute('width') + 0.5).length,
    summaryTop: summary ? r(summary).top : null, summaryBottom: summary ? r(summary).bottom : null,
    configAfterSummary: !!(summary && config &&
        (summary.compareDocumentPosition(config) & Node.DOCUMENT_POSITION_FOLLOWING)),
    configOpen: config ? config.open : null,
    height: document.documentElement.scrollHeight,
  };
})()"""


class Chromium:
    """One headless Chromium, spoken to over the DevTools protocol on a pipe."""

    def __init__(self, profile: Path) -> None:
        to_child, self._w = os.pipe()   # we write commands, Chromium reads them on fd 3
        self._r, from_child = os.pipe()  # Chromium writes on fd 4, we read

        def fds() -> None:  # in the child, before exec: our pipe ends become fds 3 and 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child, from_child)]
            os.dup2(high[0], 3)  # dup2 makes them inheritable; os.pipe's own ends close on exec
            os.dup2(high[1], 4)
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=fds, close_fds=False)
        os.close(to_child)
        os.close(from_child)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, timeout: float) -> dict:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._r], [], [], timeout)
            chunk = os.read(self._r, 1 << 20) if ready else b""
            if not chunk:
                raise TimeoutError("chromium did not answer (or exited)")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        seen = [e for e in self.events if e.get("method") == method]
        end = time.monotonic() + timeout
        while not seen:
            event = self._read(max(0.1, end - time.monotonic()))
            self.events.append(event)
            seen = [event] if event.get("method") == method else []
        return seen[0]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (TimeoutError, OSError, AssertionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)

    def render(self, url: str, width: int) -> tuple[dict, list[str], bytes]:
        """Open ``url`` at ``width`` CSS px: the probe's measurements, console errors, and a
        full-page screenshot (PNG)."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        s = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", s)
        self.send("Emulation.setDeviceMetricsOverride", s, width=width, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)
        self.events.clear()
        self.send("Page.navigate", s, url=url)
        self.wait_for("Page.loadEventFired")
        page = self.send("Runtime.evaluate", s, expression=PROBE, returnByValue=True)["result"]["value"]
        shot = self.send("Page.captureScreenshot", s, format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": page["height"], "scale": 1})
        errors = [json.dumps(e["params"])[:300] for e in self.events if
                  (e.get("method") == "Runtime.consoleAPICalled"
                   and e["params"]["type"] in ("error", "assert"))
                  or e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        self.send("Target.closeTarget", targetId=target)
        return page, errors, base64.b64decode(shot["data"])


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    assert CHROMIUM, "VAEKIT_REQUIRE_BROWSER is set but chromium is missing"
    b = Chromium(tmp_path_factory.mktemp("profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """An image run (digits, 2-d latent, evaluated with sample quality) and a tabular one (a CSV
    of 14 features)."""
    d = tmp_path_factory.mktemp("runs")
    image = d / "digits"
    assert main(["train", "digits", "--out", str(image), "--epochs", "3", "--hidden", "64",
                 "--latent-dim", "2", "--seed", "1"]) == 0
    with pytest.MonkeyPatch.context() as mp:  # the metric's classifier is cached: not in the user's cache
        mp.setenv("VAEKIT_DATA", str(tmp_path_factory.mktemp("cache")))
        assert main(["evaluate", str(image), "-k", "10", "--samples", "100", "--sampler", "all",
                     "--draws", "2"]) == 0  # the sample-quality section, with a grid per sampler
    from test_report import tabular_csv  # the same deterministic table as the structure tests

    table = d / "table"
    assert main(["train", str(tabular_csv(d / "table.csv", 14)), "--out", str(table), "--epochs", "4",
                 "--likelihood", "gaussian", "--learn-obs-std", "--latent-dim", "3", "--seed", "0",
                 "--val-fraction", "0.2"]) == 0
    assert main(["evaluate", str(table), "-k", "10"]) == 0
    return {"image": image, "table": table}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", ["image", "table"])
def test_report_renders_cleanly(browser, runs, kind, width, tmp_path):
    page, errors, png = browser.render((runs[kind] / "report.html").as_uri(), width)
    assert page["images"] >= (8 if kind == "image" else 14) and page["broken"] == [], page
    assert page["scrollWidth"] <= page["innerWidth"] == width, page  # no horizontal scroll
    assert page["tooWide"] == [], page
    assert page["minScale"] >= MIN_SCALE and page["upscaled"] == 0, page
    assert page["configAfterSummary"] and page["configOpen"] is False, page
    assert 0 <= page["summaryTop"] and page["summaryBottom"] <= HEIGHT, page  # headline on screen 1
    assert errors == []

    shot = tmp_path / f"report_{kind}_{width}.png"
    shot.write_bytes(png)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[1] == width and pixels.shape[0] >= HEIGHT
    assert (pixels < 128).mean() > 0.01  # text and figures drawn, not a blank page
    if os.environ.get("VAEKIT_ARTIFACTS"):
        shutil.copy(shot, os.environ["VAEKIT_ARTIFACTS"])
