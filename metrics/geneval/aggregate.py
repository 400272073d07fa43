"""GenEval's summary numbers (djghosh13/geneval `evaluation/summary_scores.py`), as pure functions.

The benchmark number papers report is `overall`: per-image accuracy within each tag, averaged over
the tags present with equal weight (not the fraction of all images that are correct).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def _prompt_key(row: Mapping[str, Any]) -> tuple[str, Any]:
    """Which prompt a row belongs to. The official script groups by the `metadata` JSON string, so we
    do too when a row carries it; otherwise the prompt's index stands in for it."""
    if "metadata" in row:
        meta = row["metadata"]
        return ("metadata", meta if isinstance(meta, str) else json.dumps(meta))
    if "prompt_index" in row:
        return ("prompt_index", row["prompt_index"])
    raise KeyError("each row needs 'metadata' or 'prompt_index' to group images by prompt")


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Summary of per-image verdict rows (`tag`, `prompt_index` or `metadata`, `correct`).

    Returns `overall` (unweighted mean of the per-tag image accuracies of the tags present),
    `per_tag` ({tag: accuracy}, tags in order of first appearance, which is the order the official
    script prints), `tag_counts` ({tag: {"n", "correct"}}), `total_images`, `total_prompts`,
    `correct_images`, `correct_prompts` (a prompt counts when any of its images is correct) and the
    fractions `pct_correct_images`, `pct_correct_prompts` (0–1).
    """
    counts: dict[str, dict[str, int]] = {}
    prompts: dict[tuple[str, Any], bool] = {}
    n_images = n_correct = 0
    for row in rows:
        ok = bool(row["correct"])
        c = counts.setdefault(row["tag"], {"n": 0, "correct": 0})
        c["n"] += 1
        c["correct"] += ok
        key = _prompt_key(row)
        prompts[key] = prompts.get(key, False) or ok
        n_images += 1
        n_correct += ok
    if not n_images:
        raise ValueError("no rows to summarize")
    per_tag = {tag: c["correct"] / c["n"] for tag, c in counts.items()}
    correct_prompts = sum(prompts.values())
    return {
        "overall": float(np.mean(list(per_tag.values()))),  # the official np.mean, same summation order
        "per_tag": per_tag,
        "tag_counts": {tag: dict(c) for tag, c in counts.items()},
        "total_images": n_images,
        "total_prompts": len(prompts),
        "correct_images": n_correct,
        "correct_prompts": correct_prompts,
        "pct_correct_images": n_correct / n_images,
        "pct_correct_prompts": correct_prompts / len(prompts),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """The exact text `summary_scores.py` prints for the same rows (percentages to 2 decimals, the
    overall score to 5), ending with a newline."""
    lines = [
        "Summary",
        "=======",
        f"Total images: {summary['total_images']}",
        f"Total prompts: {summary['total_prompts']}",
        f"% correct images: {summary['pct_correct_images']:.2%}",
        f"% correct prompts: {summary['pct_correct_prompts']:.2%}",
        "",
        "Task breakdown",
        "==============",
    ]
    for tag, acc in summary["per_tag"].items():
        c = summary["tag_counts"][tag]
        lines.append(f"{tag:<16} = {acc:.2%} ({c['correct']} / {c['n']})")
    lines += ["", f"Overall score (avg. over tasks): {summary['overall']:.5f}"]
    return "\n".join(lines) + "\n"
