"""Supervised warm start of the tiny policy on the shapes world's oracle layouts (documented, optional).

RL needs a policy that sometimes succeeds: a randomly initialised transformer draws noise, every image
of a group scores the same, and group-relative advantages are all zero. The real backbones arrive
pre-trained; the tiny policy gets a brief MaskGIT-style pre-training instead: for a random training
record, an oracle layout (the world's `oracle`, e.g. `harness.shapes.layouts.oracle_tokens`) is masked at a cosine-distributed
rate and the masked cells are predicted with cross-entropy; the prompt is replaced by the empty prompt
with probability `drop_prompt` so classifier-free guidance has an unconditional branch.

It is deliberately short (a few hundred steps): the warm-started policy is the run's *starting policy*
and its reference policy, and what the learning test shows is that the RL phase, not this, raises the
reward from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from paintbench.trainer.policy import MASK, MaskedImagePolicy


def masked_batch(tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Canvas [B, N] with a cosine-distributed fraction (at least one cell) of each row masked."""
    b, n = tokens.shape
    u = torch.rand(b, generator=generator)
    count = torch.clamp(torch.ceil(torch.cos(math.pi / 2 * u) * n), min=1).long()
    order = torch.rand(b, n, generator=generator).argsort(dim=1)
    ranks = order.argsort(dim=1)
    masked = ranks < count.unsqueeze(1)
    return torch.where(masked.to(tokens.device), torch.full_like(tokens, MASK), tokens)


def warm_start(
    policy: MaskedImagePolicy,
    records: Sequence[dict[str, Any]],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    drop_prompt: float = 0.1,
    seed: int = 0,
    on_step: Callable[[float], None] | None = None,
    oracle: Callable[[dict[str, Any], Any], torch.Tensor] | None = None,
) -> list[float]:
    """Train `policy` in place for `steps` steps; returns the loss of each step. `oracle(record, rng)`
    draws the target token grid (default: the shapes world's `oracle_tokens`)."""
    if oracle is None:
        from paintbench.harness.shapes.layouts import oracle_tokens as oracle

    usable = [r for r in records if r.get("include")]
    if not usable:
        raise ValueError("warm start needs GenEval-format records (with 'include') to draw oracle layouts")
    rng = np.random.default_rng([seed, 7919])
    gen = torch.Generator()
    gen.manual_seed(seed * 1_000_003 + 17)
    params = policy.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)))
    device = policy.device
    losses: list[float] = []
    policy.train()
    for _ in range(steps):
        picks = rng.integers(len(usable), size=batch_size)
        recs = [usable[int(i)] for i in picks]
        tokens = torch.stack([oracle(r, rng).reshape(-1) for r in recs]).to(device)
        texts = [r["prompt"] if rng.random() >= drop_prompt else "" for r in recs]
        canvas = masked_batch(tokens, gen).to(device)
        logits = policy.image_logits(policy.encode_prompts(texts), canvas)
        masked = canvas == MASK
        loss = F.cross_entropy(logits[masked].float(), tokens[masked])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(losses[-1])
    policy.eval()
    return losses
