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
    *(
        ProviderSpec(
            name=f"blocks-{term}",
            target=f"paintbench.harness.blocks.provider:{cls}",
            version=f"blocks-{term}/1",
            higher_is_better=True,
            nominal_range=(0.0, 1.0),
            summary=summary,
            weights=(),
            needs_prompt=True,
            display=(1.0, 3),
            # layout and geneval are GenEval rewards (never above 1, unbounded below by design: a clause's
            # term 1 - |n - k| / n falls without bound as k grows); detail is a fraction of objects
            hard_range=(0.0, 1.0) if term == "detail" else (None, 1.0),
        )
        for term, cls, summary in (
            ("geneval", "BlocksGenEvalProvider", "GenEval's rules on the synthetic blocks world (objects of 2x2 tokens; exact, no weights)"),
            ("layout", "BlocksLayoutProvider", "blocks world layout term: GenEval partial credit on classes, counts, positions"),
            ("detail", "BlocksDetailProvider", "blocks world detail term: objects whose fills agree with their anchor and colour"),
        )
    ),
]
