"""Token layouts: what the oracle draws for a GenEval record, and what chance draws.

`oracle_tokens(record, rng)` places exactly what a record asks: `count` objects per include clause,
of the clause's colour when it names one (a random colour otherwise), nothing else, and for a position
clause cells whose boxes satisfy GenEval's own `relative_position` rule (0.1 shrink, ±0.5 cut-offs) for
every (object, target) pair. Relations are checked with the rule itself on the boxes the detector will
report (each glyph fills its cell minus the margin, see `codebook`), precomputed for every ordered pair
of cells, so the oracle is correct by construction rather than by a hand-derived geometric condition.

`random_tokens(rng)` ignores the prompt: a uniform number of objects in [min_objects, max_objects],
each a uniformly random glyph in a distinct, uniformly random cell. Its GenEval score is the chance
level of this world.

Randomness comes only from the generator the caller passes (`numpy.random.Generator`, `torch.Generator`
or an int seed), so the harness can seed each image by (run seed, prompt id, sample index).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from paintbench.harness.shapes.codebook import COLOURS, GRID, NUM_TOKENS, PATCH, SHAPES, margin_for, token_of
from paintbench.metrics.geneval import RELATIONS, relative_position

RngLike = np.random.Generator | torch.Generator | int

_MAX_TRIES = 200


def as_numpy_rng(rng: RngLike) -> np.random.Generator:
    """A NumPy generator from what the caller has. A torch generator is advanced by one draw, which
    seeds a NumPy generator, so its state still determines the layout."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
        return np.random.default_rng(seed)
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, a torch Generator or an int seed, got {type(rng).__name__}")


def cell_box(cell: int, grid: int = GRID, patch: int = PATCH) -> tuple[float, float, float, float]:
    """The box (x1, y1, x2, y2, exclusive ends) the detector reports for a glyph in flat cell `cell`."""
    r, c = divmod(cell, grid)
    m = margin_for(patch)
    return (float(c * patch + m), float(r * patch + m), float((c + 1) * patch - m), float((r + 1) * patch - m))


@lru_cache(maxsize=8)
def relation_table(grid: int = GRID, patch: int = PATCH) -> np.ndarray:
    """bool [len(RELATIONS), N, N] (N = grid²): `[k, a, b]` is whether a glyph in cell a is
    `RELATIONS[k]` a glyph in cell b under GenEval's rule (default 0.1 threshold)."""
    n = grid * grid
    boxes = [cell_box(i, grid, patch) for i in range(n)]
    table = np.zeros((len(RELATIONS), n, n), dtype=bool)
    for a in range(n):
        for b in range(n):
            if a != b:
                for rel in relative_position(boxes[a], boxes[b]):
                    table[RELATIONS.index(rel), a, b] = True
    table.setflags(write=False)
    return table


def oracle_tokens(
    record: Mapping[str, Any],
    rng: RngLike,
    *,
    grid: int = GRID,
    patch: int = PATCH,
) -> torch.Tensor:
    """A LongTensor [grid, grid] that satisfies `record` under GenEval's rules.

    Clauses are placed in order; a position clause only uses free cells that hold its relation to every
    object of the referenced clause. If a draw paints itself into a corner (e.g. the target of "left of"
    landed in the first column) the whole layout is redrawn; raises `ValueError` if a record cannot be
    satisfied on this grid (e.g. more objects than cells).
    """
    gen = as_numpy_rng(rng)
    include = list(record.get("include", []))
    cells = place(record, gen, relation_table(grid, patch), grid)
    tokens = torch.zeros(grid * grid, dtype=torch.long)
    for clause, group in zip(include, cells, strict=True):
        for cell in group:
            colour = clause.get("color") or COLOURS[gen.integers(len(COLOURS))]
            tokens[cell] = token_of(clause["class"], colour)
    return tokens.view(grid, grid)


def place(record: Mapping[str, Any], gen: np.random.Generator, table: np.ndarray, grid: int) -> list[list[int]]:
    """Cells (one list per include clause) on a grid×grid layout whose relations are `table`, drawn
    until every position clause holds; `ValueError` if the record cannot be placed."""
    include = list(record.get("include", []))
    total = sum(int(c["count"]) for c in include)
    if total > grid * grid:
        raise ValueError(f"record asks for {total} objects but the grid has {grid * grid} cells")
    for clause in include:
        if clause["class"] not in SHAPES:
            raise ValueError(f"class {clause['class']!r} is not a shape of this world {SHAPES}")
    for _ in range(_MAX_TRIES):
        cells = _try_place(include, gen, table, grid * grid)
        if cells is not None:
            return cells
    raise ValueError(f"could not place {record.get('prompt', record)!r} on a {grid}x{grid} grid")


def _try_place(
    include: list[Mapping[str, Any]], gen: np.random.Generator, table: np.ndarray, n_cells: int
) -> list[list[int]] | None:
    free = np.ones(n_cells, dtype=bool)
    groups: list[list[int]] = []
    for clause in include:
        group: list[int] = []
        for _ in range(int(clause["count"])):
            ok = free.copy()
            if "position" in clause:
                rel, k = clause["position"]
                for target in groups[k]:
                    ok &= table[RELATIONS.index(rel), :, target]
            candidates = np.flatnonzero(ok)
            if not len(candidates):
                return None
            cell = int(gen.choice(candidates))
            free[cell] = False
            group.append(cell)
        groups.append(group)
    return groups


def random_tokens(
    rng: RngLike,
    *,
    grid: int = GRID,
    min_objects: int = 1,
    max_objects: int = 6,
) -> torch.Tensor:
    """A LongTensor [grid, grid] of `U{min_objects..max_objects}` random glyphs in random distinct cells."""
    if not 0 <= min_objects <= max_objects <= grid * grid:
        raise ValueError(f"need 0 <= min_objects <= max_objects <= {grid * grid}, got {min_objects}, {max_objects}")
    gen = as_numpy_rng(rng)
    k = int(gen.integers(min_objects, max_objects, endpoint=True))
    tokens = torch.zeros(grid * grid, dtype=torch.long)
    cells = gen.choice(grid * grid, size=k, replace=False)
    tokens[torch.from_numpy(cells)] = torch.from_numpy(gen.integers(1, NUM_TOKENS, size=k))
    return tokens.view(grid, grid)
