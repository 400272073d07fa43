"""A run's score records, checked before anything is computed from them.

`scores/<metric>.jsonl` is a file people open, edit and copy between machines. A record whose fields have
the wrong type, or whose value a bounded metric cannot produce (a hand-edited 1000 for GenEval showed as
"702 %"), is an error naming the file and the line and saying how to go on, never a number averaged in or
"could not convert string to float" from deep inside the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

from paintbench.errors import InputError
from paintbench.harness.rundir import read_jsonl_numbered


def record_problem(rec: dict[str, Any], spec: Any | None) -> str | None:
    """What is wrong with one score record (None when it is usable). Pure."""
    if not isinstance(rec.get("prompt_id"), (str, int)) or isinstance(rec.get("prompt_id"), bool):
        return "no prompt_id (text)"
    index = rec.get("sample_index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return f"sample_index is {index!r}, not a whole number >= 0"
    value = rec.get("value")
    if value is not None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"value is {value!r} ({type(value).__name__}), not a number or null"
        if not math.isfinite(value):
            return f"value is {value!r}, not a finite number"
        why = outside_hard_range(value, spec)
        if why:
            return why
    if "error" in rec and rec["error"] is not None and not isinstance(rec["error"], str):
        return f"error is {type(rec['error']).__name__}, not text"
    if "details" in rec and not isinstance(rec["details"], dict):
        return f"details is {type(rec['details']).__name__}, not an object"
    return None


def outside_hard_range(value: float, spec: Any | None) -> str | None:
    """Why `value` cannot have been produced by the metric (outside its `hard_range`), or None."""
    if spec is None or spec.hard_range is None:
        return None
    lo, hi = spec.hard_range
    # a half-precision run rounds a bound by up to ~1e-3 (a cosine of 1.0005): not damage
    tol = 1e-3
    if (lo is not None and value < lo - tol * max(1.0, abs(lo))) or (hi is not None and value > hi + tol * max(1.0, abs(hi))):
        shown = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        return f"value {value!r} is outside {spec.name}'s possible range {shown}"
    return None


def read_scores(path: Path, metric: str, known_prompts: Collection[str] | None = None
                ) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a scores file, checked (`record_problem`; with `known_prompts`, a record of a
    prompt the run does not have is damage too); torn or corrupt lines are reported as `read_jsonl`
    does. A damaged record raises `InputError` naming `path:line` and the way forward."""
    from paintbench import metrics

    try:
        spec = metrics.spec(metric)
    except KeyError:
        spec = None  # a plugin's metric not installed here: its types are still checked
    numbered, problems = read_jsonl_numbered(path)
    for lineno, rec in numbered:
        why = record_problem(rec, spec)
        if why is None and known_prompts is not None and rec.get("prompt_id") not in known_prompts:
            why = f"a score of prompt {str(rec.get('prompt_id'))[:80]!r}, which this run's suite does not have"
        if why is not None:
            raise InputError(f"{path}:{lineno}: {why}. Fix or delete that line and rerun the same command (its "
                             f"sample is scored again), or recompute them all with `paintbench eval --rescore "
                             f"{metric} --out {path.parent.parent}`")
    return [rec for _, rec in numbered], problems
