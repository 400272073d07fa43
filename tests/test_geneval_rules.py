"""GenEval rules, Flow-GRPO reward and summary numbers against the official fixtures, plus unit tests.

The fixtures (../shared/fixtures/geneval) hold the outputs of the official Python files run on
constructed detector output; every case must match: verdict, reason text, kept detections, reward
score, strictness and reward reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from typing import Any

import numpy as np
import pytest

from paintbench.metrics.geneval import (
    Detection,
    GenEvalOptions,
    box_iou,
    filter_detections,
    format_summary,
    judge,
    relative_position,
    reward,
    select_indices,
    summarize,
)
from tests.shared_data import REPO, SHARED, require

GENEVAL = SHARED / "fixtures" / "geneval"
RULES = GENEVAL / "rules.jsonl"
AGGREGATION = GENEVAL / "aggregation.json"


# ------------------------------------------------------------------------------------------ fixture data


@cache
def _rule_cases() -> dict[str, dict[str, Any]]:
    with require(RULES).open() as f:
        return {c["id"]: c for c in map(json.loads, f)}


def _rule_ids() -> list[Any]:
    if not RULES.exists():
        return [pytest.param("absent", marks=pytest.mark.skip(reason=f"fixture {RULES} is absent"))]
    return list(_rule_cases())


def _build(case: dict[str, Any]) -> tuple[dict[str, list[Detection]], Any]:
    """Detections from a fixture case, and a colour oracle answering the fixture's colour for each."""
    dets: dict[str, list[Detection]] = {}
    colours: dict[Detection, str] = {}
    for name, raw in case["detections"].items():
        dets[name] = []
        for r in raw:
            d = Detection(box=tuple(r["box"]), score=r["score"])
            dets[name].append(d)
            colours[d] = r["color"]
    return dets, lambda name, det: colours[det]


_RELS = re.compile(r"found (.*) target$")


def _unordered_relations(reason: str) -> list[Any]:
    """Reason lines with a relation list turned into a set (its official order is Python set order)."""
    out: list[Any] = []
    for line in reason.split("\n"):
        m = _RELS.search(line)
        out.append((line[: m.start()], frozenset(m.group(1).split(" and "))) if m else line)
    return out


def _same_reason(got: str, want: str, case: dict[str, Any]) -> bool:
    if "reason_relation_order_unstable" in case["features"]:
        return _unordered_relations(got) == _unordered_relations(want)
    return got == want


@pytest.mark.parametrize("case_id", _rule_ids())
def test_rules_fixture_case(case_id: str) -> None:
    case = _rule_cases()[case_id]
    exp = case["expected"]
    dets, colour_of = _build(case)

    kept = filter_detections(case["metadata"], dets)
    assert {c: [dets[c].index(d) for d in ds] for c, ds in kept.items()} == exp["kept"]

    verdict = judge(case["metadata"], dets, colour_of)
    assert verdict.correct == exp["correct"]
    assert _same_reason(verdict.reason, exp["reason"], case), (verdict.reason, exp["reason"])

    res = reward(case["metadata"], dets, colour_of)
    assert res.score == exp["reward_score"]  # same float operations as the server: exact
    assert res.strict == exp["reward_strict"]
    assert _same_reason(res.reason, exp["reward_reason"], case), (res.reason, exp["reward_reason"])


def test_fixture_covers_every_tag_and_both_verdicts() -> None:
    cases = _rule_cases().values()
    assert len(cases) == 400
    assert {(c["tag"], c["expected"]["correct"]) for c in cases} == {
        (t, v)
        for t in ("single_object", "two_object", "counting", "colors", "position", "color_attr")
        for v in (True, False)
    }


def test_float64_comparison_reproduces_the_float64_run() -> None:
    """The float32 probes are what separates the official results from a float64 run: switching our
    comparison to float64 must give the fixtures' `float64_expected` and nothing else changes."""
    f64 = GenEvalOptions(score_dtype="float64")
    probes = [c for c in _rule_cases().values() if "float64_expected" in c]
    assert len(probes) == 25
    for case in probes:
        dets, colour_of = _build(case)
        want, exp = _outcome(case["float64_expected"]), _outcome(case["expected"])
        assert exp != want
        assert _run(case["metadata"], dets, colour_of, f64) == want, case["id"]
        assert _run(case["metadata"], dets, colour_of, GenEvalOptions()) == exp, case["id"]


def _outcome(d: dict[str, Any]) -> tuple[bool, str, float, bool]:
    return d["correct"], d["reason"], d["reward_score"], d["reward_strict"]


def _run(
    meta: dict[str, Any], dets: Any, colour_of: Any, opts: GenEvalOptions
) -> tuple[bool, str, float, bool]:
    v, r = judge(meta, dets, colour_of, options=opts), reward(meta, dets, colour_of, options=opts)
    return v.correct, v.reason, r.score, r.strict


def test_quirk_off_only_changes_cases_with_a_failed_pair() -> None:
    """Without the quirk, scores move only where a relation check failed, and then go down."""
    changed = 0
    for case in _rule_cases().values():
        dets, colour_of = _build(case)
        off = reward(case["metadata"], dets, colour_of, position_quirk=False)
        exp = case["expected"]
        assert off.strict == exp["reward_strict"]
        if " target, found " in exp["reward_reason"]:
            assert off.score < exp["reward_score"], case["id"]
            changed += 1
        else:
            assert off.score == exp["reward_score"], case["id"]
    assert changed > 10


# ------------------------------------------------------------------------------------------ aggregation


@cache
def _aggregation() -> dict[str, Any]:
    return json.loads(require(AGGREGATION).read_text())


def _scenario_names() -> list[Any]:
    if not AGGREGATION.exists():
        return [pytest.param("absent", marks=pytest.mark.skip(reason=f"fixture {AGGREGATION} is absent"))]
    return [s["name"] for s in _aggregation()["scenarios"]]


def _scenario(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = _aggregation()
    sc = next(s for s in data["scenarios"] if s["name"] == name)
    rows = [dict(zip(data["row_format"], r, strict=True)) for r in sc["rows"]]
    return rows, sc["expected"]


@pytest.mark.parametrize("name", _scenario_names())
def test_aggregation_fixture(name: str) -> None:
    rows, exp = _scenario(name)
    s = summarize(rows)
    assert s["total_images"] == exp["total_images"]
    assert s["total_prompts"] == exp["total_prompts"]
    assert s["pct_correct_images"] == exp["pct_correct_images"]
    assert s["pct_correct_prompts"] == exp["pct_correct_prompts"]
    assert s["overall"] == exp["overall"]
    assert list(s["per_tag"].items()) == [(t["tag"], t["accuracy"]) for t in exp["per_tag"]]
    assert [(t, c["correct"], c["n"]) for t, c in s["tag_counts"].items()] == [
        (t["tag"], t["n_correct"], t["n_images"]) for t in exp["per_tag"]
    ]
    assert s["correct_images"] == round(exp["pct_correct_images"] * exp["total_images"])
    assert s["correct_prompts"] == round(exp["pct_correct_prompts"] * exp["total_prompts"])
    assert format_summary(s) == exp["printed"]


def test_summarize_groups_by_metadata_string_when_given() -> None:
    """Rows that carry the official `metadata` (dict or JSON string) group by it, as the script does."""
    rows, exp = _scenario("uneven_images_per_prompt")
    as_meta = [
        {
            "tag": r["tag"],
            "correct": r["correct"],
            "metadata": {"tag": r["tag"], "prompt": f"p{r['prompt_index']}"},
        }
        for r in rows
    ]
    assert format_summary(summarize(as_meta)) == exp["printed"]
    as_text = [{**r, "metadata": json.dumps(r["metadata"])} for r in as_meta]
    assert summarize(as_text)["total_prompts"] == exp["total_prompts"]


def test_summarize_overall_is_unweighted_over_tags() -> None:
    rows = (
        [{"tag": "a", "prompt_index": 0, "correct": True}] * 3
        + [{"tag": "a", "prompt_index": 0, "correct": False}]
        + [{"tag": "b", "prompt_index": 1, "correct": False}] * 2
        + [{"tag": "b", "prompt_index": 2, "correct": False}] * 2
    )
    s = summarize(rows)
    assert s["overall"] == pytest.approx((0.75 + 0.0) / 2)
    assert s["pct_correct_images"] == pytest.approx(3 / 8)
    assert (s["correct_prompts"], s["total_prompts"]) == (1, 3)
    assert "a                = 75.00% (3 / 4)\n" in format_summary(s)
    with pytest.raises(ValueError):
        summarize([])


# ------------------------------------------------------------------------------------------ unit tests


def _meta(
    tag: str, include: list[dict[str, Any]], exclude: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    m: dict[str, Any] = {"tag": tag, "include": include, "prompt": "test"}
    if exclude is not None:
        m["exclude"] = exclude
    return m


def _box(i: int) -> tuple[float, float, float, float]:
    return (10.0 * i, 0.0, 10.0 * i + 8, 8.0)


def _never(name: str, det: Detection) -> str:
    raise AssertionError("colour asked for a clause without colour")


SINGLE = _meta("single_object", [{"class": "cup", "count": 1}])


@pytest.mark.parametrize(
    ("score", "tag", "kept"),
    [
        (0.3, "single_object", False),  # strict '>'
        (np.float64(0.3), "single_object", False),
        (np.float32(0.3), "single_object", False),
        (0.300000005, "single_object", False),  # float32(0.300000005) == float32(0.3)
        (0.3 + 1 / 1024, "single_object", True),
        (0.9, "counting", False),
        (0.900000005, "counting", False),
        (0.9 + 1 / 1024, "counting", True),
        (0.5, "counting", False),  # the counting threshold applies to every class
    ],
)
def test_threshold_is_strict_and_in_float32(score: float, tag: str, kept: bool) -> None:
    meta = _meta(tag, [{"class": "cup", "count": 1}])
    dets = {"cup": [Detection(_box(0), score)], "dog": [Detection(_box(1), score)]}
    got = filter_detections(meta, dets)
    assert ("cup" in got, "dog" in got) == (kept, kept)
    assert judge(meta, dets, _never).correct == kept


def test_float32_probe_is_kept_in_float64_mode() -> None:
    dets = {"cup": [Detection(_box(0), 0.300000005)]}
    assert "cup" not in filter_detections(SINGLE, dets)
    assert "cup" in filter_detections(SINGLE, dets, GenEvalOptions(score_dtype="float64"))


def test_ranking_cap_and_ties() -> None:
    scores = [0.5, 0.95, 0.2, 0.7, 0.7, 0.31]
    assert select_indices(scores, 0.3) == [1, 4, 3, 0, 5]  # ties: later input first (quirk G7)
    assert select_indices(scores, 0.3, max_objects=2) == [1, 4]
    assert select_indices([0.5] * 16, 0.3) == list(range(15, -1, -1))  # G7's all-tied case
    assert select_indices(scores, 0.96) == []
    assert select_indices([], 0.3) == []


def test_sixteen_per_class_cap_before_exclude() -> None:
    """20 detections above 0.9: 16 kept (the best ones), and the exclude reason says 16 (quirk G3)."""
    scores = [0.91 + 0.004 * i for i in range(20)]
    dets = {"clock": [Detection(_box(i), s) for i, s in enumerate(scores)]}
    meta = _meta("counting", [{"class": "clock", "count": 2}], [{"class": "clock", "count": 3}])
    kept = filter_detections(meta, dets)["clock"]
    assert [dets["clock"].index(d) for d in kept] == list(range(19, 3, -1))
    v = judge(meta, dets, _never)
    assert (v.correct, v.reason) == (False, "expected clock<3, found 16")
    assert reward(meta, dets, _never).score == pytest.approx(1 - 14 / 2)
    assert "clock" not in filter_detections(meta, dets, GenEvalOptions(max_objects=0))


def test_exclude_sees_all_kept_detections() -> None:
    """Include looks at the top-N only, exclude counts every kept one: 3 clocks fail "two clocks"."""
    meta = _meta("counting", [{"class": "clock", "count": 2}], [{"class": "clock", "count": 3}])
    three = {"clock": [Detection(_box(i), 0.95) for i in range(3)]}
    assert judge(meta, three, _never).reason == "expected clock<3, found 3"
    two_plus_weak = {"clock": [Detection(_box(0), 0.95), Detection(_box(1), 0.95), Detection(_box(2), 0.85)]}
    assert judge(meta, two_plus_weak, _never).correct
    one = {"clock": [Detection(_box(0), 0.95)]}
    assert judge(meta, one, _never).reason == "expected clock>=2, found 1"


def test_reward_counts_every_kept_detection_and_is_unbounded_below() -> None:
    two = {"cup": [Detection(_box(0), 0.8), Detection(_box(1), 0.6)]}
    assert judge(SINGLE, two, _never).correct  # GenEval: at least one
    r = reward(SINGLE, two, _never)
    assert (r.score, r.strict, r.reason) == (0.0, False, "expected cup==1, found 2")
    many = {"cup": [Detection(_box(i), 0.5 + i / 64) for i in range(20)]}
    assert reward(SINGLE, many, _never).score == -14.0  # 1 - |1 - 16| / 1 (quirk R2)
    assert reward(_meta("x", []), many, _never).score == 0.0


def test_colour_requires_all_top_count_objects() -> None:
    meta = _meta("colors", [{"class": "cup", "count": 2, "color": "red"}])
    cups = [Detection(_box(i), s) for i, s in enumerate([0.9, 0.5, 0.7])]  # ranks: 0, 2, 1
    asked: list[int] = []

    def colour_of(name: str, det: Detection) -> str:
        assert name == "cup"
        asked.append(cups.index(det))
        return {0: "red", 1: "red", 2: "blue"}[cups.index(det)]

    v = judge(meta, {"cup": cups}, colour_of)
    assert sorted(asked) == [0, 2]  # the third-ranked (red) cup is never looked at (quirk G4)
    assert (v.correct, v.reason) == (False, "expected red cup>=2, found 1 red; and 1 red, 1 blue")
    # reward: 3 kept for count 2 → count term 0.5, colour term 0, no colour check at all
    r = reward(meta, {"cup": cups}, colour_of)
    assert r.terms == (0.5, 0.0) and not r.strict

    # A wrong colour ranked below the top `count` does not hurt.
    meta1 = _meta("colors", [{"class": "cup", "count": 1, "color": "blue"}])
    v1 = judge(meta1, {"cup": cups}, lambda n, d: "blue" if d is cups[0] else "green")
    assert v1.correct


def test_colour_reason_lists_colours_in_official_order() -> None:
    meta = _meta("color_attr", [{"class": "cup", "count": 3, "color": "pink"}])
    cups = [Detection(_box(i), 0.9 - i / 32) for i in range(3)]
    got = dict(zip(cups, ["white", "pink", "red"], strict=True))
    v = judge(meta, {"cup": cups}, lambda n, d: got[d])
    assert v.reason == "expected pink cup>=3, found 1 pink; and 1 red, 1 pink, 1 white"
    r = reward(meta, {"cup": cups}, lambda n, d: got[d])
    assert r.terms == (1.0, pytest.approx(1 / 3)) and r.reason == v.reason


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ((0, 0, 10, 10), (100, 0, 110, 10), {"left of"}),  # rx = -(100 - 2) / 100
        ((100, 0, 110, 10), (0, 0, 10, 10), {"right of"}),
        ((0, 0, 10, 10), (0, 100, 10, 110), {"above"}),  # y grows downward
        ((0, 100, 10, 110), (0, 0, 10, 10), {"below"}),
        ((0, 0, 10, 10), (100, 100, 110, 110), {"left of", "above"}),  # 45°: both -98/141.4
        ((0, 0, 10, 10), (100, 200, 110, 210), {"above"}),  # x: -98/223.6 = -0.44 → no "left of"
        ((0, 0, 10, 10), (1, 0, 11, 10), set()),  # overlap: shrunk to 0 on both axes
        ((0, 0, 10, 10), (0, 0, 10, 10), set()),  # identical
        ((0, 0, 10, 10), (2, 0, 12, 10), set()),  # distance = 0.1·(sizes) → shrunk to 0
        ((0, 0, 10, 10), (4, 0, 14, 10), set()),  # distance = 0.2·(sizes) → exactly -0.5, strict
        ((0, 0, 10, 10), (4.25, 0, 14.25, 10), {"left of"}),  # just past the boundary: -2.25/4.25
        ((0, 0, 10, 10), (3.75, 0, 13.75, 10), set()),  # just short: -1.75/3.75
        ((40, 40, 60, 60), (0, 0, 100, 100), set()),  # contained, same centre
    ],
)
def test_relative_position_hand_computed(a: tuple[float, ...], b: tuple[float, ...], want: set[str]) -> None:
    assert relative_position(a, b) == want


def test_relative_position_threshold_parameter() -> None:
    a, b = (0, 0, 10, 10), (3, 0, 13, 10)  # distance 3: empty at 0.1 (3 ≤ 4), left at 0.05 (2/3 > 0.5)
    assert relative_position(a, b) == set()
    assert relative_position(a, b, threshold=0.05) == {"left of"}
    assert relative_position(np.array(a, dtype=np.float64), np.array(b)) == set()


POSITION = _meta(
    "position",
    [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}],
)


def test_position_with_failed_target_clause() -> None:
    dets = {"dog": [Detection((300, 0, 400, 100), 0.8)], "teddy bear": [Detection((0, 0, 100, 100), 0.25)]}
    v = judge(POSITION, dets, _never)
    assert v.reasons == ("expected teddy bear>=1, found 0", "no target for dog to be right of")
    r = reward(POSITION, dets, _never)
    assert r.terms == (0.0, 1.0, 0.0) and r.score == pytest.approx(1 / 3)
    assert r.reason == "expected teddy bear==1, found 0\nno target for dog to be right of"
    # Two kept bears: GenEval judges against the top one; the reward has no exact-count target.
    two = {
        "dog": dets["dog"],
        "teddy bear": [Detection((0, 0, 100, 100), 0.9), Detection((500, 0, 600, 100), 0.5)],
    }
    assert judge(POSITION, two, _never).correct
    assert reward(POSITION, two, _never).terms == (0.0, 1.0, 0.0)


def test_position_quirk_on_and_off() -> None:
    wrong = {"dog": [Detection((0, 0, 100, 100), 0.8)], "teddy bear": [Detection((300, 0, 400, 100), 0.8)]}
    v = judge(POSITION, wrong, _never)
    assert (v.correct, v.reason) == (False, "expected dog right of target, found left of target")
    on = reward(POSITION, wrong, _never)
    assert on.terms == (1.0, 1.0, 0.0, 1.0) and on.score == 0.75 and not on.strict
    off = reward(POSITION, wrong, _never, position_quirk=False)
    assert off.terms == (1.0, 1.0, 0.0) and off.score == pytest.approx(2 / 3) and not off.strict
    right = {"dog": wrong["teddy bear"], "teddy bear": wrong["dog"]}
    for quirk in (True, False):
        r = reward(POSITION, right, _never, position_quirk=quirk)
        assert (r.terms, r.score, r.strict) == ((1.0, 1.0, 1.0), 1.0, True)
    assert judge(POSITION, right, _never).correct


def test_position_too_close_reports_empty_relation_set() -> None:
    close = {"dog": [Detection((0, 0, 100, 100), 0.8)], "teddy bear": [Detection((5, 0, 105, 100), 0.8)]}
    assert judge(POSITION, close, _never).reason == "expected dog right of target, found  target"


def test_reasons_accumulate_in_clause_order() -> None:
    meta = _meta("two_object", [{"class": "cup", "count": 1}, {"class": "dog", "count": 1}])
    v = judge(meta, {"cat": [Detection(_box(0), 0.99)]}, _never)
    assert v.reason == "expected cup>=1, found 0\nexpected dog>=1, found 0"
    assert not v.correct and v.kept.keys() == {"cat"}


def test_bad_position_reference_raises() -> None:
    meta = _meta(
        "position", [{"class": "dog", "count": 1, "position": ["above", 1]}, {"class": "cup", "count": 1}]
    )
    dets = {"dog": [Detection(_box(0), 0.8)], "cup": [Detection(_box(1), 0.8)]}
    with pytest.raises(ValueError, match="clause 1"):
        judge(meta, dets, _never)


def test_nms_branch_with_plus_one_iou() -> None:
    assert box_iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert box_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 9, 9), (20, 20, 29, 29)) == 0.0
    boxes = [(0, 0, 9, 9), (5, 0, 14, 9), (1, 0, 10, 9), (40, 0, 49, 9)]
    scores = [0.9, 0.8, 0.7, 0.6]
    assert select_indices(scores, 0.3, boxes=boxes) == [0, 1, 2, 3]  # default 1.0: NMS off
    assert select_indices(scores, 0.3, boxes=boxes, nms_threshold=0.5) == [0, 1, 3]  # IoU(0,2) = 0.82
    assert select_indices(scores, 0.3, boxes=boxes, nms_threshold=0.3) == [0, 3]
    dets = {"cup": [Detection(b, s) for b, s in zip(boxes, scores, strict=True)]}
    assert len(filter_detections(SINGLE, dets, GenEvalOptions(nms_threshold=0.5))["cup"]) == 3
    with pytest.raises(ValueError):
        select_indices(scores, 0.3, nms_threshold=0.5)


def test_options_override_thresholds() -> None:
    dets = {"cup": [Detection(_box(0), 0.5)]}
    assert (
        judge(SINGLE, dets, _never, options=GenEvalOptions(threshold=0.6)).reason
        == "expected cup>=1, found 0"
    )
    counting = _meta("counting", [{"class": "cup", "count": 1}], [{"class": "cup", "count": 2}])
    assert judge(counting, dets, _never, options=GenEvalOptions(counting_threshold=0.4)).correct


def test_package_root_does_not_import_torch() -> None:
    code = "import sys, metrics.geneval; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
