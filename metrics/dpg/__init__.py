"""DPG-Bench question tables and scoring, as pure functions (no torch, no model code).

The VQA model produces answers; everything here turns saved answers into DPG-Bench numbers. The
reference is TencentQQGYLab/ELLA `dpg_bench/compute_dpg_bench.py` @ 3c228f1dc6, checked against the
golden fixtures in shared/fixtures/dpg (every per-prompt, whole-set and end-to-end expectation).

Pipeline: `load_questions(csv)` → per item `score_item(questions, tile_answers, mode)` (or
`score_items` for a whole answer set) → `summarize(results, mode)`. `metrics.dpg.answers` saves and
loads answers and rescores them (`rescore`, `format_summary`).

Official vs fixed mode
----------------------
Reading the CSV (`official_quirks`; defaults to True in official mode and False in fixed mode when
going through `rescore`):

1. Official: the first data row is discarded (`if i == 0: continue`). Fixed: every row is kept.
2. Official: an item whose rows reappear after another item's starts a fresh table and the earlier
   rows are lost. Fixed: a split item is an error naming the CSV lines of each block.
3. Official: a repeated proposition_id replaces the earlier question's text, tuple and dependency,
   keeping the earlier position. Fixed: an error naming both lines.
4. Official: pandas type inference applies. An all-numeric item_id column means no image ever matches
   a table (every item fails), and a dependency column with no comma anywhere crashes the reader
   (DPGError carrying the official AttributeError). Fixed: ids and dependency cells are always text.
   In both modes item ids are compared as text (`45` matches `45.png`, `045` does not).
5. Official: an item id containing `.` never matches (images are keyed by the file name up to the
   first `.`). Fixed: any id matches its answers.

Scoring (`mode`):

6. Answers. Official: only the exact string `yes` counts. Fixed: case, surrounding whitespace and
   trailing punctuation are ignored (`Yes.`, ` YES ` count; `yes, it is` does not).
7. Dependency zeroing. Official: one pass in table order, in place, each question stopping at its
   first zero parent, so a zero cascades only when parents come before children; a child listed
   before its parent sees the parent's raw value. Fixed: zeroing follows the dependency graph
   (topological order), so a question counts only if it and all its ancestors are yes, whatever
   the row order.
8. Missing parent. Official: only when the pass reaches it (a missing parent listed after a parent
   that is already zero is never looked up); the official script then prints "Failed filename" and
   silently drops the item. Fixed: always an error, as is a dependency cycle. Both modes report the
   item in `failed` (DPGError), never silently.
9. Categories. Official: only the last tile's (bottom-right) raw answers, before zeroing, feed the
   L1/L2 scores (ELLA#60). Fixed: every tile's values after zeroing.
10. Category keys. Official: L2 = tuple text before the first `(`, trimmed, so `attribute-color` and
    `attribute -  color` are categories of their own. Fixed: the spacing around the first `-` is
    normalised, so both count as `attribute - color`.

Same in both modes: tile score = mean over the table's questions of the zeroed values; prompt score =
mean of the tile scores; DPG = 100 × mean prompt score over scored items; L2 = 100 × mean of its
list; L1 = 100 × mean of the concatenated lists of its L2s (question-weighted); the `category_*` CSV
columns are ignored (categories come from `tuple`). A missing answer is a DPGError naming item, tile
and question. One deviation from the official script in official mode: a question whose tuple cell is
empty makes the item fail (the official script would count its prompt score, then crash part-way
through its categories).
"""

from __future__ import annotations

from paintbench.metrics.dpg.answers import (
    format_summary,
    load_answers,
    rescore,
    save_answers,
    validate_answers,
)
from paintbench.metrics.dpg.questions import (
    COLUMNS,
    DPGError,
    Question,
    QuestionTables,
    l1_category,
    l2_category,
    load_questions,
    parse_dependency,
)
from paintbench.metrics.dpg.scoring import (
    MODES,
    TILE_NAMES,
    ItemScore,
    Mode,
    answer_value,
    fixed_l2,
    normalize_answer,
    score_item,
    score_items,
    summarize,
)

__all__ = [
    "COLUMNS",
    "MODES",
    "TILE_NAMES",
    "DPGError",
    "ItemScore",
    "Mode",
    "Question",
    "QuestionTables",
    "answer_value",
    "fixed_l2",
    "format_summary",
    "l1_category",
    "l2_category",
    "load_answers",
    "load_questions",
    "normalize_answer",
    "parse_dependency",
    "rescore",
    "save_answers",
    "score_item",
    "score_items",
    "summarize",
    "validate_answers",
]
