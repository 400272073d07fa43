"""Blocks world: token grids → objects → GenEval detections, the layout and detail terms, and the
commit-order statistics that check the world's premise.

Reading a slot (anchor token a, fills f1..f3):
- a is `anchor(s)`: an object of class s at the slot's box. It is *consistent* when every fill is
  `fill(s, c)` with one colour c for all three; its colour is then c, else "mixed" (never a GenEval
  colour, so colour clauses fail);
- a is blank: no object; any non-blank fill there is a *stray* detail.

Scores (all pure functions of the token grid):
- `layout_score`: Flow-GRPO's partial-credit `reward` of GenEval's rules on the record *without its
  colour keys* — classes, counts and positions, read from anchors only;
- `detail_score`: over the slots that hold an object or a stray fill, the fraction that are anchored,
  consistent and of the right colour: the one the prompt asks for the class, else the shape's default
  colour (`DEFAULT_COLOUR`; so every fill is determined by its anchor and the prompt, and only its
  spelling is free); 0 when the image has no such slot;
- GenEval itself (`judge`/`reward` with colours) on the same detections: the world's headline metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from paintbench.harness.blocks.codebook import (
    BLOCK,
    GRID,
    PATCH,
    SLOTS,
    anchor_positions,
    slot_tokens,
    token_table,
)
from paintbench.harness.shapes.codebook import COLOURS, SHAPES
from paintbench.harness.shapes.detector import ShapeDetection, colour_of
from paintbench.harness.shapes.layouts import cell_box
from paintbench.metrics.geneval import GenEvalOptions, judge, reward

MIXED = "mixed"
DEFAULT_COLOUR: dict[str, str] = dict(zip(SHAPES, COLOURS, strict=False))
"""The colour of an object whose prompt names none: circle red, square orange, triangle yellow, ..."""
_BLANK, _ANCHOR, _FILL = 0, 1, 2


@dataclass(frozen=True)
class BlockObject:
    slot: int
    shape: str | None      # None: a stray fill under a blank anchor
    colour: str            # the fills' common colour, or "mixed"
    consistent: bool


def read_objects(grid: np.ndarray) -> list[BlockObject]:
    """The objects (and stray details) of one token grid [8, 8] (unreadable cells, -1, count as neither
    anchors nor fills: an object with one is inconsistent)."""
    kinds, shapes, colours = token_table()
    flat = np.asarray(grid).reshape(-1)
    out = []
    for slot in range(SLOTS * SLOTS):
        a, *fills = (int(flat[p]) for p in slot_tokens(slot))
        a_kind = kinds[a] if a >= 0 else -1
        fill_kinds = [kinds[f] if f >= 0 else -1 for f in fills]
        if a_kind != _ANCHOR and all(k == _BLANK for k in fill_kinds):
            continue
        shape = SHAPES[shapes[a]] if a_kind == _ANCHOR else None
        fill_colours = {colours[f] for f in fills if f >= 0 and kinds[f] == _FILL}
        ok = (shape is not None and all(k == _FILL for k in fill_kinds)
              and all(SHAPES[shapes[f]] == shape for f in fills) and len(fill_colours) == 1)
        colour = COLOURS[fill_colours.pop()] if ok else MIXED
        out.append(BlockObject(slot, shape, colour, ok))
    return out


def detections(objects: list[BlockObject]) -> dict[str, list[ShapeDetection]]:
    """GenEval detections: one per anchored object, box = its slot's box (margin as the shapes world)."""
    out: dict[str, list[ShapeDetection]] = {}
    for o in objects:
        if o.shape is None:
            continue
        box = cell_box(o.slot, SLOTS, PATCH * BLOCK)
        out.setdefault(o.shape, []).append(ShapeDetection(box=box, score=1.0, mask=None, shape=o.shape, colour=o.colour))
    return out


def without_colours(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record with every clause's colour removed: what the layout term judges."""
    return {**record, "include": [{k: v for k, v in c.items() if k != "color"} for c in record.get("include", [])]}


def layout_score(record: Mapping[str, Any], objects: list[BlockObject], *, position_quirk: bool = True,
                 options: GenEvalOptions | None = None) -> float:
    return reward(without_colours(record), detections(objects), colour_of, position_quirk=position_quirk,
                  options=options).score


def detail_score(record: Mapping[str, Any], objects: list[BlockObject]) -> float:
    if not objects:
        return 0.0
    asked = {c["class"]: c["color"] for c in record.get("include", []) if c.get("color")}
    good = sum(o.consistent and asked.get(o.shape, DEFAULT_COLOUR.get(o.shape or "")) == o.colour for o in objects)
    return good / len(objects)


def geneval_scores(record: Mapping[str, Any], objects: list[BlockObject], *, position_quirk: bool = True,
                   options: GenEvalOptions | None = None) -> tuple[bool, str, float]:
    """(GenEval verdict, its reason, Flow-GRPO partial credit) on the detections, colours included."""
    dets = detections(objects)
    verdict = judge(record, dets, colour_of, options=options)
    return verdict.correct, verdict.reason, reward(record, dets, colour_of, position_quirk=position_quirk,
                                                   options=options).score


def _kinds_on(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(token_table()[0].copy()).to(device)


def token_roles(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(layout [R, 64], detail [R, 64]) bool: layout = every slot's anchor token (it alone says whether
    and which object a slot holds); detail = the fills of slots whose anchor is an object anchor."""
    kinds = _kinds_on(codes.device)
    layout = torch.as_tensor(anchor_positions(), device=codes.device).expand(codes.shape[0], -1)
    is_object_anchor = (kinds[codes.clamp_min(0)] == _ANCHOR) & layout
    slot_has_object = is_object_anchor.view(-1, SLOTS, BLOCK, SLOTS, BLOCK)[:, :, 0, :, 0]   # [R, 4, 4]
    per_token = slot_has_object[:, :, None, :, None].expand(-1, SLOTS, BLOCK, SLOTS, BLOCK).reshape(-1, GRID * GRID)
    return layout.clone(), per_token & ~layout


def object_count(codes: torch.Tensor) -> torch.Tensor:
    """Objects drawn per image [R]: the slots whose anchor token is an object anchor."""
    layout, _ = token_roles(codes)
    return ((_kinds_on(codes.device)[codes.clamp_min(0)] == _ANCHOR) & layout).sum(dim=1)


def premise_stats(codes: torch.Tensor, commit_step: torch.Tensor, struct: torch.Tensor) -> dict[str, float]:
    """The world's premise, per round: the share of layout tokens in the structure set, and the mean
    commit step of layout tokens, of object anchors, and of object fills (detail)."""
    layout, detail = token_roles(codes)
    kinds = _kinds_on(codes.device)
    obj_anchor = layout & (kinds[codes.clamp_min(0)] == _ANCHOR)
    s = commit_step.float()

    def mean(mask: torch.Tensor) -> float:
        return float(s[mask].mean()) if bool(mask.any()) else float("nan")

    n_struct = int(struct.sum())
    return {
        "premise/layout_share_in_structure": float((struct & layout).sum()) / max(n_struct, 1),
        "premise/layout_share_of_tokens": float(layout.float().mean()),
        "premise/layout_commit_step": mean(layout),
        "premise/object_anchor_commit_step": mean(obj_anchor),
        "premise/detail_commit_step": mean(detail),
    }
