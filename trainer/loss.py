"""The clipped surrogate with a k3 KL penalty to the reference policy (step 7), as a pure function.

    r_i   = exp(lp_i - lp_old_i)
    KL_i  = exp(lp_ref_i - lp_i) - (lp_ref_i - lp_i) - 1                 (k3, as d1 and MaskGRPO)
    L     = -(1/Z) * sum_{i in S} [ min(r_i Â_i, clip(r_i, 1-eps, 1+eps) Â_i) - beta KL_i ]

Normalisation (`norm`): "token" (default, d1/MaskGRPO: Z = number of selected tokens in the batch) or
"sequence" (dLLM-RL: each rollout's selected tokens are averaged first, Z = number of rollouts with at
least one selected token). Under data parallelism the caller passes the *global* Z (`normalizer`), so
that summing the per-rank gradients gives exactly the single-process gradient.

Ratio level (`ratio_level`): "token" (default: one ratio per token, as above) or "sequence" (UniGRPO,
MMaDA paper: log π'(o_g) = mean over the selected tokens of lp, one ratio r_g = exp(log π' − log π'_old)
per rollout, clipped with the rollout's mean token advantage; the KL is the rollout's mean k3; each
rollout counts once, so `norm` must be "sequence").

The gradient of the unclipped, KL-free objective is the policy gradient -(1/Z) sum Â_i r_i ∇lp_i; the
clip zeroes it for r > 1+eps with Â > 0 and for r < 1-eps with Â < 0 (tests check all three).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Norm = Literal["token", "sequence"]
NORMS: tuple[str, ...] = ("token", "sequence")


@dataclass
class LossStats:
    """Sums over the selected tokens (so ranks can add them before dividing)."""

    tokens: float = 0.0
    sequences: float = 0.0
    kl_sum: float = 0.0
    clipped: float = 0.0
    ratio_sum: float = 0.0
    adv_abs_sum: float = 0.0

    def add(self, other: LossStats) -> LossStats:
        return LossStats(*(a + b for a, b in zip(self.as_list(), other.as_list(), strict=True)))

    def as_list(self) -> list[float]:
        return [self.tokens, self.sequences, self.kl_sum, self.clipped, self.ratio_sum, self.adv_abs_sum]

    def means(self) -> dict[str, float]:
        n = max(self.tokens, 1.0)
        return {"kl": self.kl_sum / n, "clip_frac": self.clipped / n, "ratio": self.ratio_sum / n,
                "adv_abs": self.adv_abs_sum / n, "tokens": self.tokens}


def k3_kl(lp: torch.Tensor, lp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) from samples of pi (>= 0; 0 where lp == lp_ref)."""
    d = lp_ref - lp
    return torch.exp(d) - d - 1.0


def normalizer_of(sel: torch.Tensor, norm: Norm) -> float:
    """This rank's share of Z: selected tokens ("token") or rollouts with a selected token ("sequence")."""
    if norm == "token":
        return float(sel.sum())
    if norm == "sequence":
        return float(sel.any(dim=1).sum())
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def clipped_kl_loss(
    lp: torch.Tensor,
    lp_old: torch.Tensor,
    adv: torch.Tensor,
    sel: torch.Tensor,
    *,
    lp_ref: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    beta: float = 0.01,
    norm: Norm = "token",
    normalizer: float | None = None,
    ratio_level: str = "token",
) -> tuple[torch.Tensor, LossStats]:
    """(scalar loss, stats) for one inner iteration. All tensors are [B, N]; `sel` is bool.

    `lp` carries the gradient; `lp_old`, `lp_ref` and `adv` (token advantages Â) are constants.
    `normalizer` defaults to this batch's own Z (single process).
    """
    if not (lp.shape == lp_old.shape == adv.shape == sel.shape):
        raise ValueError(f"shape mismatch: lp {tuple(lp.shape)}, lp_old {tuple(lp_old.shape)}, "
                         f"adv {tuple(adv.shape)}, sel {tuple(sel.shape)}")
    if ratio_level == "sequence":
        return _sequence_ratio_loss(lp, lp_old, adv, sel, lp_ref=lp_ref, clip_eps=clip_eps, beta=beta, norm=norm,
                                    normalizer=normalizer)
    if ratio_level != "token":
        raise ValueError(f"ratio_level must be 'token' or 'sequence', got {ratio_level!r}")
    sel_f = sel.to(lp.dtype)
    ratio = torch.exp(lp - lp_old.detach())
    adv = adv.detach().to(lp.dtype)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    per_token = torch.minimum(unclipped, clipped)
    kl = None
    if lp_ref is not None and beta != 0.0:
        kl = k3_kl(lp, lp_ref.detach())
        per_token = per_token - beta * kl
    z = normalizer_of(sel, norm) if normalizer is None else float(normalizer)
    z = max(z, 1.0)
    if norm == "token":
        loss = -(per_token * sel_f).sum() / z
    elif norm == "sequence":
        counts = sel_f.sum(dim=1)
        per_seq = (per_token * sel_f).sum(dim=1) / counts.clamp_min(1.0)
        loss = -per_seq.sum() / z
    else:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")

    with torch.no_grad():
        is_clipped = ((ratio > 1.0 + clip_eps) & (adv > 0)) | ((ratio < 1.0 - clip_eps) & (adv < 0))
        stats = LossStats(
            tokens=float(sel_f.sum()),
            sequences=float(sel.any(dim=1).sum()),
            kl_sum=float((kl * sel_f).sum()) if kl is not None else 0.0,
            clipped=float((is_clipped & sel).sum()),
            ratio_sum=float((ratio * sel_f).sum()),
            adv_abs_sum=float((adv.abs() * sel_f).sum()),
        )
    return loss, stats


def _sequence_ratio_loss(lp: torch.Tensor, lp_old: torch.Tensor, adv: torch.Tensor, sel: torch.Tensor, *,
                         lp_ref: torch.Tensor | None, clip_eps: float, beta: float, norm: Norm,
                         normalizer: float | None) -> tuple[torch.Tensor, LossStats]:
    """UniGRPO's objective: one ratio per rollout from its mean selected-token log-prob."""
    if norm != "sequence":
        raise ValueError("ratio_level='sequence' (one ratio per rollout) needs norm='sequence'")
    sel_f = sel.to(lp.dtype)
    counts = sel_f.sum(dim=1)
    has = counts > 0
    denom = counts.clamp_min(1.0)
    mean_lp = (lp * sel_f).sum(dim=1) / denom
    mean_old = (lp_old.detach() * sel_f).sum(dim=1) / denom
    seq_adv = (adv.detach().to(lp.dtype) * sel_f).sum(dim=1) / denom
    ratio = torch.exp(mean_lp - mean_old)
    objective = torch.minimum(ratio * seq_adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * seq_adv)
    kl = None
    if lp_ref is not None and beta != 0.0:
        kl = k3_kl(lp, lp_ref.detach())
        objective = objective - beta * (kl * sel_f).sum(dim=1) / denom
    z = max(float(has.sum()) if normalizer is None else float(normalizer), 1.0)
    loss = -(objective * has.to(lp.dtype)).sum() / z
    with torch.no_grad():
        clipped = ((ratio > 1.0 + clip_eps) & (seq_adv > 0)) | ((ratio < 1.0 - clip_eps) & (seq_adv < 0))
        stats = LossStats(
            tokens=float(counts.sum()),
            sequences=float(has.sum()),
            kl_sum=float((kl * sel_f).sum()) if kl is not None else 0.0,
            clipped=float((clipped.to(lp.dtype) * counts).sum()),
            ratio_sum=float((ratio * counts).sum()),
            adv_abs_sum=float((adv.abs() * sel_f).sum()),
        )
    return loss, stats
