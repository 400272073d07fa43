"""Group-relative advantages (htgrpo.md step 2) and multi-reward aggregation, as pure functions.

Rollouts are laid out prompt-major: the G images of prompt b occupy rows `b*G .. b*G+G-1`. Every
function here sees the *global* batch (all ranks' rewards gathered first), because a prompt group may
span ranks and its statistics must not depend on how it was split.

Conventions, with their sources:
- MaskGRPO: `A = (R - mean_G) / (std_G + 1e-5)` with the unbiased `torch.std` (default here).
- d1 / diffu-GRPO: `A = R - mean_G` (no std scaling): `scale="none"`.
- Flow-GRPO's `global_std`: divide by the std of the whole batch: `scale="batch"`.
- DiffuCoder (Coupled-GRPO): leave-one-out baseline `r_g - mean_{g' != g} r_g'`: `leave_one_out=True`,
  which equals `G/(G-1) * (r_g - mean_G)`; std scaling (if any) is applied after.
- Multi-reward: `sum_then_normalize` (Flow-GRPO `multi_score`: weight the raw rewards, then normalise) or
  `normalize_then_sum` (GDPO: normalise every reward within its group, weight and add, then standardise
  the sum over the batch so its scale does not grow with the number of rewards).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

Scale = Literal["group", "batch", "none"]
Aggregation = Literal["sum_then_normalize", "normalize_then_sum"]

SCALES: tuple[str, ...] = ("group", "batch", "none")
AGGREGATIONS: tuple[str, ...] = ("sum_then_normalize", "normalize_then_sum")


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D, got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.view(-1, group_size)


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    scale: Scale = "group",
    leave_one_out: bool = False,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Per-rollout advantages [B*G] from rewards [B*G] (prompt-major groups of `group_size`).

    A group whose rewards are all equal carries no signal: its advantages are exactly 0 under every
    option (the centred rewards are 0 before any scaling).
    """
    r = _groups(rewards.float(), group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if leave_one_out:
        if group_size < 2:
            raise ValueError("leave_one_out needs groups of at least 2")
        centred = centred * (group_size / (group_size - 1))
    if scale == "group":
        std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(r[:, :1])
        centred = centred / (std + eps)
    elif scale == "batch":
        std = r.std() if r.numel() > 1 else torch.zeros(())
        centred = centred / (std + eps)
    elif scale != "none":
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return centred.reshape(-1)


def zero_std_fraction(rewards: torch.Tensor, group_size: int, *, tol: float = 0.0) -> float:
    """Fraction of prompt groups whose rewards are all equal (within `tol`): groups with no signal."""
    r = _groups(rewards.float(), group_size)
    spread = r.max(dim=1).values - r.min(dim=1).values
    return float((spread <= tol).float().mean()) if r.shape[0] else 0.0


def combine_rewards(components: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """The weighted sum `sum_j w_j r_j` of per-rollout reward components (all [B*G])."""
    if not components:
        raise ValueError("no reward components")
    missing = set(components) - set(weights)
    if missing:
        raise ValueError(f"no weight for reward component(s) {sorted(missing)}")
    total = None
    for name, values in components.items():
        term = float(weights[name]) * values.float()
        total = term if total is None else total + term
    assert total is not None
    return total


def multi_reward_advantages(
    components: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    group_size: int,
    *,
    aggregation: Aggregation = "sum_then_normalize",
    scale: Scale = "group",
    leave_one_out: bool = False,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages [B*G], combined reward [B*G]) from several reward components.

    With a single component both aggregations give `group_advantages` of it, except that
    `normalize_then_sum` also standardises over the batch (GDPO's final step).
    """
    combined = combine_rewards(components, weights)
    kw = dict(scale=scale, leave_one_out=leave_one_out, eps=eps)
    if aggregation == "sum_then_normalize":
        return group_advantages(combined, group_size, **kw), combined
    if aggregation == "normalize_then_sum":
        adv = None
        for name, values in components.items():
            term = float(weights[name]) * group_advantages(values, group_size, **kw)
            adv = term if adv is None else adv + term
        assert adv is not None
        std = adv.std() if adv.numel() > 1 else torch.zeros(())
        return (adv - adv.mean()) / (std + eps), combined
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
