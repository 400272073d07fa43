"""`paintbench train ... eval_every=N`: the default periodic evaluation scores a harness suite, the
held-out one (never the prompts it trains on)."""

from __future__ import annotations

import json
import subprocess
import sys


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
