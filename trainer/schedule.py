"""The Sketch-Then-Paint inner-loop schedule (step 6): stages, candidate sets, random token subsets.

Sourced (htgrpo.md (a) facts 5-6): the K inner iterations of one round are split, in order, into
`global` (iterations 1..n_global, all image tokens), `struct` (the next n_struct, structure tokens) and
`refine` (the rest, refinement tokens); each iteration updates a random subset of its stage's candidates.

Subset rules (`subset`):
- "random" (HT-GRPO, [I]): rho_g ~ U[rho_min, 1] per rollout, token i kept iff u_i < rho_g. rho_min = 1
  keeps every candidate (d1/UniGRPO: the loss covers all image tokens).
- "maskgrpo": MaskGRPO's "uni" re-masking rate, the same for every rollout of iteration k (1-based):
  ratio_k = min(m0 + (1 - m0) * k / K, 0.999); token i kept iff u_i < ratio_k
  (`grpo/mask_grpo_trainer.py: _get_per_token_logps_uni`, where iter_idx = k - 1).

A rollout whose subset came out empty although it has candidates gets its lowest-u candidate, so every
rollout with candidates contributes at least one token (htgrpo.md (e) test 4). The uniforms are drawn
for the *global* batch from one generator per (round, iteration) and then sliced by rank, so a subset
never depends on how many processes share the batch.
"""

from __future__ import annotations

from typing import Literal

import torch

Stage = Literal["global", "struct", "refine"]
STAGES: tuple[str, ...] = ("global", "struct", "refine")
SUBSETS: tuple[str, ...] = ("random", "maskgrpo")


def stage_of(k: int, n_global: int, n_struct: int, num_iters: int) -> Stage:
    """Stage of inner iteration k (1-based) out of `num_iters`."""
    if not 1 <= k <= num_iters:
        raise ValueError(f"iteration {k} outside 1..{num_iters}")
    if n_global < 0 or n_struct < 0 or n_global + n_struct > num_iters:
        raise ValueError(f"need 0 <= n_global, n_struct and n_global + n_struct <= K, got {n_global}, {n_struct}, {num_iters}")
    if k <= n_global:
        return "global"
    if k <= n_global + n_struct:
        return "struct"
    return "refine"


def candidates(stage: Stage, struct: torch.Tensor) -> torch.Tensor:
    """bool [B, N]: C_glob (all), C_struct or C_ref for the stage."""
    if stage == "global":
        return torch.ones_like(struct, dtype=torch.bool)
    if stage == "struct":
        return struct.bool()
    if stage == "refine":
        return ~struct.bool()
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")


def maskgrpo_ratio(k: int, num_iters: int, min_rate: float) -> float:
    """MaskGRPO's re-masking rate for inner iteration k (1-based)."""
    return min(min_rate + (1.0 - min_rate) * k / num_iters, 0.999)


def subset_noise(
    rows: int, num_tokens: int, generator: torch.Generator, *, rho_min: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u [rows, N] ~ U[0,1), rho [rows] ~ U[rho_min, 1]) on the CPU, for the global batch."""
    if not 0.0 <= rho_min <= 1.0:
        raise ValueError(f"rho_min must lie in [0, 1], got {rho_min}")
    u = torch.rand(rows, num_tokens, generator=generator)
    rho = rho_min + (1.0 - rho_min) * torch.rand(rows, generator=generator)
    return u, rho


def select(cands: torch.Tensor, u: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """S = cands & (u < threshold), plus each empty-but-eligible row's lowest-u candidate."""
    thr = threshold.unsqueeze(1) if isinstance(threshold, torch.Tensor) else threshold
    chosen = cands & (u < thr)
    empty = ~chosen.any(dim=1) & cands.any(dim=1)
    if bool(empty.any()):
        fallback = torch.where(cands, u, torch.full_like(u, float("inf"))).argmin(dim=1)
        extra = torch.zeros_like(chosen)
        extra[torch.arange(len(u), device=u.device), fallback] = True
        chosen = chosen | (extra & empty.unsqueeze(1))
    return chosen


def token_subset(
    cands: torch.Tensor,
    u: torch.Tensor,
    rho: torch.Tensor,
    *,
    rule: str = "random",
    k: int = 1,
    num_iters: int = 1,
    min_rate: float = 0.6,
) -> torch.Tensor:
    """The tokens S_k updated by iteration k: bool [B, N], a subset of `cands`."""
    if rule == "random":
        return select(cands, u, rho)
    if rule == "maskgrpo":
        return select(cands, u, maskgrpo_ratio(k, num_iters, min_rate))
    raise ValueError(f"subset rule must be one of {SUBSETS}, got {rule!r}")
