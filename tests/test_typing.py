"""`mypy --strict` over the packages, tests and benchmarks, as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["actors", "http_api", "store", "planner", "upstream", "settings", "observability", "demo", "grants",
           "supervisor.py", "runtime.py", "tests",
           "bench"]


def test_mypy_strict_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", *TARGETS], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
