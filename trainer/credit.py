"""Hierarchical credit weights w_{g,i} and token advantages Â_{g,i} = A_g * w_{g,i} (step 4).

Sourced: the image-level advantage is broadcast to every token and multiplied by a graded weight map
whose largest weights sit on the structure tokens. The formula is htgrpo.md's [I] proposal:

    raw_i = 1 + lambda_s * 1[i in C_struct] + lambda_h * H_i / mean_j H_j     ("indicator", default)
    raw_i = 1 + lambda_s * (1 - s_i / (T-1)) ** power                          ("graded_step")
    w_i   = N * raw_i / sum_j raw_j

so every image's weights average exactly 1 and the advantage scale stays GRPO's. With
lambda_s = lambda_h = 0 every weight is 1 (uniform credit, d1/UniGRPO), exactly, not up to rounding.

Open question 2 of htgrpo.md (is the weighting applied with the same sign for A < 0?) is the
`negative` switch: "weighted" (default) uses w for every rollout, "uniform" uses weight 1 when A_g < 0,
so only successes concentrate on the sketch.
"""

from __future__ import annotations

from typing import Literal

import torch

Form = Literal["indicator", "graded_step"]
Negative = Literal["weighted", "uniform"]
FORMS: tuple[str, ...] = ("indicator", "graded_step")
NEGATIVES: tuple[str, ...] = ("weighted", "uniform")


def raw_weights(
    struct: torch.Tensor,
    entropy: torch.Tensor | None = None,
    commit_step: torch.Tensor | None = None,
    *,
    lambda_s: float = 1.0,
    lambda_h: float = 0.0,
    form: Form = "indicator",
    power: float = 1.0,
    num_steps: int | None = None,
) -> torch.Tensor:
    """Unnormalised weights raw [B, N] (float32), all >= 1 for non-negative lambdas."""
    if lambda_s < 0 or lambda_h < 0:
        raise ValueError(f"lambda_s and lambda_h must be >= 0, got {lambda_s}, {lambda_h}")
    raw = torch.ones(struct.shape, dtype=torch.float32, device=struct.device)
    if form == "indicator":
        if lambda_s:
            raw = raw + lambda_s * struct.float()
    elif form == "graded_step":
        if lambda_s:
            if commit_step is None:
                raise ValueError("graded_step credit needs the commit steps")
            t = int(num_steps if num_steps is not None else int(commit_step.max()) + 1)
            earliness = 1.0 - commit_step.float() / max(t - 1, 1)
            raw = raw + lambda_s * earliness.clamp(0, 1) ** power
    else:
        raise ValueError(f"credit form must be one of {FORMS}, got {form!r}")
    if lambda_h:
        if entropy is None:
            raise ValueError("lambda_h > 0 needs the commit entropies")
        h = entropy.float()
        mean = h.mean(dim=1, keepdim=True)
        raw = raw + lambda_h * torch.where(mean > 0, h / mean.clamp_min(1e-12), torch.zeros_like(h))
    return raw


def normalize(raw: torch.Tensor) -> torch.Tensor:
    """w = N * raw / sum(raw) per row: mean exactly 1 per image (up to float rounding)."""
    return raw * (raw.shape[1] / raw.sum(dim=1, keepdim=True))


def credit_weights(
    struct: torch.Tensor,
    entropy: torch.Tensor | None = None,
    commit_step: torch.Tensor | None = None,
    *,
    lambda_s: float = 1.0,
    lambda_h: float = 0.0,
    form: Form = "indicator",
    power: float = 1.0,
    num_steps: int | None = None,
) -> torch.Tensor:
    """w [B, N] with mean 1 per row; all ones when lambda_s = lambda_h = 0."""
    if lambda_s == 0 and lambda_h == 0:
        return torch.ones(struct.shape, dtype=torch.float32, device=struct.device)
    raw = raw_weights(struct, entropy, commit_step, lambda_s=lambda_s, lambda_h=lambda_h, form=form,
                      power=power, num_steps=num_steps)
    return normalize(raw)


def token_advantages(advantages: torch.Tensor, weights: torch.Tensor, *, negative: Negative = "weighted") -> torch.Tensor:
    """Â [B, N] = A[:, None] * w, with weight 1 for A < 0 when `negative="uniform"`."""
    a = advantages.float().unsqueeze(1)
    if negative == "uniform":
        weights = torch.where(a < 0, torch.ones_like(weights), weights)
    elif negative != "weighted":
        raise ValueError(f"negative must be one of {NEGATIVES}, got {negative!r}")
    return a * weights
