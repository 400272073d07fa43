"""`torchrun --nproc-per-node 2` (gloo, CPU) gives exactly the results of one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_harness_run import stable

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    common = ["-m", "paintbench", "eval", "shapes", "--generator", "shapes-random", "--limit", "14",
              "--seed", "5", "--no-progress", "--n-resamples", "500", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", *common, "--out", str(tmp_path / "two")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert stable(tmp_path / "two") == stable(tmp_path / "one")
    import json

    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["environment"]["world_size"] == 2
    # both ranks did work: the log shows two starts, one per rank... written by rank 0 only, so check parts
    assert not list((tmp_path / "two" / "parts").glob("samples.rank*.jsonl"))  # merged and cleaned


@pytest.mark.slow
def test_resume_with_a_different_number_of_processes(tmp_path):
    """Stop after generation with 2 ranks, finish with 1: same results (keys are rank-agnostic)."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    common = ["-m", "paintbench", "eval", "shapes", "--generator", "shapes-oracle", "--limit", "9",
              "--no-progress", "--n-resamples", "300", "--device", "cpu"]
    out = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", *common, "--out", str(tmp_path / "r")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    reference = stable(tmp_path / "r")
    (tmp_path / "r" / "results.json").unlink()
    (tmp_path / "r" / "scores" / "shapes-geneval.jsonl").unlink()
    out = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "r")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert stable(tmp_path / "r") == reference
