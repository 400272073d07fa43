"""How each community lays out its leaderboard: which metric, which columns, which scale.

Data only. A layout binds a suite to the per-category columns its paper or README reports, so the
site's table reads like the tables people already know:

- GenEval (and the shapes world, scored by GenEval's rules): Overall, Single object, Two object,
  Counting, Colors, Position, Color attribution; fractions 0–1.
- DPG-Bench (ELLA): Global, Entity, Attribute, Relation, Other, Overall; 0–100.
- HPD v2 (HPSv2 README): Animation, Concept-art, Painting, Photo, Average; HPS × 100, one table per
  HPS version, because scores cannot be compared between versions.

Metrics a layout does not claim (e.g. ImageReward scored on GenEval's images) go to a "preference
metrics" table, one column per metric, each on its own scale: different metrics are never averaged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    title: str
    metrics: tuple[str, ...]  # metrics this layout shows (one table each, in this order)
    columns: tuple[tuple[str, str | None], ...]  # (label, category name; None = the metric's overall value)
    scale: float = 1.0  # displayed = stored value x scale
    decimals: int = 2
    note: str = ""


GENEVAL = Layout(
    title="GenEval",
    metrics=("geneval", "shapes-geneval"),
    columns=(("Overall", None), ("Single object", "single_object"), ("Two object", "two_object"),
             ("Counting", "counting"), ("Colors", "colors"), ("Position", "position"),
             ("Color attribution", "color_attr")),
    scale=1.0,
    decimals=2,
    note="Fraction of images judged correct by GenEval's rules. Overall is the unweighted mean of the six "
         "task accuracies (as in the GenEval paper).",
)

DPG = Layout(
    title="DPG-Bench",
    metrics=("dpg",),
    columns=(("Global", "global"), ("Entity", "entity"), ("Attribute", "attribute"), ("Relation", "relation"),
             ("Other", "other"), ("Overall", None)),
    scale=100.0,
    decimals=2,
    note="DPG-Bench score x 100 (ELLA). Overall is the mean prompt score; the L1 columns are filled when the "
         "run's results carry per-category values.",
)

HPDV2 = Layout(
    title="HPD v2",
    metrics=("hps-v2.1", "hps-v2"),
    columns=(("Animation", "anime"), ("Concept-art", "concept-art"), ("Painting", "paintings"),
             ("Photo", "photo"), ("Average", None)),
    scale=100.0,
    decimals=2,
    note="HPS x 100 per style, as in the HPSv2 README. HPS v2 and v2.1 scores are different metrics and are "
         "never compared with each other.",
)

#: suite name -> layout
LAYOUTS: dict[str, Layout] = {"geneval": GENEVAL, "shapes": GENEVAL, "dpg": DPG, "hpdv2": HPDV2}

#: display scale and decimals of metrics outside their layout (preference metrics side by side)
METRIC_FORMAT: dict[str, tuple[float, int]] = {
    "hps-v2": (100.0, 2), "hps-v2.1": (100.0, 2), "imagereward": (1.0, 3), "aesthetic": (1.0, 3),
    "geneval": (1.0, 3), "shapes-geneval": (1.0, 3), "dpg": (100.0, 2),
}


def metric_format(metric: str) -> tuple[float, int]:
    return METRIC_FORMAT.get(metric, (1.0, 4))


def layout_for(suite: str) -> Layout | None:
    return LAYOUTS.get(suite)


def display_format(suite: str, metric: str | None) -> tuple[float, int]:
    """(scale, decimals) of a metric on a suite's pages: its layout's when the layout claims it (at least
    two decimals: run pages and comparisons show more detail than the leaderboard), else its own."""
    if metric is None:
        return 1.0, 3
    layout = layout_for(suite)
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
