"""`paintbench train ... eval_every=N`: the default periodic evaluation scores a harness suite, the
held-out one (never the prompts it trains on), and is the harness's own evaluation of that checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow  # a real training run, then `paintbench eval` of its checkpoint
def test_periodic_evaluation_logs_the_suite_metric(tmp_path):
    out = subprocess.run([sys.executable, "-m", "paintbench", "train", "shapes-tiny", "steps=2", "warmstart_steps=20",
                          "eval_every=2", "eval_max_prompts=12", "prompts_per_step=2", "group_size=4",
                          "--out", str(tmp_path / "t")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    key = "eval/shapes-heldout/shapes-geneval"
    evals = [x for x in lines if key in x]
    assert evals and all(0.0 <= x[key] <= 1.0 for x in evals)
    assert {x["step"] for x in evals} <= {0, 2}
    # the number the trainer logged at its last round is what `paintbench eval` gives the saved checkpoint
    # (same prompts as --limit, the suite's images per prompt, the harness's seeds): equal, not close
    ev = subprocess.run([sys.executable, "-m", "paintbench", "eval", "shapes-heldout", "--generator",
                         f"policy:{tmp_path / 't'}", "--limit", "12", "--seed", "0", "--out", str(tmp_path / "ev"),
                         "--no-progress"], capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    harness = json.loads((tmp_path / "ev" / "results.json").read_text())["metrics"]["shapes-geneval"]
    last = [x for x in evals if x["step"] == 2][-1][key]
    assert harness["n_samples"] == 12 * 4
    assert last == harness["value"]
