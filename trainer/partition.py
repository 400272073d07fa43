"""Token partition into structure (early, "sketch") and refinement (late, "paint") tokens (step 3).

Sourced: structure tokens are the *early* tokens of the rollout and the partition involves entropy
("Token Partition Via Entropy", htgrpo.md (a) fact 7). The rule itself is not published, so the three
candidates of htgrpo.md are all here, each a pure function of what the sampler recorded per image token
(`commit_step` s_i and `commit_entropy` H_i, both [B, N]):

- P1 `commit` (default): sort by (s ascending, H descending); the first ceil(rho_s*N) are structure.
  Ties beyond (s, H) go to the lower token index, so the result is deterministic.
- P2 `entropy`: the top ceil(rho_s*N) tokens by H (ties to the lower index).
- P3 `boundary`: with mean entropy Ĥ(n) of the tokens committed at step n, n* is the first step with
  Ĥ(n) < eta * Ĥ(0); structure = {i : s_i < n*}. Steps that committed nothing (possible with the emerge
  sampler) are skipped. If no step falls below the threshold every token is structural.

Only image tokens enter: newline and special tokens never reach the core (the adapters strip them).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Rule = Literal["commit", "entropy", "boundary"]
RULES: tuple[str, ...] = ("commit", "entropy", "boundary")


def num_structure(num_tokens: int, rho_s: float) -> int:
    """ceil(rho_s * N), kept within [0, N] (a float product such as 0.3*10 = 3.0000000000000004 is
    rounded first so it does not ceil to 4)."""
    if not 0.0 <= rho_s <= 1.0:
        raise ValueError(f"rho_s must lie in [0, 1], got {rho_s}")
    return min(num_tokens, max(0, math.ceil(round(rho_s * num_tokens, 9))))


def _top_k_mask(order: torch.Tensor, k: int) -> torch.Tensor:
    """bool [B, N]: True at the first k positions of each row's `order` (a permutation of 0..N-1)."""
    mask = torch.zeros(order.shape, dtype=torch.bool, device=order.device)
    if k > 0:
        mask.scatter_(1, order[:, :k], True)
    return mask


def by_commit_order(commit_step: torch.Tensor, entropy: torch.Tensor, rho_s: float) -> torch.Tensor:
    """P1: the ceil(rho_s*N) earliest-committed tokens (higher entropy first within a step)."""
    _check(commit_step, entropy)
    # Two stable sorts = a lexicographic sort: secondary key (entropy, descending) first, then the
    # primary key (commit step, ascending). Stability keeps the lower index first on exact ties.
    by_h = torch.argsort(entropy, dim=1, descending=True, stable=True)
    steps_in_h_order = torch.gather(commit_step, 1, by_h)
    by_s = torch.argsort(steps_in_h_order, dim=1, stable=True)
    order = torch.gather(by_h, 1, by_s)
    return _top_k_mask(order, num_structure(commit_step.shape[1], rho_s))


def by_entropy(entropy: torch.Tensor, rho_s: float) -> torch.Tensor:
    """P2: the ceil(rho_s*N) highest-entropy tokens."""
    order = torch.argsort(entropy, dim=1, descending=True, stable=True)
    return _top_k_mask(order, num_structure(entropy.shape[1], rho_s))


def entropy_boundary_step(commit_step: torch.Tensor, entropy: torch.Tensor, eta: float, num_steps: int) -> torch.Tensor:
    """P3's n* per rollout, LongTensor [B]: first step whose mean commit entropy is below eta*Ĥ(0).

    Ĥ(0) is the mean entropy of the earliest step that committed anything; rollouts where no later step
    falls below the threshold get n* = num_steps (every token structural).
    """
    _check(commit_step, entropy)
    b = commit_step.shape[0]
    onehot = torch.zeros(b, num_steps, commit_step.shape[1], dtype=entropy.dtype, device=entropy.device)
    onehot.scatter_(1, commit_step.long().unsqueeze(1), 1.0)
    counts = onehot.sum(dim=2)                                        # [B, T]
    sums = (onehot * entropy.unsqueeze(1)).sum(dim=2)
    present = counts > 0
    mean_h = torch.where(present, sums / counts.clamp_min(1), torch.zeros_like(sums))
    first = present.float().argmax(dim=1)                             # earliest non-empty step
    h0 = mean_h.gather(1, first.unsqueeze(1))
    steps = torch.arange(num_steps, device=entropy.device).unsqueeze(0)
    below = present & (mean_h < eta * h0) & (steps > first.unsqueeze(1))
    n_star = torch.where(below.any(dim=1), below.float().argmax(dim=1), torch.full_like(first, num_steps))
    return n_star


def by_entropy_boundary(commit_step: torch.Tensor, entropy: torch.Tensor, eta: float, num_steps: int) -> torch.Tensor:
    """P3: structure = tokens committed before the entropy boundary n*."""
    n_star = entropy_boundary_step(commit_step, entropy, eta, num_steps)
    return commit_step.long() < n_star.unsqueeze(1)


def structure_mask(
    commit_step: torch.Tensor,
    entropy: torch.Tensor,
    *,
    rule: Rule = "commit",
    rho_s: float = 0.3,
    eta: float = 0.5,
    num_steps: int | None = None,
) -> torch.Tensor:
    """bool [B, N]: True for structure tokens C_struct, False for refinement tokens C_ref."""
    if rule == "commit":
        return by_commit_order(commit_step, entropy, rho_s)
    if rule == "entropy":
        return by_entropy(entropy, rho_s)
    if rule == "boundary":
        t = int(num_steps if num_steps is not None else int(commit_step.max()) + 1)
        return by_entropy_boundary(commit_step, entropy, eta, t)
    raise ValueError(f"partition rule must be one of {RULES}, got {rule!r}")


def _check(commit_step: torch.Tensor, entropy: torch.Tensor) -> None:
    if commit_step.shape != entropy.shape or commit_step.dim() != 2:
        raise ValueError(
            f"commit_step and entropy must both be [B, N], got {tuple(commit_step.shape)} and {tuple(entropy.shape)}"
        )
