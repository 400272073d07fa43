"""Metrics of the blocks world: `blocks-geneval` (GenEval's rules), `blocks-layout` and `blocks-detail`
(the two reward terms, combined through the trainer's multi-reward weighting).

Images are read back to tokens exactly (`codebook.read_tokens`); an unreadable cell (an edited or
resampled image) is neither anchor nor fill, so it can only lower a score, and the details say how
many cells were unreadable. Every image needs its GenEval record in `metadata`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch

from paintbench.harness.blocks.codebook import read_tokens
from paintbench.harness.blocks.objects import detail_score, geneval_scores, layout_score, read_objects
from paintbench.harness.shapes.detector import to_uint8_chw
from paintbench.harness.shapes.provider import _check_metadata
from paintbench.metrics.base import Metadata, Prompts, Provider, Scores
from paintbench.metrics.geneval import GenEvalOptions
from paintbench.metrics.images import ImageBatch


class BlocksProvider(Provider):
    """Base: reads objects off the images; subclasses choose the value (`term`)."""

    name: ClassVar[str] = "blocks"
    term: ClassVar[str] = ""
    needs_prompt: ClassVar[bool] = True

    def __init__(self, *, mode: Literal["reward", "correct"] = "reward", position_quirk: bool = True,
                 options: GenEvalOptions | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str = torch.float32, batch_size: int = 256, weights: Any = None,
                 weights_dir: Any = None) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        if mode not in ("reward", "correct"):
            raise ValueError(f"{self.name}: mode must be 'reward' or 'correct', got {mode!r}")
        self.mode = mode
        self.position_quirk = position_quirk
        self.options = options or GenEvalOptions()

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "mode": self.mode, "position_quirk": self.position_quirk}

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        _check_metadata(self.name, metadata)
        arr = to_uint8_chw(images.tensor if images.tensor is not None else images.pil)
        grids = read_tokens(arr)
        values, details = [], []
        for grid, meta in zip(grids, metadata, strict=True):  # type: ignore[arg-type]
            objects = read_objects(grid)
            correct, reason, partial = geneval_scores(meta, objects, position_quirk=self.position_quirk,
                                                      options=self.options)
            parts = {"layout": layout_score(meta, objects, position_quirk=self.position_quirk, options=self.options),
                     "detail": detail_score(meta, objects), "geneval": partial if self.mode == "reward" else float(correct)}
            values.append(parts[self.term])
            details.append({"tag": meta.get("tag"), "correct": correct, "reason": reason, "reward": partial,
                            "layout": parts["layout"], "detail": parts["detail"],
                            "unreadable_cells": int(np.sum(grid < 0)),
                            "objects": [{"slot": o.slot, "shape": o.shape, "colour": o.colour,
                                         "consistent": o.consistent} for o in objects]})
        return Scores(metric=self.name, values=torch.tensor(values, dtype=torch.float32, device=self.device),
                      details=details)


class BlocksGenEvalProvider(BlocksProvider):
    """GenEval's rules (`mode="correct"`: the verdict; `"reward"`: Flow-GRPO's partial credit)."""

    name = "blocks-geneval"
    term = "geneval"


class BlocksLayoutProvider(BlocksProvider):
    """The layout term: GenEval partial credit on classes, counts and positions (colours removed)."""

    name = "blocks-layout"
    term = "layout"


class BlocksDetailProvider(BlocksProvider):
    """The detail term: the share of objects whose fills agree with their anchor and the asked colour."""

    name = "blocks-detail"
    term = "detail"
