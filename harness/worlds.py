"""The synthetic worlds a tiny policy can be trained and evaluated in, by name.

A world is what a masked-token policy needs to live in it: the token grid and codebook size, the
decoder (tokens → uint8 pixels), the oracle that draws a token grid satisfying a GenEval record (the
warm start's teacher) and, where the world defines token roles, the per-round statistics of its premise
(`premise`, e.g. whether layout tokens are committed before detail tokens). Worlds: `shapes` (one
token = one object), `blocks` (objects of 2×2 tokens, layout decided first) and `blocks-control` (the
same, details decided first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from paintbench.errors import UserError

Premise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, float]]
ObjectCount = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class World:
    name: str
    grid: int
    patch: int
    codebook_size: int
    render: Callable[[torch.Tensor], torch.Tensor]                 # [B, g, g] → uint8 [B, 3, H, W]
    oracle: Callable[[Mapping[str, Any], Any], torch.Tensor]       # (record, rng) → [g, g]
    premise: Premise | None = None                                 # (codes, commit_step, struct) → stats
    metrics: tuple[str, ...] = ()                                  # its reward metrics
    block: int = 1                                                 # tokens per object side (blocks: 2)
    objects: ObjectCount | None = None                             # codes [R, N] → objects drawn per image [R]


def _shapes() -> World:
    from paintbench.harness.shapes import codebook, layouts, render

    return World("shapes", codebook.GRID, codebook.PATCH, codebook.NUM_TOKENS,
                 render=lambda t: render.render(t, patch=codebook.PATCH), oracle=layouts.oracle_tokens,
                 metrics=("shapes-geneval",), objects=lambda codes: (codes != codebook.BACKGROUND).sum(dim=1))


def _blocks(order: str, name: str) -> World:
    from paintbench.harness.blocks import codebook, layouts, objects

    return World(name, codebook.GRID, codebook.PATCH, codebook.NUM_TOKENS, render=codebook.render,
                 oracle=partial(layouts.oracle_tokens, order=order), premise=objects.premise_stats,
                 metrics=("blocks-layout", "blocks-detail", "blocks-geneval"), block=codebook.BLOCK,
                 objects=objects.object_count)


_FACTORIES: dict[str, Callable[[], World]] = {
    "shapes": _shapes,
    "blocks": partial(_blocks, "layout_first", "blocks"),
    "blocks-control": partial(_blocks, "detail_first", "blocks-control"),
}
WORLDS: tuple[str, ...] = tuple(_FACTORIES)


def get(name: str) -> World:
    if name not in _FACTORIES:
        raise UserError(f"unknown world {name!r}; worlds are {', '.join(WORLDS)}")
    return _FACTORIES[name]()
