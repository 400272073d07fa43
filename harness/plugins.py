"""Metric providers that live in the harness, declared for the metrics registry.

`metrics` never imports the harness; it finds these specs through the `paintbench.metrics` entry
point (see pyproject.toml). This module must stay free of model code: the classes are named by string.
"""

from __future__ import annotations

from paintbench.metrics.registry import ProviderSpec

SPECS = [
    ProviderSpec(
        name="shapes-geneval",
        target="paintbench.harness.shapes.provider:ShapesGenEvalProvider",
        version="shapes-geneval/1",
        higher_is_better=True,
        nominal_range=(0.0, 1.0),
        summary="GenEval's rules on the synthetic shapes world (exact pixel detector, no weights)",
        weights=(),
        needs_prompt=True,
        display=(1.0, 3),
        hard_range=(None, 1.0),  # GenEval's reward: 1 - |n - k| / n per clause, never above 1
    ),
]
