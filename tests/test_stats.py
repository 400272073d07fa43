"""Tests for harness.stats against closed forms, hand enumerations and an independent implementation (scipy)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from scipy import stats as sps

from paintbench.harness import stats
from paintbench.harness.stats import (
    Comparison,
    Estimate,
    bootstrap_by_category,
    bootstrap_ci,
    bootstrap_macro_ci,
    is_significant,
    paired_bootstrap,
    paired_permutation_test,
)


def _flatten_to_single_images(values_by_prompt: dict) -> list[list[float]]:
    """The naive (wrong for clustered data) design: every image treated as its own independent prompt."""
    return [[v] for vals in values_by_prompt.values() for v in vals]


def _normal_p(z: float) -> float:
    return 2.0 * (1.0 - 0.5 * (1.0 + math.erf(abs(z) / math.sqrt(2.0))))


# ---------------------------------------------------------------------------------------------------------
# Point estimates and degenerate intervals
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", stats.METHODS)
def test_constant_values_give_zero_width_interval(method):
    data = {f"p{i}": [0.7] * (1 + i % 3) for i in range(50)}
    est = bootstrap_ci(data, method=method, n_resamples=2000)
    assert est.value == pytest.approx(0.7, abs=1e-15)
    assert est.low == est.high == est.value
    assert est.se == 0.0


@pytest.mark.parametrize("method", stats.METHODS)
def test_single_prompt_collapses_to_its_mean(method):
    est = bootstrap_ci({"only": [0.1, 0.9, 0.5]}, method=method, n_resamples=500)
    assert est.value == pytest.approx(0.5)
    assert est.low == est.high == est.value
    assert (est.n_prompts, est.n_samples) == (1, 3)


def test_unequal_counts_use_the_image_mean_and_prompt_mean_weighs_prompts_equally():
    data = {"a": [1.0, 1.0, 1.0], "b": [0.0], "c": [0.5, 0.0]}
    assert bootstrap_ci(data, n_resamples=10).value == pytest.approx(3.5 / 6)
    assert bootstrap_ci(data, statistic="prompt_mean", n_resamples=10).value == pytest.approx(
        (1 + 0 + 0.25) / 3
    )


def test_booleans_are_pass_rates():
    est = bootstrap_ci({"x": [True, False, True, True], "y": [False, False, True, False]}, n_resamples=10)
    assert est.value == pytest.approx(4 / 8)


# ---------------------------------------------------------------------------------------------------------
# Interval width against closed forms
# ---------------------------------------------------------------------------------------------------------


def test_bootstrap_se_of_independent_prompts_matches_s_over_sqrt_n():
    x = np.random.default_rng(11).normal(3.0, 2.0, size=2000)
    est = bootstrap_ci([[v] for v in x], seed=5)
    analytic = x.std() / math.sqrt(x.size)  # the ideal bootstrap SE of a mean uses the ddof=0 SD
    assert est.se == pytest.approx(analytic, rel=0.03)
    assert est.half_width == pytest.approx(1.959964 * analytic, rel=0.04)
    assert est.low < x.mean() < est.high


def test_sum_of_two_bernoullis_independent_vs_perfectly_correlated():
    # 1000 prompts x 2 binary images. Independent-looking: pairs (0,0),(0,1),(1,1) in 1:2:1, prompt means
    # 0, .5, 1 with variance 1/8 -> SE = sqrt(0.125/1000), which equals the naive image-level SE sqrt(.25/2000).
    indep = {i: [0.0, 0.0] for i in range(250)}
    indep |= {i: [0.0, 1.0] for i in range(250, 750)}
    indep |= {i: [1.0, 1.0] for i in range(750, 1000)}
    # Perfectly correlated: pairs (0,0),(1,1) in 1:1, prompt means variance 1/4 -> SE = sqrt(0.25/1000),
    # while treating the 2000 images as independent still gives sqrt(0.25/2000): too narrow by sqrt(2).
    corr = {i: [float(i % 2)] * 2 for i in range(1000)}

    cl_indep, nv_indep = bootstrap_ci(indep, seed=1), bootstrap_ci(_flatten_to_single_images(indep), seed=2)
    cl_corr, nv_corr = bootstrap_ci(corr, seed=3), bootstrap_ci(_flatten_to_single_images(corr), seed=4)

    assert cl_indep.se == pytest.approx(math.sqrt(0.125 / 1000), rel=0.03)
    assert nv_indep.se == pytest.approx(math.sqrt(0.25 / 2000), rel=0.03)
    assert cl_indep.half_width == pytest.approx(nv_indep.half_width, rel=0.05)

    assert cl_corr.se == pytest.approx(math.sqrt(0.25 / 1000), rel=0.03)
    assert nv_corr.se == pytest.approx(math.sqrt(0.25 / 2000), rel=0.03)
    assert cl_corr.half_width / nv_corr.half_width == pytest.approx(math.sqrt(2.0), rel=0.05)


def test_ratio_estimator_se_matches_linearisation_for_unequal_counts():
    rng = np.random.default_rng(21)
    counts = rng.integers(1, 7, size=3000)
    data = {f"q{i}": rng.normal(0.1 * n, 1.0, size=n) for i, n in enumerate(counts)}
    sums = np.array([v.sum() for v in data.values()])
    total_n = counts.sum()
    ratio = sums.sum() / total_n
    # Delta method for R = sum(S)/sum(n) under with-replacement resampling of prompts.
    analytic = math.sqrt(np.sum((sums - ratio * counts) ** 2)) / total_n
    est = bootstrap_ci(data, seed=9)
    assert est.value == pytest.approx(ratio, rel=1e-12)
    assert est.n_samples == total_n
    assert est.se == pytest.approx(analytic, rel=0.04)


@pytest.mark.parametrize("method", stats.METHODS)
def test_interval_is_shift_and_scale_equivariant(method):
    rng = np.random.default_rng(3)
    data = {i: rng.exponential(1.0, size=1 + i % 4) for i in range(300)}
    base = bootstrap_ci(data, method=method, n_resamples=3000, seed=8)
    shifted = bootstrap_ci({k: v + 2.5 for k, v in data.items()}, method=method, n_resamples=3000, seed=8)
    scaled = bootstrap_ci({k: v * 4.0 for k, v in data.items()}, method=method, n_resamples=3000, seed=8)
    assert (shifted.low, shifted.value, shifted.high) == pytest.approx(
        (base.low + 2.5, base.value + 2.5, base.high + 2.5), abs=1e-9
    )
    assert (scaled.low, scaled.value, scaled.high) == pytest.approx(
        (base.low * 4, base.value * 4, base.high * 4), rel=1e-9
    )


@pytest.mark.parametrize(
    ("ours", "theirs"), [("percentile", "percentile"), ("basic", "basic"), ("bca", "BCa")]
)
def test_iid_intervals_agree_with_scipy_bootstrap(ours, theirs):
    x = np.random.default_rng(7).lognormal(0.0, 0.8, size=80)  # skewed, so BCa differs from percentile
    est = bootstrap_ci([[v] for v in x], method=ours, n_resamples=20_000, seed=1)
    ref = sps.bootstrap(
        (x,),
        np.mean,
        n_resamples=20_000,
        method=theirs,
        confidence_level=0.95,
        random_state=np.random.default_rng(2),
    ).confidence_interval
    width = ref.high - ref.low
    assert est.low == pytest.approx(ref.low, abs=0.04 * width)
    assert est.high == pytest.approx(ref.high, abs=0.04 * width)


def test_bca_moves_the_interval_towards_the_long_tail():
    x = np.random.default_rng(7).lognormal(0.0, 1.0, size=60)
    pct = bootstrap_ci([[v] for v in x], method="percentile", seed=1)
    bca = bootstrap_ci([[v] for v in x], method="bca", seed=1)
    assert bca.high > pct.high and bca.low > pct.low


# ---------------------------------------------------------------------------------------------------------
# Stratified macro average
# ---------------------------------------------------------------------------------------------------------


def _bernoulli_category(prefix: str, n: int, passes: int) -> dict[str, list[float]]:
    return {f"{prefix}{i}": [1.0 if i < passes else 0.0] for i in range(n)}


def test_macro_ci_matches_variance_of_a_mean_of_category_means():
    sizes, passes = (
        {"counting": 80, "colors": 200, "position": 600},
        {"counting": 20, "colors": 150, "position": 60},
    )
    data, cat = {}, {}
    for name, n in sizes.items():
        part = _bernoulli_category(name, n, passes[name])
        data |= part
        cat |= dict.fromkeys(part, name)
    rates = {c: passes[c] / sizes[c] for c in sizes}
    # Stratified bootstrap: categories independent, each mean has variance p(1-p)/n; macro = mean of K means.
    analytic = math.sqrt(sum(rates[c] * (1 - rates[c]) / sizes[c] for c in sizes)) / len(sizes)

    est = bootstrap_macro_ci(data, cat, categories=["colors", "counting", "position"], seed=4)
    assert est.value == pytest.approx(sum(rates.values()) / 3)
    pooled = bootstrap_ci(data, n_resamples=10).value
    assert est.value != pytest.approx(pooled, abs=0.05)  # the macro mean is not the pooled image mean
    assert est.se == pytest.approx(analytic, rel=0.03)
    assert est.statistic == "macro_mean" and est.n_prompts == 880

    per_cat = bootstrap_by_category(data, cat, n_resamples=500)
    assert list(per_cat) == ["colors", "counting", "position"]
    assert {c: e.value for c, e in per_cat.items()} == pytest.approx(rates)


def test_macro_ci_with_one_category_equals_the_plain_bootstrap():
    data = {i: [float(i % 3), float(i % 5)] for i in range(100)}
    macro = bootstrap_macro_ci(data, dict.fromkeys(data, "all"), seed=6, method="bca", n_resamples=2000)
    plain = bootstrap_ci(data, seed=6, method="bca", n_resamples=2000)
    assert (macro.value, macro.low, macro.high) == pytest.approx(
        (plain.value, plain.low, plain.high), abs=1e-12
    )


def test_macro_ci_rejects_missing_categories():
    data = _bernoulli_category("a", 5, 2) | _bernoulli_category("b", 5, 3)
    cat = {k: k[0] for k in data}
    with pytest.raises(ValueError, match="categories without any prompt"):
        bootstrap_macro_ci(data, cat, categories=["a", "b", "c"], n_resamples=10)
    del cat["b4"]
    with pytest.raises(ValueError, match="'b4'"):
        bootstrap_macro_ci(data, cat, n_resamples=10)


# ---------------------------------------------------------------------------------------------------------
# Paired comparisons
# ---------------------------------------------------------------------------------------------------------


def _run(n: int, seed: int, per_prompt: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, size=n)
    return {f"p{i}": difficulty[i] + rng.normal(0.0, 0.3, size=per_prompt) for i in range(n)}


def test_identical_runs_give_p_one():
    a = _run(300, 1)
    boot = paired_bootstrap(a, a)
    assert boot.difference == 0.0 and boot.low == boot.high == 0.0
    assert boot.p_value == 1.0
    assert paired_permutation_test(a, a).p_value == 1.0
    small = {k: a[k] for k in list(a)[:10]}
    assert paired_permutation_test(small, small).p_value == 1.0
    assert not is_significant(boot)


def test_exact_shift_gives_a_point_interval_and_the_smallest_p():
    a = _run(200, 2)
    b = {k: v + 0.05 for k, v in a.items()}
    comp = paired_bootstrap(a, b, n_resamples=5000)
    assert comp.difference == pytest.approx(0.05, abs=1e-12)
    assert comp.low == comp.high == comp.difference
    assert comp.p_value == 1 / 5001


def test_consistent_shift_is_significant_and_direction_is_b_minus_a():
    a = _run(200, 3)
    rng = np.random.default_rng(4)
    b = {k: v + 0.05 + rng.normal(0, 0.05, size=v.size) for k, v in a.items()}
    up, down = paired_bootstrap(a, b), paired_bootstrap(b, a)
    assert up.difference > 0 and up.low > 0 and up.p_value < 0.001
    assert down.difference == pytest.approx(-up.difference) and down.high < 0 and down.p_value < 0.001
    assert up.mean_b - up.mean_a == pytest.approx(up.difference)
    assert paired_permutation_test(a, b).p_value < 0.001
    assert is_significant(up) and is_significant(up, alpha=0.001)


def test_pairing_removes_prompt_difficulty():
    a = _run(400, 5)
    rng = np.random.default_rng(6)
    b = {k: v + 0.02 + rng.normal(0, 0.01, size=v.size) for k, v in a.items()}
    comp = paired_bootstrap(a, b)
    d = np.array([b[k].mean() - a[k].mean() for k in sorted(a)])
    assert comp.se == pytest.approx(d.std() / math.sqrt(d.size), rel=0.03)
    assert comp.se < 0.05 * bootstrap_ci(a).se  # unpaired uncertainty would be dominated by prompt difficulty


def test_paired_p_values_match_normal_theory_at_t_equal_two():
    n = 400
    z = np.random.default_rng(8).normal(size=n)
    d = (z - z.mean()) / z.std() + 2.0 / math.sqrt(n)  # mean / (sd / sqrt(n)) == 2 exactly
    a = {i: [0.0] for i in range(n)}
    b = {i: [d[i]] for i in range(n)}
    expected = _normal_p(2.0)  # 0.0455
    assert paired_bootstrap(a, b, n_resamples=20_000, seed=1).p_value == pytest.approx(expected, abs=0.01)
    # Sign-flip null variance is mean(d^2)/n = (1 + mean^2)/n, so the reference z is slightly below 2.
    perm_z = 2.0 / math.sqrt(1.0 + 4.0 / n)
    perm = paired_permutation_test(a, b, n_resamples=20_000, seed=1)
    assert perm.method == "permutation-montecarlo"
    assert perm.p_value == pytest.approx(_normal_p(perm_z), abs=0.01)


def test_shared_and_dropped_prompts_are_reported():
    a = {i: [0.5] for i in range(10)} | {"only_a": [1.0]}
    b = {i: [0.6] for i in range(10)} | {"only_b1": [0.0], "only_b2": [0.0]}
    for comp in (paired_bootstrap(a, b, n_resamples=100), paired_permutation_test(a, b)):
        assert (comp.n_shared, comp.n_only_a, comp.n_only_b) == (10, 1, 2)
        assert comp.difference == pytest.approx(0.1)  # the one-run prompts do not leak into the means
    with pytest.raises(ValueError, match="share no prompt"):
        paired_bootstrap({"x": [1.0]}, {"y": [1.0]})


def test_exact_permutation_p_value_matches_hand_enumeration():
    # d = (1, 2, 3, -0.5), observed sum 5.5. Over the 16 sign vectors the sums are +-6.5 (signs making every
    # term positive), then 6.5 minus twice one magnitude: +-5.5 (flip 0.5), +-4.5, +-2.5, +-0.5, and the
    # remaining 8 vectors flip two or more terms, giving |sum| <= 3.5. |sum| >= 5.5 for 4 of 16: p = 0.25.
    a = {i: [0.0, 0.0] for i in range(4)}
    b = {0: [1.0, 1.0], 1: [2.0, 2.0], 2: [3.0, 3.0], 3: [-0.5, -0.5]}
    comp = paired_permutation_test(a, b)
    assert comp.method == "permutation-exact" and comp.n_resamples == 16
    assert comp.p_value == 4 / 16
    assert comp.difference == pytest.approx(5.5 / 4)
    # All four differences equal: only the all-plus and all-minus vectors reach |sum| = 4 -> p = 2/16.
    assert paired_permutation_test(a, {key: [1.0] for key in range(4)}).p_value == 2 / 16


def test_monte_carlo_permutation_approximates_exact_enumeration():
    rng = np.random.default_rng(12)
    a = {i: [float(x)] for i, x in enumerate(rng.normal(size=16))}
    b = {i: [v[0] + 0.3 + float(rng.normal())] for i, v in a.items()}
    exact = paired_permutation_test(a, b)
    approx = paired_permutation_test(a, b, exact=False, n_resamples=40_000, seed=3)
    assert exact.method == "permutation-exact" and approx.method == "permutation-montecarlo"
    assert approx.p_value == pytest.approx(exact.p_value, abs=0.01)
    with pytest.raises(ValueError, match="exact enumeration"):
        paired_permutation_test({i: [0.0] for i in range(30)}, {i: [1.0] for i in range(30)}, exact=True)


def test_paired_macro_difference_is_difference_of_macro_means():
    a = _run(120, 9, per_prompt=2)
    rng = np.random.default_rng(10)
    b = {k: v + rng.normal(0.1, 0.2, size=v.size) for k, v in a.items()}
    cat = {k: ("small" if i < 20 else "large") for i, k in enumerate(sorted(a))}
    comp = paired_bootstrap(a, b, category_of_prompt=cat, n_resamples=2000)
    ma, mb = bootstrap_macro_ci(a, cat, n_resamples=10), bootstrap_macro_ci(b, cat, n_resamples=10)
    assert comp.difference == pytest.approx(mb.value - ma.value, abs=1e-12)
    assert (comp.mean_a, comp.mean_b) == pytest.approx((ma.value, mb.value), abs=1e-12)
    assert comp.statistic == "macro_mean" and comp.low < comp.difference < comp.high


def test_is_significant_uses_the_p_value():
    comp = paired_bootstrap(
        {i: [0.0] for i in range(5)}, {i: [float(i % 2)] for i in range(5)}, n_resamples=200
    )
    assert is_significant(comp, alpha=min(1.0, comp.p_value + 1e-9)) is True
    assert is_significant(comp, alpha=comp.p_value) is False
    with pytest.raises(ValueError, match="alpha"):
        is_significant(comp, alpha=0.0)


# ---------------------------------------------------------------------------------------------------------
# Determinism, input handling, speed
# ---------------------------------------------------------------------------------------------------------


def test_same_seed_is_deterministic_and_seeds_differ_slightly():
    data = _run(500, 13)
    first, again = bootstrap_ci(data, seed=42), bootstrap_ci(data, seed=42)
    other = bootstrap_ci(data, seed=43)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert abs(first.low - other.low) < 0.05 * (first.high - first.low)
    assert abs(first.high - other.high) < 0.05 * (first.high - first.low)


def test_results_do_not_depend_on_prompt_order():
    data = _run(200, 14)
    keys = list(data)
    random.Random(0).shuffle(keys)
    shuffled = {k: data[k] for k in keys}
    b = {k: v + 0.1 for k, v in data.items()}
    assert bootstrap_ci(data, seed=1) == bootstrap_ci(shuffled, seed=1)
    assert paired_bootstrap(data, b, seed=1) == paired_bootstrap(shuffled, b, seed=1)


def test_bad_inputs_raise_naming_the_problem():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci({})
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match=r"prompt 'p7' has NaN"):
        bootstrap_ci({"p1": [0.1], "p7": [0.2, float("nan")]})
    with pytest.raises(ValueError, match=r"prompt 3 has infinite"):
        bootstrap_ci([[0.0], [1.0], [2.0], [float("inf")]])
    with pytest.raises(ValueError, match=r"prompt 'x' has no values"):
        bootstrap_ci({"x": [], "y": [1.0]})
    with pytest.raises(ValueError, match=r"b_by_prompt: prompt 'q' has NaN"):
        paired_bootstrap({"q": [1.0]}, {"q": [math.nan]})
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([[1.0]], confidence=1.0)
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci([[1.0]], method="studentized")
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci([[1.0]], statistic="median")
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([[1.0]], n_resamples=0)
    with pytest.raises(TypeError):
        bootstrap_ci("0.5")


def test_results_serialise_to_json():
    est = bootstrap_ci({"a": [1.0, 0.0], "b": [1.0, 1.0]}, n_resamples=50)
    comp = paired_permutation_test({"a": [0.0]}, {"a": [1.0]})
    assert isinstance(est, Estimate) and isinstance(comp, Comparison)
    row = json.loads(json.dumps(est.to_dict()))
    required = {"value", "low", "high", "n_prompts", "n_samples", "confidence", "method", "n_resamples"}
    assert required <= set(row)
    assert json.loads(json.dumps(comp.to_dict()))["low"] is None
