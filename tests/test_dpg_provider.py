"""The `dpg` provider, 2×2 grid handling, the folder run (grids → answers.json → scores, resumable)
and `paintbench dpg eval|rescore`, end to end on CPU with the tiny mPLUG through the real loader."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paintbench import metrics
from paintbench.commands import dpg as dpg_cmd
from paintbench.errors import UserError
from paintbench.metrics.dpg import DPGError, load_answers, load_questions, rescore, score_item
from paintbench.metrics.dpg.grid import (
    GridError,
    grid_resolution,
    image_key,
    scan_folder,
    split_grid,
    split_grid_tensor,
    tile_boxes,
)
from paintbench.metrics.dpg.mplug import MPLUG_FOLDER

pytestmark = pytest.mark.hf

R = 24  # tile size; grids are 48 x 48, each tile is resized to the tiny model's 32 x 32


HEADER = ["item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
          "category_detailed", "tuple", "question_natural_language"]
TABLES = {
    "item_a": [(1, "0", "entity - whole (cat)", "Is there a cat?"),
               (2, "1", "attribute - color (cat, red)", "Is the cat red?"),
               (3, "0", "entity - whole (tree)", "Is there a tree?"),
               (4, "1,3", "relation - spatial (cat, tree, under)", "Is the cat under the tree?")],
    "item_b": [(1, "0", "entity - whole (dog)", "Is there a dog?"),
               (2, "1", "attribute - size (dog, big)", "Is the dog big?"),
               (3, "0", "global - (photo)", "Is this a photo?")],
    "item_c": [(1, "0", "entity - whole (car)", "Is there a car?"),
               (2, "1", "attribute - color (car, blue)", "Is the car blue?")],
    "item_e": [(1, "0", "entity - whole (boat)", "Is there a boat?"),
               (2, "0", "other - count (people, ==2)", "Are there two people?")],
    "item.d": [(1, "0", "entity - whole (bird)", "Is there a bird?")],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Toy-size ops on a shared 2-core machine: one intra-op thread is ~100x faster than two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    from paintbench.metrics.synthetic import write_tiny_weights

    d = tmp_path_factory.mktemp("weights")
    write_tiny_weights("dpg", d)   # the public path: the folder is marked synthetic, and results say so
    assert (d / MPLUG_FOLDER).is_dir()
    return d




def write_csv(path: Path, tables=TABLES) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        # the official reader always drops the first data row
        w.writerow(["placeholder", "dropped", "", 1, "0", "entity", "whole", "entity - whole (x)", "Is there x?"])
        for item, rows in tables.items():
            for pid, dep, tup, q in rows:
                w.writerow([item, f"prompt of {item}", "", pid, dep, tup.split(" ")[0], "", tup, q])
    return path


def make_grid(seed: int, size: int = 2 * R) -> Image.Image:
    """Four distinct tiles (each its own noise pattern and tint)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    half = size // 2
    arr[:half, half:, 0] //= 2
    arr[half:, :half, 1] //= 3
    arr[half:, half:, 2] = 255 - arr[half:, half:, 2]
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("q") / "dpg_bench.csv")


@pytest.fixture(scope="module")
def provider(weights_dir, csv_path):
    return metrics.get("dpg", weights_dir=weights_dir, questions=csv_path, resolution=R, vqa_mode="reference")


# ------------------------------------------------------------------------- grids
def test_tiles_are_cut_in_the_official_order():
    assert tile_boxes(5) == [(0, 0, 5, 5), (5, 0, 10, 5), (0, 5, 5, 10), (5, 5, 10, 10)]
    grid = make_grid(1)
    arr = np.asarray(grid)
    tiles = split_grid(grid, R)
    corners = [arr[:R, :R], arr[:R, R:], arr[R:, :R], arr[R:, R:]]
    for tile, corner in zip(tiles, corners, strict=True):
        assert tile.size == (R, R) and np.array_equal(np.asarray(tile), corner)
    assert len(split_grid(grid, R, pic_num=2)) == 2
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    for tt, corner in zip(split_grid_tensor(t, R), corners, strict=True):
        assert np.array_equal(tt.permute(1, 2, 0).numpy(), corner)
    with pytest.raises(DPGError, match=r"pic_num must be 1\.\.4"):
        split_grid(grid, R, pic_num=5)


def test_wrong_grid_sizes_are_refused_with_the_expected_size():
    assert grid_resolution((48, 48), None) == 24 and grid_resolution((48, 48), 24) == 24
    with pytest.raises(GridError, match=r"grid is 48x48, expected 64x64 .*24-pixel tile grid"):
        grid_resolution((48, 48), 32, "x.png")
    with pytest.raises(GridError, match="not a square grid"):
        grid_resolution((48, 40), None)
    with pytest.raises(GridError, match="expected 48x48"):
        split_grid(Image.new("RGB", (48, 40)), R)


def test_image_keys_official_and_fixed():
    assert image_key("item_a.png") == "item_a" and image_key("a.b.png") == "a"
    assert image_key("a.b.png", official=False) == "a.b" and image_key("45.jpg", official=False) == "45"


def test_folder_scan_accounts_for_every_file_and_item(tmp_path):
    d = tmp_path / "grids"
    d.mkdir()
    make_grid(1).save(d / "a.png")
    make_grid(2).save(d / "b.png")
    make_grid(3).save(d / "b.jpg")  # a second image for b
    make_grid(4, size=40).save(d / "c.png")  # wrong size
    (d / "e.png").write_bytes(b"not a png")
    make_grid(5).save(d / "zzz.png")  # no table
    (d / "notes.txt").write_text("x")
    (d / "sub").mkdir()
    scan = scan_folder(d, ["a", "b", "c", "e", "f"], resolution=R)
    assert list(scan.matched) == ["a"]
    assert scan.missing == ["f"]
    assert scan.duplicates == {"b": ["b.jpg", "b.png"]}
    assert set(scan.bad) == {"c", "e"} and "expected 48x48" in scan.bad["c"] and "cannot be read" in scan.bad["e"]
    assert set(scan.extra) == {"zzz.png", "notes.txt", "sub/"}
    fails = scan.failures()
    assert set(fails) == {"b", "c", "e", "f"} and "2 images" in fails["b"] and fails["f"] == "no image in the folder"
    assert scan.counts() == {"images_matched": 1, "items_missing_image": 1, "items_with_duplicate_images": 1,
                             "bad_grids": 2, "extra_files": 3}
    assert any("zzz.png" in line for line in scan.report())


# ------------------------------------------------------------------------- provider
def test_provider_scores_grids_and_explains_each_value(provider, csv_path):
    grids = [make_grid(10), make_grid(11)]
    out = provider.score(grids, metadata=[{"item_id": "item_a"}, {"item_id": "item_b"}])
    assert out.metric == "dpg" and out.values.shape == (2,)
    tables = load_questions(csv_path)
    for i, item in enumerate(["item_a", "item_b"]):
        d = out.details[i]
        assert d["item_id"] == item and d["mode"] == "official" and d["backend"] == "mplug"
        assert d["vqa_mode"] == "reference" and len(d["answers"]) == 4
        assert all(set(t) == {q.question for q in tables[item]} for t in d["answers"])
        assert out.values[i].item() == pytest.approx(score_item(tables[item], d["answers"]).prompt_score)
        assert d["tile_scores"] == list(score_item(tables[item], d["answers"]).tile_scores)
    # tile t of the answers is the t-th official crop (TL, TR, BL, BR)
    vqa = provider.vqa.vqa
    for t, tile in enumerate(split_grid(grids[0], R)):
        for q, a in out.details[0]["answers"][t].items():
            assert vqa.answer_tile(tile, [q])[0].answer == a
    prov = provider.provenance()
    assert prov["label"] == "dpg" and prov["backend"] == "mplug" and prov["mode"] == "official"
    assert prov["vqa"]["mode"] == "reference"


def test_tensor_grids_score_like_pil_grids(provider):
    grids = [make_grid(12), make_grid(13)]
    meta = [{"item_id": "item_a"}, {"item_id": "item_b"}]
    pil = provider.score(grids, metadata=meta)
    t = torch.stack([torch.from_numpy(np.asarray(g).copy()).permute(2, 0, 1) for g in grids])
    ten = provider.score(t, metadata=meta)
    assert torch.equal(pil.values, ten.values)
    assert [d["answers"] for d in pil.details] == [d["answers"] for d in ten.details]


def test_provider_reports_unscorable_items_instead_of_dropping_them(provider):
    out = provider.score(
        [make_grid(14), make_grid(15, size=40), make_grid(16)],
        metadata=[{"item_id": "nope"}, {"item_id": "item_a"}, {"item_id": "item.d"}],
    )
    assert all(math.isnan(v) for v in out.tolist())
    assert "no question table" in out.details[0]["error"]
    assert "expected 48x48" in out.details[1]["error"]
    assert "first '.'" in out.details[2]["error"]  # official reader: ids with '.' never match
    with pytest.raises(ValueError, match="needs metadata"):
        provider.score([make_grid(14)])
    summary = provider.summary()
    assert {"nope", "item_a", "item.d"} <= set(summary["failed"])  # the latest result of each item
    assert summary["label"] == "dpg"


def test_provider_with_questions_in_metadata_and_saved_answers(weights_dir, tmp_path):
    answers = tmp_path / "run" / "answers.json"
    p = metrics.get("dpg", weights_dir=weights_dir, questions=None, resolution=None, pic_num=2,
                    answers_path=answers, mode="fixed")
    qs = [{"proposition_id": 1, "question": "Is there a cat?", "dependency": "0", "tuple": "entity - whole (cat)"},
          {"proposition_id": 2, "question": "Is the cat red?", "dependency": [1], "tuple": "attribute - color (c)"}]
    out = p.score([make_grid(20)], metadata=[{"item_id": "x", "questions": qs}])
    d = out.details[0]
    assert len(d["answers"]) == 2 and d["mode"] == "fixed"
    saved = load_answers(answers)
    assert saved == {"x": d["answers"]}
    p2 = metrics.get("dpg", weights_dir=weights_dir, questions=None, answers_path=answers, vqa=p.vqa)
    assert p2.answers == saved  # an existing answers file is merged, not overwritten
    with pytest.raises(DPGError, match="no DPG question table loaded"):
        p._questions({"item_id": "x"}, 0)


# ------------------------------------------------------------------------- folder run and CLI
def _image_folder(root: Path) -> Path:
    d = root / "grids"
    d.mkdir()
    make_grid(30).save(d / "item_a.png")
    make_grid(31).save(d / "item_b.png")
    make_grid(32, size=40).save(d / "item_e.png")  # wrong size
    make_grid(33).save(d / "item.d.png")  # official key 'item': no table
    make_grid(34).save(d / "zzz.png")
    (d / "readme.txt").write_text("not an image")
    return d


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    dpg_cmd.add_arguments(parser)
    return parser.parse_args(argv)


def _eval(csv_path, images, out, weights_dir, *extra: str) -> tuple[int, dict]:
    code = dpg_cmd.run(_parse(["eval", "--questions", str(csv_path), "--images", str(images), "--resolution", str(R),
                               "--weights-dir", str(weights_dir), "--device", "cpu", "--out", str(out),
                               "--no-progress", "--vqa-mode", "reference", *extra]))
    return code, json.loads((out / "summary.json").read_text())


def _count_scored(monkeypatch) -> list[int]:
    from paintbench.harness import evaluate

    calls: list[int] = []
    real = evaluate._score_batch

    def counting(provider, batch, decoded, meta):
        calls.append(len(batch))
        return real(provider, batch, decoded, meta)

    monkeypatch.setattr(evaluate, "_score_batch", counting)
    return calls


def test_folder_of_grids_to_answers_to_scores_and_rescore_reproduces_them(weights_dir, csv_path, tmp_path):
    images = _image_folder(tmp_path)
    out = tmp_path / "out"
    code, s = _eval(csv_path, images, out, weights_dir)
    assert code == dpg_cmd.EXIT_SOME_FAILED
    # every item of the (official-reader) table is scored or listed as failed
    assert s["n_items"] == 5 and s["n_scored"] + s["n_failed"] == 5
    assert set(s["prompt_scores"]) == {"item_a", "item_b"}
    assert s["failed"]["item_c"] == "no image in the folder"
    assert "expected 48x48" in s["failed"]["item_e"] and "first '.'" in s["failed"]["item.d"]
    assert set(s["images"]["extra"]) == {"item.d.png", "zzz.png", "readme.txt"}
    assert s["questions_answered"] == 4 * 4 + 4 * 3 and s["label"] == "dpg" and s["backend"] == "mplug"
    answers = load_answers(out / "answers.json")
    assert set(answers) == {"item_a", "item_b"} and all(len(t) == 4 for t in answers.values())
    meta = json.loads((out / "answers.meta.json").read_text())
    assert meta["backend"] == "mplug" and meta["vqa_mode"] == "reference" and meta["resolution"] == R
    assert "DPG-Bench (official mode" in (out / "results.txt").read_text()
    assert "[SYNTHETIC WEIGHTS]" in (out / "results.txt").read_text().splitlines()[0]
    # the same numbers as the run engine's own records (one engine, one set of scores)
    engine = {r["prompt_id"]: r["value"] for r in map(json.loads, (out / "scores" / "dpg.jsonl").read_text().splitlines())}
    assert engine == pytest.approx(s["prompt_scores"], abs=1e-12)

    # paintbench dpg rescore: same numbers from the saved answers alone
    rescored = tmp_path / "rescore.json"
    code = dpg_cmd.run(_parse(["rescore", "--questions", str(csv_path), "--answers", str(out / "answers.json"),
                               "--mode", "official", "--out", str(rescored)]))
    assert code == 0  # every answered item scores
    r = json.loads(rescored.read_text())
    assert r["dpg"] == s["dpg"] and r["l1"] == s["l1"] and r["l2"] == s["l2"]
    assert r["prompt_scores"] == s["prompt_scores"] and r["label"] == "dpg"
    # the fixed rules on the same answers, without the model: every question of the strict reading was
    # asked in official mode too (official drops the CSV's first data row), so nothing is unanswered
    fixed = rescore(csv_path, out / "answers.json", "fixed")
    assert fixed["mode"] == "fixed" and set(fixed["prompt_scores"]) == {"item_a", "item_b"}
    assert not fixed["failed"] or set(fixed["failed"]) <= {"item_c", "item_e", "item.d"}
    code = dpg_cmd.run(_parse(["rescore", "--questions", str(csv_path), "--answers", str(out / "answers.json"),
                               "--mode", "fixed", "--out", str(tmp_path / "fixed.json")]))
    fixed_cli = json.loads((tmp_path / "fixed.json").read_text())
    assert {"item_a", "item_b"} <= set(fixed_cli["prompt_scores"])
    strict = load_questions(csv_path, official_quirks=False)
    answered = load_answers(out / "answers.json")
    for item in ("item_a", "item_b"):
        assert {q.question for q in strict[item]} <= set(answered[item][0])


def test_folder_run_resumes_and_refuses_mixed_settings(weights_dir, csv_path, tmp_path, monkeypatch):
    images = _image_folder(tmp_path)
    out = tmp_path / "out"
    _, first = _eval(csv_path, images, out, weights_dir)
    with monkeypatch.context() as mp:
        calls = _count_scored(mp)
        _, again = _eval(csv_path, images, out, weights_dir)
    assert calls == [] and again["dpg"] == first["dpg"]  # nothing asked twice
    scores = out / "scores" / "dpg.jsonl"
    kept = [x for x in scores.read_text().splitlines() if json.loads(x)["prompt_id"] != "item_b"]
    scores.write_text("\n".join(kept) + "\n")  # as if the run had stopped before item_b
    with monkeypatch.context() as mp:
        calls = _count_scored(mp)
        _, third = _eval(csv_path, images, out, weights_dir)
    assert calls == [1] and third["dpg"] == first["dpg"] and third["prompt_scores"] == first["prompt_scores"]
    with pytest.raises(UserError, match=r"other settings \(options\.pic_num: 4 -> 2"):
        _eval(csv_path, images, out, weights_dir, "--pic-num", "2")
    with pytest.raises(UserError, match=r"options\.vqa_mode: 'reference' -> 'fast'"):
        _eval(csv_path, images, out, weights_dir, "--vqa-mode", "fast")


def test_dpg_eval_command(weights_dir, csv_path, tmp_path, capsys):
    images = _image_folder(tmp_path)
    out = tmp_path / "out"
    code = dpg_cmd.run(_parse(["eval", "--questions", str(csv_path), "--images", str(images), "--resolution",
                               str(R), "--weights-dir", str(weights_dir), "--device", "cpu", "--out", str(out),
                               "--no-progress", "--pic-num", "2"]))
    assert code == dpg_cmd.EXIT_SOME_FAILED  # item_c, item_e, item.d are listed as failed
    text = capsys.readouterr().out
    assert "dpg  (VQA backend: mplug, fast mode)" in text and "item_c: no image in the folder" in text
    assert all(len(t) == 2 for t in load_answers(out / "answers.json").values())
    with pytest.raises(UserError, match="missing column"):
        bad = tmp_path / "bad.csv"
        bad.write_text("item_id,text\nx,y\n")
        dpg_cmd.run(_parse(["rescore", "--questions", str(bad), "--answers", str(out / "answers.json")]))
    with pytest.raises(UserError, match="no such file"):
        dpg_cmd.run(_parse(["rescore", "--questions", str(tmp_path / "none.csv"), "--answers", "x.json"]))


def test_an_official_mode_run_can_be_rescored_in_fixed_mode(weights_dir, tmp_path):
    """Official mode drops the CSV's first data row; the VQA step used to skip that question, so
    `rescore --mode fixed` of an official run failed. Every question of the table is asked now."""
    csv_path = tmp_path / "no_placeholder.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for item in ("item_a", "item_b"):
            for pid, dep, tup, q in TABLES[item]:
                w.writerow([item, f"prompt of {item}", "", pid, dep, tup.split(" ")[0], "", tup, q])
    images = tmp_path / "grids"
    images.mkdir()
    make_grid(30).save(images / "item_a.png")
    make_grid(31).save(images / "item_b.png")
    out = tmp_path / "out"
    _eval(csv_path, images, out, weights_dir)  # official mode
    official = load_questions(csv_path, official_quirks=True)
    assert "Is there a cat?" not in {q.question for q in official["item_a"]}  # the dropped row
    assert all("Is there a cat?" in tile for tile in load_answers(out / "answers.json")["item_a"])
    fixed = rescore(csv_path, out / "answers.json", "fixed")
    assert set(fixed["prompt_scores"]) == {"item_a", "item_b"} and not fixed["failed"]
