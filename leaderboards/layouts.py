"""How each community lays out its leaderboard: which metric, which columns, which scale.

A layout lives in its suite's YAML (`leaderboard:`), so adding a benchmark is adding one file; a run
records it in results.json, so a site can be built without the suite files. It binds a suite to the
per-category columns its paper or README reports, so the site's table reads like the tables people
already know (the shipped suites):

- GenEval (and the shapes world, scored by GenEval's rules): Overall, Single object, Two object,
  Counting, Colors, Position, Color attribution; fractions 0–1.
- DPG-Bench (ELLA): Global, Entity, Attribute, Relation, Other, Overall; 0–100.
- HPD v2 (HPSv2 README): Animation, Concept-art, Painting, Photo, Average; HPS × 100, one table per
  HPS version, because scores cannot be compared between versions.

Metrics a layout does not claim (e.g. ImageReward scored on GenEval's images) go to a "preference
metrics" table, one column per metric, each on its own scale: different metrics are never averaged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from paintbench.errors import InputError


@dataclass(frozen=True)
class Layout:
    title: str
    metrics: tuple[str, ...]  # metrics this layout shows (one table each, in this order)
    columns: tuple[tuple[str, str | None], ...]  # (label, category name; None = the metric's overall value)
    scale: float = 1.0  # displayed = stored value x scale
    decimals: int = 2
    note: str = ""
    # metrics as the columns of one table (a paper's "Table 3"): `columns` are then [label, metric] in the
    # paper's order, each metric on its own scale and never averaged with the others
    side_by_side: bool = False


def layout_from_dict(data: dict[str, Any], where: str = "suite") -> Layout:
    """A suite YAML's `leaderboard:` section (or its copy in a run's results.json) as a Layout."""
    try:
        return Layout(title=str(data["title"]), metrics=tuple(data["metrics"]),
                      columns=tuple((str(label), cat) for label, cat in data["columns"]),
                      scale=float(data.get("scale", 1.0)), decimals=int(data.get("decimals", 2)),
                      note=str(data.get("note", "")), side_by_side=bool(data.get("side_by_side", False)))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}: `leaderboard` needs title, metrics and columns [[label, category or null], "
                         f"...] ({type(e).__name__}: {e})") from e


def layout_for(suite: str, runs: Sequence[Any] = ()) -> Layout | None:
    """The suite's layout: as recorded in a run's results.json (so a site needs no suite files), else
    from the installed suite file of that name, else None (a generic table)."""
    for run in runs:
        recorded = (run.results.get("suite") or {}).get("leaderboard") if run.suite_name == suite else None
        if recorded:
            return layout_from_dict(recorded, f"{run.root}/results.json")
    return _installed_layout(suite)


@functools.cache
def _installed_layout(suite: str) -> Layout | None:
    from paintbench.harness.suite import load_suite, suite_files

    if suite not in suite_files():
        return None
    s = load_suite(suite)
    return layout_from_dict(s.leaderboard, str(s.path)) if s.leaderboard else None


def metric_format(metric: str) -> tuple[float, int]:
    """(scale, decimals) a metric declares for report pages (`display` in its spec); (1, 4) if unknown."""
    from paintbench import metrics

    try:
        return metrics.spec(metric).display
    except KeyError:
        return 1.0, 4


def display_format(suite: str, metric: str | None, runs: Sequence[Any] = ()) -> tuple[float, int]:
    """(scale, decimals) of a metric on a suite's pages: its layout's when the layout claims it (at least
    two decimals: run pages and comparisons show more detail than the leaderboard), else its own."""
    if metric is None:
        return 1.0, 3
    layout = layout_for(suite, runs)
    if layout is not None and metric in layout.metrics:
        return layout.scale, max(layout.decimals, 2)
    return metric_format(metric)


def category_lookup(categories: dict[str, object], name: str) -> object | None:
    """A category's entry by exact name, else case-insensitively (DPG's L1 names vary in case)."""
    if name in categories:
        return categories[name]
    low = name.lower()
    for k, v in categories.items():
        if k.lower() == low:
            return v
    return None
