"""Per-token log-probabilities for the importance ratio (step 5), from a chosen context.

The default reads the abstract literally: the ratio comes from a prompt-conditioned estimator *starting
from a fully masked state*, d1-style but with the prompt intact:

    logp_θ(g, i) = log softmax(f_θ([c ; [M]^N])_i)[x_i^(g)]

The input depends only on the prompt, so one forward per *prompt* serves all G rollouts of its group
(gathered at G different targets) and all K inner iterations; old and reference log-probs are computed
once per round. That is the estimator's whole speed advantage (benchmarks/bench_trainer.py measures it).

The contexts themselves (full mask, reveal-unsampled, sketch-visible, TraceGRPO's trajectory views) are
registered strategies (`trainer.strategies.CONTEXTS`); each gives a list of views, and `view_logps` reads
every position from the view that owns it.

The estimator never applies CFG unless asked (`cfg_scale`), and then old, reference and new log-probs
all use it identically (htgrpo.md pitfall).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from paintbench.trainer.policy import MASK, MaskedImagePolicy, PromptBatch
from paintbench.trainer.strategies import View


def unique_prompts(group_of_row: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unique prompt ids in first-seen order, index of each row's prompt among them)."""
    ids = torch.as_tensor(group_of_row, dtype=torch.long)
    uniq: list[int] = []
    pos: dict[int, int] = {}
    inverse = []
    for g in ids.tolist():
        if g not in pos:
            pos[g] = len(uniq)
            uniq.append(g)
        inverse.append(pos[g])
    return torch.tensor(uniq, dtype=torch.long), torch.tensor(inverse, dtype=torch.long)


def gather_logps(logits: torch.Tensor, codes: torch.Tensor, row_index: torch.Tensor | None = None) -> torch.Tensor:
    """log softmax(logits)[row_index[r], i, codes[r, i]] as [R, N], without copying logits per row.

    `logits` is [U, N, V]; `row_index` (default: identity) maps each of the R code rows to a logits row.
    """
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)                           # [U, N]
    r, n = codes.shape
    idx = torch.arange(r, device=codes.device) if row_index is None else row_index.to(codes.device)
    pos = torch.arange(n, device=codes.device)
    picked = logits[idx[:, None], pos[None, :], codes]              # [R, N]
    return picked - lse[idx]


@dataclass
class EstimatorBatch:
    """A rank's share of one round, as the estimator needs it.

    `prompts` has one row per *unique* prompt of the share; `row_prompt` maps every rollout row to it;
    `codes` are the rollouts' final codes [R, N]."""

    prompts: PromptBatch
    row_prompt: torch.Tensor
    codes: torch.Tensor

    def rows(self, index: torch.Tensor) -> EstimatorBatch:
        """The rows `index` (a micro-batch), with their own unique prompts."""
        sub_prompt = self.row_prompt[index]
        uniq, inverse = unique_prompts(sub_prompt)
        return EstimatorBatch(self.prompts.select(uniq), inverse, self.codes[index])


def token_logps(policy: MaskedImagePolicy, batch: EstimatorBatch, canvas: torch.Tensor | None = None,
                *, cfg_scale: float = 0.0) -> torch.Tensor:
    """log p(codes) [R, N] under `policy` from `canvas` (None: the fully masked canvas, one forward per
    unique prompt) — with gradient if the caller allows it."""
    n = batch.codes.shape[1]
    if canvas is None:
        full = torch.full((len(batch.prompts), n), MASK, dtype=torch.long, device=batch.codes.device)
        logits = policy.image_logits(batch.prompts, full, cfg_scale=cfg_scale)
        return gather_logps(logits, batch.codes, batch.row_prompt)
    logits = policy.image_logits(batch.prompts.select(batch.row_prompt), canvas, cfg_scale=cfg_scale)
    return gather_logps(logits, batch.codes)


def view_logps(policy: MaskedImagePolicy, batch: EstimatorBatch, views: Sequence[View], *,
               cfg_scale: float = 0.0) -> torch.Tensor:
    """log p(codes) [R, N], each position read from the view whose `positions` hold it (a view with
    positions None covers every position)."""
    out: torch.Tensor | None = None
    for view in views:
        lp = token_logps(policy, batch, view.canvas, cfg_scale=cfg_scale)
        out = lp if view.positions is None or out is None else torch.where(view.positions, lp, out)
    if out is None:
        raise ValueError("no estimator views")
    return out
