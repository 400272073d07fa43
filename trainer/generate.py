"""`generate_images`: a policy as an image generator (the harness's `policy:CHECKPOINT` generator).

Each image is drawn from its own generator seeded by its request seed, so an image depends only on
(policy, prompt, seed, sampler options), never on batch composition or sharding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from paintbench.trainer.policy import MaskedImagePolicy
from paintbench.trainer.sampling import SamplerOptions, make_generators, rollout

SAMPLER_KEYS = ("steps", "cfg_scale", "temperature", "temperature_mode", "sampler")


def sampler_options(policy: MaskedImagePolicy, overrides: Mapping[str, Any]) -> SamplerOptions:
    unknown = sorted(set(overrides) - set(SAMPLER_KEYS))
    if unknown:
        raise TypeError(f"unknown sampler option(s) {unknown}; known: {list(SAMPLER_KEYS)}")
    return SamplerOptions.from_dict({**policy.default_sampler(), **dict(overrides)})


@torch.no_grad()
def generate_images(
    policy: MaskedImagePolicy,
    prompts: Sequence[str],
    seeds: Sequence[int],
    metadata: Sequence[Mapping[str, Any] | None] | None = None,
    *,
    batch_size: int = 64,
    **options: Any,
) -> torch.Tensor:
    """uint8 images [B, 3, H, W] on the CPU, one per (prompt, seed). `metadata` is accepted for the
    harness's interface and unused (the policy sees only the prompt text)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    opts = sampler_options(policy, options)
    was_training = policy.training
    policy.eval()
    out = []
    try:
        for start in range(0, len(prompts), max(1, batch_size)):
            texts = list(prompts[start:start + batch_size])
            gens = make_generators(seeds[start:start + batch_size], policy.device)
            r = rollout(policy, policy.encode_prompts(texts), gens, opts)
            out.append(policy.decode(r.codes).cpu())
    finally:
        policy.train(was_training)
    if not out:
        h, w = policy.image_size
        return torch.zeros(0, 3, h, w, dtype=torch.uint8)
    return torch.cat(out)
