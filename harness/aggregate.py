"""From per-sample score records to the numbers a paper reports, with confidence intervals.

Pure functions over plain records. Confidence intervals resample prompts (the images of one prompt
are not independent); a `macro` metric (GenEval's Overall) is the unweighted mean of its per-category
means, and its interval resamples prompts within each category.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from paintbench.harness import stats

SET_TRANSFORMS: dict[str, Callable[[float], float]] = {
    "clamp_min_0": lambda v: max(v, 0.0),   # torchmetrics' CLIPScore.compute(): max(mean, 0)
}
"""Monotone maps applied to a set's mean (and its interval bounds, which a monotone map carries over
exactly for percentile intervals) when a metric's official set value is not the mean of per-pair values."""


def values_by_prompt(records: Iterable[Mapping[str, Any]], detail: str | None = None
                     ) -> tuple[dict[str, list[float]], int]:
    """{prompt_id: [values]} over records with a value, and the number of failed records. With `detail`,
    the per-pair quantity is read from `details[detail]` instead of `value` (records without it fail)."""
    out: dict[str, list[float]] = defaultdict(list)
    failed = 0
    for r in records:
        v = r.get("value")
        if detail is not None and v is not None:
            v = (r.get("details") or {}).get(detail)
        if v is None:
            failed += 1
            continue
        out[str(r["prompt_id"])].append(float(v))
    return dict(out), failed


def _transformed(entry: dict[str, Any], transform: Callable[[float], float]) -> dict[str, Any]:
    out = dict(entry)
    if out.get("value") is not None:
        out["value"] = transform(out["value"])
    out["ci"] = [None if b is None else transform(b) for b in out.get("ci", [None, None])]
    return out


def _estimate(est: stats.Estimate) -> dict[str, Any]:
    return {"value": est.value, "ci": [est.low, est.high], "n_prompts": est.n_prompts,
            "n_samples": est.n_samples}


def aggregate_metric(records: list[Mapping[str, Any]], category_of: Mapping[str, str | None], *,
                     aggregation: str, categories: list[str] | None = None, n_resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0,
                     set_value: tuple[str, str] | None = None) -> dict[str, Any]:
    """Value, CI and counts overall and per category for one metric. `set_value` (detail key, transform;
    the metric's `ProviderSpec.set_value`) computes the official set value instead of the mean of the
    per-pair values: the transform of the mean of that detail."""
    if set_value is not None:
        detail, name = set_value
        out = _aggregate(records, category_of, aggregation=aggregation, categories=categories,
                         n_resamples=n_resamples, confidence=confidence, seed=seed, detail=detail)
        out = _transformed(out, SET_TRANSFORMS[name])
        out["categories"] = {c: _transformed(e, SET_TRANSFORMS[name]) for c, e in out["categories"].items()}
        out["set_value"] = f"{name}(mean of {detail})"
        return out
    return _aggregate(records, category_of, aggregation=aggregation, categories=categories,
                      n_resamples=n_resamples, confidence=confidence, seed=seed)


def _aggregate(records: list[Mapping[str, Any]], category_of: Mapping[str, str | None], *,
               aggregation: str, categories: list[str] | None, n_resamples: int, confidence: float,
               seed: int, detail: str | None = None) -> dict[str, Any]:
    by_prompt, failed = values_by_prompt(records, detail)
    out: dict[str, Any] = {"aggregation": aggregation, "n_failed": failed, "confidence": confidence,
                           "n_resamples": n_resamples}
    if not by_prompt:
        out.update({"value": None, "ci": [None, None], "n_prompts": 0, "n_samples": 0, "categories": {}})
        return out
    cats = {p: category_of.get(p) for p in by_prompt}
    present = [c for c in (categories or []) if c in set(cats.values())]
    present += sorted({c for c in cats.values() if c is not None} - set(present))
    kw = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    expected = {c for c in category_of.values() if c is not None}
    unscored = sorted(expected - set(present))
    if aggregation == "macro" and present:
        if any(c is None for c in cats.values()):
            missing = sorted(p for p, c in cats.items() if c is None)[:5]
            raise ValueError(f"macro aggregation needs a category for every prompt (missing for {missing})")
        if unscored:  # a macro mean over fewer categories is a different number: report none at all
            out.update({"value": None, "ci": [None, None], "n_prompts": len(by_prompt),
                        "n_samples": sum(map(len, by_prompt.values())), "missing_categories": unscored})
        else:
            out.update(_estimate(stats.bootstrap_macro_ci(by_prompt, cats, categories=present, **kw)))
    else:
        out.update(_estimate(stats.bootstrap_ci(by_prompt, **kw)))
    per_cat: dict[str, Any] = {}
    for c in present:
        sub = {p: v for p, v in by_prompt.items() if cats[p] == c}
        per_cat[c] = _estimate(stats.bootstrap_ci(sub, **kw))
    out["categories"] = per_cat
    return out


def compare_metric(records_a: list[Mapping[str, Any]], records_b: list[Mapping[str, Any]],
                   category_of: Mapping[str, str | None], *, aggregation: str, n_resamples: int = 10_000,
                   confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Paired comparison of two runs of one metric on their shared prompts (b − a)."""
    a, _ = values_by_prompt(records_a)
    b, _ = values_by_prompt(records_b)
    shared = set(a) & set(b)
    cats = {p: category_of.get(p) for p in shared}
    use_macro = aggregation == "macro" and shared and all(c is not None for c in cats.values())
    cmp = stats.paired_bootstrap(a, b, category_of_prompt=cats if use_macro else None,
                                 n_resamples=n_resamples, confidence=confidence, seed=seed)
    out = cmp.to_dict()
    if len(shared) <= 20:  # tiny comparisons: the exact permutation test is the better p-value
        out["permutation_p_value"] = stats.paired_permutation_test(a, b, seed=seed).p_value
    return out
