"""Rewards: any registered metric provider, alone or several with weights.

`metrics.get(name, device=..., **options)` builds each provider once; each round the decoded rollout
images (uint8 [B, 3, H, W], still on the device) go to `provider.score(images, prompts, metadata)` in one
call per provider (the provider batches internally), never through PIL or disk. GenEval-format records
are passed as `metadata`, which is what the GenEval-rule rewards read (`shapes-geneval`, a GenEval server).

Several rewards combine with weights under `sum_then_normalize` (weight the raw rewards, then normalise
per group: Flow-GRPO) or `normalize_then_sum` (normalise each per group, then weight: GDPO); the
arithmetic is in `trainer.advantages`. Every component is logged on its own (`reward/<name>/mean`).

`reward_backend: remote` gives the same `RewardModel` providers served by `paintbench serve`
(`metrics.remote.RemoteProvider`): one reward interface, wherever the models run.

`AsyncScorer` overlaps scoring with sampling: the loop submits each rollout micro-batch's images and
goes on sampling the next while a worker thread scores (ddpo-pytorch / Flow-GRPO style).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from paintbench import metrics
from paintbench.metrics.registry import UnknownMetricError


@dataclass
class RewardResult:
    """Per-component reward values (float32, CPU, one per image) and bookkeeping for logs."""

    components: dict[str, torch.Tensor]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)   # e.g. GenEval's strict correctness

    def __len__(self) -> int:
        return len(next(iter(self.components.values())))

    @staticmethod
    def cat(parts: Sequence[RewardResult]) -> RewardResult:
        names = list(parts[0].components)
        extra = [k for k in parts[0].extras if all(k in p.extras for p in parts)]
        return RewardResult({n: torch.cat([p.components[n] for p in parts]) for n in names},
                            {k: torch.cat([p.extras[k] for p in parts]) for k in extra})


def ensure_harness_metrics() -> None:
    """A source checkout that was never pip-installed has no entry points: the harness's providers (the
    shapes world) are still one import away."""
    from paintbench.harness.plugins import SPECS

    for spec in SPECS:
        if spec.name not in metrics.available():
            metrics.register(spec)


def _get_provider(name: str, **kwargs: Any):
    try:
        return metrics.get(name, **kwargs)
    except UnknownMetricError:
        ensure_harness_metrics()
        return metrics.get(name, **kwargs)


class RewardModel:
    """Weighted metric providers scored on decoded image tensors."""

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        device: str | torch.device = "cpu",
        weights_dir: str | None = None,
        remote: Mapping[str, Any] | None = None,
    ) -> None:
        if not weights:
            raise ValueError("no rewards configured")
        self.weights = dict(weights)
        self.device = torch.device(device)
        options = dict(options or {})
        unknown = set(options) - set(self.weights)
        if unknown:
            raise ValueError(f"reward_options for rewards that are not configured: {sorted(unknown)}")
        common: dict[str, Any] = {"device": self.device}
        if weights_dir is not None:
            common["weights_dir"] = weights_dir
        if remote is not None:   # the same providers, served by `paintbench serve` (metrics.remote)
            from paintbench.metrics.remote import RemoteProvider

            self.providers = {name: RemoteProvider(remote["url"], name, token=remote.get("token"),
                                                   timeout_s=remote.get("timeout_s", 300.0),
                                                   retries=remote.get("retries", 3),
                                                   options=dict(options.get(name, {})))
                              for name in self.weights}
            return
        self.providers = {name: _get_provider(name, **common, **dict(options.get(name, {})))
                          for name in self.weights}

    def __call__(self, images: torch.Tensor, prompts: Sequence[str],
                 metadata: Sequence[Mapping[str, Any]] | None = None) -> RewardResult:
        comps: dict[str, torch.Tensor] = {}
        extras: dict[str, torch.Tensor] = {}
        meta = [dict(m) for m in metadata] if metadata is not None else None
        for name, provider in self.providers.items():
            scores = provider.score(images, list(prompts), meta)
            comps[name] = scores.values.detach().float().cpu()
            for key in ("correct", "strict"):
                flags = [d.get(key) for d in scores.details]
                if flags and all(isinstance(f, bool) for f in flags):
                    extras[f"{name}/{key}"] = torch.tensor(flags, dtype=torch.float32)
        return RewardResult(comps, extras)


class AsyncScorer:
    """Submit scoring jobs to one worker thread; `results()` waits for them in submission order."""

    def __init__(self, model: RewardModel, enabled: bool) -> None:
        self.model = model
        self.pool = ThreadPoolExecutor(max_workers=1) if enabled else None
        self.pending: list[Future | RewardResult] = []

    def submit(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]] | None) -> None:
        if self.pool is None:
            self.pending.append(self.model(images, prompts, metadata))
        else:
            self.pending.append(self.pool.submit(self.model, images, list(prompts),
                                                 None if metadata is None else list(metadata)))

    def results(self) -> RewardResult:
        parts = [p.result() if isinstance(p, Future) else p for p in self.pending]
        self.pending = []
        return RewardResult.cat(parts)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
