"""Rollouts: MaskGIT-style iterative unmasking that records, per image token, when it was committed and
the entropy of its distribution then (step 1 of htgrpo.md), plus MaskGRPO's "emerge" sampler.

MaskGIT (`sampler="maskgit"`), step n = 0..T-1 on canvas z_n:
1. logits = policy.image_logits(prompts, z_n, cfg_scale)  ((1+s)·cond − s·uncond inside the adapter);
2. every masked position draws x̂_i from softmax(logits / τ_draw) and records H_i^(n), the entropy of
   that distribution;
3. confidence κ_i = log p(x̂_i) + τ_n·Gumbel (p = softmax(logits), as both MMaDA and DiMOO compute it);
   already known positions get +inf;
4. the m_{n+1} = floor(N·cos(π/2·(n+1)/T)) lowest-κ positions stay masked, clamped to
   [1, #masked − 1]; on the last step none do. Every other newly drawn token is committed:
   s_i = n, H_i = H_i^(n).

Temperature (`temperature_mode`):
- "compound" (MMaDA `t2i_generate`): the draw has no temperature; the Gumbel temperature is updated in
  place before use, τ_n = τ_{n−1}·(1 − (n+1)/T), so the factor compounds from step to step.
- "constant" (Lumina-DiMOO `generate_image`): τ is constant, and the draw uses it too (softmax(logits/τ)).

Emerge (`sampler="emerge"`, MaskGRPO `t2i_generate_emerge`): with k_n = cos(π/2·n/T), each masked
position independently commits at step n with probability (k_n − k_{n+1})/k_n, drawing its code from p;
the last step commits everything left.

Randomness: every rollout row has its own `torch.Generator` (seeded by the caller from (run seed, round,
global row)), and draws exactly the same numbers whatever else is in the batch, so a rollout does not
depend on batch composition, micro-batching or the number of processes. Codes are drawn by inverse CDF
(one uniform per position and step) and the Gumbel noise from one more uniform per position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from paintbench.trainer.policy import MASK, MaskedImagePolicy, PromptBatch

Sampler = Literal["maskgit", "emerge"]
TemperatureMode = Literal["compound", "constant"]
SAMPLERS: tuple[str, ...] = ("maskgit", "emerge")
TEMPERATURE_MODES: tuple[str, ...] = ("compound", "constant")


@dataclass
class SamplerOptions:
    """Rollout settings (all recorded in the run config and in saved policies)."""

    steps: int = 12
    cfg_scale: float = 0.0
    temperature: float = 1.0
    temperature_mode: TemperatureMode = "compound"
    sampler: Sampler = "maskgit"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.temperature_mode not in TEMPERATURE_MODES:
            raise ValueError(f"temperature_mode must be one of {TEMPERATURE_MODES}, got {self.temperature_mode!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplerOptions:
        known = {k: d[k] for k in ("steps", "cfg_scale", "temperature", "temperature_mode", "sampler") if k in d}
        return cls(**known)


@dataclass
class Rollout:
    """What a rollout returns: final `codes` [B, N], `commit_step` [B, N] (0..T-1), `commit_entropy`
    [B, N] (nats, in [0, log V]) and the number of steps T."""

    codes: torch.Tensor
    commit_step: torch.Tensor
    commit_entropy: torch.Tensor
    num_steps: int

    def __len__(self) -> int:
        return self.codes.shape[0]

    @staticmethod
    def cat(parts: Sequence[Rollout]) -> Rollout:
        return Rollout(
            codes=torch.cat([p.codes for p in parts]),
            commit_step=torch.cat([p.commit_step for p in parts]),
            commit_entropy=torch.cat([p.commit_entropy for p in parts]),
            num_steps=parts[0].num_steps,
        )


# -- schedules -------------------------------------------------------------------------------------------
def masked_after(step: int, num_steps: int, num_tokens: int) -> int:
    """floor(N·cos(π/2·(n+1)/T)): the nominal number of tokens still masked after step n, computed in
    float32 as both models do (`cosine_schedule(torch.tensor(ratio))`): in float64 one step in some
    schedules keeps one token too many masked (T = 12, 15, ...) and rollouts diverge from the models'."""
    ratio = torch.tensor((step + 1) / num_steps, dtype=torch.float32)
    frac = torch.cos(ratio * math.pi * 0.5)
    return int(torch.floor(torch.tensor(float(num_tokens), dtype=torch.float32) * frac))


def keep_masked(step: int, num_steps: int, num_tokens: int, currently_masked: int) -> int:
    """MMaDA's clamp: m_{n+1} in [1, #masked − 1] before the last step, 0 on it."""
    if step >= num_steps - 1:
        return 0
    return max(1, min(currently_masked - 1, masked_after(step, num_steps, num_tokens)))


def committed_by(step: int, num_steps: int, num_tokens: int) -> int:
    """Tokens committed after steps 0..n of a MaskGIT rollout (the same for every row)."""
    masked = num_tokens
    for n in range(step + 1):
        masked = keep_masked(n, num_steps, num_tokens, masked)
    return num_tokens - masked


def compound_temperatures(temperature: float, num_steps: int) -> list[float]:
    """MMaDA's in-place update: τ_n = τ_{n−1}·(1 − (n+1)/T), applied before step n uses it."""
    out, t = [], temperature
    for n in range(num_steps):
        t = t * (1.0 - (n + 1) / num_steps)
        out.append(t)
    return out


def emerge_keep_probability(step: int, num_steps: int) -> float:
    """k_{n+1}/k_n with k_n = cos(π/2·n/T): the chance a masked position stays masked at step n."""
    if step >= num_steps - 1:
        return 0.0
    k_t = math.cos(math.pi / 2 * step / num_steps)
    k_s = math.cos(math.pi / 2 * (step + 1) / num_steps)
    return k_s / k_t


# -- randomness ------------------------------------------------------------------------------------------
def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s) % (2**63 - 1))
        gens.append(g)
    return gens


def _uniforms(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """One row of uniforms per generator, stacked: [B, *shape], in [0, 1)."""
    return torch.stack([torch.rand(shape, generator=g, device=device) for g in generators])


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Categorical draws from probs [..., V] with uniforms u [...]: the first v with cdf_v > u·total."""
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[..., -1]).unsqueeze(-1).contiguous()
    return torch.searchsorted(cdf.contiguous(), target, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def gumbel(u: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))


def entropy_of(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of the last dimension, with 0·log 0 = 0."""
    logp = torch.log(probs.clamp_min(1e-30))
    return (-(probs * logp).sum(dim=-1)).clamp_min(0.0)


# -- the samplers ----------------------------------------------------------------------------------------
@torch.no_grad()
def rollout(
    policy: MaskedImagePolicy,
    prompts: PromptBatch,
    generators: Sequence[torch.Generator],
    options: SamplerOptions,
) -> Rollout:
    """Generate one image per prompt row; `generators` has one generator per row."""
    if len(generators) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(generators)} generators")
    if options.sampler == "maskgit":
        return _maskgit(policy, prompts, generators, options)
    return _emerge(policy, prompts, generators, options)


def _maskgit(policy: MaskedImagePolicy, prompts: PromptBatch, gens: Sequence[torch.Generator],
             opt: SamplerOptions) -> Rollout:
    device = policy.device
    b, n, t_steps = len(prompts), policy.num_image_tokens, opt.steps
    canvas = torch.full((b, n), MASK, dtype=torch.long, device=device)
    commit_step = torch.full((b, n), -1, dtype=torch.long, device=device)
    commit_h = torch.zeros((b, n), dtype=torch.float32, device=device)
    rows = torch.arange(b, device=device).unsqueeze(1)
    taus = (compound_temperatures(opt.temperature, t_steps) if opt.temperature_mode == "compound"
            else [opt.temperature] * t_steps)
    for step in range(t_steps):
        logits = policy.image_logits(prompts, canvas, cfg_scale=opt.cfg_scale).float()
        probs = torch.softmax(logits, dim=-1)
        draw_p, greedy = draw_distribution(logits, opt)
        noise = _uniforms(gens, (2, n), device)                       # [B, 2, N]: code draw, Gumbel
        drawn = draw_p.argmax(dim=-1) if greedy else inverse_cdf(draw_p, noise[:, 0])
        h = entropy_of(draw_p)
        unknown = canvas == MASK
        drawn = torch.where(unknown, drawn, canvas)
        conf = torch.log(probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30))
        conf = conf + taus[step] * gumbel(noise[:, 1])
        conf = torch.where(unknown, conf, torch.full_like(conf, float("inf")))
        m = keep_masked(step, t_steps, n, int(unknown.sum(dim=1).max()))
        remask = torch.zeros_like(unknown)
        if m > 0:
            lowest = torch.argsort(conf, dim=1, stable=True)[:, :m]
            remask[rows, lowest] = True
        newly = unknown & ~remask
        commit_step = torch.where(newly, torch.full_like(commit_step, step), commit_step)
        commit_h = torch.where(newly, h, commit_h)
        canvas = torch.where(remask, torch.full_like(canvas, MASK), drawn)
    return Rollout(canvas, commit_step, commit_h, t_steps)


def draw_distribution(logits: torch.Tensor, opt: SamplerOptions) -> tuple[torch.Tensor, bool]:
    """(distribution codes are drawn from, greedy?) — one rule for both samplers. "compound" (MMaDA): the
    draw has no temperature (τ only scales the Gumbel confidence). "constant" (DiMOO): softmax(logits/τ),
    and τ = 0 is the greedy argmax, never τ = 1."""
    if opt.temperature_mode == "constant":
        if opt.temperature == 0.0:
            return torch.softmax(logits, dim=-1), True
        if opt.temperature != 1.0:
            return torch.softmax(logits / opt.temperature, dim=-1), False
    return torch.softmax(logits, dim=-1), False


def _emerge(policy: MaskedImagePolicy, prompts: PromptBatch, gens: Sequence[torch.Generator],
            opt: SamplerOptions) -> Rollout:
    device = policy.device
    b, n, t_steps = len(prompts), policy.num_image_tokens, opt.steps
    canvas = torch.full((b, n), MASK, dtype=torch.long, device=device)
    commit_step = torch.full((b, n), -1, dtype=torch.long, device=device)
    commit_h = torch.zeros((b, n), dtype=torch.float32, device=device)
    for step in range(t_steps):
        logits = policy.image_logits(prompts, canvas, cfg_scale=opt.cfg_scale).float()
        probs, greedy = draw_distribution(logits, opt)
        noise = _uniforms(gens, (2, n), device)                       # [B, 2, N]: commit?, code draw
        unknown = canvas == MASK
        keep_p = emerge_keep_probability(step, t_steps)
        newly = unknown & (noise[:, 0] >= keep_p)
        drawn = probs.argmax(dim=-1) if greedy else inverse_cdf(probs, noise[:, 1])
        commit_step = torch.where(newly, torch.full_like(commit_step, step), commit_step)
        commit_h = torch.where(newly, entropy_of(probs), commit_h)
        canvas = torch.where(newly, drawn, canvas)
    return Rollout(canvas, commit_step, commit_h, t_steps)
