"""DPG-Bench scoring rules as pure functions: per-item tile scores, and the whole-set summary.

Two modes (the full list of differences is in the package docstring, `metrics.dpg`):

- `"official"` reproduces `compute_dpg_one_sample` + `main()` of the official script: exact `'yes'`,
  in-place dependency zeroing in table order, categories from the last tile's raw answers.
- `"fixed"` applies the rules as the benchmark describes them: normalised answers, zeroing that
  follows the dependency graph whatever the row order, categories from every tile after zeroing.

Category aggregation (both modes, the official one, checked against the fixture's `overall.json`):
every item appends one value per question (official: last tile, raw; fixed: every tile, after
zeroing) to the list of that question's L2 category. L2 score = 100 × mean of its list. L1 score =
100 × mean of the concatenated lists of its L2 categories, i.e. weighted by question count, not a
mean of L2 scores. Items that fail add nothing to any list and are listed in `failed`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from paintbench.metrics.dpg.questions import DPGError, Question, QuestionTables, l1_category, l2_category

Mode = Literal["official", "fixed"]
MODES: tuple[str, ...] = ("official", "fixed")
TILE_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right")

_TRAILING_PUNCT = ".!?,;:"


def normalize_answer(answer: str) -> str:
    """Fixed-mode answer normalisation: case, surrounding whitespace and trailing punctuation.

    `'Yes.'`, `' YES '`, `'yes!'` → `'yes'`; `'yes, it is'` stays itself (not a plain yes)."""
    return answer.strip().lower().rstrip(_TRAILING_PUNCT).strip()


def answer_value(answer: str, mode: Mode) -> float:
    """1.0 when the answer counts as yes. Official: the exact string `'yes'` only (quirk D3)."""
    if mode == "official":
        return float(answer == "yes")
    return float(normalize_answer(answer) == "yes")


_L2_RE = re.compile(r"\s*([^-]*?)\s*-\s*(.*?)\s*")


def fixed_l2(tuple_text: str) -> str:
    """Fixed-mode L2 key: the official key with the spacing around its first `-` normalised, so
    `attribute-color (…)` and `attribute -  color (…)` count as `attribute - color`."""
    l2 = l2_category(tuple_text)
    m = _L2_RE.fullmatch(l2)
    if not m:
        return " ".join(l2.split())
    head, rest = m.group(1), " ".join(m.group(2).split())
    return f"{head} - {rest}" if rest else f"{head} -"


@dataclass(frozen=True)
class ItemScore:
    """One item's DPG result. Per-tile lists are in tile order (TL, TR, BL, BR); per-question lists
    follow the question table order.

    `values[t][i]` is question i's value on tile t after dependency zeroing; `raw[t][i]` before;
    `zeroed[t][i]` is True where the dependency pass forced the value to 0 (even if the raw answer was
    already not yes). `category_contributions` is what this item adds to the L2 category lists.
    """

    item_id: str
    mode: str
    proposition_ids: tuple[int, ...]
    questions: tuple[str, ...]
    raw: tuple[tuple[float, ...], ...]
    values: tuple[tuple[float, ...], ...]
    zeroed: tuple[tuple[bool, ...], ...]
    tile_scores: tuple[float, ...]
    prompt_score: float
    category_contributions: tuple[tuple[str, float], ...]

    @property
    def last_tile_raw(self) -> tuple[float, ...]:
        """The official category statistics' only input: last tile, before zeroing."""
        return self.raw[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "mode": self.mode,
            "prompt_score": self.prompt_score,
            "tile_scores": list(self.tile_scores),
            "proposition_ids": list(self.proposition_ids),
            "questions": list(self.questions),
            "raw": [list(t) for t in self.raw],
            "values": [list(t) for t in self.values],
            "zeroed": [list(t) for t in self.zeroed],
            "category_contributions": [list(c) for c in self.category_contributions],
        }


def _tile_label(t: int) -> str:
    return f"tile {t} ({TILE_NAMES[t]})" if t < len(TILE_NAMES) else f"tile {t}"


def _raw_values(item: str, questions: Sequence[Question], tiles: Sequence[Mapping[str, str]], mode: Mode):
    raw: list[list[float]] = []
    for t, answers in enumerate(tiles):
        row: list[float] = []
        for q in questions:
            if q.question not in answers:
                raise DPGError(
                    f"item {item!r}, {_tile_label(t)}: no answer for question {q.question!r}"
                    f" (proposition {q.proposition_id})"
                )
            a = answers[q.question]
            if not isinstance(a, str):
                raise DPGError(
                    f"item {item!r}, {_tile_label(t)}: answer to {q.question!r} is {type(a).__name__}, not text"
                )
            row.append(answer_value(a, mode))
        raw.append(row)
    return raw


def _missing_parent(item: str, q: Question, parent: int, official: bool) -> DPGError:
    """`official`: raised where the official loop raises its KeyError (fixed mode raises earlier)."""
    return DPGError(
        f"item {item!r}: proposition {q.proposition_id} ({q.question!r}, CSV line {q.line}) depends on"
        f" proposition {parent}, which the item's question table does not have",
        official_type="KeyError" if official else None,
        official_message=repr(parent) if official else None,
    )


def _zero_official(item: str, questions: Sequence[Question], index: dict[int, int], vals: list[float]):
    """The official pass: table order, in place, each question stops at its first zero parent. A
    parent listed after a zero parent is never looked up, so it may be missing without error."""
    zeroed = [False] * len(questions)
    for i, q in enumerate(questions):
        for p in q.dependency:
            if p == 0:
                continue
            if p not in index:
                raise _missing_parent(item, q, p, official=True)
            if vals[index[p]] == 0:
                vals[i] = 0.0
                zeroed[i] = True
                break
    return zeroed


def _dependency_order(item: str, questions: Sequence[Question], index: dict[int, int]) -> list[int]:
    """Question indices with every parent before its children (table order among equals).
    Raises DPGError on a missing parent or a cycle, whatever the answers."""
    for q in questions:
        for p in q.parents:
            if p not in index:
                raise _missing_parent(item, q, p, official=False)
    pending = {i: {index[p] for p in q.parents} for i, q in enumerate(questions)}
    order: list[int] = []
    done: set[int] = set()
    while pending:
        ready = [i for i, ps in pending.items() if ps <= done]
        if not ready:
            cyc = ", ".join(str(questions[i].proposition_id) for i in sorted(pending))
            raise DPGError(f"item {item!r}: dependency cycle among propositions {cyc}")
        for i in ready:
            order.append(i)
            done.add(i)
            del pending[i]
    return order


def score_item(
    questions: Sequence[Question], tile_answers: Sequence[Mapping[str, str]], mode: Mode = "official"
) -> ItemScore:
    """Score one item from its question table and per-tile answers ({question text: answer}).

    Raises DPGError for a missing answer, a missing parent (official: only when the dependency pass
    reaches it, like the official KeyError; fixed: always) or a dependency cycle (fixed)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not questions:
        raise DPGError("empty question table")
    item = questions[0].item_id
    if not tile_answers:
        raise DPGError(f"item {item!r}: no tiles answered")
    index: dict[int, int] = {}
    for i, q in enumerate(questions):
        if q.proposition_id in index:
            raise DPGError(f"item {item!r}: proposition {q.proposition_id} appears twice in the table")
        index[q.proposition_id] = i

    order = None if mode == "official" else _dependency_order(item, questions, index)
    raw_all = _raw_values(item, questions, tile_answers, mode)
    values: list[tuple[float, ...]] = []
    zeroed: list[tuple[bool, ...]] = []
    tile_scores: list[float] = []
    for raw in raw_all:
        vals = list(raw)
        if order is None:
            z = _zero_official(item, questions, index, vals)
        else:
            z = [False] * len(questions)
            for i in order:
                if any(vals[index[p]] == 0 for p in questions[i].parents):
                    vals[i] = 0.0
                    z[i] = True
        values.append(tuple(vals))
        zeroed.append(tuple(z))
        tile_scores.append(sum(vals) / len(vals))
    prompt_score = sum(tile_scores) / len(tile_scores)  # plain left-to-right sum, as the official code

    if mode == "official":
        contributions = tuple((q.l2, v) for q, v in zip(questions, raw_all[-1], strict=True))
    else:
        # q.l2 raises the DPGError for a missing tuple
        keys = [fixed_l2(q.tuple) if q.tuple is not None else q.l2 for q in questions]
        contributions = tuple((k, v) for vals in values for k, v in zip(keys, vals, strict=True))
    return ItemScore(
        item_id=item,
        mode=mode,
        proposition_ids=tuple(q.proposition_id for q in questions),
        questions=tuple(q.question for q in questions),
        raw=tuple(tuple(r) for r in raw_all),
        values=tuple(values),
        zeroed=tuple(zeroed),
        tile_scores=tuple(tile_scores),
        prompt_score=prompt_score,
        category_contributions=contributions,
    )


def score_items(
    tables: Mapping[str, Sequence[Question]],
    answers: Mapping[str, Sequence[Mapping[str, str]]],
    mode: Mode = "official",
) -> dict[str, ItemScore | DPGError]:
    """Score every answered item; an item that cannot be scored maps to its DPGError (never dropped).

    With `QuestionTables` loaded under official quirks, an item the official scorer could not match to
    a table (no table, all-numeric ids, a '.' in the id) fails like the official TypeError."""
    out: dict[str, ItemScore | DPGError] = {}
    for item_id, tiles in answers.items():
        err = tables.lookup_error(item_id) if isinstance(tables, QuestionTables) else None
        if err is None and item_id not in tables:
            err = DPGError(f"item {item_id!r} has no question table")
        if err is not None:
            out[item_id] = err
            continue
        try:
            out[item_id] = score_item(tables[item_id], tiles, mode)
        except DPGError as e:
            out[item_id] = e
    return out


def _reason(value: Exception | str) -> str:
    if isinstance(value, str):
        return value
    text = str(value) if isinstance(value, DPGError) else f"{type(value).__name__}: {value}"
    official = getattr(value, "official_type", None)
    if official:
        text += f" [official script: {official}: {value.official_message}]"  # type: ignore[union-attr]
    return text


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def summarize(
    item_scores: Mapping[str, ItemScore | Exception | str], mode: Mode = "official"
) -> dict[str, Any]:
    """Whole-set DPG-Bench numbers from per-item results (ItemScore, or the error/reason of a failure).

    Returns `dpg` (100 × mean prompt score over scored items; None when nothing scored, where the
    official script prints nan), `l1`/`l2` (×100, aggregation in the module docstring), `n_items`,
    `n_scored`, `n_failed`, `failed` ({item id: reason}), `prompt_scores` ({item id: 0–1}).
    Means are correctly rounded (math.fsum); the official np.mean agrees to ~1e-15 relative."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    prompt_scores: dict[str, float] = {}
    failed: dict[str, str] = {}
    lists: dict[str, list[float]] = {}
    for item_id, result in item_scores.items():
        if isinstance(result, ItemScore):
            if result.mode != mode:
                raise ValueError(
                    f"item {item_id!r} was scored in {result.mode!r} mode, summary asked for {mode!r}"
                )
            prompt_scores[item_id] = result.prompt_score
            for cat, v in result.category_contributions:
                lists.setdefault(cat, []).append(v)
        else:
            failed[item_id] = _reason(result)
    l1_lists: dict[str, list[float]] = {}
    for cat, vs in lists.items():
        l1_lists.setdefault(l1_category(cat), []).extend(vs)
    return {
        "mode": mode,
        "dpg": 100 * _mean(list(prompt_scores.values())) if prompt_scores else None,
        "l1": {k: 100 * _mean(v) for k, v in sorted(l1_lists.items())},
        "l2": {k: 100 * _mean(v) for k, v in sorted(lists.items())},
        "category_source": (
            "last tile, raw answers (official)"
            if mode == "official"
            else "all tiles, after dependency zeroing"
        ),
        "n_items": len(item_scores),
        "n_scored": len(prompt_scores),
        "n_failed": len(failed),
        "failed": failed,
        "prompt_scores": prompt_scores,
    }
