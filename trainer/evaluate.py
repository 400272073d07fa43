"""Periodic evaluation: a harness suite scored on the current policy, in process.

`SuiteEvaluator(suite)` is the loop's default `evaluate_fn(policy, step) -> {name: value}`. It reads the
suite definition with the harness (`harness.suite.load_suite`: prompts, images per prompt, metrics with
their options and aggregation), generates with `trainer.generate.generate_images` exactly as the
harness's `policy:CHECKPOINT` generator does, and scores with the suite's metric providers. It writes no
run directory: for a full, resumable, reportable evaluation of a saved checkpoint use
`paintbench eval SUITE --generator policy:DIR/checkpoints/step_N`. Any other callable with the same
signature can be passed to `Trainer(evaluate_fn=...)` instead.

It is the harness's evaluation, not an approximation of it: the same prompts (`max_prompts` selects them as
`eval --limit` does), the suite's images per prompt, and the harness's seed rule
(`harness.dist.derive_seed(seed, prompt id, sample index)`), so the number the trainer logs at step N equals
`paintbench eval SUITE --generator policy:RUN/checkpoints/step_N --seed SEED [--limit N]` to the last digit
(tested). Every evaluation of a run therefore sees the same prompts and noise, and the curve in
metrics.jsonl moves only with the policy.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from paintbench.harness.dist import derive_seed
from paintbench.trainer.generate import generate_images
from paintbench.trainer.policy import MaskedImagePolicy


class SuiteEvaluator:
    def __init__(self, suite: str, *, images_per_prompt: int | None = None, max_prompts: int = 0,
                 sampler: dict[str, Any] | None = None, seed: int = 0, batch_size: int = 64) -> None:
        from paintbench.harness.suite import load_suite, stratified_sample

        self.suite = load_suite(suite)
        items = list(self.suite.items)
        self.items = stratified_sample(items, max_prompts, seed) if 0 < max_prompts < len(items) else items
        self.ipp = images_per_prompt or self.suite.images_per_prompt
        self.sampler = dict(sampler or {})
        self.seed = seed
        self.batch_size = batch_size
        self._providers: dict[str, Any] = {}

    def _provider(self, name: str, options: dict[str, Any], device: torch.device):
        key = f"{name}:{sorted(options.items())}"
        if key not in self._providers:
            from paintbench.trainer.rewards import _get_provider

            self._providers[key] = _get_provider(name, device=device, **options)
        return self._providers[key]

    def __call__(self, policy: MaskedImagePolicy, step: int) -> dict[str, float]:
        jobs = [(it, j) for it in self.items for j in range(self.ipp)]
        prompts = [it.prompt for it, _ in jobs]
        seeds = [derive_seed(self.seed, it.id, j) for it, j in jobs]
        images = generate_images(policy, prompts, seeds, [it.metadata for it, _ in jobs],
                                 batch_size=self.batch_size, **self.sampler)
        out: dict[str, float] = {}
        for metric in self.suite.metrics:
            provider = self._provider(metric.name, dict(metric.options), policy.device)
            meta = [dict(it.metadata) if it.metadata else {} for it, _ in jobs]
            values = provider.score(images, prompts, meta).values.float().cpu()
            key = f"eval/{self.suite.name}/{metric.name}"
            out[key] = aggregate(values, [it.category for it, _ in jobs], metric.aggregation)
        return out


def aggregate(values: torch.Tensor, categories: list[str | None], how: str) -> float:
    """`mean` over images, or `macro`: the unweighted mean of per-category means (GenEval's Overall)."""
    if how == "mean" or not any(categories):
        return float(values.mean()) if len(values) else float("nan")
    groups: dict[str, list[float]] = defaultdict(list)
    for v, c in zip(values.tolist(), categories, strict=True):
        groups[str(c)].append(v)
    return float(sum(sum(g) / len(g) for g in groups.values()) / len(groups))

