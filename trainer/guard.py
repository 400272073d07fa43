"""Guard metrics: how far one round's update really moved the policy that samples the images.

The clipped surrogate and its KL see only the estimator's context (for HT-GRPO and d1-GRPO the fully
masked canvas). The images are sampled by a chain of conditionals p_θ(x_i | c, z_t), one per commit step,
so an update can respect the clip on the all-masked canvas and still move the sampling chain far (the
hierarchy audit measured 20–28 % of rollout tokens out of the clip band in round 1 at lr 1e-3 while the
logged clip fraction was ~0.1). These statistics read every rollout token in its *sampling context*:
the canvas it was committed from (TraceGRPO's trajectory views, `strategies.trace_views`), before and
after the round's K optimizer steps, and under the reference policy.

All functions are pure: log-probs in, numbers out. With r = p_new / p_old per token, tokens drawn
from p_old (the rollout policy), the k3 estimator r − 1 − log r is unbiased for KL(p_old ‖ p_new); with
r = p_ref / p_old it is unbiased for KL(p_old ‖ p_ref).
"""

from __future__ import annotations

import torch

GUARD_PREFIX = "guard/"
OBJECTS_PREFIX = "objects/"


def k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator per token: exp(l) − 1 − l for l = log(q/p) at samples of p (≥ 0)."""
    return torch.expm1(log_ratio) - log_ratio


def sampling_context_sums(lp_before: torch.Tensor, lp_after: torch.Tensor, lp_ref: torch.Tensor | None,
                          *, clip_eps: float) -> dict[str, float]:
    """Additive sums over every token (so ranks can add them): count, Σ ratio, Σ |ratio − 1| > ε,
    Σ k3(new vs old), Σ k3(ref vs old); plus the per-rank max ratio and max 1/ratio."""
    lr = (lp_after - lp_before).double()
    ratio = lr.exp()
    out = {"count": float(ratio.numel()), "ratio_sum": float(ratio.sum()),
           "out_of_clip": float(((ratio - 1).abs() > clip_eps).sum()), "kl_sum": float(k3(lr).sum()),
           "ratio_max": float(ratio.max()) if ratio.numel() else 1.0,
           "inv_ratio_max": float((-lr).exp().max()) if ratio.numel() else 1.0}
    if lp_ref is not None:
        out["kl_ref_sum"] = float(k3((lp_ref - lp_before).double()).sum())
    return out


def guard_metrics(sums: dict[str, float]) -> dict[str, float]:
    """The logged guard metrics from (rank-summed) `sampling_context_sums`."""
    n = max(sums["count"], 1.0)
    out = {f"{GUARD_PREFIX}ratio_mean": sums["ratio_sum"] / n,
           f"{GUARD_PREFIX}ratio_max": sums["ratio_max"],
           f"{GUARD_PREFIX}ratio_min": 1.0 / sums["inv_ratio_max"],
           f"{GUARD_PREFIX}out_of_clip_frac": sums["out_of_clip"] / n,
           f"{GUARD_PREFIX}kl_update": sums["kl_sum"] / n}
    if "kl_ref_sum" in sums:
        out[f"{GUARD_PREFIX}kl_ref"] = sums["kl_ref_sum"] / n
    return out


def asked_objects(record: dict) -> int:
    """Objects a GenEval-format record asks for: the sum of its include clauses' counts."""
    return sum(int(c.get("count", 1)) for c in record.get("include", []))


def object_metrics(drawn: torch.Tensor, asked: torch.Tensor) -> dict[str, float]:
    """Objects per image drawn vs asked [R] → mean drawn, mean asked, share of images over / under."""
    drawn, asked = drawn.float(), asked.float()
    return {f"{OBJECTS_PREFIX}per_image": float(drawn.mean()), f"{OBJECTS_PREFIX}asked_per_image": float(asked.mean()),
            f"{OBJECTS_PREFIX}over_asked_frac": float((drawn > asked).float().mean()),
            f"{OBJECTS_PREFIX}under_asked_frac": float((drawn < asked).float().mean())}
