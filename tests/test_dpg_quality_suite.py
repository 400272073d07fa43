"""The `dpg-quality` suite (HT-GRPO's Table 3) end to end on tiny weights: DPG-Bench prompts, one image
each, the six metrics, and a leaderboard table with Table 3's columns in Table 3's order."""

from __future__ import annotations

import pytest

import shared_data as sd

pytestmark = pytest.mark.hf

TABLE3 = ["deqa", "imagereward", "hpsv3", "unipercept-iaa", "unipercept-iqa", "unipercept-ista"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from paintbench.metrics.synthetic import write_tiny_weights

    d = tmp_path_factory.mktemp("tiny")
    for m in TABLE3:
        write_tiny_weights(m, d)
    return d


def test_the_suite_declares_table3(monkeypatch):
    from paintbench.harness.suite import load_suite

    monkeypatch.setenv("PAINTBENCH_DATA", str(sd.require(sd.SHARED / "data")))
    s = load_suite("dpg-quality")
    assert [m.name for m in s.metrics] == TABLE3 and s.images_per_prompt == 1 and not s.grid
    assert len(s.items) == 1065


def test_a_run_scores_every_metric_and_the_table_follows_the_paper(tmp_path, tiny, monkeypatch):
    from paintbench.harness.config import EvalConfig
    from paintbench.harness.evaluate import run_eval
    from paintbench.leaderboards.model import load_run
    from paintbench.leaderboards.tables import suite_tables

    monkeypatch.setenv("PAINTBENCH_DATA", str(sd.require(sd.SHARED / "data")))
    runs = []
    for name in ("a", "b"):
        res = run_eval(EvalConfig(suite="dpg-quality", generator="python:tests.support.noise:smooth_noise", limit=3,
                                  out=str(tmp_path / name), weights_dir=str(tiny), device="cpu",
                                  seed=0 if name == "a" else 1))
        assert set(res["metrics"]) == set(TABLE3)
        assert all(res["metrics"][m]["n_samples"] == 3 and not res["metrics"][m]["n_errors"] for m in TABLE3)
        runs.append(load_run(tmp_path / name))
    tables = suite_tables("dpg-quality", runs, paired=None)
    assert len(tables) == 1
    table = tables[0]
    assert table.title.startswith("HT-GRPO Table 3 (DPG-Bench prompts)")   # (+ "partial runs": --limit)
    metric_columns = [c for c in table.columns if c.key.startswith("metric:")]
    assert [c.key.removeprefix("metric:") for c in metric_columns] == TABLE3
    assert [c.label.rsplit(" ", 1)[0] for c in metric_columns] == [
        "DeQA-Score", "ImageReward", "HPSv3", "UniPercept Aes.", "UniPercept Qual.", "UniPercept Struct."]


def test_the_preference_metrics_run_in_a_users_suite(tmp_path, monkeypatch):
    """PickScore and both CLIPScores as a user's suite (one YAML on --include-path) over the shapes prompts."""
    from paintbench.harness.config import EvalConfig
    from paintbench.harness.evaluate import run_eval
    from paintbench.metrics.synthetic import write_tiny_weights

    names = ["pickscore", "clipscore", "clipscore-torchmetrics"]
    for m in names:
        write_tiny_weights(m, tmp_path / "w")
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "prefs.yaml").write_text(
        "name: prefs\nversion: 1\nprompts: {format: builtin, function: shapes, args: {seed: 0, n_per_tag: 2}}\n"
        "images_per_prompt: 1\nimage_size: 128\n"
        "metrics:\n" + "".join(f"  - {{name: {m}, aggregation: mean{', primary: true' if i == 0 else ''}}}\n"
                               for i, m in enumerate(names)))
    res = run_eval(EvalConfig(suite="prefs", include_path=[str(tmp_path / "suites")], generator="shapes-oracle",
                              limit=4, out=str(tmp_path / "run"), weights_dir=str(tmp_path / "w"), device="cpu"))
    assert set(res["metrics"]) == set(names)
    assert all(res["metrics"][m]["n_samples"] == 4 and not res["metrics"][m]["n_errors"] for m in names)
