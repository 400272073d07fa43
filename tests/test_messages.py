"""Small messages that must say the right thing (issue #22, item 12)."""

from __future__ import annotations

import pytest

from paintbench.errors import UserError
from paintbench.harness.dist import Dist
from paintbench.harness.report import p_text

pytestmark = pytest.mark.hf   # the score and summary printers import the harness's folder readers (GenEval's detector)


def test_a_bootstrap_p_at_its_floor_is_said_as_a_bound():
    assert p_text(1 / 10_001, 10_000) == "p < 1e-04 (bootstrap floor, 10000 resamples)"
    assert p_text(0.0312, 10_000) == "p=0.0312"
    assert p_text(1 / 501, 500) == "p < 2e-03 (bootstrap floor, 500 resamples)"


def test_device_gpu_suggests_cuda():
    with pytest.raises(UserError, match=r"--device gpu: not a device \(did you mean 'cuda'\?\)"):
        Dist().device("gpu")


def test_the_leaderboard_help_names_the_real_default_baseline(capsys):
    from paintbench import cli

    with pytest.raises(SystemExit):
        cli.main(["leaderboard", "--help"])
    assert "the run with the most prompts" in " ".join(capsys.readouterr().out.split())


def test_writing_the_tiny_deqa_tokenizer_prints_no_trainer_log(tmp_path, capfd):
    from paintbench.metrics.synthetic import write_tiny_weights

    write_tiny_weights("deqa", tmp_path)
    captured = capfd.readouterr()
    assert "trainer_interface" not in captured.err and len(captured.err.splitlines()) < 10


def test_the_metrics_table_keeps_its_columns_for_long_names(capsys):
    from paintbench import cli

    assert cli.main(["metrics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0]
    col = header.index("version")
    rows = [ln for ln in lines[2:] if ln and not ln.startswith((" ", "missing", "weights"))]
    assert any(ln.startswith("clipscore-torchmetrics ") for ln in rows)
    for ln in rows:
        if ln.split()[0] in {"clipscore-torchmetrics", "aesthetic", "hps-v2.1"}:
            assert ln[col - 1] == " " and ln[col] != " ", ln   # the version starts in its column


def test_weights_list_names_where_the_dpg_vqa_model_comes_from(capsys):
    from paintbench import cli

    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "modelscope download --model damo/mplug_visual-question-answering_coco_large_en" in out
    assert "(no public source)" not in out.split("mplug_visual-question-answering_coco_large_en")[1][:300]


def test_results_and_compare_say_when_runs_are_incomplete_or_scored_different_prompts():
    from paintbench.harness.report import format_comparison, format_results

    results = {"suite": {"name": "s", "version": 1, "n_prompts": 104, "images_per_prompt": 4}, "generator": {},
               "metrics": {"m": {"value": 1.0, "ci": [1.0, 1.0], "n_samples": 414, "n_expected": 416, "n_prompts": 104,
                                 "aggregation": "mean", "n_failed": 2}}}
    assert "INCOMPLETE: 414 of 416 samples scored" in format_results(results)
    cmp = {"run_a": "a", "run_b": "b", "same_suite": True, "direction": "difference = B - A", "metrics": {"m": {
        "low": 0.0, "high": 0.1, "confidence": 0.95, "mean_a": 0.5, "mean_b": 0.55, "difference": 0.05,
        "p_value": 0.2, "n_resamples": 1000, "n_shared": 100, "n_only_a": 4, "n_only_b": 0}}}
    assert "WARNING: the runs scored different prompts (4 only in A, 0 only in B)" in format_comparison(cmp)


def test_headline_tags_say_synthetic_weights_out_of_range_values_and_non_parity_dtypes():
    from paintbench.harness.badges import headline_tags

    assert headline_tags("aesthetic", 5.0, {"dtype": "float32"}) == ""
    tags = headline_tags("aesthetic", -2.36, {"synthetic_weights": True, "dtype": "bfloat16"})
    assert "[SYNTHETIC WEIGHTS]" in tags and "[outside nominal range 1..10]" in tags and "bfloat16" in tags


def test_score_prints_the_synthetic_tag_on_its_headline(tmp_path, capsys):
    from PIL import Image

    from paintbench import cli
    from paintbench.metrics.synthetic import write_tiny_weights

    write_tiny_weights("aesthetic", tmp_path / "w")
    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / "images" / f"{i}.png")
    code = cli.main(["score", "--metric", "aesthetic", "--images", str(tmp_path / "images"), "--weights-dir",
                     str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("aesthetic"))
    assert code == 0 and "[SYNTHETIC WEIGHTS]" in row


def test_a_partial_run_says_so_in_eval_results_and_compare(tmp_path, capsys):
    from paintbench import cli

    for name, limit in (("a", "12"), ("b", "12")):
        assert cli.main(["eval", "shapes", "--generator", "shapes-oracle", "--out", str(tmp_path / name), "--limit",
                         limit, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "PARTIAL: 12 of " in printed and "prompts (--limit)" in printed
    assert cli.main(["results", str(tmp_path / "a")]) == 0
    assert "PARTIAL: 12 of " in capsys.readouterr().out
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--n-resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "A is PARTIAL: 12 of " in out and "B is PARTIAL: 12 of " in out


def test_half_precision_on_the_cpu_warns_once_per_metric():
    import warnings

    import torch

    from paintbench.metrics import base

    base._WARNED_HALF_ON_CPU.discard("probe")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base.warn_half_on_cpu("probe", torch.device("cpu"), torch.bfloat16)
        base.warn_half_on_cpu("probe", torch.device("cpu"), torch.bfloat16)
        base.warn_half_on_cpu("probe", torch.device("cpu"), torch.float32)
    assert len(caught) == 1 and "bfloat16 on the CPU" in str(caught[0].message)


def test_every_printer_shows_every_metric_on_its_one_scale():
    """GenEval printed 7.89 % in eval, 0.0789 in compare and 0.08 on the site; HPS v2.1 0.3796 in score and
    37.96 on the site (issue #22 item 5): every CLI printer now uses the registry's display, and every suite
    layout that claims a metric shows it on that same scale."""
    from paintbench import metrics
    from paintbench.harness.folder_reports import format_score_summary
    from paintbench.harness.report import format_comparison, format_results
    from paintbench.harness.suite import load_suite, suite_files
    from paintbench.leaderboards.layouts import metric_format
    from paintbench.metrics.registry import format_value

    for name in metrics.available():
        spec = metrics.spec(name)
        lo, hi = spec.nominal_range
        v = lo + 0.37 * (hi - lo)
        shown = format_value(name, v)
        assert shown == f"{v * spec.display[0]:.{spec.display[1]}f}{spec.unit}"
        results = {"suite": {"name": "s", "version": 1, "n_prompts": 1, "images_per_prompt": 1}, "generator": {},
                   "metrics": {name: {"value": v, "ci": [v, v], "n_samples": 1, "n_prompts": 1, "aggregation": "mean"}}}
        assert f"{name}: {shown}  [95% CI {shown}, {shown}]" in format_results(results), name
        cmp = {"run_a": "a", "run_b": "b", "same_suite": True, "direction": "d", "metrics": {name: {
            "low": 0.0, "high": 0.0, "confidence": 0.95, "mean_a": v, "mean_b": v, "difference": 0.0, "p_value": 1.0,
            "n_resamples": 100, "n_shared": 3}}}
        assert f"A {shown}  B {shown}" in format_comparison(cmp), name
        score = {"metrics": {name: {"mean": v, "std": 0.0, "n": 1, "n_failed": 0}}, "failed": []}
        assert f" {shown} " in format_score_summary(score), name
        assert metric_format(name)[0] == spec.display[0]                      # the site's own scale
    checked = 0
    for suite_name in suite_files():
        board = load_suite(suite_name).leaderboard
        for m in (board or {}).get("metrics", []):
            if m in metrics.available():
                assert float(board.get("scale", 1.0)) == metrics.spec(m).display[0], (suite_name, m)
                checked += 1
    assert checked >= 4   # geneval, dpg, hpdv2, the worlds' suites
