"""The trainer's interchangeable parts, registered by name; a preset (`config.PRESETS`) names a bundle.

Three kinds, each a small pure function, so a new baseline is an entry here, not an edit of the loop:

- **estimator contexts** (`context`): the inputs the importance ratio is read from, as a list of
  `View`s per inner iteration. A view is a canvas (None = the shared fully masked canvas, one forward
  per prompt) and the positions read from it (None = every position).
  `full_mask` (HT-GRPO, d1 with the prompt intact), `reveal_unsampled` (MaskGRPO / UniGRPO: only the
  iteration's subset masked), `sketch_visible` (refinement iterations see the structure tokens) and
  `trace` (TraceGRPO, TraceRL-style: for each commit step s, the canvas shows the tokens committed
  before s and the targets are the tokens committed at s; consecutive steps merged by `trace_shrink`,
  dLLM-RL's `shrink`).
- **credit maps** (`credit`): the token weights w [R, N] multiplying the image advantage.
  `hierarchical` (htgrpo.md's [I] form, `trainer.credit`) and `uniform` (every weight exactly 1).
- **stage schedules** (`stage_schedule`): the stage of each inner iteration of round r.
  `every_round` (global, structure, refinement in every round, htgrpo.md facts 5-6) and `progressive`
  (htgrpo.md open question 4, "refine after the structure is stable": up to `stage_switch_round` the
  refinement iterations are structure iterations, afterwards the structure iterations are refinement).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from paintbench.trainer.credit import credit_weights
from paintbench.trainer.policy import MASK
from paintbench.trainer.sampling import Rollout
from paintbench.trainer.schedule import stage_of

if TYPE_CHECKING:
    from paintbench.trainer.config import HTGRPOConfig


@dataclass(frozen=True)
class View:
    """One estimator input: `canvas` [R, N] (None: the shared fully masked canvas) and the bool
    `positions` [R, N] whose log-probs are read from it (None: all)."""

    canvas: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    @property
    def shared(self) -> bool:
        return self.canvas is None and self.positions is None

    def rows(self, index: torch.Tensor | None) -> View:
        if index is None:
            return self
        return View(None if self.canvas is None else self.canvas[index],
                    None if self.positions is None else self.positions[index])


FULL_MASK = [View()]


def only_full_mask(views: list[View]) -> bool:
    """Whether an iteration reads nothing but the shared fully masked canvas (computed once per round)."""
    return len(views) == 1 and views[0].shared


@dataclass(frozen=True)
class ContextInput:
    """What a context may read: the rollouts, the iteration's token subset, the partition, its stage."""

    roll: Rollout
    subset: torch.Tensor
    struct: torch.Tensor
    stage: str
    cfg: HTGRPOConfig


ContextFn = Callable[[ContextInput], list[View]]
CreditFn = Callable[[Rollout, torch.Tensor, "HTGRPOConfig"], torch.Tensor]
ScheduleFn = Callable[["HTGRPOConfig", int], list[str]]

CONTEXTS: dict[str, ContextFn] = {}
CREDITS: dict[str, CreditFn] = {}
SCHEDULES: dict[str, ScheduleFn] = {}


def _register(table: dict, name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        table[name] = fn
        return fn
    return deco


# -- estimator contexts ---------------------------------------------------------------------------------
@_register(CONTEXTS, "full_mask")
def full_mask(x: ContextInput) -> list[View]:
    return FULL_MASK


@_register(CONTEXTS, "reveal_unsampled")
def reveal_unsampled(x: ContextInput) -> list[View]:
    codes = x.roll.codes
    return [View(torch.where(x.subset, torch.full_like(codes, MASK), codes))]


@_register(CONTEXTS, "sketch_visible")
def sketch_visible(x: ContextInput) -> list[View]:
    if x.stage != "refine":
        return FULL_MASK
    codes = x.roll.codes
    return [View(torch.where(x.struct, codes, torch.full_like(codes, MASK)))]


@_register(CONTEXTS, "trace")
def trace(x: ContextInput) -> list[View]:
    return trace_views(x.roll.codes, x.roll.commit_step, x.roll.num_steps, x.cfg.trace_shrink)


def trace_views(codes: torch.Tensor, commit_step: torch.Tensor, num_steps: int, shrink: int = 1) -> list[View]:
    """TraceRL's trajectory views: for each group of `shrink` consecutive commit steps, the canvas with
    every token of an earlier group visible (the rest masked) and the group's own tokens as targets."""
    if shrink < 1:
        raise ValueError(f"trace_shrink must be >= 1, got {shrink}")
    group = commit_step.long() // shrink
    views = []
    for g in range(math.ceil(num_steps / shrink)):
        targets = group == g
        if bool(targets.any()):
            views.append(View(torch.where(group < g, codes, torch.full_like(codes, MASK)), targets))
    return views


# -- credit maps ------------------------------------------------------------------------------------------
@_register(CREDITS, "hierarchical")
def hierarchical(roll: Rollout, struct: torch.Tensor, cfg: HTGRPOConfig) -> torch.Tensor:
    return credit_weights(struct, roll.commit_entropy, roll.commit_step, lambda_s=cfg.lambda_s, lambda_h=cfg.lambda_h,
                          form=cfg.credit_form, power=cfg.credit_power, num_steps=roll.num_steps)  # type: ignore[arg-type]


@_register(CREDITS, "uniform")
def uniform(roll: Rollout, struct: torch.Tensor, cfg: HTGRPOConfig) -> torch.Tensor:
    return torch.ones(struct.shape, dtype=torch.float32, device=struct.device)


# -- stage schedules --------------------------------------------------------------------------------------
@_register(SCHEDULES, "every_round")
def every_round(cfg: HTGRPOConfig, round_: int) -> list[str]:
    return [stage_of(k, cfg.n_global, cfg.n_struct, cfg.inner_iters) for k in range(1, cfg.inner_iters + 1)]


@_register(SCHEDULES, "progressive")
def progressive(cfg: HTGRPOConfig, round_: int) -> list[str]:
    late = cfg.inner_iters - cfg.n_global           # the structure and refinement iterations together
    n_struct = late if round_ <= switch_round(cfg) else 0
    return [stage_of(k, cfg.n_global, n_struct, cfg.inner_iters) for k in range(1, cfg.inner_iters + 1)]


def switch_round(cfg: HTGRPOConfig) -> int:
    """The last round of the structure phase of the `progressive` schedule (default: half the run)."""
    return cfg.stage_switch_round if cfg.stage_switch_round > 0 else math.ceil(cfg.steps / 2)


def forwards(views_per_iter: list[list[View]], num_rows: int, num_prompts: int, *, with_ref: bool) -> int:
    """Sequences pushed through the model in one round (new + old + ref): a shared fully masked view
    costs one forward per prompt and is computed once for old and ref; any other view one per rollout."""
    def cost(v: View) -> int:
        return num_prompts if v.shared else num_rows

    passes = 1 + int(with_ref)
    new = sum(cost(v) for views in views_per_iter for v in views)
    shared_once = any(only_full_mask(vs) for vs in views_per_iter)
    old = sum(cost(v) for views in views_per_iter if not only_full_mask(views) for v in views)
    return new + passes * (old + (num_prompts if shared_once else 0))
