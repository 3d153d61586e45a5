"""The same corpus (and more) through Apollo Gateway and through strangler's gateway: the same answers.

Runs ``bench/apollo_compare.py`` (Apollo Gateway from ``bench/apollo``, installed by
``scripts/ensure-test-services``; the demo backends; the whole proxy with every field
on legacy, then extracted).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_apollo_gateway_and_strangler_answer_alike() -> None:
    assert (ROOT / "bench" / "apollo" / "node_modules").is_dir(), "run scripts/ensure-test-services (npm ci)"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "apollo_compare.py"), "--verbose"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    same, total = map(int, re.search(r"(\d+) of (\d+) operations answered alike", done.stdout).groups())  # type: ignore[union-attr]
    assert same == total >= 60
