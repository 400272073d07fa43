"""`paintbench eval geneval --generator folder:DIR` on GenEval's official layout, tiny-weight models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from paintbench.cli import main
from paintbench.commands import geneval as geneval_cmd
from paintbench.harness.evaluate import EvalConfig, run_eval
from paintbench.harness.rundir import read_jsonl
from paintbench.metrics.geneval.rules import GenEvalOptions
from paintbench.metrics.synthetic import write_tiny_weights

import shared_data as sd

pytestmark = pytest.mark.hf


def official_layout(root, n: int):
    """GenEval's layout for the prompts `--limit n` picks (spread over the tasks, seed 0)."""
    from paintbench.harness.suite import load_suite, stratified_sample

    rng = np.random.default_rng(0)
    for it in stratified_sample(load_suite("geneval").items, n, 0):
        folder = root / it.id
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(it.metadata) + "\n")
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
    assert out.stdout.startswith("GenEval [SYNTHETIC WEIGHTS]")          # the headline says what it is
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["metrics"]["geneval"]["value"] == first["metrics"]["geneval"]["value"]
    assert len(read_jsonl(tmp_path / "run" / "scores" / "geneval.jsonl")[0]) == 8


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--threshold", "0.5"], ["--threshold"]),
        (["--out", "x.jsonl", "--overwrite"], ["--out", "--overwrite"]),
        (["--detector-weights", "d.pth", "--clip-weights", "c.pt", "--summary-json", "s.json"],
         ["--detector-weights", "--clip-weights", "--summary-json"]),
        (["--counting-threshold", "0.8", "--max-objects", "4", "--max-overlap", "0.5", "--position-threshold", "0.2"],
         ["--counting-threshold", "--max-objects", "--max-overlap", "--position-threshold"]),
    ],
)
def test_geneval_command_refuses_folder_only_flags_on_a_run_directory(tmp_path, capsys, flags, named):
    """On a run directory these flags would be silently ignored: one error line names them and the
    command to use instead, before any weights are looked for or anything in the run is touched."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("eval: {}\n")
    (run / "samples.jsonl").write_text("")
    assert main(["geneval", str(run), "--weights-dir", str(tmp_path / "nowhere"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "paintbench run directory" in err
    blamed = err.split("paintbench run directory: ", 1)[1].split(" only apply", 1)[0]
    assert sorted(blamed.split(", ")) == sorted(named)  # exactly the flags given; those left at their defaults are not blamed
    assert "paintbench eval --rescore geneval" in err and "--metric-opt geneval.KEY=VALUE" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "samples.jsonl"]


def test_folder_only_defaults_are_the_official_options():
    d = geneval_cmd.FOLDER_ONLY_DEFAULTS
    o = GenEvalOptions()
    assert (d["threshold"], d["counting_threshold"], d["max_objects"], d["max_overlap"], d["position_threshold"]) == (
        o.threshold, o.counting_threshold, o.max_objects, o.nms_threshold, o.position_threshold)
