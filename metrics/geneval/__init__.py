"""GenEval: the official per-image rules, Flow-GRPO's GenEval reward and the summary numbers.

This package root stays light (NumPy only, no torch, no detector or CLIP code) so the rules can be
imported and tested anywhere; the model-backed provider lives in its own module.
"""

from __future__ import annotations

from paintbench.metrics.geneval.aggregate import format_summary, summarize
from paintbench.metrics.geneval.rules import (
    COLORS,
    DEFAULT_OPTIONS,
    RELATIONS,
    TAGS,
    ColourOf,
    Detection,
    GenEvalOptions,
    RewardResult,
    Verdict,
    box_iou,
    filter_detections,
    format_relations,
    judge,
    judge_kept,
    relative_position,
    reward,
    reward_kept,
    select_indices,
)

__all__ = [
    "COLORS",
    "DEFAULT_OPTIONS",
    "RELATIONS",
    "TAGS",
    "ColourOf",
    "Detection",
    "GenEvalOptions",
    "RewardResult",
    "Verdict",
    "box_iou",
    "filter_detections",
    "format_relations",
    "format_summary",
    "judge",
    "judge_kept",
    "relative_position",
    "reward",
    "reward_kept",
    "select_indices",
    "summarize",
]
