"""The code base stays `ruff` clean (the same check as `tox -e lint`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    out = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_test_asserts_on_wall_clock_time():
    """Timings belong in benchmarks (`benchmarks/`): a busy CI machine must not fail a test that asserts
    behaviour. Waiting loops with a deadline (time.time) are fine; measuring with perf_counter is not."""
    offenders = [f.name for f in (REPO / "tests").rglob("*.py") if "perf_counter" in f.read_text(encoding="utf-8")
                 and f.name != "test_lint.py"]
    assert not offenders, f"move these timings into benchmarks/: {offenders}"
