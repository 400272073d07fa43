"""`shapes-geneval`: GenEval's rules on the shapes world, as a metrics provider and RL reward.

The exact detector (`harness.shapes.detector`) stands in for Mask2Former + CLIP; everything after
detection is `metrics.geneval` unchanged (`judge` for the official verdict, `reward` for Flow-GRPO's
partial credit). Each image needs its GenEval record in `metadata`.

`mode="reward"` (default, the RL signal) returns Flow-GRPO's partial-credit score (can be negative when
far too many objects are drawn); `mode="correct"` returns GenEval's 0/1 verdict. Both are always in the
details, with the reason strings and the detections (class → boxes and colours), in input order.

The provider lives outside `metrics` (which never imports the harness); it joins the metrics registry
through the `paintbench.metrics` entry point (`harness.plugins.SPECS`, kept equal to `SPEC` here by a
test). For callers that hold token grids (the trainer), `score_tokens` gives the same scores without
rendering or detecting pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch

from paintbench.harness.plugins import SPECS
from paintbench.harness.shapes.codebook import PATCH
from paintbench.harness.shapes.detector import (
    DEFAULT_TOLERANCE,
    Detections,
    colour_of,
    detect,
    detect_batch,
    detect_tokens,
    detections_to_json,
)
from paintbench.metrics.base import Metadata, Prompts, Provider, Scores
from paintbench.metrics.geneval import GenEvalOptions, judge, reward
from paintbench.metrics.images import ImageBatch
from paintbench.metrics.registry import ProviderSpec
from paintbench.metrics.registry import spec as registry_spec

SPEC = next(s for s in SPECS if s.name == "shapes-geneval")  # declared once, in harness.plugins

Mode = Literal["reward", "correct"]


class ShapesGenEvalProvider(Provider):
    """GenEval on the shapes world. Options: `mode` ("reward" | "correct"), `tolerance` (foreground
    threshold of the detector), `position_quirk` (Flow-GRPO's reward quirk, on by default), `options`
    (`GenEvalOptions`, GenEval's thresholds). `weights`/`weights_dir` are accepted and ignored."""

    name: ClassVar[str] = "shapes-geneval"
    needs_prompt: ClassVar[bool] = True

    def __init__(
        self,
        *,
        mode: Mode = "reward",
        tolerance: int = DEFAULT_TOLERANCE,
        position_quirk: bool = True,
        options: GenEvalOptions | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 256,
        weights: Any = None,
        weights_dir: Any = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        if mode not in ("reward", "correct"):
            raise ValueError(f"{self.name}: mode must be 'reward' or 'correct', got {mode!r}")
        self.mode = mode
        self.tolerance = tolerance
        self.position_quirk = position_quirk
        self.options = options or GenEvalOptions()

    @property
    def spec(self) -> ProviderSpec:
        """The registered spec (the `harness.plugins` entry point), or `SPEC` when not registered."""
        try:
            return registry_spec(self.name)
        except KeyError:
            return SPEC

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "mode": self.mode, "tolerance": self.tolerance,
                "position_quirk": self.position_quirk}

    def _detect(self, images: ImageBatch) -> list[Detections]:
        if images.tensor is not None:
            return detect_batch(images.tensor, tolerance=self.tolerance)
        pil = images.pil or []
        if len({im.size for im in pil}) <= 1:
            return detect_batch(pil, tolerance=self.tolerance)
        return [detect(im, masks=False, tolerance=self.tolerance) for im in pil]

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        _check_metadata(self.name, metadata)
        return self._score_detections(self._detect(images), metadata)

    def score_tokens(self, tokens: torch.Tensor, metadata: Sequence[dict[str, Any]], *, patch: int = PATCH) -> Scores:
        """Score token grids [B, H, W] directly: the same values and details as scoring
        `render(tokens, patch=patch)`, without drawing or detecting pixels (the trainer's fast path)."""
        if len(metadata) != len(tokens):
            raise ValueError(f"{self.name}: got {len(tokens)} token grids but {len(metadata)} metadata records")
        _check_metadata(self.name, list(metadata))
        return self._score_detections(detect_tokens(tokens, patch=patch), list(metadata))

    def _score_detections(self, detections: list[Detections], metadata: list[dict[str, Any]]) -> Scores:
        values: list[float] = []
        details: list[dict[str, Any]] = []
        for dets, meta in zip(detections, metadata, strict=True):
            verdict = judge(meta, dets, colour_of, options=self.options)
            partial = reward(meta, dets, colour_of, position_quirk=self.position_quirk, options=self.options)
            values.append(partial.score if self.mode == "reward" else float(verdict.correct))
            details.append({
                "tag": meta.get("tag"),
                "correct": verdict.correct,
                "reason": verdict.reason,
                "reward": partial.score,
                "reward_strict": partial.strict,
                "reward_reason": partial.reason,
                "detections": detections_to_json(dets),
            })
        return Scores(
            metric=self.name,
            values=torch.tensor(values, dtype=torch.float32, device=self.device),
            details=details,
        )


def _check_metadata(metric: str, metadata: list[dict[str, Any]] | None) -> None:
    """Every image needs a GenEval record (`tag` and `include` clauses); say so in one line if not."""
    if metadata is None:
        raise ValueError(f"{metric}: needs one GenEval metadata record (tag, include, ...) per image, got none")
    for i, meta in enumerate(metadata):
        if not isinstance(meta, dict) or "tag" not in meta or "include" not in meta:
            shown = meta if not isinstance(meta, dict) else sorted(meta)
            raise ValueError(f"{metric}: metadata record {i} is not a GenEval record with 'tag' and 'include' "
                             f"(got {shown!r})")
