"""The HTML report in a real headless Chromium: charts and tables render, the
page logs no errors, and a screenshot is saved for the docs.

Skipped only when chromium is absent outside CI; in CI (CI=true) it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.report.conftest import Store
from tests.report.test_report_cli import _app

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "report.png"
BROWSER_TIMEOUT_S = 60
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (scripts/ensure-test-services installs it)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def _browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        check=False,
    )


def test_html_report_renders_in_chromium(store: Store, tmp_path: Path) -> None:
    chromium = _chromium()
    page = tmp_path / "report.html"
    out = CliRunner().invoke(_app(), ["report", "--config", str(store.config_path), "--html", str(page)])
    assert out.exit_code == 0, out.output
    html = page.read_text()
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html

    dom_run = _browse(chromium, tmp_path / "profile", "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    assert dom_run.returncode == 0, dom_run.stderr[-2000:]
    dom = dom_run.stdout
    assert "Uncaught" not in dom_run.stderr, dom_run.stderr[-2000:]
    status = re.search(r'<p class="meta" id="render-status" data-rendered="yes">([^<]*)</p>', dom)
    assert status, "the page script did not finish"
    errors = re.search(r'<pre id="js-errors">(.*?)</pre>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == ""
    # The progress chart, then 3 keys with results x 2 charts, each with drawn lines and points.
    assert status.group(1) == "rendered 7 charts, 4 rows"
    assert dom.count('<svg class="chart"') == 7 and "<polyline" in dom and "<circle" in dom
    assert dom.index('<section id="progress">') < dom.index('<table id="summary">')
    assert re.search(r'<table id="summary">.*graphql:Title\.rating.*</table>', dom, re.S)
    assert "insufficient samples (20/100)" in dom
    assert '<mark class="diff" title="$.cast[0].name">"Anne"</mark>' in dom  # highlighted, candidate side
    assert '<mark class="diff" title="$.cast[0].name">"Ann"</mark>' in dom

    shot = tmp_path / "report.png"
    shot_run = _browse(
        chromium, tmp_path / "profile2", "--window-size=1280,1400", f"--screenshot={shot}", page.as_uri()
    )
    assert shot_run.returncode == 0, shot_run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real, non-blank page
    # The docs keep one screenshot; refreshed on request so test runs do not
    # churn the working tree.
    if not DOCS_SCREENSHOT.exists() or os.environ.get("STRANGLER_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
