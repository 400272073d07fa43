"""Leaderboards: tables, ties, layouts, exports, plots, thumbnails and whole sites built from real shapes runs.

The runs are real `paintbench eval` runs of the shapes world (a small suite: 3 prompts per GenEval tag,
2 images each): the oracle, the random generator, and a "half oracle" (oracle on even seeds, random on
odd ones) that lands in between. The browser tests (test_leaderboards_browser.py) reuse these helpers.
"""

from __future__ import annotations

import csv
import html.parser
import io
import itertools
import json
import math
import os
import random
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from paintbench.harness import stats
from paintbench.harness.evaluate import EvalConfig, run_eval
from paintbench.harness.rundir import read_jsonl
from paintbench.leaderboards import exports, plots, tables
from paintbench.leaderboards.build import BuildOptions, build_site, chunk_prompts, paired_test
from paintbench.leaderboards.gallery import boxes_of
from paintbench.leaderboards.model import Run, load_run, load_train_log, unique_slug
from paintbench.leaderboards.thumbs import ImageRef, ImageStore, file_sha256, thumb_size_of

HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "'><svg onload=alert(1)>",
           "</script><script>alert(2)</script>", "{{ 7*7 }} & <b>bold</b>"]

MINI_SUITE = """\
name: shapes
version: 1
description: the shapes world, 3 prompts per tag, 2 images each (tests)
prompts:
  format: builtin
  function: shapes
  args: {seed: 0, n_per_tag: 3}
images_per_prompt: 2
image_size: 128
categories: [single_object, two_object, counting, colors, position, color_attr]
metrics:
  - name: shapes-geneval
    primary: true
    aggregation: macro
    options: {mode: correct}
"""


# -- helpers shared with the browser tests ------------------------------------------------------------------
def half_oracle(prompts, seeds, metadata):
    """A `python:` generator between the two bounds: the oracle on even seeds, random on odd ones."""
    from paintbench.harness.shapes.generators import GENERATORS

    oracle, rand = GENERATORS["shapes-oracle"](), GENERATORS["shapes-random"]()
    return [(oracle if s % 2 == 0 else rand).generate(None, [m], [s])[0] for s, m in zip(seeds, metadata, strict=True)]


def make_runs(root: Path) -> dict[str, Path]:
    """Three real shapes runs (oracle, random, half) of the mini suite under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    suite = root / "mini-shapes.yaml"
    suite.write_text(MINI_SUITE)
    out = {}
    for name, gen in (("oracle", "shapes-oracle"), ("random", "shapes-random"),
                      ("half", "python:test_leaderboards:half_oracle")):
        out[name] = root / name
        run_eval(EvalConfig(suite=str(suite), generator=gen, out=str(out[name]), name=name, progress=False,
                            n_resamples=1000))
    return out


TINY_TRAINING = {"steps": 3, "warmstart_steps": 40, "prompts_per_step": 4, "group_size": 4, "rollout_steps": 4,
                 "inner_iters": 2, "n_global": 1, "n_struct": 1, "sample_every": 1, "save_every": 3,
                 "tensorboard": False, "prompts_per_tag": 20,
                 "policy_options": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "max_text_len": 12}}


def trained_policy_run(root: Path, suite: Path) -> tuple[Path, Path] | None:
    """A briefly trained HT-GRPO policy (`paintbench train shapes-tiny`, shrunk) and its benchmark run of
    `suite`: (run directory, training log directory). None when the trainer is not installed."""
    try:
        from paintbench.trainer.checkpoint import latest_checkpoint
        from paintbench.trainer.config import load_config
        from paintbench.trainer.loop import train
    except ImportError:
        return None
    log = root / "train-htgrpo"
    train(load_config("shapes-tiny", TINY_TRAINING), log)
    run = root / "policy"
    run_eval(EvalConfig(suite=str(suite), generator=f"policy:{latest_checkpoint(log)}", out=str(run),
                        name="ht-grpo (3 steps)", progress=False, n_resamples=1000))
    return run, log


def write_train_log(root: Path, *, steps: int = 30, every: int = 10, name: str = "tiny-htgrpo",
                    prompt: str | None = None) -> Path:
    """A trainer log directory in trainer.logs' format: metrics.jsonl, config.yaml, samples/step_<n>/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(f"name: {json.dumps(name)}\nlr: 0.0001\nrewards: {{shapes: 1.0, aesthetic: 0.2}}\n")
    rng = random.Random(0)
    with open(root / "metrics.jsonl", "w") as f:
        for s in range(1, steps + 1):
            r = 0.2 + 0.6 * (1 - math.exp(-s / 10)) + rng.gauss(0, 0.02)
            row = {"step": s, "reward/mean": r, "reward/std": 0.1, "reward/shapes/mean": r * 1.1,
                   "reward/shapes/std": 0.12, "reward/aesthetic/mean": 0.5 - 0.001 * s, "reward/aesthetic/std": 0.05,
                   "reward/zero_std_frac": 0.1, "kl": 0.001 * s, "clip_frac": 0.05 + 0.01 * rng.random(),
                   "entropy": 2.0 - 0.02 * s, "loss": -0.01 * s,
                   "stage/global/clip_frac": 0.02, "stage/struct/clip_frac": 0.06, "stage/refine/clip_frac": 0.04,
                   "stage/global/kl": 0.001, "stage/struct/kl": 0.003, "stage/refine/kl": 0.002,
                   "time/rollout_s": 1.2, "time/update_s": 0.8, "throughput/images_per_s": 40 + rng.random(),
                   "grad_norm": None if s == 3 else 0.5, "note": "text values are ignored", "ok": True}
            if s % every == 0:
                row["eval/shapes-geneval"] = r
            f.write(json.dumps(row) + "\n")
    for s in range(every, steps + 1, every):
        d = root / "samples" / f"step_{s:06d}"
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "rewards.jsonl", "w") as f:
            for i in range(4):
                Image.new("RGB", (64, 64), (40 * i, 5 * s % 255, 100)).save(d / f"{i:03d}.png")
                f.write(json.dumps({"file": f"{i:03d}.png", "prompt": prompt or f"a photo of {i + 1} circles",
                                    "reward": 0.1 * i + 0.01 * s, "reward/shapes": 0.1 * i, "reward/aesthetic": 0.5})
                        + "\n")
    return root


def hostile_copy(src: Path, dst: Path) -> Path:
    """A copy of a real run whose run name, prompts, one category, failure reasons and detected class names
    are hostile markup."""
    shutil.copytree(src, dst)
    res = json.loads((dst / "results.json").read_text())
    res["run_name"] = HOSTILE[0]
    m = res["metrics"]["shapes-geneval"]
    m["categories"][HOSTILE[1]] = m["categories"].pop("colors")
    res["suite"]["categories"] = [HOSTILE[1] if c == "colors" else c for c in res["suite"]["categories"]]
    (dst / "results.json").write_text(json.dumps(res))
    samples, _ = read_jsonl(dst / "samples.jsonl")
    for i, s in enumerate(samples):
        s["prompt"] = HOSTILE[i % len(HOSTILE)] + " " + s["prompt"]
        if s["category"] == "colors":
            s["category"] = HOSTILE[1]
    (dst / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    scores, _ = read_jsonl(dst / "scores" / "shapes-geneval.jsonl")
    for i, r in enumerate(scores):
        r["details"]["reason"] = HOSTILE[(i + 1) % len(HOSTILE)]
        r["details"]["detections"] = {HOSTILE[(i + 2) % len(HOSTILE)]: v for v in r["details"]["detections"].values()}
    (dst / "scores" / "shapes-geneval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scores))
    return resync_results(dst)


def resync_results(run: Path) -> Path:
    """Record the edited scores files' digests in results.json, as a finished (re)score does; a site
    refuses a run whose scores changed after its results."""
    from paintbench.harness.evaluate import scores_digest

    res = json.loads((run / "results.json").read_text())
    for metric, entry in res["metrics"].items():
        entry["scores_sha256"] = scores_digest(run / "scores" / f"{metric}.jsonl")
    (run / "results.json").write_text(json.dumps(res))
    return run


class Tags(html.parser.HTMLParser):
    """Every start tag with its attributes (to look for injected elements in a raw page)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse_tags(text: str) -> list[tuple[str, dict[str, str | None]]]:
    p = Tags()
    p.feed(text)
    return p.tags


def local_refs(page: Path) -> list[str]:
    """Every href/src of a page that is not an in-page anchor or inline data."""
    out = []
    for _, attrs in parse_tags(page.read_text(encoding="utf-8")):
        for k in ("href", "src"):
            v = attrs.get(k)
            if v and not v.startswith(("#", "data:")):
                out.append(v)
    return out


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    return make_runs(tmp_path_factory.mktemp("lb-runs"))


@pytest.fixture(scope="session")
def train_log(tmp_path_factory) -> Path:
    return write_train_log(tmp_path_factory.mktemp("lb-train") / "log")


@pytest.fixture(scope="session")
def site(runs, train_log, tmp_path_factory):
    out = tmp_path_factory.mktemp("lb-site") / "site"
    report = build_site([runs["oracle"], runs["random"], runs["half"]], [train_log], out,
                        BuildOptions(n_resamples=2000, jobs=1))
    return out, report


def fake_run(name: str, suite: str, metrics: dict[str, dict], *, primary: str | None = None) -> Run:
    """A run held in memory (tables are pure functions of results.json)."""
    results = {"run_name": name, "suite": {"name": suite, "version": 1}, "metrics": metrics,
               "primary_metric": primary or next(iter(metrics))}
    return Run(root=Path("/nonexistent") / name, results=results, samples=[], records={}, name=name,
               slug=unique_slug("run", name, name))


def entry(value, lo, hi, version="v/1", categories=None, n=100):
    return {"value": value, "ci": [lo, hi], "n_samples": n, "n_prompts": n, "categories": categories or {},
            "provenance": {"version": version, "weights": {"w": {"sha256": "ab" * 32}}}, "aggregation": "mean"}


# -- pure rules -------------------------------------------------------------------------------------------
def test_rank_order_puts_missing_last_and_respects_direction():
    values = [0.5, None, 0.9, float("nan"), 0.1]
    assert tables.rank_order(values) == [2, 0, 4, 1, 3]
    assert tables.rank_order(values, higher=False) == [4, 0, 2, 1, 3]


def test_tie_status_uses_the_paired_test_then_falls_back_to_interval_overlap():
    tied, why = tables.tie_status(None, None, {"n_shared": 30, "p_value": 0.20, "difference": -0.01})
    assert tied and "paired bootstrap" in why
    tied, why = tables.tie_status(None, None, {"n_shared": 10, "p_value": 0.01, "permutation_p_value": 0.30,
                                               "difference": -0.01})
    assert tied and "exact permutation" in why  # the exact test wins when present
    tied, _ = tables.tie_status(None, None, {"n_shared": 30, "p_value": 0.001, "difference": -0.2})
    assert not tied
    assert tables.tie_status([0.5, 0.7], [0.6, 0.8], None)[0] is True
    assert tables.tie_status([0.5, 0.7], [0.1, 0.4], None)[0] is False
    assert tables.tie_status(None, [0.1, 0.4], None)[0] is False


def test_geneval_layout_columns_values_and_ties_from_real_runs(runs):
    loaded = [load_run(runs[k]) for k in ("random", "half", "oracle")]
    (t,) = tables.suite_tables("shapes", loaded, paired=lambda a, b, m: paired_test(a, b, m, n_resamples=1000))
    labels = [c.label for c in t.columns]
    assert labels == ["#", "Model", "Overall", "Single object", "Two object", "Counting", "Colors", "Position",
                      "Color attribution", "Images", "Provenance"]
    assert [r.cells["model"].value for r in t.rows] == ["oracle", "half", "random"]  # ranked by Overall
    assert t.rows[0].cells["model"].mark == "leader"
    for row, run in zip(t.rows, [loaded[2], loaded[1], loaded[0]], strict=True):
        res = run.metrics["shapes-geneval"]
        assert row.cells["overall"].value == res["value"]
        assert row.cells["cat:color_attr"].value == res["categories"]["color_attr"]["value"]
        assert [row.cells["overall"].low, row.cells["overall"].high] == res["ci"]
    # the tie verdicts agree with the harness's exact permutation test computed independently here
    oracle = loaded[2]
    for row, run in zip(t.rows[1:], [loaded[1], loaded[0]], strict=True):
        a = _by_prompt(oracle)
        b = _by_prompt(run)
        p = stats.paired_permutation_test(a, b).p_value
        assert (row.cells["model"].mark == "tied") == (p >= 0.05)
        assert f"p = {p:.3g}" in row.cells["overall"].note
    assert "prompt id and text" in t.notes[0]


def _by_prompt(run: Run) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in run.records["shapes-geneval"]:
        out.setdefault(r["prompt_id"], []).append(r["value"])
    return out


def test_two_random_runs_are_tied_and_the_oracle_is_not(runs, tmp_path):
    other = tmp_path / "random-seed1"
    run_eval(EvalConfig(suite=str(runs["oracle"].parent / "mini-shapes.yaml"), generator="shapes-random",
                        out=str(other), name="random seed 1", seed=1, progress=False, n_resamples=500))
    loaded = [load_run(runs["random"]), load_run(other)]
    (t,) = tables.suite_tables("shapes", loaded, paired=lambda a, b, m: paired_test(a, b, m, n_resamples=1000))
    assert [r.cells["model"].mark for r in t.rows] == ["leader", "tied"]
    with_oracle = [*loaded, load_run(runs["oracle"])]
    (t,) = tables.suite_tables("shapes", with_oracle, paired=lambda a, b, m: paired_test(a, b, m, n_resamples=1000))
    assert [r.cells["model"].mark for r in t.rows] == ["leader", None, None]


def test_dpg_and_hpd_layouts_and_preference_metrics_side_by_side():
    dpg_runs = [fake_run("m1", "dpg", {"dpg": entry(0.80, 0.78, 0.82, categories={
                    "Global": {"value": 0.85, "ci": [0.8, 0.9]}, "entity": {"value": 0.9, "ci": [0.88, 0.92]}})}),
                fake_run("m2", "dpg", {"dpg": entry(0.70, 0.68, 0.72)})]
    (t,) = tables.suite_tables("dpg", dpg_runs, paired=None)
    assert [c.label for c in t.columns][2:8] == ["Global", "Entity", "Attribute", "Relation", "Other", "Overall"]
    top = t.rows[0].cells
    assert t.column("overall").fmt(top["overall"].value) == "80.00"  # x100, as DPG-Bench reports
    assert top["cat:global"].value == 0.85  # case-insensitive category match
    assert top["cat:relation"].value is None and t.column("cat:relation").fmt(None) == "–"
    assert t.rows[1].cells["model"].mark is None  # CIs do not overlap, no shared prompts

    hpd = [fake_run("a", "hpdv2", {"hps-v2.1": entry(0.30, 0.29, 0.31, version="hps-v2.1/1",
                                                     categories={"anime": {"value": 0.31, "ci": [0.3, 0.32]}}),
                                   "hps-v2": entry(0.27, 0.26, 0.28, version="hps-v2/1"),
                                   "imagereward": entry(0.5, 0.4, 0.55), "aesthetic": entry(5.5, 5.4, 5.6)}),
           fake_run("b", "hpdv2", {"hps-v2.1": entry(0.295, 0.285, 0.305, version="hps-v2.1/1"),
                                   "imagereward": entry(0.7, 0.6, 0.8), "aesthetic": entry(5.0, 4.9, 5.1)})]
    tbls = tables.suite_tables("hpdv2", hpd, paired=None)
    assert [t.title for t in tbls] == ["HPD v2: hps-v2.1 (hps-v2.1/1)", "HPD v2: hps-v2 (hps-v2/1)",
                                       "hpdv2: metrics side by side"]
    v21 = tbls[0]
    assert [c.label for c in v21.columns][2:7] == ["Animation", "Concept-art", "Painting", "Photo", "Average"]
    assert v21.column("cat:anime").fmt(v21.rows[0].cells["cat:anime"].value) == "31.00"
    assert [r.cells["model"].mark for r in v21.rows] == ["leader", "tied"]  # intervals overlap
    assert len(tbls[1].rows) == 1  # v2 scores are never ranked against v2.1 scores
    pref = tbls[2]
    keys = [c.key for c in pref.columns]
    assert keys == ["model", "metric:imagereward", "metric:aesthetic", "n_images", "provenance"]  # no average
    marks = {(r.cells["model"].value, k): r.cells[k].mark for r in pref.rows for k in keys[1:3]}
    assert marks[("b", "metric:imagereward")] == "leader" and marks[("a", "metric:aesthetic")] == "leader"
    assert marks[("a", "metric:imagereward")] is None and marks[("b", "metric:aesthetic")] is None


def test_metric_versions_are_ranked_separately():
    r = [fake_run("old", "shapes", {"shapes-geneval": entry(0.9, 0.8, 1.0, version="shapes-geneval/1")}),
         fake_run("new", "shapes", {"shapes-geneval": entry(0.5, 0.4, 0.6, version="shapes-geneval/2")})]
    tbls = tables.suite_tables("shapes", r, paired=None)
    assert [[row.cells["model"].value for row in t.rows] for t in tbls] == [["new"], ["old"]]
    assert all(t.rows[0].cells["model"].mark == "leader" for t in tbls)


def test_lower_is_better_metrics_rank_ascending():
    from paintbench import metrics
    from paintbench.metrics.registry import ProviderSpec

    metrics.register(ProviderSpec(name="test-error-rate", target="x:y", version="e/1", higher_is_better=False,
                                  nominal_range=(0, 1), summary="lower is better"), replace=True)
    r = [fake_run("bad", "custom", {"test-error-rate": entry(0.5, 0.45, 0.55)}),
         fake_run("good", "custom", {"test-error-rate": entry(0.1, 0.05, 0.15)})]
    (t,) = tables.suite_tables("custom", r, paired=None)
    assert [row.cells["model"].value for row in t.rows] == ["good", "bad"]
    assert t.rows[0].cells["model"].mark == "leader"


def test_provenance_hides_local_paths_and_keeps_hashes(runs):
    run = load_run(runs["oracle"])
    run.results["metrics"]["shapes-geneval"]["provenance"]["weights"] = {
        "det": {"path": "/home/alice/secret/weights/det.pth", "sha256": "f" * 64}}
    prov = dict(tables.run_provenance(run))
    assert prov["shapes-geneval.weights.det.path"] == "det.pth"
    assert prov["shapes-geneval.weights.det.sha256"] == "f" * 64
    assert prov["shapes-geneval.version"] == "shapes-geneval/1"
    assert prov["commit"] == run.results["environment"]["git_commit"]
    assert prov["date"] == run.results["date"]
    assert prov["generation.generator"] == "shapes-oracle"
    assert not any("/home/alice" in v for v in prov.values())


# -- exports -----------------------------------------------------------------------------------------------
def _table() -> tables.Table:
    cols = [tables.Column("model", "Model", "text"), tables.Column("overall", "Overall", "number", 100.0, 2, ci=True)]
    rows = [tables.Row({"model": tables.Cell("=HYPERLINK(\"http://x\")"), "overall": tables.Cell(0.8123, 0.8, 0.83,
                                                                                                  mark="leader")}),
            tables.Row({"model": tables.Cell("a_b & c% {x} ~ ^ \\ $ #"), "overall": tables.Cell(None)}),
            tables.Row({"model": tables.Cell("-1+1"), "overall": tables.Cell(-0.05, -0.1, 0.0, mark="tied")})]
    return tables.Table(id="Weird id/with spaces", title="T & t", columns=cols, rows=rows)


def test_csv_export_scales_values_and_neutralises_formulas():
    t = _table()
    assert t.id == "weird-id-with-spaces"
    rows = list(csv.reader(io.StringIO(exports.to_csv(t))))
    assert rows[0] == ["Model", "Overall", "Overall CI low", "Overall CI high", "Overall vs leader"]
    assert rows[1][0] == "'=HYPERLINK(\"http://x\")" and rows[3][0] == "'-1+1"
    assert float(rows[1][1]) == pytest.approx(81.23) and float(rows[1][3]) == pytest.approx(83.0)
    assert rows[1][4] == "leader" and rows[3][4] == "tied"
    assert rows[2][1] == "" and float(rows[3][1]) == pytest.approx(-5.0)  # numbers are never prefixed


def test_json_export_round_trips():
    doc = json.loads(exports.to_json(_table()))
    assert doc["columns"][1]["scale"] == 100.0
    first = doc["rows"][0]["overall"]
    assert first["raw"] == 0.8123 and first["value"] == pytest.approx(81.23) and first["mark"] == "leader"
    assert first["ci"] == pytest.approx([80.0, 83.0])
    assert doc["rows"][1]["overall"]["value"] is None


def test_latex_export_escapes_text_and_marks_leader_and_ties():
    tex = exports.to_latex(_table())
    assert r"a\_b \& c\% \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} \$ \#" in tex
    assert r"\textbf{81.23 {\scriptsize [80.00, 83.00]}}" in tex
    assert r"\underline{-5.00 {\scriptsize [-10.00, 0.00]}}" in tex
    body = tex.split(r"\midrule")[1]
    assert body.count(r"\\") == 3 and "--" in body.splitlines()[2]


# -- plots -------------------------------------------------------------------------------------------------
def test_line_chart_maps_points_and_escapes_labels():
    svg = plots.line_chart([(HOSTILE[0], [(0, 0.0), (5, float("nan")), (10, 1.0)]), ("other", [(0, 0.5)])],
                           title=HOSTILE[1], width=400, height=200)
    root = ET.fromstring(str(svg))  # well-formed XML: nothing escaped its attribute or element
    ns = "{http://www.w3.org/2000/svg}"
    assert root.find(f"{ns}title").text == HOSTILE[1]
    assert not root.findall(f".//{ns}script") and "<script" not in str(svg)
    poly = root.find(f".//{ns}polyline")
    pts = [tuple(map(float, p.split(","))) for p in poly.get("points").split()]
    assert len(pts) == 2  # the NaN point is dropped
    (x0, y0), (x1, y1) = pts
    assert x0 == 56 and x1 == 400 - 12  # plot area edges: left margin, right margin
    assert y0 > y1  # larger values are drawn higher
    labels = [g.get("data-label") for g in root.findall(f".//{ns}g") if g.get("class") == "series"]
    assert labels == [HOSTILE[0], "other"]
    legend = [g.get("data-label") for g in root.findall(f".//{ns}g") if g.get("class") == "legend-item"]
    assert legend == labels      # one toggle per series, with the same (escaped) label


def test_interval_plot_orders_and_scales():
    svg = plots.interval_plot([("a", 0.5, 0.4, 0.6, "leader"), ("b", None, None, None, None)], title="t", scale=100,
                              decimals=1)
    root = ET.fromstring(str(svg))
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "50.0" in texts and "b" in texts
    assert len(root.findall(".//{http://www.w3.org/2000/svg}circle")) == 1


def test_nice_ticks_are_round_and_cover_the_range():
    for lo, hi in ((0, 1), (0.213, 0.871), (-3.2, 47.0), (1e-4, 9e-4), (5, 5)):
        ticks = plots.nice_ticks(lo, hi)
        assert ticks and all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks)
        if len(ticks) > 1:
            steps = {round(b - a, 12) for a, b in itertools.pairwise(ticks)}
            assert len(steps) == 1
            (step,) = steps
            mant = step / 10 ** math.floor(math.log10(step))
            assert any(math.isclose(mant, m) for m in (1, 2, 2.5, 5))
    assert plots.nice_ticks(1, 3, 6) == [1, 1.5, 2, 2.5, 3]
    assert plots.nice_ticks(1, 3, 6, integer=True) == [1, 2, 3]  # training steps


def test_chart_groups_put_components_and_stages_together():
    keys = ["reward/mean", "kl", "reward/hps/mean", "reward/clip/mean", "reward/std", "reward/hps/std",
            "stage/global/kl", "stage/refine/kl", "stage/global/tokens", "time/rollout_s", "time/update_s",
            "throughput/images_per_s", "aaa"]
    groups = dict(plots.chart_groups(keys))
    assert groups["reward/*/mean"] == [("reward/mean", "all"), ("reward/hps/mean", "hps"),
                                       ("reward/clip/mean", "clip")]
    assert groups["stage/*/kl"] == [("stage/global/kl", "global"), ("stage/refine/kl", "refine")]
    assert groups["time/*"] == [("time/rollout_s", "rollout_s"), ("time/update_s", "update_s")]
    assert groups["throughput/images_per_s"] == [("throughput/images_per_s", "throughput/images_per_s")]
    order = [title for title, _ in plots.chart_groups(keys)]
    assert order[:3] == ["reward/*/mean", "reward/*/std", "kl"]
    assert sum(len(v) for v in groups.values()) == len(keys)  # every key plotted exactly once


def test_guard_metrics_chart_right_after_the_update_health_signals():
    keys = ["time/step_s", "guard/out_of_clip_frac", "entropy", "objects/per_image", "clip_frac", "reward/mean", "kl"]
    order = [title for title, _ in plots.chart_groups(keys)]
    assert order == ["reward/mean", "kl", "clip_frac", "guard/out_of_clip_frac", "objects/per_image", "entropy",
                     "time/*"]


# -- model -------------------------------------------------------------------------------------------------
def test_train_log_reading_is_defensive(tmp_path):
    log = write_train_log(tmp_path / "log")
    with open(log / "metrics.jsonl", "a") as f:
        f.write('{"step": 31, "reward/mean": NaN}\n{"no_step": 1}\n{"step": 32, "kl": "oops"}\n{"step": 33')
    lg = load_train_log(log)
    keys = lg.numeric_keys()
    assert "note" not in keys and "ok" not in keys and "step" not in keys
    assert "grad_norm" in keys and len(lg.series("grad_norm")) == 29  # the null at step 3 is skipped
    assert [s for s, _ in lg.series("reward/mean")][-1] == 30  # NaN row skipped, torn line dropped
    assert sorted(lg.samples) == [10, 20, 30] and len(lg.samples[10]) == 4
    assert lg.samples[20][1].components == {"shapes": 0.1, "aesthetic": 0.5}
    assert lg.name == "tiny-htgrpo"
    assert any("torn" in p for p in lg.problems)


def test_boxes_from_geneval_kept_and_from_shapes_detections():
    geneval = {"kept": {"dog": [[10, 20, 30, 60, 0.9], [1, 2, "x", 4, 0.5]], "cat": [[0, 0, 5, 5, 0.8]]},
               "colours": {"dog": ["brown"]}, "detections": {"dog": [{"box": [0, 0, 1, 1], "score": 0.1}]}}
    assert boxes_of(geneval) == [{"x": 10, "y": 20, "w": 20, "h": 40, "label": "brown dog", "score": 0.9},
                                 {"x": 0, "y": 0, "w": 5, "h": 5, "label": "cat", "score": 0.8}]
    shapes = {"detections": {"star": [{"box": [1.04, 65.5, 15, 79], "colour": "blue", "score": 1.0}, {"box": None}]}}
    assert boxes_of(shapes) == [{"x": 1, "y": 65.5, "w": 14, "h": 13.5, "label": "blue star", "score": 1.0}]
    assert boxes_of({"kept": "nonsense"}) == [] and boxes_of({}) == []


# -- thumbnails ----------------------------------------------------------------------------------------------
def test_thumbnails_are_made_once_per_content_and_reused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.png"
    Image.new("RGB", (600, 300), (200, 10, 10)).save(big)
    same = src / "same.png"
    shutil.copyfile(big, same)
    rgba = src / "alpha.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(rgba)
    refs = [ImageRef(p, file_sha256(p)) for p in (big, same, rgba)]
    refs.append(ImageRef(src / "gone.png", "0" * 64))
    site = tmp_path / "site"
    store = ImageStore(site, size=128, jobs=1)
    pub = store.publish(refs)
    assert store.stats.thumbs_made == 2 and len(store.stats.missing) == 1  # same content stored once
    t_big = site / pub[refs[0].sha256].thumb
    with Image.open(t_big) as im:
        assert im.size == (128, 64) == thumb_size_of(600, 300, 128) and im.format == "JPEG"
        assert im.getpixel((64, 32))[0] > 180  # colour kept
    with Image.open(site / pub[refs[2].sha256].thumb) as im:
        assert im.format == "PNG" and im.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white
    full = site / pub[refs[0].sha256].full
    assert full.read_bytes() == big.read_bytes()
    mtime = t_big.stat().st_mtime_ns
    (site / "thumbs" / "zz").mkdir()
    (site / "thumbs" / "zz" / ".x.tmp").write_bytes(b"half")  # an interrupted write is not a thumbnail
    store2 = ImageStore(site, size=128, jobs=1)
    pub2 = store2.publish(refs, {refs[0].sha256: (600, 300)})
    assert store2.stats.thumbs_made == 0 and store2.stats.thumbs_cached == 2
    assert t_big.stat().st_mtime_ns == mtime
    assert (pub2[refs[0].sha256].width, pub2[refs[0].sha256].height) == (128, 64)
    store3 = ImageStore(site, size=64, jobs=1)  # another size is another thumbnail
    store3.publish(refs[:1])
    assert store3.stats.thumbs_made == 1


# -- whole sites ---------------------------------------------------------------------------------------------
def test_site_pages_links_and_exports(site, runs):
    out, report = site
    names = {p for p in report.pages}
    assert "index.html" in names and sum(p.startswith("run-") for p in names) == 3
    assert sum(p.startswith("compare-") for p in names) == 1 and sum(p.startswith("train-") for p in names) == 1
    assert report.thumbs_made > 0 and not report.problems
    for page in report.pages:
        text = (out / page).read_text(encoding="utf-8")
        # self-contained: no absolute URL anywhere in an attribute, every local reference exists
        assert not re.search(r'(?:src|href)="(?:[a-z]+:)?//', text), page
        for ref in local_refs(out / page):
            assert (out / ref.split("#")[0]).exists(), (page, ref)
    for path in report.exports:
        assert (out / path).stat().st_size > 0
    board = out / "exports" / "leaderboard-shapes-shapes-geneval-shapes-geneval-1.csv"
    rows = list(csv.DictReader(board.open()))
    assert [r["Model"] for r in rows] == ["oracle", "half", "random"]
    oracle = json.loads((runs["oracle"] / "results.json").read_text())["metrics"]["shapes-geneval"]
    assert float(rows[0]["Counting"]) == oracle["categories"]["counting"]["value"]
    assert rows[0]["Overall vs leader"] == "leader"


def test_run_page_shows_every_image_with_verdict_reason_and_boxes(site, runs):
    out, report = site
    page = next(p for p in report.pages if p.startswith("run-random"))
    tags = parse_tags((out / page).read_text(encoding="utf-8"))
    cards = [a for t, a in tags if t == "figure" and "card" in (a.get("class") or "")]
    samples, _ = read_jsonl(runs["random"] / "samples.jsonl")
    scores, _ = read_jsonl(runs["random"] / "scores" / "shapes-geneval.jsonl")
    assert [(c["data-prompt-id"], int(c["data-sample"]), c["data-sha"]) for c in cards] == \
        [(s["prompt_id"], s["sample_index"], s["sha256"]) for s in samples]
    failed = {(r["prompt_id"], r["sample_index"]) for r in scores if not r["details"]["correct"]}
    assert {(c["data-prompt-id"], int(c["data-sample"])) for c in cards if c["data-failed"] == "1"} == failed
    text = (out / page).read_text(encoding="utf-8")
    # wrong answers and scoring failures are counted apart (the headline card counts only the latter)
    assert f"{len(samples)} images: {len(failed)} judged wrong ✗, 0 not scored" in text
    reason = next(r["details"]["reason"] for r in scores if r["details"]["reason"])
    assert f'<span class="reason">{reason.replace(">", "&gt;")}</span>' in text
    n_boxes = sum(len(v) for r in scores for v in r["details"]["detections"].values())
    assert sum(1 for t, a in tags if t == "rect" and a.get("class") == "box") == n_boxes
    imgs = [a for t, a in tags if t == "img"]
    assert imgs and all(a.get("loading") == "lazy" for a in imgs)


def test_rebuild_uses_the_caches_and_gives_the_same_pages(site, runs, train_log):
    out, first = site
    before = {p: (out / p).read_text(encoding="utf-8") for p in first.pages}
    again = build_site([runs["oracle"], runs["random"], runs["half"]], [train_log], out,
                       BuildOptions(n_resamples=2000, jobs=1))
    assert again.thumbs_made == 0 and again.thumbs_cached == first.thumbs_made + first.thumbs_cached
    assert again.paired_computed == 0 and again.paired_cached > 0
    strip = re.compile(r"Built [0-9-]+ [0-9:]+ UTC")
    for p in first.pages:
        assert strip.sub("", (out / p).read_text(encoding="utf-8")) == strip.sub("", before[p]), p


def test_chunk_prompts_splits_large_comparisons_by_category():
    cats = ["a"] * 5 + ["b"] * 5 + ["c"] * 2
    assert chunk_prompts(cats, [4] * 12, limit=48) == [list(range(12))]  # fits: one page
    assert chunk_prompts(cats, [4] * 12, limit=20) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    parts = chunk_prompts(cats, [4] * 12, limit=12)  # a category larger than a page is split too
    assert parts == [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9], [10, 11]]
    assert all(sum(4 for _ in p) <= 12 for p in parts)
    mixed = ["a", "b"] * 10  # interleaved categories do not make one page per prompt
    assert len(chunk_prompts(mixed, [1] * 20, limit=8)) == 3


def test_large_comparisons_are_split_into_linked_pages(runs, tmp_path):
    out = tmp_path / "site"
    report = build_site([runs["oracle"], runs["random"]], [], out,
                        BuildOptions(n_resamples=500, jobs=1, images="none", cards_per_page=24))
    main = next(p for p in report.pages if p.startswith("compare-") and "-part" not in p)
    parts = sorted((p for p in report.pages if "-part" in p), key=lambda p: int(p.rsplit("part", 1)[1][:-5]))
    assert len(parts) >= 6  # 18 prompts x 2 runs x 2 images, 24 cards a page, split at the 6 categories
    seen = []
    for part in parts:
        tags = parse_tags((out / part).read_text(encoding="utf-8"))
        sections = [a for t, a in tags if t == "section" and a.get("class") == "pair"]
        assert sections and len({a["data-category"] for a in sections}) == 1  # a page per category here
        seen += [(a["data-prompt-id"], part, a["id"]) for a in sections]
    samples, _ = read_jsonl(runs["oracle"] / "samples.jsonl")
    assert [pid for pid, _, _ in seen] == list(dict.fromkeys(s["prompt_id"] for s in samples))
    # the per-prompt table links each prompt to its images on the right part page
    links = {a["href"] for t, a in parse_tags((out / main).read_text(encoding="utf-8")) if t == "a" and "#p-" in a.get("href", "")}
    assert links == {f"{part}#{anchor}" for _, part, anchor in seen}


def test_unchanged_pages_are_not_rendered_again(runs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(runs["oracle"], a)
    shutil.copytree(runs["random"], b)
    out = tmp_path / "site"
    opts = BuildOptions(n_resamples=500, jobs=1)
    first = build_site([a, b], [], out, opts)
    assert first.pages_cached == 0
    run_b = next(p for p in first.pages if p.startswith("run-b") or p.startswith("run-random"))
    (out / run_b).write_text("stale marker", encoding="utf-8")  # a cached page is left alone...
    again = build_site([a, b], [], out, opts)
    assert again.pages_cached == len(again.pages)
    assert (out / run_b).read_text(encoding="utf-8") == "stale marker"
    res = json.loads((b / "results.json").read_text())  # ...until its inputs change
    res["run_name"] = "renamed"
    (b / "results.json").write_text(json.dumps(res))
    third = build_site([a, b], [], out, opts)
    assert third.pages_cached == 0  # the name is in every page's navigation menu
    run_a = next(p for p in third.pages if p.startswith("run-oracle"))
    assert ">renamed</a>" in (out / run_a).read_text(encoding="utf-8")
    scores = b / "scores" / "shapes-geneval.jsonl"
    os.utime(scores, ns=(10**9, 10**9))  # rescored: only the pages that show b are rendered again
    fourth = build_site([a, b], [], out, opts)
    assert fourth.pages_cached == 1 and fourth.paired_computed == 1


def test_rescored_run_invalidates_its_paired_tests(runs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(runs["oracle"], a)
    shutil.copytree(runs["random"], b)
    out = tmp_path / "site"
    opts = BuildOptions(n_resamples=500, jobs=1, images="none")
    build_site([a, b], [], out, opts)
    scores = b / "scores" / "shapes-geneval.jsonl"
    scores.write_text(scores.read_text().replace('"value": 0.0', '"value": 1.0'))
    resync_results(b)
    os.utime(scores, ns=(1, 1))
    again = build_site([a, b], [], out, opts)
    assert again.paired_computed > 0


def test_hostile_names_are_escaped_everywhere(runs, tmp_path):
    bad = hostile_copy(runs["random"], tmp_path / "hostile")
    log = write_train_log(tmp_path / "log", name=HOSTILE[3], prompt=HOSTILE[1])
    out = tmp_path / "site"
    report = build_site([runs["oracle"], bad], [log], out, BuildOptions(n_resamples=500, jobs=1))
    for page in report.pages:
        text = (out / page).read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<img src=x" not in text and "<svg onload" not in text, page
        for tag, attrs in parse_tags(text):
            assert not any(k.startswith("on") for k in attrs), (page, tag, attrs)
            if tag == "script":
                assert attrs.get("src") == "static/site.js"
    run_page = next(p for p in report.pages if p.startswith("run-script"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (out / run_page).read_text(encoding="utf-8")
    for path in report.exports:  # exports carry the text, neutralised for their format
        if path.endswith(".tex"):
            assert "<script>" not in (out / path).read_text(encoding="utf-8")


def test_folders_of_runs_skip_unfinished_runs_and_logs_alone_build(runs, train_log, tmp_path):
    from paintbench.errors import UserError

    folder = tmp_path / "runs"
    shutil.copytree(runs["random"], folder / "done")
    (folder / "running").mkdir()
    shutil.copy(runs["random"] / "config.yaml", folder / "running" / "config.yaml")
    (folder / "notes").mkdir()  # not a run at all: ignored
    report = build_site([folder], [], tmp_path / "site", BuildOptions(n_resamples=200, images="none"))
    assert [p for p in report.pages if p.startswith("run-")] and any("running" in p and "not finished" in p
                                                                      for p in report.problems)
    with pytest.raises(UserError, match=r"no results\.json"):
        build_site([folder / "running"], [], tmp_path / "site2")
    only_logs = build_site([], [train_log], tmp_path / "site3")
    assert sorted(p.split("-")[0] for p in only_logs.pages) == ["index.html", "train"]
    assert "Training reports" in (tmp_path / "site3" / "index.html").read_text(encoding="utf-8")


def test_leaderboard_command(runs, train_log, tmp_path, capsys):
    import argparse

    from paintbench.commands import leaderboard

    parser = argparse.ArgumentParser()
    leaderboard.add_arguments(parser)
    out = tmp_path / "site"
    args = parser.parse_args([str(runs["oracle"].parent), "--train-log", str(train_log), "--out", str(out),
                              "--images", "none", "--n-resamples", "500", "--baseline", "random"])
    assert leaderboard.run(args) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    compare = next(out.glob("compare-*.html")).read_text(encoding="utf-8")
    assert re.search(r"Baseline \(A\): <a href=\"run-random-[0-9a-f]+\.html\">random</a>", compare)
    assert not (out / "images").exists()  # --images none: thumbnails only
    bad = parser.parse_args([str(tmp_path / "nothing-here"), "--out", str(out)])
    from paintbench.errors import UserError

    with pytest.raises(UserError, match="no such directory"):
        leaderboard.run(bad)


def test_a_metric_of_unknown_direction_is_an_error_not_ranked_higher_is_better():
    """Before, an unregistered metric silently ranked as higher-is-better (the worst run first if it is
    an error rate). Now: the direction a run recorded in results.json, else a clear error."""
    from paintbench.errors import UserError

    bad, good = entry(0.5, 0.45, 0.55), entry(0.1, 0.05, 0.15)
    r = [fake_run("bad", "custom", {"plugin-error-rate": bad}), fake_run("good", "custom", {"plugin-error-rate": good})]
    with pytest.raises(UserError, match="'plugin-error-rate': its direction is unknown"):
        tables.suite_tables("custom", r, paired=None)
    for e in (bad, good):
        e["higher_is_better"] = False  # as the run engine records it
    (t,) = tables.suite_tables("custom", r, paired=None)
    assert [row.cells["model"].value for row in t.rows] == ["good", "bad"]


def test_the_layout_comes_from_the_suite_file_or_the_runs_record():
    """A benchmark is one YAML file: its `leaderboard:` section is the site's table, recorded in results.json."""
    from paintbench.leaderboards.layouts import layout_for

    assert layout_for("geneval").columns[0] == ("Overall", None)  # shipped suite file
    assert layout_for("my-bench") is None
    layout = {"title": "My bench", "metrics": ["shapes-geneval"], "columns": [["All", None], ["Hard", "position"]],
              "scale": 100.0, "decimals": 1}
    run = fake_run("a", "my-bench", {"shapes-geneval": entry(0.5, 0.4, 0.6, categories={
        "position": {"value": 0.25, "ci": [0.2, 0.3], "n_prompts": 10, "n_samples": 40}})})
    run.results["suite"]["leaderboard"] = layout
    (t, *_) = tables.suite_tables("my-bench", [run], paired=None)
    assert t.title.startswith("My bench") or "My bench" in t.title
    assert [c.label for c in t.columns if c.kind == "number"][:2] == ["All", "Hard"]
    assert t.rows[0].cells["cat:position"].value == 0.25


# -- hostile run directories: nothing is written outside the site, a replaced image is never shown ---------
def _site_files(site: Path) -> set[Path]:
    return {p for p in site.rglob("*") if p.is_file()}


def test_a_hostile_sha256_field_never_names_a_file(runs, tmp_path):
    """`samples.jsonl`'s sha256 was used as a path: `../../x` wrote thumbnails outside the site."""
    run = tmp_path / "runs" / "evil"
    shutil.copytree(runs["oracle"], run)
    samples, _ = read_jsonl(run / "samples.jsonl")
    victim = tmp_path / "victim.txt"
    for i, s in enumerate(samples[:3]):
        s["sha256"] = ["../../../victim.txt", "/tmp/x", "zz" * 32][i]
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    site = tmp_path / "site"
    report = build_site([run], out=site, options=BuildOptions(n_resamples=200, jobs=1))
    assert not victim.exists() and not (tmp_path / "x").exists()
    assert all(p.resolve().is_relative_to(site.resolve()) for p in _site_files(site))
    assert sum("not 64 hex digits" in p for p in report.problems) == 3
    load = load_run(run)
    assert all(s.sha256 is None or re.fullmatch("[0-9a-f]{64}", s.sha256) for s in load.samples)
    with pytest.raises(ValueError, match="refused image key"):
        ImageStore(site)._stem("../../etc")


def test_a_training_log_file_outside_its_folder_is_not_published(train_log, tmp_path):
    log = tmp_path / "log"
    shutil.copytree(train_log, log)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(outside)
    step = sorted((log / "samples").glob("step_*"))[0]
    recs, _ = read_jsonl(step / "rewards.jsonl")
    recs[0]["file"] = "../../../secret.png"
    (step / "rewards.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    lg = load_train_log(log)
    assert all(outside.resolve() != s.image.resolve() for v in lg.samples.values() for s in v)
    assert any("outside" in p and "secret.png" in p for p in lg.problems)


def test_a_replaced_image_is_named_at_site_build_and_at_scoring(runs, tmp_path):
    run = tmp_path / "runs" / "replaced"
    shutil.copytree(runs["oracle"], run)
    samples, _ = read_jsonl(run / "samples.jsonl")
    target = run / samples[0]["image"]
    Image.new("RGB", Image.open(target).size, (1, 2, 3)).save(target)  # same name, other pixels
    site = tmp_path / "site"
    report = build_site([run], out=site, options=BuildOptions(n_resamples=200, jobs=1))
    assert any("changed since the run recorded it" in p and target.name in p for p in report.problems)
    replaced = file_sha256(target)
    assert not any(replaced in p.name for p in _site_files(site))  # the new file is not shown as the old sample
    # the run engine refuses to score it under the old record
    from paintbench.harness.evaluate import _decode

    err = _decode(None, target, samples[0]["sha256"])
    assert isinstance(err, Exception) and "changed since it was recorded" in str(err)
    assert _decode(None, target, replaced).image == str(target)


def test_temporary_files_of_a_killed_build_are_removed_not_published(runs, tmp_path):
    site = tmp_path / "site"
    (site / "thumbs" / "ab").mkdir(parents=True)
    stale = [site / "thumbs" / "ab" / f".{'ab' * 32}-256.png.4242.tmp", site / ".index.html.99.tmp"]
    for f in stale:
        f.write_bytes(b"half a file")
    keep = site / "notes.tmp"  # not ours: left alone
    keep.write_text("user file")
    report = build_site([runs["oracle"]], out=site, options=BuildOptions(n_resamples=200, jobs=1))
    assert not any(f.exists() for f in stale) and keep.exists()
    assert sum("interrupted build" in p for p in report.problems) == 2


def test_partial_runs_are_apart_the_baseline_is_the_fullest_run_and_an_unknown_one_is_refused(runs, tmp_path):
    """A --limit 10 run ranked #2 above complete runs, and, first in the alphabet, became the comparisons'
    baseline (restricting every comparison to its 10 prompts); an unknown --baseline was ignored."""
    from paintbench.errors import UserError
    from paintbench.leaderboards.build import _pick_baseline

    suite = tmp_path / "mini-shapes.yaml"
    suite.write_text(MINI_SUITE)
    aaa = tmp_path / "aaa-partial"
    run_eval(EvalConfig(suite=str(suite), generator="shapes-oracle", out=str(aaa), name="aaa-partial", limit=3,
                        progress=False, n_resamples=200))
    loaded = [load_run(aaa), load_run(runs["random"]), load_run(runs["oracle"])]
    assert loaded[0].is_partial and not loaded[1].is_partial and "3 of" in loaded[0].prompt_coverage
    tabs = tables.suite_tables(loaded[0].suite_name, loaded, paired=None)
    main = [t for t in tabs if not t.id.endswith("-partial")]
    apart = [t for t in tabs if t.id.endswith("-partial")]
    assert apart and all("aaa-partial" not in [r.cells["model"].value for r in t.rows] for t in main)
    assert [r.cells["model"].value for r in apart[0].rows] == ["aaa-partial"]
    assert _pick_baseline(loaded, None)[0].n_prompts == max(r.n_prompts for r in loaded)
    # the comparison's by-category table: every column on the prompts all runs scored, said in its title
    from paintbench.harness.aggregate import aggregate_metric

    metric = next(iter(loaded[1].metrics))
    cmp = tables.category_compare_table(loaded[:2], metric, table_id="t")
    shared = set(loaded[0].prompts())
    assert f"on the {len(shared)} prompts every run scored" in cmp.title
    rnd = loaded[1]
    want = aggregate_metric([r for r in rnd.records[metric] if r["prompt_id"] in shared],
                            {p: c for p, (_, c) in rnd.prompts().items() if p in shared},
                            aggregation=rnd.metrics[metric]["aggregation"], n_resamples=1000)
    assert cmp.rows[0].cells["run1"].value == pytest.approx(want["value"])
    with pytest.raises(UserError, match="--baseline 'nope' is none of the runs"):
        build_site([aaa, runs["oracle"]], out=tmp_path / "site", options=BuildOptions(baseline="nope", n_resamples=100))


def test_limit_samples_across_categories_seeded():
    from paintbench.harness.suite import load_suite, stratified_sample

    items = load_suite("shapes").items
    first = stratified_sample(items, 12, seed=0)
    assert len(first) == 12 and len({it.category for it in first}) == 6  # every task, not the first one's
    assert first == stratified_sample(items, 12, seed=0)  # deterministic
    assert first != stratified_sample(items, 12, seed=1)
    assert [items.index(it) for it in first] == sorted(items.index(it) for it in first)  # suite order


def test_line_chart_bands_enclose_their_line():
    svg = plots.line_chart([("a", [(0, 0.5), (10, 0.6)])], title="t", width=400, height=200,
                           bands=[[(0, 0.4, 0.6), (10, 0.5, 0.7)]])
    root = ET.fromstring(str(svg))
    ns = "{http://www.w3.org/2000/svg}"
    band = root.find(f".//{ns}polygon")
    ys = [float(p.split(",")[1]) for p in band.get("points").split()]
    line_ys = [float(p.split(",")[1]) for p in root.find(f".//{ns}polyline").get("points").split()]
    assert len(ys) == 4 and min(ys) < min(line_ys) and max(ys) > max(line_ys)   # the band is wider than the line


def _experiment_summary():
    def entry(base, sd, delta=None):
        e = {o: {"mean": base, "sd": sd, "per_seed": [base - sd, base + sd]} for o in ("total", "layout", "detail", "geneval")}
        e["curve"] = {o: [[0, 0.1, 0.01], [10, base, sd]] for o in ("total", "layout", "detail", "geneval")}
        e["cpu_seconds"] = 12.0
        e["start"] = {o: 0.1 for o in ("total", "layout", "detail", "geneval")}
        if delta is not None:
            e["total"]["vs_htgrpo"] = {"difference": delta, "low": delta - 0.05, "high": delta + 0.05, "p_value": 0.04}
        return e

    return {"protocol": "two seeds", "cpu_seconds_total": 600.0, "worlds": {
        "blocks": {"seeds": [0, 1], "methods": {"HT-GRPO": entry(0.5, 0.02), HOSTILE[0]: entry(0.4, 0.03, -0.1)},
                   "premise_round1": {"premise/layout_share_in_structure": 0.8, "premise/layout_share_of_tokens": 0.25,
                                      "premise/layout_commit_step": 2.0, "premise/detail_commit_step": 5.0}}}}


def test_experiment_page_has_the_table_the_curves_and_escapes_names(tmp_path):
    f = tmp_path / "hierarchy.json"
    f.write_text(json.dumps(_experiment_summary()))
    build_site([], [], tmp_path / "site", experiments=[f])
    page = (tmp_path / "site" / "experiment-hierarchy.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('class="band"') == 8                                  # 2 methods × 4 charts
    assert "-0.100" in page                                                 # the paired difference
    assert "layout share of the structure set 0.80" in page and "10.0 CPU minutes" in page
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert 'href="experiment-hierarchy.html"' in index
    exported = json.loads((tmp_path / "site" / "exports" / "experiment-hierarchy-blocks.json").read_text())
    assert exported


def test_a_file_that_is_not_an_experiment_is_refused_by_name(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"worlds": {}}')
    with pytest.raises(Exception, match=r"x\.json: not an experiment summary"):
        build_site([], [], tmp_path / "site", experiments=[bad])


def test_a_tuned_experiment_shows_the_grid_the_chosen_rates_every_test_and_each_seed(tmp_path):
    data = _experiment_summary()
    w = data["worlds"]["blocks"]
    w["tuning"] = {"HT-GRPO": {"0.0001": {"mean": 0.61, "sd": 0.01, "per_seed": {"100": 0.6, "101": 0.62}},
                               "0.001": {"mean": 0.31, "sd": 0.2, "per_seed": {"100": 0.1, "101": 0.5}}}}
    w["chosen_lr"] = {"HT-GRPO": 1e-4, HOSTILE[0]: 3e-4}
    for method, lr in w["chosen_lr"].items():
        w["methods"][method]["lr"] = lr
        w["methods"][method]["guard"] = {"guard/out_of_clip_frac": [[1, 0.2, 0.01], [5, 0.05, 0.01]]}
    w["methods"][HOSTILE[0]]["total"]["vs_htgrpo"].update(p_permutation=0.0723, p_t=0.0702)
    f = tmp_path / "tuned.json"
    f.write_text(json.dumps(data))
    build_site([], [], tmp_path / "site", experiments=[f])
    page = (tmp_path / "site" / "experiment-tuned.html").read_text(encoding="utf-8")
    assert "learning-rate tuning on the validation prompts" in page and "0.610" in page and "0.310" in page
    assert "SD 0.010 over 2 seeds · chosen" in page and "SD 0.200 over 2 seeds · chosen" not in page
    assert "0.072" in page and "0.070" in page                          # exact sign-flip and t p-values
    assert page.count('class="point"') == 4                             # 2 methods × 2 seeds, each drawn
    assert "tokens out of the clip band after a round" in page          # a guard chart
    assert "0.0001" in page and "0.0003" in page                        # the chosen rates in the table
    assert "<script>alert(1)</script>" not in page


def test_an_incomplete_run_is_marked_and_never_ranked_above_complete_ones(runs, tmp_path):
    """A run with 2 images missing scored 100 % on the rest and the site ranked it #1 ★ above the complete
    oracle, with no badge (issue #22 item 1)."""
    broken = tmp_path / "oracle-missing-two"
    shutil.copytree(runs["oracle"], broken)
    res = json.loads((broken / "results.json").read_text())
    primary = res["primary_metric"] if res.get("primary_metric") in res["metrics"] else next(iter(res["metrics"]))
    m = res["metrics"][primary]
    m["n_expected"] = m.get("n_expected") or m["n_samples"]
    m["n_samples"] -= 2
    m["n_failed"] = 2
    res["run_name"] = "oracle-missing-two"
    (broken / "results.json").write_text(json.dumps(res))
    loaded = [load_run(broken), load_run(runs["oracle"]), load_run(runs["random"])]
    assert loaded[0].is_incomplete and not loaded[1].is_incomplete
    assert loaded[0].sample_coverage == f"{m['n_expected'] - 2} of {m['n_expected']} scored"
    tabs = tables.suite_tables(loaded[0].suite_name, loaded, paired=None)
    main = [t for t in tabs if not t.id.endswith("-partial")]
    apart = [t for t in tabs if t.id.endswith("-partial")]
    assert all("oracle-missing-two" not in [r.cells["model"].value for r in t.rows] for t in main)
    row = apart[0].rows[0]
    assert row.cells["model"].value == "oracle-missing-two" and "rank" not in row.cells
    assert f"incomplete: {m['n_expected'] - 2} of {m['n_expected']} scored" in row.cells["model"].flags
    assert all(c.mark is None for t in apart for r in t.rows for c in r.cells.values())   # no ★, no ≈
    build_site([broken, runs["oracle"]], [], tmp_path / "site", BuildOptions(n_resamples=200, jobs=1))
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "incomplete: " in index and "not ranked" in index


def test_the_training_report_smooths_folds_and_shows_the_warm_start(tmp_path):
    """Issue #22 item 10: an EMA line over a faint raw line (TensorBoard's debiased average, with a
    slider), the key charts first and the rest folded, constants as one line instead of flat charts,
    counts as whole numbers, distinct tick labels, and the warm start's loss."""
    log = write_train_log(tmp_path / "log")
    rows = [json.loads(x) for x in (log / "metrics.jsonl").read_text().splitlines()]
    with open(log / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "stage/global/tokens": 6303.0 + r["step"], "lr": 0.001 + 1e-6 * r["step"]}) + "\n")
    (log / "warmstart.jsonl").write_text("".join(json.dumps({"step": i, "loss": 5.0 / i}) + "\n" for i in range(1, 50)))
    build_site([], [log], tmp_path / "site", BuildOptions(n_resamples=100, jobs=1))
    page = next((tmp_path / "site").glob("train-*.html")).read_text(encoding="utf-8")
    curves, folded = page.split('<details class="more-charts">')[0], page.split('<details class="more-charts">')[1]
    assert curves.index("warm start: loss") < curves.index("reward/*/mean") < curves.index(">kl<")
    assert 'class="raw"' in curves and 'class="smooth"' in curves and 'input type="range" class="smoothing"' in page
    assert "time/*" in folded and "time/*" not in curves                     # the rest, folded
    assert "Constant over the run:" in page and "<code>reward/zero_std_frac</code> = 0.1" in page
    assert ">6304<" in page and "6304.0000" not in page                        # a count is a whole number
    lr_chart = folded[folded.index("<title>lr</title>"):][:4000]
    ticks = re.findall(r'text-anchor="end" fill="#444">([^<]+)<', lr_chart)
    assert len(ticks) == len(set(ticks)) > 2                                   # distinct tick labels
    assert plots.ema([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])       # debiased: no pull toward 0
    assert plots.ema([0.0, 10.0], 0.5) == pytest.approx([0.0, 10 * 0.5 / 0.75])


def test_box_labels_stay_inside_the_image_and_never_collide():
    from paintbench.leaderboards.gallery import LABEL_CHAR_WIDTH, place_labels

    font = 8.0
    boxes = [{"x": 0, "y": 0, "w": 30, "h": 30, "label": "yellow square"},       # at the top edge
             {"x": 2, "y": 1, "w": 30, "h": 30, "label": "red circle"},          # the same place: must move
             {"x": 100, "y": 50, "w": 28, "h": 20, "label": "blue triangle"},    # at the right edge
             {"x": 40, "y": 60, "w": 10, "h": 10, "label": "x" * 40}]            # wider than the image: hover only
    placed = place_labels(boxes, 128, 128, font)
    rects = []
    for b in placed:
        if b["lx"] is None:
            continue
        w = len(b["label"]) * font * LABEL_CHAR_WIDTH
        r = (b["lx"], b["ly"] - font, b["lx"] + w, b["ly"] + 0.2 * font)
        assert r[0] >= 0 and r[1] >= 0 and r[2] <= 128 and r[3] <= 128, b
        assert all(r[2] <= q[0] or q[2] <= r[0] or r[3] <= q[1] or q[3] <= r[1] for q in rects), b
        rects.append(r)
    assert len(rects) == 3 and placed[3]["lx"] is None


def test_the_site_flags_non_fp32_scoring_and_values_outside_the_nominal_range(runs, tmp_path):
    """Issue #22 items 2-3: what the CLI headlines say, the site's run names say too."""
    odd = tmp_path / "odd"
    shutil.copytree(runs["oracle"], odd)
    res = json.loads((odd / "results.json").read_text())
    metric = next(iter(res["metrics"]))
    res["metrics"][metric]["provenance"] = {**(res["metrics"][metric].get("provenance") or {}), "dtype": "bfloat16"}
    res["metrics"][metric]["value"] = -0.5         # below shapes-geneval's nominal 0..1 (its rewards can be)
    res["run_name"] = "odd"
    (odd / "results.json").write_text(json.dumps(res))
    run = load_run(odd)
    assert "dtype bfloat16, not the fp32 parity setting" in run.caveats
    assert f"{metric}: outside nominal range 0..1" in run.caveats
    assert load_run(runs["oracle"]).caveats == []
