"""DPG-Bench question reader and scoring against the official golden fixtures, plus focused cases.

The fixtures (shared/fixtures/dpg) were produced by running the official compute_dpg_bench.py with a
stub VQA model; see their README. Constructed CSVs below pin each reader/scoring rule separately.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from paintbench.metrics.dpg import (
    DPGError,
    ItemScore,
    Question,
    fixed_l2,
    format_summary,
    load_answers,
    load_questions,
    normalize_answer,
    rescore,
    save_answers,
    score_item,
    score_items,
    summarize,
)
from tests.shared_data import SHARED, require

DPG = SHARED / "fixtures" / "dpg"
HEADER = [
    "item_id",
    "text",
    "keywords",
    "proposition_id",
    "dependency",
    "category_broad",
    "category_detailed",
    "tuple",
    "question_natural_language",
]


# ---------------------------------------------------------------- fixture helpers


@cache
def _prompts() -> list[dict[str, Any]]:
    with open(require(DPG / "prompts.jsonl")) as f:
        return [json.loads(line) for line in f]


@cache
def _fixture_results() -> dict[str, Any]:
    tables = load_questions(require(DPG / "questions.csv"), official_quirks=True)
    answers = load_answers(require(DPG / "answers.json"))
    return score_items(tables, answers, "official")


def _e2e(name: str) -> dict[str, Any]:
    return json.loads(require(DPG / f"e2e_{name}.json").read_text())


E2E = [
    "first_row_dropped",
    "first_row_dropped_no_dependents",
    "non_contiguous_and_duplicate_rows",
    "numeric_item_ids_only",
    "dependency_column_without_commas",
]


def _prompt_ids() -> list[str]:
    path = DPG / "prompts.jsonl"
    if not path.exists():
        return ["fixture-absent"]
    return [json.loads(line)["id"] for line in path.open()]


# ---------------------------------------------------------------- official fixtures


@pytest.mark.parametrize("prompt_id", _prompt_ids())
def test_prompt_fixture_official(prompt_id: str) -> None:
    prompt = next(p for p in _prompts() if p["id"] == prompt_id)
    exp = prompt["expected"]
    result = _fixture_results()[prompt["item_id"]]
    if exp["raises"]:
        assert isinstance(result, DPGError)
        assert result.official_type == exp["raises"]
        assert summarize({prompt["item_id"]: result})["failed"].keys() == {prompt["item_id"]}
        return
    assert isinstance(result, ItemScore)
    # the table the reader built is the item's rows in CSV order
    assert list(result.questions) == [q["question_natural_language"] for q in prompt["questions"]]
    assert [list(t) for t in result.raw] == [[float(a == "yes") for a in tile] for tile in prompt["answers"]]
    assert list(result.tile_scores) == exp["tile_scores"]  # exact: same summation order
    assert result.prompt_score == exp["prompt_score"]
    assert [list(t) for t in result.values] == exp["tile_question_scores"]
    assert [list(t) for t in result.zeroed] == exp["tile_question_zeroed"]
    assert list(result.last_tile_raw) == exp["last_tile_raw_scores"]
    assert [list(c) for c in result.category_contributions] == exp["category_contributions"]
    single = summarize({prompt["item_id"]: result}, "official")
    out = exp["official_single_prompt_output"]
    assert single["dpg"] == pytest.approx(out["dpg"], rel=1e-12)
    assert single["l1"] == pytest.approx(out["l1"], rel=1e-12)
    assert single["l2"] == pytest.approx(out["l2"], rel=1e-12)


def test_overall_official() -> None:
    overall = json.loads(require(DPG / "overall.json").read_text())
    s = summarize(_fixture_results(), "official")
    assert s["dpg"] == pytest.approx(overall["dpg_score"], rel=1e-12)
    assert s["l1"] == pytest.approx(overall["l1_scores"], rel=1e-12)
    assert s["l2"] == pytest.approx(overall["l2_scores"], rel=1e-12)
    assert s["l1"].keys() == overall["l1_scores"].keys() and s["l2"].keys() == overall["l2_scores"].keys()
    assert s["n_items"] == overall["n_prompts"] and s["n_scored"] == overall["n_scored"]
    assert sorted(s["failed"]) == sorted(overall["excluded_item_ids"])
    assert s["prompt_scores"] == overall["per_prompt_scores"]


@pytest.mark.parametrize("scenario", E2E)
def test_e2e_official(scenario: str) -> None:
    data = _e2e(scenario)
    exp = data["expected"]
    csv_path = require(DPG / data["csv"])
    if exp["crash"]:
        with pytest.raises(DPGError) as info:
            load_questions(csv_path, official_quirks=True)
        assert f"{info.value.official_type}: {info.value.official_message}" == exp["crash"]
        assert load_questions(csv_path, official_quirks=False)  # the strict reader has no such crash
        return
    keys = [f.split(".")[0] for f in data["image_files"]]
    answers = {k: data["answers"][k] for k in keys}
    results = score_items(load_questions(csv_path, official_quirks=True), answers, "official")
    s = summarize(results, "official")
    if exp["dpg_score_is_nan"]:
        assert s["dpg"] is None
    else:
        assert s["dpg"] == pytest.approx(exp["dpg_score"], rel=1e-12)
    assert s["l1"] == pytest.approx(exp["l1_scores"], rel=1e-12)
    assert s["l2"] == pytest.approx(exp["l2_scores"], rel=1e-12)
    assert sorted(f"{k}.png" for k in s["prompt_scores"]) == exp["scored_files"]
    failed = sorted(
        (f"{k}.png", e.official_type, e.official_message)
        for k, e in results.items()
        if isinstance(e, DPGError)
    )
    assert failed == sorted((f["file"], f["error_type"], f["error_message"]) for f in exp["failed_files"])
    assert sorted(s["failed"]) == sorted(f["file"].split(".")[0] for f in exp["failed_files"])
    for file, pp in exp["per_prompt"].items():
        r = results[file.split(".")[0]]
        assert list(r.tile_scores) == pp["tile_scores"]
        assert r.prompt_score == pp["prompt_score"]
        assert list(r.questions) == pp["questions_asked_on_tile0"]


@pytest.mark.parametrize("scenario", ["first_row_dropped", "first_row_dropped_no_dependents"])
def test_strict_reader_matches_official_run_with_placeholder(scenario: str) -> None:
    """Keeping the first row (official_quirks=False) gives what the official script gives once a
    placeholder row protects it: the strict reader loses nothing."""
    data = _e2e(scenario)
    ref = data["official_run_with_placeholder_first_row"]
    keys = [f.split(".")[0] for f in data["image_files"]]
    tables = load_questions(require(DPG / data["csv"]), official_quirks=False)
    s = summarize(score_items(tables, {k: data["answers"][k] for k in keys}, "official"), "official")
    assert s["dpg"] == pytest.approx(ref["dpg_score"], rel=1e-12)
    assert s["l1"] == pytest.approx(ref["l1_scores"], rel=1e-12)
    assert s["l2"] == pytest.approx(ref["l2_scores"], rel=1e-12)
    assert sorted(f"{k}.png" for k in s["prompt_scores"]) == ref["scored_files"]
    assert sorted(s["failed"]) == sorted(f["file"].split(".")[0] for f in ref["failed_files"])


# ---------------------------------------------------------------- constructed cases


def _row(item: str, pid: int, dep: str, tup: str, question: str, text: str = "a prompt") -> list[str]:
    return [item, text, "", str(pid), dep, tup.split(" ")[0], "", tup, question]


def _write(tmp_path: Path, rows: list[list[str]], name: str = "q.csv") -> Path:
    path = tmp_path / name
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


def _q(pid: int, dep: str = "0", tup: str | None = None, item: str = "x") -> Question:
    return Question(
        item_id=item,
        proposition_id=pid,
        question=f"q{pid}?",
        dependency=tuple(int(p) for p in dep.split(",")),
        tuple=tup or f"entity - whole (e{pid})",
    )


def _tiles(values: dict[int, str], n: int = 4) -> list[dict[str, str]]:
    return [{f"q{pid}?": a for pid, a in values.items()} for _ in range(n)]


# "0,0": one comma anywhere keeps pandas reading the dependency column as text (an all-integer column
# crashes the official reader, see test_official_reader_crashes_like_the_official_script)
PLACEHOLDER = _row("placeholder", 1, "0,0", "entity - whole (p)", "Is there a p?")


def test_first_row_dropped(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            _row("a", 1, "0", "entity - whole (cat)", "Is there a cat?"),
            _row("a", 2, "0", "entity - whole (dog)", "Is there a dog?"),
            _row("a", 3, "1, 2", "attribute - color (cat, red)", "Is the cat red?"),
        ],
    )
    official = load_questions(path, official_quirks=True)
    assert [q.proposition_id for q in official["a"]] == [2, 3]
    assert any("line 2" in n and "discarded" in n for n in official.notes)
    strict = load_questions(path, official_quirks=False)
    assert [q.proposition_id for q in strict["a"]] == [1, 2, 3]
    answers = {"a": [{"Is there a cat?": "yes", "Is there a dog?": "yes", "Is the cat red?": "yes"}]}
    # question 3 depends on the dropped row: the official KeyError, reported, not silent
    s = summarize(score_items(official, answers, "official"), "official")
    assert s["n_scored"] == 0 and "a" in s["failed"] and "proposition 1" in s["failed"]["a"]
    assert summarize(score_items(strict, answers, "official"))["dpg"] == 100.0


def test_split_item_restarts_table_officially_and_raises_strictly(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            PLACEHOLDER,
            _row("a", 1, "0", "entity - whole (cat)", "Is there a cat?"),  # line 3
            _row("a", 2, "0", "entity - whole (dog)", "Is there a dog?"),  # line 4
            _row("b", 1, "0", "entity - whole (owl)", "Is there an owl?"),  # line 5
            _row("a", 3, "0", "entity - whole (cow)", "Is there a cow?"),  # line 6
        ],
    )
    official = load_questions(path, official_quirks=True)
    assert [q.question for q in official["a"]] == ["Is there a cow?"]
    assert any("'a' reappears" in n and "3-4" in n for n in official.notes)
    with pytest.raises(DPGError) as info:
        load_questions(path, official_quirks=False)
    msg = str(info.value)
    assert "'a' is split" in msg and "lines 3-4" in msg and "lines 6" in msg


def test_duplicate_proposition_replaces_in_place(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            PLACEHOLDER,
            _row("a", 1, "0", "entity - whole (cat)", "Is there a cat?"),
            _row("a", 2, "0", "entity - whole (dog)", "Is there a dog?"),
            _row("a", 1, "2", "entity - state (dog, asleep)", "Is the dog asleep?"),  # line 5
        ],
    )
    official = load_questions(path, official_quirks=True)
    assert [(q.proposition_id, q.question, q.parents, q.l2) for q in official["a"]] == [
        (1, "Is the dog asleep?", (2,), "entity - state"),
        (2, "Is there a dog?", (), "entity - whole"),
    ]
    # the replacement's dependency is live: pid 1 now depends on pid 2
    score = score_item(official["a"], [{"Is the dog asleep?": "yes", "Is there a dog?": "no"}])
    assert score.values == ((0.0, 0.0),) and score.zeroed == ((True, False),)
    with pytest.raises(DPGError, match=r"line 5: item 'a' repeats proposition 1 \(first at line 3\)"):
        load_questions(path, official_quirks=False)


def test_numeric_and_textual_item_ids(tmp_path: Path) -> None:
    rows = [
        _row("45", 1, "0", "entity - whole (cat)", "Is there a cat?"),
        _row("045", 1, "0", "entity - whole (dog)", "Is there a dog?"),
    ]
    answers = {"45": [{"Is there a cat?": "yes"}], "045": [{"Is there a dog?": "no"}]}
    mixed = load_questions(_write(tmp_path, [PLACEHOLDER, *rows], "mixed.csv"))
    assert set(mixed) == {"45", "045"}  # text, not int: "045" is its own item
    s = summarize(score_items(mixed, answers))
    assert s["prompt_scores"] == {"45": 1.0, "045": 0.0} and not s["failed"]
    numeric_path = _write(tmp_path, [_row("999", 1, "0,0", "entity - whole (p)", "p?"), *rows], "numeric.csv")
    numeric = load_questions(numeric_path, official_quirks=True)
    s = summarize(score_items(numeric, answers))
    assert s["n_scored"] == 0 and s["dpg"] is None
    assert set(s["failed"]) == {"45", "045"} and all("numeric" in r for r in s["failed"].values())
    strict = summarize(score_items(load_questions(numeric_path, official_quirks=False), answers))
    assert strict["prompt_scores"] == {"45": 1.0, "045": 0.0}


def test_missing_parent_is_reported_and_short_circuit_matches_official() -> None:
    qs = [_q(1), _q(2), _q(3, "1,9")]  # 9 does not exist
    yes = _tiles({1: "yes", 2: "yes", 3: "yes"})
    with pytest.raises(DPGError, match="proposition 9") as info:
        score_item(qs, yes, "official")
    assert (info.value.official_type, info.value.official_message) == ("KeyError", "9")
    # official: parent 1 is already 0, so the loop stops before looking up 9
    no_first = _tiles({1: "no", 2: "yes", 3: "yes"})
    assert score_item(qs, no_first, "official").values[0] == (0.0, 1.0, 0.0)
    with pytest.raises(DPGError, match="proposition 9"):
        score_item(qs, no_first, "fixed")  # fixed: a structural error whatever the answers
    s = summarize(score_items({"x": qs, "y": [_q(1, item="y")]}, {"x": yes, "y": _tiles({1: "yes"})}))
    assert s["n_scored"] == 1 and s["dpg"] == 100.0 and "x" in s["failed"] and "KeyError" in s["failed"]["x"]


def test_fixed_mode_cascades_when_child_precedes_parent() -> None:
    # table order: grandchild, child, root; root answered no
    qs = [_q(3, "2", "attribute - color (e, red)"), _q(2, "1", "entity - part (e's leg)"), _q(1)]
    tiles = _tiles({1: "no", 2: "yes", 3: "yes"})
    official = score_item(qs, tiles, "official")
    assert official.values[0] == (1.0, 0.0, 0.0)  # grandchild saw child's raw yes
    assert official.zeroed[0] == (False, True, False)
    fixed = score_item(qs, tiles, "fixed")
    assert fixed.values[0] == (0.0, 0.0, 0.0)
    assert fixed.zeroed[0] == (True, True, False)
    assert official.prompt_score == pytest.approx(1 / 3) and fixed.prompt_score == 0.0


def test_fixed_mode_normalises_answers() -> None:
    assert normalize_answer(" Yes. ") == "yes" and normalize_answer("YES!") == "yes"
    assert normalize_answer("yes, it is") == "yes, it is"
    qs = [_q(1), _q(2), _q(3), _q(4)]
    tiles = _tiles({1: "Yes.", 2: " yes", 3: "yes, it is", 4: "no."})
    assert score_item(qs, tiles, "official").tile_scores[0] == 0.0
    assert score_item(qs, tiles, "fixed").tile_scores[0] == 0.5


def test_official_and_fixed_categories_differ() -> None:
    qs = [_q(1), _q(2, "1", "attribute-color (e1, red)")]
    tiles = [{"q1?": "no", "q2?": "yes"}, {"q1?": "yes", "q2?": "yes"}]
    official = summarize({"x": score_item(qs, tiles, "official")}, "official")
    fixed = summarize({"x": score_item(qs, tiles, "fixed")}, "fixed")
    # official: last tile only, raw, tuple spacing kept as a separate key
    assert official["l2"] == {"attribute-color": 100.0, "entity - whole": 100.0}
    # fixed: both tiles after zeroing (tile 0 zeroes q2), normalised key
    assert fixed["l2"] == {"attribute - color": 50.0, "entity - whole": 50.0}
    assert official["dpg"] == fixed["dpg"] == 50.0
    assert (
        fixed_l2("global -  (style)") == "global -"
        and fixed_l2("attribute -  size (x)") == "attribute - size"
    )


def test_l1_is_question_weighted() -> None:
    qs = [_q(1), _q(2, "0", "entity - state (e2, wet)"), _q(3, "0", "entity - state (e3, dry)")]
    s = summarize({"x": score_item(qs, [{"q1?": "yes", "q2?": "no", "q3?": "no"}])})
    assert s["l2"] == {"entity - state": 0.0, "entity - whole": 100.0}
    assert s["l1"] == {"entity": pytest.approx(100 / 3)}  # not the 50.0 mean of the L2 scores


def test_missing_answer_names_item_tile_question() -> None:
    tiles = _tiles({1: "yes", 2: "yes"})
    del tiles[2]["q2?"]
    with pytest.raises(DPGError, match=r"item 'x', tile 2 \(bottom-left\): no answer for question 'q2\?'"):
        score_item([_q(1), _q(2)], tiles, "fixed")


def test_fixed_mode_rejects_cycles() -> None:
    with pytest.raises(DPGError, match="cycle"):
        score_item([_q(1, "2"), _q(2, "1")], _tiles({1: "yes", 2: "yes"}), "fixed")


def test_strict_reader_reports_true_line_numbers_after_multiline_cells(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            _row("a", 1, "0", "entity - whole (cat)", "Is there a cat?", text="two\nlines"),  # lines 2-3
            _row("b", 1, "0", "entity - whole (owl)", "Is there an owl?"),  # line 4
            _row("a", 2, "x", "entity - whole (dog)", "Is there a dog?"),  # line 5
        ],
    )
    with pytest.raises(DPGError) as info:
        load_questions(path, official_quirks=False)
    assert "line 5: dependency 'x'" in str(info.value)


def test_official_reader_crashes_like_the_official_script(tmp_path: Path) -> None:
    rows = [
        _row("placeholder", 1, "0", "entity - whole (p)", "p?"),
        _row("a", 1, "0", "entity - whole (cat)", "c?"),
        _row("a", 2, "1", "entity - part (x)", "d?"),
    ]
    with pytest.raises(DPGError) as info:
        load_questions(_write(tmp_path, rows, "nocomma.csv"), official_quirks=True)
    assert info.value.official_type == "AttributeError" and "line 3" in str(info.value)
    rows.append(_row("a", 3, "1, 2", "entity - part (y)", "e?"))  # one comma: pandas keeps text
    assert [q.parents for q in load_questions(_write(tmp_path, rows, "comma.csv"))["a"]] == [(), (1,), (1, 2)]


def test_summarize_rejects_mixed_modes() -> None:
    with pytest.raises(ValueError, match="mode"):
        summarize({"x": score_item([_q(1)], _tiles({1: "yes"}), "fixed")}, "official")


def test_rescore_round_trip(tmp_path: Path) -> None:
    original = load_answers(require(DPG / "answers.json"))
    saved = save_answers(tmp_path / "out" / "answers.json", original)
    assert [p.name for p in saved.parent.iterdir()] == ["answers.json"]  # no temp file left behind
    assert load_answers(saved) == original
    overall = json.loads(require(DPG / "overall.json").read_text())
    result = rescore(DPG / "questions.csv", saved, mode="official")
    assert result["official_quirks"] is True
    assert result["dpg"] == pytest.approx(overall["dpg_score"], rel=1e-12)
    assert result["l2"] == pytest.approx(overall["l2_scores"], rel=1e-12)
    assert sorted(result["failed"]) == sorted(overall["excluded_item_ids"])
    for item, score in overall["per_prompt_scores"].items():
        assert result["items"][item]["prompt_score"] == score
    json.dumps(result)  # serialisable for --out
    text = format_summary(result)
    assert f"{overall['dpg_score']:.4f}" in text and "FAILED" in text and "vrd0" in text
    fixed = rescore(DPG / "questions.csv", saved, mode="fixed", official_quirks=True)
    assert fixed["mode"] == "fixed" and not math.isclose(fixed["dpg"], result["dpg"])
    # the fixture CSV's first row is a placeholder, so the strict reader scores the same items
    strict = rescore(DPG / "questions.csv", saved, mode="official", official_quirks=False)
    assert strict["dpg"] == pytest.approx(result["dpg"], rel=1e-12)
    assert strict["unanswered"] == ["placeholder_first_row"]


def test_package_import_is_torch_free() -> None:
    code = "import sys, metrics.dpg; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
