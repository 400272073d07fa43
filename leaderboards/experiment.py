"""A training experiment's page: the summary `benchmarks/bench_hierarchy.py report --json` writes
(worlds × methods × seeds), as tables (final held-out scores, paired differences to the reference
method with their bootstrap CIs and p-values) and learning curves with ± 1 SD bands over seeds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from paintbench.errors import UserError
from paintbench.leaderboards.model import slugify
from paintbench.leaderboards.plots import line_chart
from paintbench.leaderboards.tables import Cell, Column, Row, Table

OUTCOME_LABELS = {"total": "Total (layout + detail)", "layout": "Layout", "detail": "Detail", "geneval": "GenEval accuracy"}


@dataclass
class Experiment:
    name: str
    slug: str
    path: Path
    data: dict[str, Any]


def load_experiment(path: str | Path) -> Experiment:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{p}: no such experiment file") from None
    except ValueError as e:
        raise UserError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("worlds"), dict) or not data["worlds"]:
        raise UserError(f"{p}: not an experiment summary (expected 'worlds' from bench_hierarchy.py report --json)")
    for world, w in data["worlds"].items():
        if not isinstance(w, dict) or not isinstance(w.get("methods"), dict) or not w["methods"]:
            raise UserError(f"{p}: world {world!r} has no 'methods'")
    name = p.stem
    return Experiment(name, f"experiment-{slugify(name)}", p, data)


def world_table(exp: Experiment, world: str) -> Table:
    w = exp.data["worlds"][world]
    outcomes = [o for o in OUTCOME_LABELS if o in next(iter(w["methods"].values()))]
    cols = [Column("method", "Method", "text")]
    cols += [Column(o, OUTCOME_LABELS[o], "number", 1.0, 3, help="mean over seeds (hover: SD)") for o in outcomes]
    cols += [Column("delta", "Δ total vs HT-GRPO", "number", 1.0, 3, ci=True,
                    help="paired bootstrap over seeds: method − HT-GRPO, 95 % CI"),
             Column("p", "p", "number", 1.0, 3), Column("cpu", "CPU s", "number", 1.0, 0)]
    start = next(iter(w["methods"].values())).get("start") or {}
    rows = [Row({"method": Cell("starting policy (warm start)"), **{o: Cell(start.get(o)) for o in outcomes}})]
    for method, e in w["methods"].items():
        cells = {"method": Cell(method), "cpu": Cell(e.get("cpu_seconds"))}
        for o in outcomes:
            cells[o] = Cell(e[o]["mean"], note=f"SD {e[o]['sd']:.3f} over seeds")
        c = e.get("total", {}).get("vs_htgrpo")
        cells["delta"] = Cell(c["difference"], c["low"], c["high"]) if c else Cell(None)
        cells["p"] = Cell(c["p_value"] if c else None)
        rows.append(Row(cells))
    seeds = len(w.get("seeds", []))
    return Table(id=f"{exp.slug}-{world}", title=f"{world}: final scores on held-out prompts ({seeds} seeds)",
                 columns=cols, rows=rows, caption=premise_line(w))


def premise_line(w: dict[str, Any]) -> str:
    p = w.get("premise_round1") or {}
    if not p:
        return ""
    return (f"Premise after the warm start: layout share of the structure set "
            f"{p.get('premise/layout_share_in_structure', float('nan')):.2f} (of all tokens "
            f"{p.get('premise/layout_share_of_tokens', float('nan')):.2f}); mean commit step layout "
            f"{p.get('premise/layout_commit_step', float('nan')):.2f} vs detail "
            f"{p.get('premise/detail_commit_step', float('nan')):.2f}.")


def world_charts(exp: Experiment, world: str) -> list[Markup]:
    w = exp.data["worlds"][world]
    charts = []
    for o, label in OUTCOME_LABELS.items():
        series, bands = [], []
        for method, e in w["methods"].items():
            pts = (e.get("curve") or {}).get(o) or []
            series.append((method, [(x, m) for x, m, _ in pts]))
            bands.append([(x, m - sd, m + sd) for x, m, sd in pts])
        if any(pts for _, pts in series):
            charts.append(line_chart(series, title=f"{world}: {label}", x_label="round", bands=bands, legend=True))
    return charts


def experiment_context(exp: Experiment) -> dict[str, Any]:
    worlds = [{"name": world, "table": world_table(exp, world), "charts": world_charts(exp, world)}
              for world in exp.data["worlds"]]
    return {"experiment": exp, "worlds": worlds, "protocol": exp.data.get("protocol", ""),
            "cpu_minutes": (exp.data.get("cpu_seconds_total") or 0) / 60}
