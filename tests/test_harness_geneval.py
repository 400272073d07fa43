"""`paintbench eval geneval --generator folder:DIR` on GenEval's official layout, tiny-weight models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from harness.evaluate import EvalConfig, run_eval
from harness.rundir import read_jsonl
from metrics.synthetic import write_tiny_weights

import shared_data as sd


def official_layout(root, n: int):
    records = [json.loads(x) for x in (sd.SHARED / "data" / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()[:n]]
    rng = np.random.default_rng(0)
    for i, rec in enumerate(records):
        folder = root / f"{i:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(rec) + "\n")
        for k in range(4):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "samples" / f"{k:05d}.png")
    return root


@pytest.mark.slow
def test_geneval_suite_on_an_official_layout_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PAINTBENCH_DATA", str(sd.require(sd.SHARED / "data")))
    weights = tmp_path / "weights"
    write_tiny_weights("geneval", weights)
    root = official_layout(tmp_path / "images", 3)
    res = run_eval(EvalConfig(suite="geneval", generator=f"folder:{root}", out=str(tmp_path / "run"), limit=3,
                              weights_dir=str(weights), progress=False, n_resamples=200, batch_size=4,
                              metric_options={"geneval": {"detector_scale": [64, 64]}}))
    m = res["metrics"]["geneval"]
    assert m["n_samples"] == 12 and m["n_failed"] == 0 and res["generation_failures"] == []
    assert m["options"]["mode"] == "correct"
    assert m["provenance"]["version"] == "geneval-1.0/1" and len(m["provenance"]["weights"]["detector"]["sha256"]) == 64
    scores = read_jsonl(tmp_path / "run" / "scores" / "geneval.jsonl")[0]
    assert len(scores) == 12 and {s["value"] for s in scores} <= {0.0, 1.0}
    assert all("reason" in s["details"] for s in scores)


@pytest.mark.slow
def test_geneval_command_scores_a_harness_run_directory(tmp_path, monkeypatch):
    """`paintbench geneval RUN` reads the harness run layout and (re)computes its GenEval scores."""
    import subprocess
    import sys

    monkeypatch.setenv("PAINTBENCH_DATA", str(sd.require(sd.SHARED / "data")))
    write_tiny_weights("geneval", tmp_path / "w")
    opts = {"geneval": {"detector_scale": [64, 64]}}
    first = run_eval(EvalConfig(suite="geneval", generator=f"folder:{official_layout(tmp_path / 'images', 2)}",
                                out=str(tmp_path / "run"), limit=2, weights_dir=str(tmp_path / "w"), progress=False,
                                n_resamples=100, metric_options=opts))
    (tmp_path / "run" / "scores" / "geneval.jsonl").unlink()
    out = subprocess.run([sys.executable, "-m", "paintbench", "geneval", str(tmp_path / "run"), "--weights-dir",
                          str(tmp_path / "w"), "--scale", "64,64", "--no-progress", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Overall score" in out.stdout
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["metrics"]["geneval"]["value"] == first["metrics"]["geneval"]["value"]
    assert len(read_jsonl(tmp_path / "run" / "scores" / "geneval.jsonl")[0]) == 8
