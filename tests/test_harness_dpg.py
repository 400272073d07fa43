"""The `dpg` suite through the harness: 2×2 grids generated tile by tile (or brought as files named by
item id), scored by the dpg provider (tiny mPLUG through the real loader), with DPG's category scores."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from paintbench.harness.evaluate import EvalConfig, run_eval
from paintbench.harness.rundir import read_jsonl
from paintbench.metrics.synthetic import write_tiny_weights

import shared_data as sd

pytestmark = pytest.mark.hf

ITEMS = ["midjourney7", "stanford23", "partiprompts9"]
TILE = 24


def random_tiles(prompts, seeds, size):
    return [Image.fromarray(np.random.default_rng(s).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            for s in seeds]


@pytest.fixture
def dpg_setup(tmp_path):
    questions = sd.require(sd.SHARED / "fixtures" / "dpg" / "questions.csv")
    weights = tmp_path / "weights"
    write_tiny_weights("dpg", weights)
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"item_id": i, "prompt": f"prompt of {i}"}) + "\n"
                                                    for i in ITEMS))
    suite = tmp_path / "dpg-mini.yaml"
    suite.write_text(
        f"name: dpg-mini\nversion: 1\nprompts: {{format: jsonl, id_field: item_id, path: {tmp_path / 'prompts.jsonl'}}}\n"
        f"images_per_prompt: 1\nimage_size: {TILE}\ngrid: {{rows: 2, cols: 2}}\n"
        f"metrics: [{{name: dpg, primary: true, options: {{mode: official, questions: {questions}}}}}]\n")
    return suite, weights


def test_dpg_suite_generates_grids_and_reports_categories(tmp_path, dpg_setup, monkeypatch):
    suite, weights = dpg_setup
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tilegen.py").write_text(
        "from test_harness_dpg import random_tiles\n"
        "def tiles(prompts, seeds, size):\n    return random_tiles(prompts, seeds, size)\n")
    res = run_eval(EvalConfig(suite=str(suite), generator="python:tilegen:tiles", out=str(tmp_path / "run"),
                              weights_dir=str(weights), progress=False, n_resamples=200))
    m = res["metrics"]["dpg"]
    assert m["n_samples"] == 3 and m["n_failed"] == 0 and 0.0 <= m["value"] <= 1.0
    assert m["provenance"]["mode"] == "official" and m["provenance"]["backend"] == "mplug"
    assert set(m["categories"]) <= {"global", "entity", "attribute", "relation", "other"} and m["categories"]
    assert all(0.0 <= c["value"] <= 1.0 for c in m["categories"].values())
    samples = read_jsonl(tmp_path / "run" / "samples.jsonl")[0]
    assert [s["prompt_id"] for s in samples] == ITEMS
    assert all(s["width"] == s["height"] == 2 * TILE and len(s["tile_seeds"]) == 4 for s in samples)
    assert len({seed for s in samples for seed in s["tile_seeds"]}) == 12
    # the same grids brought as files named by item id (DPG-Bench's layout) score identically
    grids = tmp_path / "grids"
    grids.mkdir()
    for s in samples:
        shutil.copy(tmp_path / "run" / s["image"], grids / f"{s['prompt_id']}.png")
    again = run_eval(EvalConfig(suite=str(suite), generator=f"folder:{grids}", out=str(tmp_path / "run2"),
                                weights_dir=str(weights), progress=False, n_resamples=200))
    assert again["metrics"]["dpg"]["value"] == m["value"]
    assert again["metrics"]["dpg"]["categories"] == m["categories"]


def test_dpg_item_without_questions_is_listed_not_averaged(tmp_path, dpg_setup):
    suite, weights = dpg_setup
    text = suite.read_text().replace("partiprompts9", "no-such-item")
    (tmp_path / "prompts.jsonl").write_text((tmp_path / "prompts.jsonl").read_text().replace("partiprompts9", "no-such-item"))
    suite.write_text(text)
    grids = tmp_path / "grids"
    grids.mkdir()
    for i in ["midjourney7", "stanford23", "no-such-item"]:
        Image.new("RGB", (2 * TILE, 2 * TILE), (200, 30, 30)).save(grids / f"{i}.png")
    res = run_eval(EvalConfig(suite=str(suite), generator=f"folder:{grids}", out=str(tmp_path / "run"),
                              weights_dir=str(weights), progress=False, n_resamples=200))
    m = res["metrics"]["dpg"]
    assert m["n_samples"] == 2 and m["n_failed"] == 1
    assert any("no-such-item" in e for e in m["errors"])
