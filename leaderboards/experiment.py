"""A training experiment's page: the summary `benchmarks/bench_hierarchy.py report --json` writes
(worlds × methods × seeds), as tables (final held-out scores, paired differences to the reference
method with their bootstrap CIs and the exact sign-flip, t and bootstrap p-values; the learning-rate
tuning grid on the validation prompts with the chosen rates), the per-seed final scores, learning
curves with ± 1 SD bands over seeds, and the guard metrics (the update measured in the sampling
contexts; objects per image). Summaries written before the tuned protocol (no `tuning`) still render."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from paintbench.errors import UserError
from paintbench.leaderboards.model import is_number, slugify
from paintbench.leaderboards.plots import line_chart, strip_plot
from paintbench.leaderboards.tables import Cell, Column, Row, Table

OUTCOME_LABELS = {"total": "Total (layout + detail)", "layout": "Layout", "detail": "Detail", "geneval": "GenEval accuracy"}
GUARD_LABELS = {   # the update measured on the canvases the rollout tokens were sampled from (trainer.guard)
    "guard/out_of_clip_frac": "tokens out of the clip band after a round",
    "guard/ratio_max": "largest ratio new / rollout policy",
    "guard/kl_update": "KL(rollout ‖ updated policy)",
    "guard/kl_ref": "KL(rollout ‖ reference)",
    "objects/per_image": "objects drawn per image",
    "objects/over_asked_frac": "images with more objects than asked",
}


@dataclass
class Experiment:
    name: str
    slug: str
    path: Path
    data: dict[str, Any]


def load_experiment(path: str | Path) -> Experiment:
    from paintbench import files

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise UserError(f"{p}: no such experiment file")
    data = files.load_json(p, "summary", what="an experiment summary")
    if not isinstance(data, dict) or not isinstance(data.get("worlds"), dict) or not data["worlds"]:
        raise UserError(f"{p}: not an experiment summary (expected 'worlds' from bench_hierarchy.py report --json)")
    for world, w in data["worlds"].items():
        if not isinstance(w, dict) or not isinstance(w.get("methods"), dict) or not w["methods"]:
            raise UserError(f"{p}: world {str(world)[:60]!r} has no 'methods'")
        why = world_problem(w)
        if why:
            raise UserError(f"{p}: world {str(world)[:60]!r}: {why}")
    name = p.stem
    return Experiment(name, f"experiment-{slugify(name)}", p, data)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _curve_ok(points: Any) -> bool:
    return isinstance(points, list) and all(isinstance(q, list) and len(q) == 3 and all(_num(x) for x in q)
                                            for q in points)


def world_problem(w: dict[str, Any]) -> str | None:
    """What makes one world of a summary unreadable for the page (wrong types, short curve points,
    non-numbers); None when it renders. Pure."""
    if not isinstance(w.get("seeds", []), list):
        return "'seeds' is not a list"
    for method, e in w["methods"].items():
        name = str(method)[:60]
        if not isinstance(e, dict):
            return f"method {name!r} is not a mapping"
        for o in OUTCOME_LABELS:
            if o not in e:
                continue
            cell = e[o]
            seeds = cell.get("per_seed", []) if isinstance(cell, dict) else None
            if not (isinstance(cell, dict) and _num(cell.get("mean")) and _num(cell.get("sd", 0.0))
                    and isinstance(seeds, list) and all(_num(x) for x in seeds)):
                return f"{name!r} {o}: needs numbers mean, sd and a per_seed list"
            cmp = cell.get("vs_htgrpo")
            if cmp is not None and not (isinstance(cmp, dict) and all(
                    cmp.get(k) is None or _num(cmp.get(k)) for k in ("difference", "low", "high", "p_value",
                                                                     "p_permutation", "p_t"))):
                return f"{name!r} {o}: vs_htgrpo holds non-numbers"
        if not isinstance(e.get("curve", {}), dict) or not all(_curve_ok(v) for v in e.get("curve", {}).values()):
            return f"{name!r}: every curve point must be [round, mean, sd]"
        if not isinstance(e.get("guard", {}), dict) or not all(_curve_ok(v) for v in e.get("guard", {}).values()):
            return f"{name!r}: every guard point must be [round, mean, sd]"
        if not isinstance(e.get("start", {}), dict) or (e.get("cpu_seconds") is not None and not _num(e["cpu_seconds"])):
            return f"{name!r}: 'start' must be a mapping and 'cpu_seconds' a number"
    tuning = w.get("tuning", {})
    if not isinstance(tuning, dict) or not all(
            isinstance(cells, dict) and all(isinstance(c, dict) and _num(c.get("mean")) and _num(c.get("sd"))
                                            and isinstance(c.get("per_seed"), dict) for c in cells.values())
            for cells in tuning.values()):
        return "'tuning' must map methods to {lr: {mean, sd, per_seed}}"
    if not isinstance(w.get("chosen_lr", {}), dict) or not all(_num(v) for v in w.get("chosen_lr", {}).values()):
        return "'chosen_lr' must map methods to numbers"
    return None


def world_table(exp: Experiment, world: str) -> Table:
    w = exp.data["worlds"][world]
    outcomes = [o for o in OUTCOME_LABELS if o in next(iter(w["methods"].values()))]
    cols = [Column("method", "Method", "text")]
    cols += [Column(o, OUTCOME_LABELS[o], "number", 1.0, 3, help="mean over seeds (hover: SD)") for o in outcomes]
    tuned = "tuning" in w
    if tuned:
        cols.insert(1, Column("lr", "lr (tuned)", "text", help="the rate chosen on the validation prompts"))
    cols += [Column("delta", "Δ total vs HT-GRPO", "number", 1.0, 3, ci=True,
                    help="paired bootstrap over seeds: method − HT-GRPO, 95 % CI")]
    if tuned:
        cols += [Column("p_exact", "p (exact)", "number", 1.0, 3, help="exact sign-flip permutation test over seeds"),
                 Column("p_t", "p (t)", "number", 1.0, 3, help="paired t-test over seeds")]
    cols += [Column("p", "p (bootstrap)" if tuned else "p", "number", 1.0, 3), Column("cpu", "CPU s", "number", 1.0, 0)]
    start = next(iter(w["methods"].values())).get("start") or {}
    rows = [Row({"method": Cell("starting policy (warm start)"), **{o: Cell(start.get(o)) for o in outcomes}})]
    for method, e in w["methods"].items():
        cells = {"method": Cell(method), "cpu": Cell(e.get("cpu_seconds"))}
        if tuned:
            cells["lr"] = Cell(f"{e['lr']:g}" if is_number(e.get("lr")) else None)
        for o in outcomes:
            cells[o] = Cell(e[o]["mean"], note=f"SD {e[o]['sd']:.3f} over seeds")
        c = e.get("total", {}).get("vs_htgrpo")
        cells["delta"] = Cell(c["difference"], c["low"], c["high"]) if c else Cell(None)
        cells["p"] = Cell(c["p_value"] if c else None)
        cells["p_exact"] = Cell(c.get("p_permutation") if c else None)
        cells["p_t"] = Cell(c.get("p_t") if c else None)
        rows.append(Row(cells))
    seeds = len(w.get("seeds", []))
    split = "held-out prompts" if w.get("split", "heldout") == "heldout" else f"{w['split']} prompts"
    return Table(id=f"{exp.slug}-{world}", title=f"{world}: final scores on {split} ({seeds} seeds)",
                 columns=cols, rows=rows, caption=premise_line(w))


def tuning_table(exp: Experiment, world: str) -> Table | None:
    """The learning-rate grid: mean final validation total over the tuning seeds; the chosen rate marked."""
    w = exp.data["worlds"][world]
    grid = w.get("tuning")
    if not isinstance(grid, dict) or not grid:
        return None
    rates = sorted({lr for cells in grid.values() for lr in cells}, key=float)
    cols = [Column("method", "Method", "text")] + [
        Column(f"lr{lr}", f"lr {lr}", "number", 1.0, 3, help="mean final validation total (hover: SD, seeds)")
        for lr in rates]
    rows = []
    for method, cells in grid.items():
        chosen = (w.get("chosen_lr") or {}).get(method)
        row = {"method": Cell(method)}
        for lr in rates:
            c = cells.get(lr)
            mark = " · chosen" if chosen is not None and float(lr) == float(chosen) else ""
            row[f"lr{lr}"] = Cell(c["mean"], note=f"SD {c['sd']:.3f} over {len(c['per_seed'])} seeds{mark}") if c else Cell(None)
        rows.append(Row(row))
    return Table(id=f"{exp.slug}-{world}-tuning", title=f"{world}: learning-rate tuning on the validation prompts",
                 columns=cols, rows=rows,
                 caption="Chosen per method: " + ", ".join(f"{m} {float(v):g}" for m, v in (w.get("chosen_lr") or {}).items()))


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
    per_seed = [(method, e.get("total", {}).get("per_seed") or []) for method, e in w["methods"].items()]
    if any(vals for _, vals in per_seed):
        charts.insert(0, strip_plot(per_seed, title=f"{world}: final total per seed (bar: mean)"))
    return charts


def guard_charts(exp: Experiment, world: str) -> list[Markup]:
    """The guard metrics over rounds, mean over seeds, one line per method."""
    w = exp.data["worlds"][world]
    charts = []
    for key, label in GUARD_LABELS.items():
        series = [(method, [(x, m) for x, m, _ in (e.get("guard") or {}).get(key, [])]) for method, e in w["methods"].items()]
        if any(pts for _, pts in series):
            charts.append(line_chart(series, title=label, x_label="round", legend=True))
    return charts


def experiment_context(exp: Experiment) -> dict[str, Any]:
    worlds = [{"name": world, "table": world_table(exp, world), "tuning": tuning_table(exp, world),
               "charts": world_charts(exp, world), "guard": guard_charts(exp, world)}
              for world in exp.data["worlds"]]
    return {"experiment": exp, "worlds": worlds, "protocol": exp.data.get("protocol", ""),
            "cpu_minutes": (exp.data.get("cpu_seconds_total") or 0) / 60}
