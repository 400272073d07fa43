"""Tables as plain data: leaderboards, per-category breakdowns, comparisons, training summaries.

Every table of the site is a `Table` built here and nowhere else, so the HTML page and its CSV, JSON and
LaTeX exports always agree. Cells keep the stored (unscaled) value for sorting and exports; `Column.scale`
and `Column.decimals` say how it is displayed (GenEval 0–1, DPG and HPS x 100).

Ranking rules:

- A table is ranked by one column (a layout's Overall/Average); missing values rank last.
- The leader is the best row in the metric's direction. A row is *tied with the leader* when a paired
  test on the prompts both runs share (harness.aggregate.compare_metric: cluster bootstrap over prompts,
  stratified by category for macro metrics, and the exact sign-flip permutation test when at most 20
  prompts are shared) does not reject "no difference" at level alpha. Runs that share no prompts with the
  leader are tied when their confidence intervals overlap. `TIE_RULE` is the sentence the page shows.
- Different metrics are never averaged: the preference table puts each metric in its own column with
  its own leader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paintbench.errors import UserError
from paintbench.leaderboards.layouts import Layout, category_lookup, display_format, layout_for, metric_format
from paintbench.leaderboards.model import Run, TrainLog, is_number

#: (run_a, run_b, metric) -> harness.aggregate.compare_metric's dict (b − a) on shared prompts, or None
Paired = Callable[[Run, Run, str], dict[str, Any] | None]

ALPHA = 0.05


def tie_rule(alpha: float = ALPHA) -> str:
    return (f"★ marks the leader. ≈ marks rows statistically tied with it: a two-sided paired test on the prompts "
            f"both runs share (same prompt id and text) does not reject \"no difference\" at α = {alpha:g}. The test "
            "is the harness's paired cluster bootstrap (prompts resampled with their images, stratified by "
            "category for macro metrics such as GenEval's Overall), or the exact sign-flip permutation test "
            "when at most 20 prompts are shared. Runs sharing no prompts with the leader count as tied when "
            "their confidence intervals overlap.")


TIE_RULE = tie_rule()


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "number"  # "number" | "text" | "rank" | "provenance"
    scale: float = 1.0
    decimals: int = 2
    help: str = ""
    ci: bool = False  # cells carry a confidence interval

    @property
    def sortable(self) -> bool:
        return self.kind != "provenance"

    def fmt(self, value: Any) -> str:
        if self.kind in ("number", "rank"):
            if not is_number(value):
                return "–"
            if isinstance(value, int) and not isinstance(value, bool) and self.scale == 1.0:
                return str(value)   # a count is a whole number, never "6303.0000"
            if self.kind == "rank":
                return str(int(value))
            return f"{value * self.scale:.{self.decimals}f}"
        return "" if value is None else str(value)

    def fmt_ci(self, low: Any, high: Any) -> str:
        if not (is_number(low) and is_number(high)):
            return ""
        return f"[{low * self.scale:.{self.decimals}f}, {high * self.scale:.{self.decimals}f}]"


@dataclass
class Cell:
    value: Any = None  # stored value (numbers unscaled)
    low: float | None = None
    high: float | None = None
    mark: str | None = None  # "leader" | "tied" | "best"
    note: str = ""  # hover text: why the mark, the test's numbers
    href: str | None = None  # link target (a page of the site)
    sub: str = ""  # small second line (e.g. n images)
    flags: list[str] = field(default_factory=list)  # badges beside the value ("synthetic weights", "partial")


@dataclass
class Row:
    cells: dict[str, Cell]
    attrs: dict[str, str] = field(default_factory=dict)  # data-* attributes for filters
    provenance: list[tuple[str, str]] | None = None


@dataclass
class Table:
    id: str  # file-name-safe (exports)
    title: str
    columns: list[Column]
    rows: list[Row]
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    rank_key: str | None = None  # the column the default order ranks by

    def __post_init__(self) -> None:  # ids name export files and anchors: keep them file-name-safe
        from paintbench.leaderboards.model import slugify

        self.id = slugify(self.id, limit=120)

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)


# -- small rules ------------------------------------------------------------------------------------------
def higher_is_better(metric: str, runs: Sequence[Any] = ()) -> bool:
    """The metric's direction: from the registry, else as a run recorded it in results.json. Unknown is
    an error: ranking a lower-is-better metric as higher-is-better would put the worst run first."""
    from paintbench import metrics

    try:
        return bool(metrics.spec(metric).higher_is_better)
    except KeyError:
        pass
    for run in runs:
        recorded = run.metrics.get(metric, {}).get("higher_is_better")
        if isinstance(recorded, bool):
            return recorded
    raise UserError(f"metric {metric!r}: its direction is unknown (it is not registered here and no run "
                    "recorded it); install the package that provides it, or leave its runs out of the site")


def rank_order(values: Sequence[Any], *, higher: bool = True) -> list[int]:
    """Indices sorted best first; missing or non-finite values last, ties kept in input order."""
    present = [i for i, v in enumerate(values) if is_number(v)]
    missing = [i for i, v in enumerate(values) if not is_number(v)]
    present.sort(key=lambda i: -values[i] if higher else values[i])
    return present + missing


def ci_overlap(a: Sequence[Any] | None, b: Sequence[Any] | None) -> bool | None:
    if not a or not b or not all(is_number(x) for x in (*a, *b)):
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def test_p_value(test: dict[str, Any]) -> float:
    """The p-value the tie rule uses: the exact permutation test's when present (<= 20 prompts)."""
    return float(test.get("permutation_p_value", test["p_value"]))


def tie_status(leader_ci: Sequence[Any] | None, ci: Sequence[Any] | None, test: dict[str, Any] | None,
               alpha: float = ALPHA) -> tuple[bool, str]:
    """(tied with the leader?, the reason in words)."""
    if test is not None and test.get("n_shared", 0) >= 2:
        p = test_p_value(test)
        kind = "exact permutation" if "permutation_p_value" in test else "paired bootstrap"
        verdict = "tied" if p >= alpha else "different"
        return p >= alpha, (f"{verdict}: {kind} test vs the leader on {test['n_shared']} shared prompts, "
                            f"difference {test['difference']:+.4g}, p = {p:.3g}")
    overlap = ci_overlap(leader_ci, ci)
    if overlap is None:
        return False, "no shared prompts with the leader and no interval to compare"
    return overlap, ("no shared prompts with the leader; intervals " + ("overlap" if overlap else "do not overlap"))


def mark_ties(runs: Sequence[Run], values: Sequence[Any], cis: Sequence[Any], metric: str, order: list[int],
              paired: Paired | None, alpha: float) -> list[tuple[str | None, str]]:
    """Per row: ("leader" | "tied" | None, note), with respect to the best row in `order`."""
    out: list[tuple[str | None, str]] = [(None, "")] * len(runs)
    if not order or not is_number(values[order[0]]):
        return out
    lead = order[0]
    out[lead] = ("leader", "leader")
    for i in order[1:]:
        if not is_number(values[i]):
            continue
        test = paired(runs[lead], runs[i], metric) if paired is not None else None
        tied, why = tie_status(cis[lead], cis[i], test, alpha)
        out[i] = ("tied" if tied else None, why)
    return out


def flatten(data: Any, prefix: str = "", *, limit: int = 60) -> list[tuple[str, str]]:
    """Nested dicts/lists as ("a.b.c", "value") rows. Values under a key named `path` keep only the file
    name: a published site should not reveal the machine's directory layout."""
    rows: list[tuple[str, str]] = []

    def walk(x: Any, key: str) -> None:
        if len(rows) >= limit:
            return
        if isinstance(x, dict):
            if not x and key:
                rows.append((key, "{}"))
            for k, v in x.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(x, list | tuple) and any(isinstance(v, dict | list) for v in x):
            for i, v in enumerate(x):
                walk(v, f"{key}[{i}]")
        else:
            text = ", ".join(map(str, x)) if isinstance(x, list | tuple) else ("" if x is None else str(x))
            if key.rsplit(".", 1)[-1] in ("path", "arg", "out") and ("/" in text or "\\" in text):
                text = text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
            rows.append((key, text))

    walk(data, prefix)
    return rows


def run_provenance(run: Run, metrics: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """What reproduces a row: metric versions and weights, generation settings, date, commit, environment."""
    r = run.results
    suite = r.get("suite") or {}
    rows: list[tuple[str, str]] = [
        ("run", run.name), ("directory", run.root.resolve().name), ("date", str(r.get("date", ""))),
        ("suite", f"{suite.get('name')} v{suite.get('version')}"), ("suite hash", str(suite.get("hash", ""))),
        ("prompts x images", f"{suite.get('n_prompts')} x {suite.get('images_per_prompt')}"),
        ("seed", str(r.get("seed", ""))),
    ]
    rows += flatten(r.get("generator") or {}, "generation")
    env = r.get("environment") or {}
    rows += [("commit", str(env.get("git_commit") or "unknown"))]
    rows += flatten({k: v for k, v in env.items() if k != "git_commit"}, "environment")
    for m in metrics if metrics is not None else run.metrics:
        mres = run.metrics.get(m) or {}
        rows += flatten(mres.get("provenance") or {"version": "unknown"}, f"{m}")
        if mres.get("options"):
            rows += flatten(mres["options"], f"{m}.options")
        rows.append((f"{m}.aggregation", f"{mres.get('aggregation')}, {int(100 * mres.get('confidence', 0.95))}% "
                                         f"CI from {mres.get('n_resamples')} prompt resamples"))
    if r.get("timing"):
        rows += [(f"timing.{k}", f"{v:.1f}" if is_number(v) else str(v)) for k, v in r["timing"].items()]
    return rows


def _stat(entry: Any) -> tuple[Any, list[Any] | None, Any]:
    if not isinstance(entry, dict):
        return None, None, None
    ci = entry.get("ci")
    return entry.get("value"), (list(ci) if isinstance(ci, list | tuple) and len(ci) == 2 else None), entry.get("n_samples")


def _model_cell(run: Run, mark: str | None, note: str) -> Cell:
    flags = [label for on, label in ((run.synthetic_weights, "synthetic weights"), (run.is_partial, "partial"),
                                     (run.is_incomplete, f"incomplete: {run.sample_coverage}")) if on]
    flags += run.caveats   # "dtype bfloat16, not the fp32 parity setting", "aesthetic: outside nominal range 1..10"
    return Cell(value=run.name, href=f"{run.slug}.html", mark=mark, note=note, flags=flags)


# -- leaderboards -----------------------------------------------------------------------------------------
def metric_groups(runs: Sequence[Run], metric: str) -> list[tuple[str | None, list[Run]]]:
    """Runs that report `metric`, split by the metric's protocol version: scores of different versions
    are never ranked against each other."""
    by_version: dict[str | None, list[Run]] = {}
    for run in runs:
        if metric in run.metrics:
            by_version.setdefault(run.metric_version(metric), []).append(run)
    return sorted(by_version.items(), key=lambda kv: str(kv[0]), reverse=True)


def layout_table(suite: str, layout: Layout, metric: str, version: str | None, runs: Sequence[Run], *,
                 paired: Paired | None, alpha: float = ALPHA) -> Table:
    """The community layout of one metric on one suite, ranked by its overall column, ties marked."""
    cols = [Column("rank", "#", "rank", help="rank by the overall column")]
    cols.append(Column("model", "Model", "text"))
    overall_key = None
    for label, cat in layout.columns:
        key = "overall" if cat is None else f"cat:{cat}"
        if cat is None:
            overall_key = key
        cols.append(Column(key, label, "number", layout.scale, layout.decimals, ci=True,
                           help=f"{metric} {'overall' if cat is None else cat}"))
    cols += [Column("n_images", "Images", "number", 1.0, 0), Column("provenance", "Provenance", "provenance")]
    higher = higher_is_better(metric, runs)
    overall = [run.metrics[metric].get("value") for run in runs]
    cis = [_stat(run.metrics[metric])[1] for run in runs]
    order = rank_order(overall, higher=higher)
    marks = mark_ties(runs, overall, cis, metric, order, paired, alpha)
    # the best value of each column (bold in papers); ties for the ranking column come from the test
    best: dict[str, Any] = {}
    rows = []
    for rank, i in enumerate(order, start=1):
        run = runs[i]
        mres = run.metrics[metric]
        cells: dict[str, Cell] = {"rank": Cell(rank), "model": _model_cell(run, *marks[i])}
        for label, cat in layout.columns:
            key = "overall" if cat is None else f"cat:{cat}"
            entry = mres if cat is None else category_lookup(mres.get("categories") or {}, cat)
            value, ci, n = _stat(entry)
            cell = Cell(value=value, low=ci[0] if ci else None, high=ci[1] if ci else None,
                        note=f"{label}: n = {n} images" if n is not None else "")
            if key == overall_key:
                cell.mark, cell.note = marks[i][0], marks[i][1]
            cells[key] = cell
            if is_number(value) and (key not in best or (value > best[key] if higher else value < best[key])):
                best[key] = value
        cells["n_images"] = Cell(mres.get("n_samples"))
        cells["provenance"] = Cell()
        rows.append(Row(cells, attrs={"tie": marks[i][0] or ""}, provenance=run_provenance(run, [metric])))
    for row in rows:
        for key, b in best.items():
            c = row.cells[key]
            if key != overall_key and c.value == b and c.mark is None:
                c.mark = "best"
    title = f"{layout.title}: {metric}" + (f" ({version})" if version else "")
    return Table(id=f"leaderboard-{suite}-{metric}-{version or 'x'}", title=title, columns=cols, rows=rows,
                 caption=layout.note, notes=[tie_rule(alpha)], rank_key=overall_key)


def generic_table(suite: str, metric: str, version: str | None, runs: Sequence[Run], *, paired: Paired | None,
                  alpha: float = ALPHA) -> Table:
    """Suites without a known layout: Overall plus the metric's categories in the runs' report order."""
    cats: dict[str, None] = {}
    for run in runs:
        for c in (run.results.get("suite") or {}).get("categories") or []:
            cats[str(c)] = None
        for c in run.metrics[metric].get("categories") or {}:
            cats[str(c)] = None
    scale, decimals = metric_format(metric)
    layout = Layout(title=suite, metrics=(metric,), columns=(("Overall", None), *((c, c) for c in cats)),
                    scale=scale, decimals=decimals,
                    note=f"{metric} overall and per category ({runs[0].metrics[metric].get('aggregation')}).")
    return layout_table(suite, layout, metric, version, runs, paired=paired, alpha=alpha)


def preference_table(suite: str, metrics: Sequence[str], runs: Sequence[Run], *, paired: Paired | None,
                     alpha: float = ALPHA, title: str | None = None,
                     labels: dict[str, str] | None = None) -> Table:
    """Metrics side by side, each in its own column on its own scale, each with its own leader and ties.
    Nothing is averaged across columns: the scales are not comparable. `labels` names the columns (a
    side-by-side layout's paper labels; default: the metric names)."""
    cols = [Column("model", "Model", "text")]
    for m in metrics:
        scale, decimals = metric_format(m)
        arrow = "↑" if higher_is_better(m, runs) else "↓"
        cols.append(Column(f"metric:{m}", f"{(labels or {}).get(m, m)} {arrow}", "number", scale, decimals, ci=True,
                           help=f"{m} (x{scale:g}); its own scale, never averaged with the others"))
    cols += [Column("n_images", "Images", "number", 1.0, 0), Column("provenance", "Provenance", "provenance")]
    per_metric_marks: dict[str, list[tuple[str | None, str]]] = {}
    for m in metrics:
        have = [i for i, r in enumerate(runs) if m in r.metrics]
        sub = [runs[i] for i in have]
        values = [r.metrics[m].get("value") for r in sub]
        cis = [_stat(r.metrics[m])[1] for r in sub]
        order = rank_order(values, higher=higher_is_better(m, runs))
        marks = mark_ties(sub, values, cis, m, order, paired, alpha)
        full: list[tuple[str | None, str]] = [(None, "")] * len(runs)
        for j, i in enumerate(have):
            full[i] = marks[j]
        per_metric_marks[m] = full
    first = metrics[0]
    order = rank_order([r.metrics.get(first, {}).get("value") for r in runs], higher=higher_is_better(first, runs))
    rows = []
    for i in order:
        run = runs[i]
        cells = {"model": _model_cell(run, None, "")}
        for m in metrics:
            value, ci, _ = _stat(run.metrics.get(m))
            mark, note = per_metric_marks[m][i]
            cells[f"metric:{m}"] = Cell(value, ci[0] if ci else None, ci[1] if ci else None, mark=mark, note=note)
        cells["n_images"] = Cell(max((run.metrics.get(m, {}).get("n_samples") or 0) for m in metrics))
        cells["provenance"] = Cell()
        rows.append(Row(cells, provenance=run_provenance(run, [m for m in metrics if m in run.metrics])))
    return Table(id=f"preference-{suite}", title=title or f"{suite}: metrics side by side", columns=cols, rows=rows,
                 caption="Each metric on its own scale with its own leader; scores of different metrics are "
                         "never averaged.", notes=[tie_rule(alpha)], rank_key=f"metric:{first}")


def suite_tables(suite: str, runs: Sequence[Run], *, paired: Paired | None, alpha: float = ALPHA) -> list[Table]:
    """Every leaderboard table of one suite: its layout's tables, then the other metrics side by side.
    Partial runs (fewer prompts than the suite, e.g. `--limit 10`) are never ranked among complete ones:
    they get tables of their own, after the complete runs'."""
    complete = [r for r in runs if not r.is_partial and not r.is_incomplete]
    apart = [r for r in runs if r.is_partial or r.is_incomplete]
    tables = _suite_tables(suite, complete, paired=paired, alpha=alpha) if complete else []
    if apart:
        for t in _suite_tables(suite, apart, paired=paired, alpha=alpha):
            t.id = f"{t.id}-partial"
            t.title = f"{t.title} (partial or incomplete runs: not ranked)"
            t.notes = [*t.notes, "These runs scored fewer prompts than the suite has (e.g. --limit) or lack scores "
                       "for some of its samples (failed or missing images; the score is over the rest, as the "
                       "official scripts do): their numbers are not comparable with complete runs', nor with each "
                       "other, so no rank or leader is given. " + "; ".join(
                           f"{r.name}: {r.prompt_coverage}, {r.sample_coverage}" for r in apart)]
            tables.append(unranked(t))
    return tables


def unranked(table: Table) -> Table:
    """`table` without ranks, leader stars or tie marks (for runs that must not be ranked)."""
    table.columns = [c for c in table.columns if c.kind != "rank"]
    for row in table.rows:
        row.cells.pop("rank", None)
        for cell in row.cells.values():
            cell.mark = None
    table.notes = [n for n in table.notes if "★" not in n]
    table.rank_key = None
    return table


def _suite_tables(suite: str, runs: Sequence[Run], *, paired: Paired | None, alpha: float = ALPHA) -> list[Table]:
    layout = layout_for(suite, runs)
    metrics_present: dict[str, None] = {}
    for run in runs:
        for m in run.metrics:
            metrics_present[m] = None
    tables: list[Table] = []
    claimed: set[str] = set()
    if layout is not None and layout.side_by_side:
        labels = {metric: label for label, metric in layout.columns if metric}
        order = [m for _, m in layout.columns if m in metrics_present]
        if order:
            tables.append(preference_table(suite, order, [r for r in runs if any(m in r.metrics for m in order)],
                                           paired=paired, alpha=alpha, title=layout.title, labels=labels))
            claimed.update(order)
    elif layout is not None:
        for m in layout.metrics:
            for version, group in metric_groups(runs, m):
                tables.append(layout_table(suite, layout, m, version, group, paired=paired, alpha=alpha))
                claimed.add(m)
    if not claimed:  # no layout (or none of its metrics): the runs' primary metric, generically
        primaries = [r.primary_metric for r in runs if r.primary_metric]
        primary = max(set(primaries), key=primaries.count) if primaries else None
        if primary is not None:
            for version, group in metric_groups(runs, primary):
                tables.append(generic_table(suite, primary, version, group, paired=paired, alpha=alpha))
            claimed.add(primary)
    rest = [m for m in metrics_present if m not in claimed]
    if rest:
        with_rest = [r for r in runs if any(m in r.metrics for m in rest)]
        tables.append(preference_table(suite, rest, with_rest, paired=paired, alpha=alpha))
    return tables


# -- run page ----------------------------------------------------------------------------------------------
def category_table(run: Run, metric: str) -> Table:
    """One metric of one run: overall and per category, with intervals and counts."""
    scale, decimals = display_format(run.suite_name, metric, [run])
    layout = layout_for(run.suite_name, [run])
    mres = run.metrics.get(metric) or {}
    cols = [Column("category", "Category", "text"),
            Column("value", metric, "number", scale, decimals, ci=True),
            Column("n_prompts", "Prompts", "number", 1.0, 0), Column("n_images", "Images", "number", 1.0, 0)]
    rows = []
    labels = {cat: label for label, cat in layout.columns} if layout is not None else {}
    entries = [("overall", mres), *((str(c), e) for c, e in (mres.get("categories") or {}).items())]
    for name, entry in entries:
        value, ci, n = _stat(entry)
        label = "Overall" if name == "overall" else labels.get(name, name)
        rows.append(Row({"category": Cell(label), "value": Cell(value, *(ci or (None, None))),
                         "n_prompts": Cell(entry.get("n_prompts")), "n_images": Cell(n)}))
    return Table(id=f"{run.slug}-{_id(metric)}-categories", title=f"{metric} by category", columns=cols, rows=rows,
                 caption=f"{mres.get('aggregation', '')} aggregation; {int(100 * mres.get('confidence', 0.95))}% "
                         "intervals resample prompts (the images of one prompt move together).")


# -- comparison --------------------------------------------------------------------------------------------
def shared_prompts(runs: Sequence[Run]) -> list[str]:
    """Prompt ids every run has with the same text, in the first run's order."""
    maps = [r.prompts() for r in runs]
    base = maps[0]
    return [p for p in base if all(p in m and m[p][0] == base[p][0] for m in maps[1:])]


def prompt_means(run: Run, metric: str) -> dict[str, float]:
    """Mean value of each prompt's images (errors skipped)."""
    sums: dict[str, list[float]] = {}
    for rec in run.records.get(metric, []):
        v = rec.get("value")
        if is_number(v):
            sums.setdefault(str(rec["prompt_id"]), []).append(float(v))
    return {p: math.fsum(v) / len(v) for p, v in sums.items()}


def paired_table(runs: Sequence[Run], metrics: Sequence[str], paired: Paired, *, table_id: str,
                 alpha: float = ALPHA) -> Table:
    """Each run against the first (the baseline), per metric: difference, interval, p-value."""
    base = runs[0]
    cols = [Column("metric", "Metric", "text"), Column("run", "Run", "text"),
            Column("a", f"{base.name} (A)", "number", 1.0, 4), Column("b", "B", "number", 1.0, 4),
            Column("diff", "B − A", "number", 1.0, 4, ci=True), Column("p", "p", "number", 1.0, 4),
            Column("n_shared", "Shared prompts", "number", 1.0, 0), Column("verdict", "Verdict", "text")]
    rows = []
    for m in metrics:
        for run in runs[1:]:
            if m not in run.metrics or m not in base.metrics:
                continue
            test = paired(base, run, m)
            if test is None:
                continue
            p = test_p_value(test)
            better = test["difference"] > 0 if higher_is_better(m, runs) else test["difference"] < 0
            verdict = ("no significant difference" if p >= alpha else ("B better" if better else "A better"))
            versions = {base.metric_version(m), run.metric_version(m)}
            note = "" if len(versions) == 1 else "metric versions differ: not comparable"
            rows.append(Row({
                "metric": Cell(m), "run": Cell(run.name, href=f"{run.slug}.html"),
                "a": Cell(test.get("mean_a")), "b": Cell(test.get("mean_b")),
                "diff": Cell(test["difference"], test.get("low"), test.get("high"), note=test.get("method", "")),
                "p": Cell(p, note="exact permutation" if "permutation_p_value" in test else "paired bootstrap"),
                "n_shared": Cell(test.get("n_shared")), "verdict": Cell(verdict, note=note,
                                                                        mark="best" if p < alpha else None),
            }))
    return Table(id=table_id, title="Paired tests against the baseline", columns=cols, rows=rows,
                 caption=f"Difference B − A on the prompts both runs share; A is the baseline ({base.name}). "
                         f"Significant at α = {alpha:g} when p < α.")


def prompt_delta_table(runs: Sequence[Run], metric: str, prompts: Sequence[str], *, table_id: str,
                       href_of: Callable[[int], str] | None = None) -> Table:
    """Per prompt: each run's mean over its images, and its difference from the baseline. `href_of(n)` links
    the n-th prompt to its side-by-side images (default `#p-<n>` on the same page)."""
    scale, decimals = display_format(runs[0].suite_name, metric, runs)
    info = runs[0].prompts()
    means = [prompt_means(r, metric) for r in runs]
    cols = [Column("prompt_id", "Prompt id", "text"), Column("category", "Category", "text"),
            Column("prompt", "Prompt", "text")]
    for j, r in enumerate(runs):
        cols.append(Column(f"run{j}", r.name, "number", scale, decimals))
        if j:
            cols.append(Column(f"delta{j}", f"Δ {r.name}", "number", scale, decimals))
    rows = []
    for n, p in enumerate(prompts):
        text, cat = info[p]
        # anchors by position: prompt ids are untrusted text and may not be unique once slugified
        href = href_of(n) if href_of is not None else f"#p-{n}"
        cells = {"prompt_id": Cell(p, href=href), "category": Cell(cat or ""), "prompt": Cell(text)}
        for j, m in enumerate(means):
            cells[f"run{j}"] = Cell(m.get(p))
            if j:
                a, b = means[0].get(p), m.get(p)
                d = b - a if is_number(a) and is_number(b) else None
                cells[f"delta{j}"] = Cell(d, mark=None if not d else ("up" if d > 0 else "down"))
        rows.append(Row(cells, attrs={"category": cat or ""}))
    return Table(id=table_id, title=f"Per-prompt {metric}", columns=cols, rows=rows,
                 caption=f"Mean {metric} over each prompt's images; Δ = run − baseline ({runs[0].name}).")


def category_compare_table(runs: Sequence[Run], metric: str, *, table_id: str) -> Table:
    """Per category, each run's value (with interval) side by side."""
    scale, decimals = display_format(runs[0].suite_name, metric, runs)
    layout = layout_for(runs[0].suite_name, runs)
    labels: dict[str, str] = {}
    if layout is not None and metric in layout.metrics:
        labels = {cat: label for label, cat in layout.columns if cat}
    results = [r.metrics.get(metric) or {} for r in runs]
    prompt_sets = [set(r.prompts()) for r in runs]
    shared = set.intersection(*prompt_sets) if prompt_sets else set()
    title = f"{metric} by category"
    if any(ps != shared for ps in prompt_sets) and shared and all(r.records.get(metric) for r in runs):
        # runs of different prompt sets (a --limit run beside a complete one): every value recomputed on the
        # prompts all of them scored, so no column mixes 12-prompt and 104-prompt numbers under one header
        from paintbench.harness.aggregate import aggregate_metric

        results = []
        for r in runs:
            cat_of = {p: c for p, (_, c) in r.prompts().items() if p in shared}
            recs = [rec for rec in r.records[metric] if rec.get("prompt_id") in shared]
            m = r.metrics.get(metric) or {}
            results.append(aggregate_metric(recs, cat_of, aggregation=str(m.get("aggregation", "mean")), n_resamples=1000))
        title = f"{metric} by category, on the {len(shared)} prompts every run scored"
    cats: dict[str, None] = {"overall": None}
    for res in results:
        for c in res.get("categories") or {}:
            cats[str(c)] = None
    cols = [Column("category", "Category", "text")]
    cols += [Column(f"run{j}", r.name, "number", scale, decimals, ci=True) for j, r in enumerate(runs)]
    rows = []
    for c in cats:
        cells = {"category": Cell("Overall" if c == "overall" else labels.get(c, c))}
        for j, res in enumerate(results):
            entry = res if c == "overall" else (res.get("categories") or {}).get(c)
            value, ci, _ = _stat(entry)
            cells[f"run{j}"] = Cell(value, *(ci or (None, None)))
        rows.append(Row(cells))
    return Table(id=table_id, title=title, columns=cols, rows=rows)


# -- training ----------------------------------------------------------------------------------------------
def training_summary_table(log: TrainLog) -> Table:
    """Every numeric key: first, last, min and max over the logged steps."""
    cols = [Column("key", "Key", "text"), Column("first", "First", "number", 1.0, 4),
            Column("last", "Last", "number", 1.0, 4), Column("min", "Min", "number", 1.0, 4),
            Column("max", "Max", "number", 1.0, 4), Column("n", "Steps", "number", 1.0, 0)]
    rows = []
    for k in log.numeric_keys():
        pts = log.series(k)
        if not pts:
            continue
        ys = [y for _, y in pts]
        if all(float(y).is_integer() for y in ys):   # counts (tokens, steps): printed as whole numbers
            ys = [int(y) for y in ys]
        rows.append(Row({"key": Cell(k), "first": Cell(ys[0]), "last": Cell(ys[-1]), "min": Cell(min(ys)),
                         "max": Cell(max(ys)), "n": Cell(len(ys))}))
    return Table(id=f"{log.slug}-summary", title="All logged values", columns=cols, rows=rows)


def stage_table(log: TrainLog) -> Table | None:
    """`stage/<stage>/<stat>` at the last step that has them: rows stages, columns statistics."""
    stages: dict[str, dict[str, float]] = {}
    for k in log.numeric_keys():
        parts = k.split("/")
        if len(parts) == 3 and parts[0] == "stage":
            pts = log.series(k)
            if pts:
                stages.setdefault(parts[1], {})[parts[2]] = pts[-1][1]
    if not stages:
        return None
    stats: dict[str, None] = {}
    for s in stages.values():
        for k in s:
            stats[k] = None
    cols = [Column("stage", "Stage", "text")] + [Column(f"s:{s}", s, "number", 1.0, 4) for s in stats]
    rows = [Row({"stage": Cell(st), **{f"s:{s}": Cell(v.get(s)) for s in stats}}) for st, v in stages.items()]
    return Table(id=f"{log.slug}-stages", title="Per-stage statistics (last step)", columns=cols, rows=rows)


def _id(text: str) -> str:
    from paintbench.leaderboards.model import slugify

    return slugify(text, limit=60)
