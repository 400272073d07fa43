"""Saved VQA answers for DPG-Bench, and rescoring them without the VQA model.

The VQA pass is the expensive part of DPG-Bench; the scoring rules are cheap and have known quirks.
Saving every answer lets one run be rescored in either mode (or against a corrected question table)
in seconds. The file format is the golden fixtures' `answers.json`:

    {item_id: [tile0, tile1, tile2, tile3]}, each tile {question text: answer}

with tiles in the 2×2 grid order top-left, top-right, bottom-left, bottom-right.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from paintbench.metrics.dpg.questions import DPGError, load_questions
from paintbench.metrics.dpg.scoring import MODES, ItemScore, Mode, score_items, summarize

Answers = dict[str, list[dict[str, str]]]


def validate_answers(data: Any, source: str = "answers") -> Answers:
    """Check the `{item_id: [{question: answer}, ...]}` shape; DPGError naming the bad entry."""
    if not isinstance(data, dict):
        raise DPGError(
            f"{source}: expected a JSON object of item id → list of tiles, got {type(data).__name__}"
        )
    out: Answers = {}
    for item_id, tiles in data.items():
        if not isinstance(tiles, list) or not tiles:
            raise DPGError(f"{source}: item {item_id!r}: expected a non-empty list of tiles")
        checked: list[dict[str, str]] = []
        for t, tile in enumerate(tiles):
            if not isinstance(tile, dict):
                raise DPGError(f"{source}: item {item_id!r}, tile {t}: expected {{question: answer}}")
            for q, a in tile.items():
                if not isinstance(a, str):
                    raise DPGError(
                        f"{source}: item {item_id!r}, tile {t}, question {q!r}: answer is not text"
                    )
            checked.append(dict(tile))
        out[str(item_id)] = checked
    return out


def load_answers(path: str | Path) -> Answers:
    """Read an answers file (fixture `answers.json` format)."""
    from paintbench import files

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise DPGError(f"{p}: no such answers file")
    return validate_answers(files.load_json(p, "records", what="an answers file"), str(p))


def save_answers(path: str | Path, answers: Mapping[str, Sequence[Mapping[str, str]]]) -> Path:
    """Write answers atomically (temp file in the same folder, fsync, rename), so an interrupted run
    never leaves a truncated file that a later rescore would half-read."""
    p = Path(path)
    data = validate_answers({k: [dict(t) for t in v] for k, v in answers.items()}, str(p))
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def rescore(
    questions_csv: str | Path,
    answers_path: str | Path,
    mode: Mode = "official",
    official_quirks: bool | None = None,
) -> dict[str, Any]:
    """Score saved answers against a question CSV.

    `official_quirks=None` means: the official reader in official mode, the strict reader in fixed
    mode. Returns `summarize()`'s dict plus `items` ({item id: ItemScore.to_dict()} for scored
    items), `unanswered` (tables with no answers: not attempted, not in any mean), `notes` (rows the
    reader dropped or replaced), and the inputs. A CSV the official reader would crash on raises
    DPGError."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    quirks = (mode == "official") if official_quirks is None else official_quirks
    tables = load_questions(questions_csv, official_quirks=quirks)
    answers = load_answers(answers_path)
    results = score_items(tables, answers, mode)
    summary = summarize(results, mode)
    summary.update(
        questions_csv=str(questions_csv),
        answers=str(answers_path),
        official_quirks=quirks,
        unanswered=[item for item in tables if item not in answers],
        notes=list(tables.notes),
        items={k: v.to_dict() for k, v in results.items() if isinstance(v, ItemScore)},
    )
    return summary


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human-readable report of a `summarize()`/`rescore()` result, failures listed, never hidden."""
    mode = summary.get("mode", "?")
    quirks = summary.get("official_quirks")
    reader = "" if quirks is None else (", official CSV reader" if quirks else ", strict CSV reader")
    lines = [
        f"DPG-Bench ({mode} mode{reader}): {_fmt(summary.get('dpg'))}"
        f"  [{summary.get('n_scored', 0)} of {summary.get('n_items', 0)} answered items scored]",
        f"categories: {summary.get('category_source', '')}",
        "L1 category scores:",
        *(f"  {k}: {_fmt(v)}" for k, v in summary.get("l1", {}).items()),
        "L2 category scores:",
        *(f"  {k}: {_fmt(v)}" for k, v in summary.get("l2", {}).items()),
    ]
    failed = summary.get("failed", {})
    if failed:
        lines.append(f"FAILED, left out of every mean ({len(failed)}):")
        lines.extend(f"  {k}: {v}" for k, v in failed.items())
    unanswered = summary.get("unanswered", [])
    if unanswered:
        lines.append(f"no answers, not scored ({len(unanswered)}): {', '.join(unanswered)}")
    notes = summary.get("notes", [])
    if notes:
        lines.append(f"CSV reader notes ({len(notes)}):")
        lines.extend(f"  {n}" for n in notes)
    return "\n".join(lines)
