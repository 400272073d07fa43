"""Confidence intervals and paired comparisons for per-prompt benchmark scores.

Why a cluster bootstrap: a benchmark run produces several images per prompt (GenEval 4, DPG-Bench a 2x2 grid),
and images of one prompt share the prompt's difficulty, so they are not independent. Treating them as
independent gives error bars that are too narrow (the failure reported for terminal-bench). Every function
here therefore resamples *prompts* with replacement and keeps each prompt's images together.

Conventions used throughout:

* Input is ``values_by_prompt``: a mapping ``prompt_id -> sequence of per-image values`` (a bare number counts
  as one image), or a list of lists whose position is the prompt id. Booleans (pass/fail) are fine.
* Prompts are processed in sorted id order, so results depend on the data and the seed only, not on the
  order in which a resumed run happened to write its rows.
* ``statistic="mean"`` (the default) is the mean over *all images*: ``sum(values) / count(values)``. Under
  resampling it is the ratio estimator ``sum_i S_i / sum_i n_i`` over the drawn prompts (``S_i`` the sum and
  ``n_i`` the number of images of prompt ``i``). With the same number of images per prompt this is exactly the
  mean of prompt means; with unequal counts a prompt weighs in proportion to its images.
  ``statistic="prompt_mean"`` weighs every prompt equally (the mean of prompt means) whatever its image count.
* Seeds make everything deterministic: the same data and seed give bit-identical results.
* A single prompt gives a zero-width interval at the point estimate: with one cluster, every resample is that
  cluster, so the bootstrap has no between-prompt variation to measure. That is not certainty; callers that
  display intervals should flag ``n_prompts < 2``. The same collapse happens whenever every resample gives the
  same value (e.g. constant scores).

Interval methods (``method=``):

* ``"percentile"`` (default): the ``(1-c)/2`` and ``(1+c)/2`` quantiles of the resampled statistic. Robust,
  transformation-respecting, and what most harnesses report, hence the default.
* ``"basic"``: the percentile interval reflected about the estimate, ``[2t - q_hi, 2t - q_lo]``.
* ``"bca"``: bias-corrected and accelerated (Efron 1987); bias from the share of resamples below the
  estimate, acceleration from a leave-one-prompt-out jackknife. Better coverage for skewed statistics
  (rates near 0 or 1) at the cost of needing enough resamples in the tails.

Only numpy (and the standard library's ``statistics.NormalDist`` for normal quantiles) is used, except by
``paired_t_test``, which takes Student's t distribution from scipy.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "METHODS",
    "STATISTICS",
    "Comparison",
    "Estimate",
    "bootstrap_by_category",
    "bootstrap_ci",
    "bootstrap_macro_ci",
    "is_significant",
    "paired_bootstrap",
    "paired_permutation_test",
    "paired_t_test",
]

METHODS = ("percentile", "basic", "bca")
STATISTICS = ("mean", "prompt_mean")

#: Largest number of prompts for which ``paired_permutation_test`` enumerates every sign vector by default.
EXACT_PERMUTATION_MAX = 20
#: Hard cap for an explicitly requested exact enumeration (2**24 sign vectors, about a second).
_EXACT_PERMUTATION_CAP = 24
#: Elements of the (resamples x prompts) index block drawn at once; bounds memory at ~32 MB per block.
_BLOCK_ELEMENTS = 4_000_000
#: Relative tolerance under which resampled values count as equal (ties in p-values, degenerate intervals).
_REL_TOL = 1e-12

ValuesByPrompt = Mapping[Hashable, Any] | Sequence[Any]
SeedLike = int | np.random.Generator


# ----------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a bootstrap confidence interval.

    ``se`` is the standard deviation of the resampled statistic (the bootstrap standard error);
    ``statistic`` says which estimator produced ``value`` (``mean``, ``prompt_mean``, ``macro_mean``, ...).
    """

    value: float
    low: float
    high: float
    n_prompts: int
    n_samples: int
    confidence: float
    method: str
    n_resamples: int
    se: float = 0.0
    statistic: str = "mean"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """Run B versus run A on their shared prompts: ``difference = mean_b - mean_a`` (positive: B scores higher).

    ``low``/``high``/``se`` are ``None`` for tests that give no interval (the permutation test).
    ``n_only_a``/``n_only_b`` count prompts present in one run only; they are dropped, not imputed.
    ``n_resamples`` is the number of resamples or, for an exact permutation test, of sign vectors enumerated.
    """

    difference: float
    low: float | None
    high: float | None
    p_value: float
    mean_a: float
    mean_b: float
    n_shared: int
    n_only_a: int
    n_only_b: int
    confidence: float | None
    method: str
    n_resamples: int
    se: float | None = None
    statistic: str = "mean"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_significant(comparison: Comparison, alpha: float = 0.05) -> bool:
    """Whether the two-sided test rejects "no difference" at level ``alpha`` (``p_value < alpha``).

    The p-value is used rather than "interval excludes 0" because it exists for every test here
    (the permutation test has no interval) and does not depend on the interval method.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return comparison.p_value < alpha


# ----------------------------------------------------------------------------------------------------------
# Input normalisation
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prompts:
    """Per-prompt sufficient statistics, in sorted prompt-id order."""

    ids: tuple[Hashable, ...]
    sums: np.ndarray  # (P,) sum of image values
    counts: np.ndarray  # (P,) number of images, as float

    def subset(self, ids: Sequence[Hashable]) -> _Prompts:
        pos = {pid: i for i, pid in enumerate(self.ids)}
        rows = np.fromiter((pos[pid] for pid in ids), dtype=np.intp, count=len(ids))
        return _Prompts(tuple(ids), self.sums[rows], self.counts[rows])

    def ratio_columns(self, statistic: str) -> tuple[np.ndarray, np.ndarray]:
        """(numerator, denominator) per prompt so that the statistic is ``sum(num) / sum(den)``.

        Writing both estimators as a ratio lets one resampling engine, one jackknife and one leave-one-out
        formula serve them all.
        """
        if statistic == "mean":
            return self.sums, self.counts
        if statistic == "prompt_mean":
            return self.sums / self.counts, np.ones_like(self.counts)
        raise ValueError(f"unknown statistic {statistic!r}; expected one of {STATISTICS}")


def _sort_ids(ids: list[Hashable]) -> list[Hashable]:
    try:
        return sorted(ids)
    except TypeError:  # mixed id types (e.g. int and str): fall back to a total order on (type, repr)
        return sorted(ids, key=lambda x: (type(x).__name__, repr(x)))


def _as_items(values_by_prompt: ValuesByPrompt, name: str) -> list[tuple[Hashable, Any]]:
    if isinstance(values_by_prompt, Mapping):
        return list(values_by_prompt.items())
    if isinstance(values_by_prompt, str | bytes) or not isinstance(values_by_prompt, Sequence | np.ndarray):
        raise TypeError(
            f"{name} must be a mapping prompt_id -> values or a list of per-prompt value lists, "
            f"got {type(values_by_prompt).__name__}"
        )
    return list(enumerate(values_by_prompt))


def _pack(values_by_prompt: ValuesByPrompt, name: str = "values_by_prompt") -> _Prompts:
    """Validate and reduce per-image values to per-prompt (sum, count), sorted by prompt id."""
    items = _as_items(values_by_prompt, name)
    if not items:
        raise ValueError(f"{name} is empty: no prompts to compute a statistic over")
    by_id: dict[Hashable, tuple[float, int]] = {}
    for pid, raw in items:
        try:
            arr = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: prompt {pid!r} has non-numeric values ({exc})") from None
        if arr.ndim > 1:
            raise ValueError(
                f"{name}: prompt {pid!r} has a {arr.ndim}-D array; expected a flat list of values"
            )
        arr = arr.reshape(-1)
        if arr.size == 0:
            raise ValueError(f"{name}: prompt {pid!r} has no values")
        if not np.all(np.isfinite(arr)):
            bad = "NaN" if np.isnan(arr).any() else "infinite"
            raise ValueError(f"{name}: prompt {pid!r} has {bad} values; drop or fix the prompt explicitly")
        by_id[pid] = (float(arr.sum()), int(arr.size))
    ids = _sort_ids(list(by_id))
    sums = np.array([by_id[i][0] for i in ids], dtype=np.float64)
    counts = np.array([by_id[i][1] for i in ids], dtype=np.float64)
    return _Prompts(tuple(ids), sums, counts)


def _categories(
    prompts: _Prompts,
    category_of_prompt: Mapping[Hashable, Hashable] | Sequence[Hashable],
    categories: Sequence[Hashable] | None,
) -> list[tuple[Hashable, list[Hashable]]]:
    """Group prompt ids by category (sorted), checking every prompt has one and required ones are present."""
    if isinstance(category_of_prompt, Mapping):
        lookup: Mapping[Hashable, Hashable] = category_of_prompt
    else:
        lookup = dict(enumerate(category_of_prompt))
    missing = [pid for pid in prompts.ids if pid not in lookup]
    if missing:
        shown = ", ".join(repr(p) for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"category_of_prompt has no category for {len(missing)} prompt(s): {shown}")
    groups: dict[Hashable, list[Hashable]] = {}
    for pid in prompts.ids:
        groups.setdefault(lookup[pid], []).append(pid)
    if categories is not None:
        absent = [c for c in categories if c not in groups]
        if absent:
            raise ValueError(
                f"categories without any prompt: {absent!r}; the macro average would silently change"
            )
        extra = [c for c in groups if c not in set(categories)]
        if extra:
            raise ValueError(f"prompts belong to categories not listed in `categories`: {extra!r}")
        order = list(categories)
    else:
        order = _sort_ids(list(groups))
    return [(c, groups[c]) for c in order]


def _check_common(confidence: float, n_resamples: int, method: str) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------------------
# Resampling engine
# ----------------------------------------------------------------------------------------------------------
#
# A "design" is a list of strata (one stratum when not stratified). Each stratum holds, per prompt, m ratio
# pairs (numerator, denominator): m = 1 for a single run, m = 2 (run A, run B) for a paired comparison.
# The statistic is   theta = contrast . mean_over_strata( sum(num) / sum(den) )   with contrast [1] or [-1, 1].


@dataclass(frozen=True)
class _Stratum:
    num: np.ndarray  # (P, m)
    den: np.ndarray  # (P, m)

    @property
    def ratios(self) -> np.ndarray:  # (m,)
        return self.num.sum(axis=0) / self.den.sum(axis=0)


def _theta(strata: Sequence[_Stratum], contrast: np.ndarray) -> float:
    per_stratum = np.stack([s.ratios for s in strata])  # (K, m)
    return float(per_stratum.mean(axis=0) @ contrast)


def _resample_stratum(rng: np.random.Generator, stratum: _Stratum, n_resamples: int) -> np.ndarray:
    """Ratios ``sum(num[idx]) / sum(den[idx])`` for ``n_resamples`` draws of P prompts with replacement: (B, m).

    Drawn in blocks of about ``_BLOCK_ELEMENTS`` indices to bound memory; a denominator column that is the
    same for every prompt (equal image counts, or the prompt-mean estimator) is not gathered, since its
    resampled sum is always ``P * den``.
    """
    p, m = stratum.num.shape
    out = np.empty((n_resamples, m), dtype=np.float64)
    const_den = [bool(np.all(stratum.den[:, j] == stratum.den[0, j])) for j in range(m)]
    block = max(1, _BLOCK_ELEMENTS // (p * m))
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, p, size=(stop - start, p))
        for j in range(m):
            num = stratum.num[:, j][idx].sum(axis=1)
            den = p * stratum.den[0, j] if const_den[j] else stratum.den[:, j][idx].sum(axis=1)
            out[start:stop, j] = num / den
    return out


def _replicates(
    rng: np.random.Generator, strata: Sequence[_Stratum], contrast: np.ndarray, n_resamples: int
) -> np.ndarray:
    """Bootstrap replicates of theta: each stratum resampled independently (stratified bootstrap)."""
    total = np.zeros((n_resamples, contrast.size), dtype=np.float64)
    for s in strata:
        total += _resample_stratum(rng, s, n_resamples)
    return (total / len(strata)) @ contrast


def _jackknife(strata: Sequence[_Stratum], contrast: np.ndarray) -> np.ndarray:
    """Leave-one-prompt-out values of theta, for the BCa acceleration.

    Removing a prompt only changes its own stratum's ratio. A stratum with a single prompt cannot lose it;
    its prompt gets the full-sample value (zero influence), which matches the fact that the stratified
    bootstrap never varies that stratum either.
    """
    theta = _theta(strata, contrast)
    k = len(strata)
    parts = []
    for s in strata:
        if s.num.shape[0] < 2:
            parts.append(np.full(s.num.shape[0], theta))
            continue
        loo = (s.num.sum(axis=0) - s.num) / (s.den.sum(axis=0) - s.den)  # (P, m)
        parts.append(theta + ((loo - s.ratios) @ contrast) / k)
    return np.concatenate(parts)


def _is_degenerate(reps: np.ndarray, theta: float) -> bool:
    scale = max(1.0, abs(theta), float(np.max(np.abs(reps))))
    return float(np.ptp(reps)) <= _REL_TOL * scale


def _interval(
    theta: float, reps: np.ndarray, jackknife: np.ndarray | None, confidence: float, method: str
) -> tuple[float, float]:
    """Two-sided interval from bootstrap replicates; collapses to ``theta`` when the replicates do not vary."""
    if _is_degenerate(reps, theta):
        return theta, theta
    tail = (1.0 - confidence) / 2.0
    if method == "percentile":
        lo, hi = np.quantile(reps, [tail, 1.0 - tail])
        return float(lo), float(hi)
    if method == "basic":
        lo, hi = np.quantile(reps, [tail, 1.0 - tail])
        return float(2.0 * theta - hi), float(2.0 * theta - lo)
    # BCa. z0: normal quantile of the share of replicates below theta (ties count half), clipped so that a
    # replicate distribution entirely on one side stays finite. a: skewness of the jackknife influence values.
    normal = NormalDist()
    b = reps.size
    tol = _REL_TOL * max(1.0, abs(theta))
    below = np.count_nonzero(reps < theta - tol) + 0.5 * np.count_nonzero(np.abs(reps - theta) <= tol)
    z0 = normal.inv_cdf(min(max(below / b, 0.5 / b), 1.0 - 0.5 / b))
    accel = 0.0
    if jackknife is not None and jackknife.size > 1:
        d = jackknife.mean() - jackknife
        denom = 6.0 * float(np.sum(d * d)) ** 1.5
        accel = float(np.sum(d**3)) / denom if denom > 0 else 0.0
    levels = []
    for z in (normal.inv_cdf(tail), normal.inv_cdf(1.0 - tail)):
        shifted = z0 + z
        levels.append(normal.cdf(z0 + shifted / (1.0 - accel * shifted)))
    lo, hi = np.quantile(reps, levels)
    return float(lo), float(hi)


def _se(reps: np.ndarray) -> float:
    return float(reps.std(ddof=1)) if reps.size > 1 else 0.0


# ----------------------------------------------------------------------------------------------------------
# Public estimators
# ----------------------------------------------------------------------------------------------------------


def bootstrap_ci(
    values_by_prompt: ValuesByPrompt,
    *,
    statistic: str = "mean",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: SeedLike = 0,
    method: str = "percentile",
) -> Estimate:
    """Mean score with a cluster-bootstrap interval that resamples prompts (all images of a prompt together).

    ``statistic="mean"`` is the mean over all images (ratio estimator ``sum/count`` over the drawn prompts);
    ``"prompt_mean"`` the mean of per-prompt means. They coincide when every prompt has the same number of
    images. See the module docstring for the interval methods and the single-prompt collapse.
    """
    _check_common(confidence, n_resamples, method)
    prompts = _pack(values_by_prompt)
    num, den = prompts.ratio_columns(statistic)
    strata = [_Stratum(num[:, None], den[:, None])]
    contrast = np.ones(1)
    return _estimate(strata, contrast, prompts, statistic, n_resamples, confidence, seed, method)


def bootstrap_macro_ci(
    values_by_prompt: ValuesByPrompt,
    category_of_prompt: Mapping[Hashable, Hashable] | Sequence[Hashable],
    *,
    categories: Sequence[Hashable] | None = None,
    statistic: str = "mean",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: SeedLike = 0,
    method: str = "percentile",
) -> Estimate:
    """Unweighted mean of per-category means (GenEval "overall") with a stratified cluster-bootstrap interval.

    Prompts are resampled with replacement *within* their category, each category keeps its size, and the
    macro mean is recomputed per resample, so the interval reflects the official aggregation (a small
    category weighs as much as a large one, and its noise is not diluted by the large ones).

    ``category_of_prompt`` maps every prompt id to one category (a sequence aligned with a list input works
    too). ``categories``, when given, must be exactly the set of categories present: pass the benchmark's
    official list to fail loudly if a partial run lacks a whole category, instead of silently averaging
    fewer categories. ``statistic`` is the per-category estimator (see :func:`bootstrap_ci`).
    """
    _check_common(confidence, n_resamples, method)
    prompts = _pack(values_by_prompt)
    groups = _categories(prompts, category_of_prompt, categories)
    strata = []
    for _, ids in groups:
        num, den = prompts.subset(ids).ratio_columns(statistic)
        strata.append(_Stratum(num[:, None], den[:, None]))
    return _estimate(strata, np.ones(1), prompts, f"macro_{statistic}", n_resamples, confidence, seed, method)


def bootstrap_by_category(
    values_by_prompt: ValuesByPrompt,
    category_of_prompt: Mapping[Hashable, Hashable] | Sequence[Hashable],
    **kwargs: Any,
) -> dict[Hashable, Estimate]:
    """:func:`bootstrap_ci` for each category separately (same keyword arguments), in sorted category order."""
    prompts = _pack(values_by_prompt)
    items = dict(_as_items(values_by_prompt, "values_by_prompt"))
    groups = _categories(prompts, category_of_prompt, kwargs.pop("categories", None))
    return {cat: bootstrap_ci({pid: items[pid] for pid in ids}, **kwargs) for cat, ids in groups}


def _estimate(
    strata: list[_Stratum],
    contrast: np.ndarray,
    prompts: _Prompts,
    statistic: str,
    n_resamples: int,
    confidence: float,
    seed: SeedLike,
    method: str,
) -> Estimate:
    theta = _theta(strata, contrast)
    reps = _replicates(_rng(seed), strata, contrast, n_resamples)
    jack = _jackknife(strata, contrast) if method == "bca" else None
    low, high = _interval(theta, reps, jack, confidence, method)
    return Estimate(
        value=theta,
        low=low,
        high=high,
        n_prompts=len(prompts.ids),
        n_samples=int(prompts.counts.sum()),
        confidence=confidence,
        method=method,
        n_resamples=int(n_resamples),
        se=0.0 if _is_degenerate(reps, theta) else _se(reps),
        statistic=statistic,
    )


# ----------------------------------------------------------------------------------------------------------
# Paired comparisons
# ----------------------------------------------------------------------------------------------------------


def _shared(a_by_prompt: ValuesByPrompt, b_by_prompt: ValuesByPrompt) -> tuple[_Prompts, _Prompts, int, int]:
    a = _pack(a_by_prompt, "a_by_prompt")
    b = _pack(b_by_prompt, "b_by_prompt")
    b_ids = set(b.ids)
    shared = [pid for pid in a.ids if pid in b_ids]
    if not shared:
        raise ValueError(
            f"runs share no prompt ids ({len(a.ids)} in A, {len(b.ids)} in B); a paired comparison needs "
            "the same prompts in both runs"
        )
    return a.subset(shared), b.subset(shared), len(a.ids) - len(shared), len(b.ids) - len(shared)


def paired_bootstrap(
    a_by_prompt: ValuesByPrompt,
    b_by_prompt: ValuesByPrompt,
    *,
    category_of_prompt: Mapping[Hashable, Hashable] | Sequence[Hashable] | None = None,
    statistic: str = "mean",
    n_resamples: int = 10_000,
    seed: SeedLike = 0,
    confidence: float = 0.95,
    method: str = "percentile",
) -> Comparison:
    """Paired cluster bootstrap of ``mean(B) - mean(A)`` over the prompts both runs scored.

    Each resample draws shared prompts with replacement and recomputes both runs' means on the *same*
    prompts, so prompt difficulty cancels out of the difference. Prompts present in only one run are dropped
    (counted in ``n_only_a``/``n_only_b``). With ``category_of_prompt`` the compared quantity is the
    difference of macro means and resampling is stratified by category (see :func:`bootstrap_macro_ci`).

    p-value (two-sided bootstrap hypothesis test, Efron & Tibshirani 1993, ch. 16): centring the resampled
    differences on the observed one imposes the null "no difference", so with estimate ``d`` and replicates
    ``d*_1..d*_B``::

        p = (1 + #{b : |d*_b - d| >= |d|}) / (B + 1)

    The ``+1`` (Davison & Hinkley 1997, sec. 4.2) counts the observed data as one draw, so p is never 0 and
    a consistent shift over B resamples reports ``1/(B+1)``. Identical runs give p = 1.
    """
    _check_common(confidence, n_resamples, method)
    a, b, only_a, only_b = _shared(a_by_prompt, b_by_prompt)
    contrast = np.array([-1.0, 1.0])
    if category_of_prompt is None:
        groups = [(None, list(a.ids))]
        label = statistic
    else:
        groups = _categories(a, category_of_prompt, None)
        label = f"macro_{statistic}"
    strata = []
    for _, ids in groups:
        na, da = a.subset(ids).ratio_columns(statistic)
        nb, db = b.subset(ids).ratio_columns(statistic)
        strata.append(_Stratum(np.stack([na, nb], axis=1), np.stack([da, db], axis=1)))
    means = np.stack([s.ratios for s in strata]).mean(axis=0)
    diff = _theta(strata, contrast)
    reps = _replicates(_rng(seed), strata, contrast, n_resamples)
    jack = _jackknife(strata, contrast) if method == "bca" else None
    low, high = _interval(diff, reps, jack, confidence, method)
    tol = _REL_TOL * max(1.0, abs(diff))
    extreme = np.count_nonzero(np.abs(reps - diff) >= abs(diff) - tol)
    return Comparison(
        difference=diff,
        low=low,
        high=high,
        p_value=float((1 + extreme) / (n_resamples + 1)),
        mean_a=float(means[0]),
        mean_b=float(means[1]),
        n_shared=len(a.ids),
        n_only_a=only_a,
        n_only_b=only_b,
        confidence=confidence,
        method=f"paired-bootstrap-{method}",
        n_resamples=int(n_resamples),
        se=0.0 if _is_degenerate(reps, diff) else _se(reps),
        statistic=label,
    )


def _sign_sums(d: np.ndarray) -> np.ndarray:
    """``sum(eps * d)`` for every sign vector ``eps`` in {-1, +1}^len(d) (2**len(d) values)."""
    n = d.size
    bits = (np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n)) & 1
    return (2 * bits - 1).astype(np.float64) @ d


def _exact_sign_flip_count(d: np.ndarray, threshold: float) -> int:
    """Number of the 2**n sign vectors with ``|sum(eps * d)| >= threshold``.

    Meet in the middle: the sums over each half of the prompts are enumerated separately (2**(n/2) each) and
    combined by broadcasting, in row blocks, so n = 24 needs two 4096-vectors instead of a 16M x 24 matrix.
    """
    half = d.size // 2
    left, right = _sign_sums(d[:half]), _sign_sums(d[half:])
    count = 0
    block = max(1, _BLOCK_ELEMENTS // right.size)
    for start in range(0, left.size, block):
        totals = left[start : start + block, None] + right[None, :]
        count += int(np.count_nonzero(np.abs(totals) >= threshold))
    return count


def paired_permutation_test(
    a_by_prompt: ValuesByPrompt,
    b_by_prompt: ValuesByPrompt,
    *,
    n_resamples: int = 10_000,
    seed: SeedLike = 0,
    exact: bool | None = None,
) -> Comparison:
    """Sign-flip (paired randomisation) test of ``mean(B) - mean(A)`` on the shared prompts.

    Per prompt, ``d_i = mean(B images) - mean(A images)``; under the null that the two runs are exchangeable
    within a prompt, each ``d_i`` is equally likely to have either sign. The statistic is ``T = mean_i d_i``
    (prompts weigh equally; with the same image count per prompt in both runs this equals the difference of
    image means) and::

        p = #{eps : |mean(eps * d)| >= |T|} / 2**n            exact (all sign vectors, incl. the observed one)
        p = (1 + #{b : |mean(eps_b * d)| >= |T|}) / (B + 1)   Monte Carlo, B random sign vectors

    ``exact=None`` enumerates when ``n <= 20`` prompts and samples otherwise; ``exact=True`` enumerates up to
    24 prompts. No interval is given (``low``/``high`` are ``None``); use :func:`paired_bootstrap` for one.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    a, b, only_a, only_b = _shared(a_by_prompt, b_by_prompt)
    mean_a_i, mean_b_i = a.sums / a.counts, b.sums / b.counts
    d = mean_b_i - mean_a_i
    n = d.size
    observed = float(d.mean())
    use_exact = n <= EXACT_PERMUTATION_MAX if exact is None else exact
    if use_exact and n > _EXACT_PERMUTATION_CAP:
        raise ValueError(f"exact enumeration is limited to {_EXACT_PERMUTATION_CAP} prompts, got {n}")
    # Compare sums rather than means (same ordering, no division); the tolerance keeps ties tied under rounding.
    threshold = abs(float(d.sum())) - _REL_TOL * max(1.0, float(np.abs(d).sum()))
    if use_exact:
        p = _exact_sign_flip_count(d, threshold) / 2.0**n
        draws, method = 2**n, "permutation-exact"
    else:
        rng = _rng(seed)
        extreme = 0
        block = max(1, _BLOCK_ELEMENTS // n)
        for start in range(0, n_resamples, block):
            rows = min(block, n_resamples - start)
            signs = rng.integers(0, 2, size=(rows, n), dtype=np.int8) * 2 - 1
            extreme += int(np.count_nonzero(np.abs(signs @ d) >= threshold))
        p = (1 + extreme) / (n_resamples + 1)
        draws, method = int(n_resamples), "permutation-montecarlo"
    return Comparison(
        difference=observed,
        low=None,
        high=None,
        p_value=float(min(1.0, p)),
        mean_a=float(mean_a_i.mean()),
        mean_b=float(mean_b_i.mean()),
        n_shared=n,
        n_only_a=only_a,
        n_only_b=only_b,
        confidence=None,
        method=method,
        n_resamples=draws,
        se=None,
        statistic="prompt_mean",
    )


def paired_t_test(a_by_prompt: ValuesByPrompt, b_by_prompt: ValuesByPrompt, *, confidence: float = 0.95) -> Comparison:
    """Student's paired t-test of ``mean(B) - mean(A)`` on the shared prompts (two-sided), with its t interval.

    Per prompt ``d_i = mean(B images) - mean(A images)``; ``t = mean(d) / (sd(d) / sqrt(n))`` with the
    unbiased ``sd`` and ``n - 1`` degrees of freedom. It assumes roughly normal differences, which few seeds
    cannot check: report it beside the exact sign-flip test (:func:`paired_permutation_test`), which assumes
    only exchangeability. Constant differences give ``p = 1`` when they are all 0 and ``p = 0`` otherwise.
    """
    from scipy.stats import t as student_t

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    a, b, only_a, only_b = _shared(a_by_prompt, b_by_prompt)
    mean_a_i, mean_b_i = a.sums / a.counts, b.sums / b.counts
    d = mean_b_i - mean_a_i
    n = d.size
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 shared prompts, got {n}")
    diff = float(d.mean())
    se = float(d.std(ddof=1)) / float(np.sqrt(n))
    if se <= _REL_TOL * max(1.0, abs(diff)):
        p, low, high = (1.0 if diff == 0.0 else 0.0), diff, diff
    else:
        p = float(2.0 * student_t.sf(abs(diff) / se, n - 1))
        half = float(student_t.ppf((1.0 + confidence) / 2.0, n - 1)) * se
        low, high = diff - half, diff + half
    return Comparison(difference=diff, low=low, high=high, p_value=min(1.0, p), mean_a=float(mean_a_i.mean()),
                      mean_b=float(mean_b_i.mean()), n_shared=n, n_only_a=only_a, n_only_b=only_b,
                      confidence=confidence, method="paired-t", n_resamples=0, se=se, statistic="prompt_mean")
