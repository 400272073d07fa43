"""Oracle token grids of the blocks world: what the warm start teaches, per world variant.

Objects are placed in slots exactly as the shapes world's oracle places them in cells (GenEval's own
`relative_position` on the boxes the detector reports, `shapes.layouts.relation_table` on the 4×4 slot
grid), then drawn as blocks: anchor `anchor(shape)` and three fills `fill(shape, colour)`, the colour
being the clause's or else the shape's default (`objects.DEFAULT_COLOUR`); empty slots are blank. Only the *spellings* differ between the variants (`ORDERS`):

- `layout_first` (world `blocks`): anchors and blank anchors use variant 0; every fill (blank or
  coloured) draws its variant uniformly from 4, so fills carry the freedom and are committed later;
- `detail_first` (world `blocks-control`): the reverse — anchors draw their variant, fills use 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from paintbench.harness.blocks.codebook import (
    BLOCK,
    GRID,
    PATCH,
    SLOTS,
    VARIANTS,
    anchor,
    blank,
    fill,
    slot_tokens,
)
from paintbench.harness.blocks.objects import DEFAULT_COLOUR
from paintbench.harness.shapes.layouts import RngLike, as_numpy_rng, place, relation_table

ORDERS: tuple[str, ...] = ("layout_first", "detail_first")


def slot_relations() -> np.ndarray:
    """GenEval's relations between slot boxes (a slot is a 32-px cell of a 4×4 grid)."""
    return relation_table(SLOTS, PATCH * BLOCK)


def oracle_tokens(record: Mapping[str, Any], rng: RngLike, *, order: str = "layout_first") -> torch.Tensor:
    """LongTensor [8, 8] that satisfies `record` under GenEval's rules, spelled per `order`."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    gen = as_numpy_rng(rng)
    include = list(record.get("include", []))
    groups = place(record, gen, slot_relations(), SLOTS)
    anchor_var = (lambda: int(gen.integers(VARIANTS))) if order == "detail_first" else (lambda: 0)
    fill_var = (lambda: int(gen.integers(VARIANTS))) if order == "layout_first" else (lambda: 0)
    objects: dict[int, tuple[str, str]] = {}
    for clause, slots in zip(include, groups, strict=True):
        for slot in slots:
            colour = clause.get("color") or DEFAULT_COLOUR[clause["class"]]
            objects[slot] = (clause["class"], colour)
    tokens = torch.empty(GRID * GRID, dtype=torch.long)
    for slot in range(SLOTS * SLOTS):
        first, *rest = slot_tokens(slot)
        if slot in objects:
            shape, colour = objects[slot]
            tokens[first] = anchor(shape, anchor_var())
            for p in rest:
                tokens[p] = fill(shape, colour, fill_var())
        else:
            tokens[first] = blank(anchor_var())
            for p in rest:
                tokens[p] = blank(fill_var())
    return tokens.view(GRID, GRID)
