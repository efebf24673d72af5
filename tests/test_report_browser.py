"""The report renders in a real browser: headless Chromium loads report.html, every <img> decodes
to its PNG's size, and a full-page screenshot has real content. Skips, saying why, where Chromium
is not installed."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from factories import tiny_plan

from scaleplan.planner.report import build_report

pytestmark = pytest.mark.slow  # two browser starts and a report: ~6-10 s on 2 shared cores

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Injected into a copy of the page: after load, write each image's decode state into the DOM,
# where --dump-dom can read it.
PROBE = """<script>
window.addEventListener('load', function () {
  var out = [];
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    out.push({file: img.getAttribute('data-file'), complete: img.complete,
              width: img.naturalWidth, height: img.naturalHeight});
  }
  var pre = document.createElement('pre');
  pre.id = 'scaleplan-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    for name in (
        os.environ.get("CHROMIUM"),
        "/usr/bin/chromium",
        "chromium",
        "chromium-browser",
        "google-chrome",
    ):
        if name and (path := shutil.which(name)):
            return path
    pytest.skip("headless Chromium not found (apt-get install chromium, or set CHROMIUM=path)")


def _run_browser(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="scaleplan-chromium-") as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("report")
    plan = tiny_plan(pp=2).model_copy(update={"law": {"preset": "chinchilla"}})
    return build_report(plan, out, strict=True)


def test_every_image_loads_in_chromium(report, tmp_path: Path) -> None:
    binary = _chromium()
    probe = tmp_path / "probe.html"
    probe.write_text(report.html_path.read_text().replace("</body>", PROBE + "</body>"))
    done = _run_browser(binary, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="scaleplan-probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no probe (rc {done.returncode}): {done.stderr[-2000:]}"
    images = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    drawn = [f for f in report.figures if f.status == "ok"]
    assert [i["file"] for i in images] == [f.filename for f in drawn]
    for img, fig in zip(images, drawn, strict=True):
        assert img["complete"], img
        width = int.from_bytes(fig.png[16:20], "big")
        height = int.from_bytes(fig.png[20:24], "big")
        assert (img["width"], img["height"]) == (width, height), img
        assert img["width"] >= 400 and img["height"] >= 200


def test_screenshot_has_content(report, tmp_path: Path) -> None:
    from matplotlib.image import imread

    binary = _chromium()
    shot = tmp_path / "shot.png"
    done = _run_browser(
        binary, f"--screenshot={shot}", "--window-size=1400,4000", report.html_path.as_uri()
    )
    assert shot.is_file(), f"no screenshot (rc {done.returncode}): {done.stderr[-2000:]}"
    pixels = imread(io.BytesIO(shot.read_bytes()), format="png")[..., :3]
    assert pixels.shape[:2] == (4000, 1400)
    # the page is not blank: many colours (plots), and non-white rows over much of its height
    assert len(np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)) > 200
    inked_rows = (pixels.min(axis=(1, 2)) < 0.9).mean()
    assert inked_rows > 0.25, f"only {inked_rows:.0%} of the rows have content"
