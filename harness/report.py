"""Reading run directories back: results tables and paired comparisons of two runs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from paintbench.errors import UserError
from paintbench.harness.aggregate import compare_metric
from paintbench.harness.badges import headline_tags
from paintbench.harness.records import read_scores
from paintbench.harness.rundir import RunDir, read_jsonl
from paintbench.metrics.registry import format_value
from paintbench.text import printable


def load_results(run: str | Path) -> dict[str, Any]:
    if not Path(run).is_dir():
        raise UserError(f"{run}: no such folder")
    from paintbench import files

    path = RunDir(run).results_path
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{run}: no results.json (is the run finished? rerun the same `paintbench eval` to resume)")
    results = files.load_json(path, "summary", what="paintbench results")
    why = results_problem(results)
    if why:
        raise UserError(f"{path}: not a paintbench results file ({why}); rerun the same `paintbench eval` to "
                        "rebuild it")
    return results


def _number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def results_problem(results: Any) -> str | None:
    """What makes `results` unusable as a results.json (None when the printers can read it). Pure."""
    if not isinstance(results, dict):
        return "not a mapping"
    suite = results.get("suite")
    if not isinstance(suite, dict) or not {"name", "version", "n_prompts", "images_per_prompt"} <= set(suite):
        return "no suite section"
    if not isinstance(results.get("generator"), dict):
        return "no generator section"
    metrics = results.get("metrics")
    if not isinstance(metrics, dict):
        return "no metrics section"
    for name, m in metrics.items():
        ci = m.get("ci") if isinstance(m, dict) else None
        if not (isinstance(m, dict) and _number_or_none(m.get("value")) and isinstance(ci, list) and len(ci) == 2
                and all(_number_or_none(x) for x in ci) and isinstance(m.get("aggregation"), str)
                and isinstance(m.get("categories", {}), dict)):
            return f"metric {str(name)[:60]!r} lacks value, ci or aggregation"
        for cat, c in m.get("categories", {}).items():
            cci = c.get("ci") if isinstance(c, dict) else None
            if not (isinstance(c, dict) and _number_or_none(c.get("value")) and isinstance(cci, list) and len(cci) == 2
                    and all(_number_or_none(x) for x in cci)):
                return f"category {str(cat)[:60]!r} of {str(name)[:60]!r} lacks value or ci"
    return None


def format_results(results: dict[str, Any]) -> str:
    suite = results["suite"]
    lines = [f"suite {printable(suite['name'])} v{printable(suite['version'])}: {suite['n_prompts']} prompts x "
             f"{suite['images_per_prompt']} images; generator {printable(results['generator'].get('generator'))}"]
    if partial_note(suite):
        lines.append(partial_note(suite))
    for name, m in results["metrics"].items():
        conf = round(100 * m.get("confidence", 0.95))
        star = " (primary)" if m.get("primary") else ""
        star += headline_tags(str(name), m.get("value"), m.get("provenance"))
        lo, hi = m["ci"]
        f = functools.partial(format_value, str(name))
        lines.append(f"\n{printable(name)}{star}: {f(m['value'])}  [{conf}% CI {f(lo)}, {f(hi)}]"
                     f"  n={m['n_samples']} images / {m['n_prompts']} prompts ({m['aggregation']})"
                     + (f", {m['n_failed']} failed" if m.get("n_failed") else "")
                     + (f"; no value: nothing scored in {', '.join(m['missing_categories'])}"
                        if m.get("missing_categories") else ""))
        expected, scored = m.get("n_expected"), m.get("n_samples")
        if isinstance(expected, int) and isinstance(scored, int) and scored < expected:
            lines.append(f"  INCOMPLETE: {scored} of {expected} samples scored (the value is over the scored ones, "
                         "as the official scripts skip missing images); not comparable with a complete run")
        for cat, c in m.get("categories", {}).items():
            clo, chi = c["ci"]
            lines.append(f"  {printable(cat, 40):<16} {f(c['value']):>8}  [{f(clo)}, {f(chi)}]  "
                         f"n={c['n_samples']}")
    if results.get("generation_failures"):
        lines.append(f"\n{len(results['generation_failures'])} image(s) could not be generated or found:")
        lines += [f"  {printable(e, 300)}" for e in results["generation_failures"][:10]]
        if len(results["generation_failures"]) > 10:
            lines.append(f"  ... and {len(results['generation_failures']) - 10} more (results.json lists them all)")
    return "\n".join(lines)


def compare_runs(run_a: str | Path, run_b: str | Path, *, metrics: list[str] | None = None,
                 n_resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    ra, rb = load_results(run_a), load_results(run_b)
    da, db = RunDir(run_a), RunDir(run_b)
    shared_metrics = [m for m in ra["metrics"] if m in rb["metrics"] and (not metrics or m in metrics)]
    if not shared_metrics:
        raise UserError(f"{run_a} and {run_b} share no metric{' among ' + ', '.join(metrics) if metrics else ''}")
    # prompts are matched by id AND text, so runs of different suite versions never pair wrong prompts
    pa = _prompts(da)
    pb = _prompts(db)
    same = {pid for pid in set(pa) & set(pb) if pa[pid][0] == pb[pid][0]}
    if not same:
        raise UserError(f"{run_a} and {run_b} share no prompt (same id and text); nothing to compare")
    out: dict[str, Any] = {"run_a": str(run_a), "run_b": str(run_b), "same_suite": ra["suite"].get("hash") == rb["suite"].get("hash"),
                           "direction": "difference = B - A", "metrics": {},
                           "partial_a": partial_note(ra["suite"]), "partial_b": partial_note(rb["suite"])}
    for m in shared_metrics:
        agg = ra["metrics"][m]["aggregation"]
        all_a, all_b = read_scores(da.scores_path(m), m)[0], read_scores(db.scores_path(m), m)[0]
        recs_a = [r for r in all_a if r["prompt_id"] in same]
        recs_b = [r for r in all_b if r["prompt_id"] in same]
        category_of = {p: pa[p][1] for p in same}
        res = compare_metric(recs_a, recs_b, category_of, aggregation=agg, n_resamples=n_resamples, seed=seed)
        scored_a = {r["prompt_id"] for r in all_a if r.get("value") is not None}
        scored_b = {r["prompt_id"] for r in all_b if r.get("value") is not None}
        res["n_only_a"], res["n_only_b"] = len(scored_a - scored_b), len(scored_b - scored_a)   # said by the printer
        res["a"] = ra["metrics"][m]["value"]
        res["b"] = rb["metrics"][m]["value"]
        res["version_a"] = (ra["metrics"][m].get("provenance") or {}).get("version")
        res["version_b"] = (rb["metrics"][m].get("provenance") or {}).get("version")
        out["metrics"][m] = res
    return out


def partial_note(suite: dict[str, Any]) -> str:
    """'PARTIAL: 12 of 104 prompts ...' for a run of fewer prompts than its suite (`--limit`), else ''."""
    total = suite.get("n_prompts_suite")
    if isinstance(total, int) and isinstance(suite.get("n_prompts"), int) and suite["n_prompts"] < total:
        return (f"PARTIAL: {suite['n_prompts']} of {total} prompts (--limit); its numbers are not comparable with "
                "a complete run's")
    return ""


def _prompts(rd: RunDir) -> dict[str, tuple[str, str | None]]:
    """prompt id -> (text, category) of a run's samples; a damaged record (no text id or prompt) is
    left out, so its prompt is simply not shared."""
    return {r["prompt_id"]: (r["prompt"], r.get("category")) for r in read_jsonl(rd.samples_path)[0]
            if isinstance(r.get("prompt_id"), str) and isinstance(r.get("prompt"), str)}


def format_comparison(cmp: dict[str, Any]) -> str:
    lines = [f"A = {printable(cmp['run_a'], 300)}\nB = {printable(cmp['run_b'], 300)}\n{cmp['direction']}"
             + ("" if cmp["same_suite"] else "  (different suite hashes: compared on prompts with equal id and text)")]
    for side in ("a", "b"):
        if cmp.get(f"partial_{side}"):
            lines.append(f"{side.upper()} is {cmp[f'partial_{side}']}")
    for m, r in cmp["metrics"].items():
        lo, hi = r["low"], r["high"]
        conf = round(100 * r["confidence"])
        f = functools.partial(format_value, str(m))
        lines.append(f"{printable(m)}: A {f(r['mean_a'])}  B {f(r['mean_b'])} (on the shared prompts)  diff "
                     f"{f(r['difference'], signed=True)} [{conf}% CI {f(lo, signed=True)}, {f(hi, signed=True)}]  "
                     f"{p_text(r['p_value'], r.get('n_resamples'))}  "
                     f"shared prompts {r['n_shared']}"
                     + (f"  permutation p={r['permutation_p_value']:.4g}" if "permutation_p_value" in r else ""))
        if r.get("version_a") != r.get("version_b"):
            lines.append(f"  warning: metric versions differ ({r['version_a']} vs {r['version_b']})")
        if r.get("n_only_a") or r.get("n_only_b"):
            lines.append(f"  WARNING: the runs scored different prompts ({r.get('n_only_a', 0)} only in A, "
                         f"{r.get('n_only_b', 0)} only in B); the test uses the {r['n_shared']} both scored, and "
                         "the headline values A and B above are not over the same prompts")
    return "\n".join(lines)


def p_text(p: float, n_resamples: int | None) -> str:
    """A bootstrap p-value as text: at its floor 1/(B+1) it says `p < 1/B` (the resampling cannot
    resolve smaller values), never `p=9.999e-05`."""
    if n_resamples and p <= 1.0 / (n_resamples + 1) * (1 + 1e-9):
        return f"p < {1.0 / n_resamples:.0e} (bootstrap floor, {n_resamples} resamples)"
    return f"p={p:.4g}"
