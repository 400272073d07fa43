"""Built-in generators of the shapes world: `shapes-oracle` and `shapes-random`.

Both turn GenEval records into token grids (`layouts`) and decode them with `render`, one image per
(record, seed). They bracket the scale of the `shapes` suite: the oracle draws what the prompt asks
and scores 1.0 under GenEval's rules; the random generator ignores the prompt and scores at chance.
A trained policy should land in between, and the leaderboard shows all three.

Interface (kept minimal until the harness's generator protocol settles): `tokens(metadata, seeds)` →
LongTensor [B, H, W]; `generate(prompts, metadata, seeds)` → uint8 [B, 3, H·P, W·P]. Each image is
drawn from `numpy.random.default_rng(seed)` for its own seed, so an image depends only on its seed,
never on batch composition or sharding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from paintbench.harness.shapes.codebook import GRID, PATCH
from paintbench.harness.shapes.layouts import oracle_tokens, random_tokens
from paintbench.harness.shapes.render import render


class ShapesGenerator:
    """Base: subclasses implement `_one(record, rng)` → LongTensor [grid, grid]."""

    name: ClassVar[str]

    def __init__(self, *, grid: int = GRID, patch: int = PATCH, device: str | torch.device = "cpu") -> None:
        self.grid, self.patch, self.device = grid, patch, torch.device(device)

    def _one(self, record: Mapping[str, Any], rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def tokens(self, metadata: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> torch.Tensor:
        if len(metadata) != len(seeds):
            raise ValueError(f"{self.name}: {len(metadata)} records but {len(seeds)} seeds")
        grids = [self._one(rec, np.random.default_rng(int(seed))) for rec, seed in zip(metadata, seeds, strict=True)]
        if not grids:
            return torch.zeros(0, self.grid, self.grid, dtype=torch.long)
        return torch.stack(grids)

    def generate(
        self,
        prompts: Sequence[str] | None,
        metadata: Sequence[Mapping[str, Any]],
        seeds: Sequence[int],
    ) -> torch.Tensor:
        """uint8 images [B, 3, H, W] for `metadata` (prompts are implied by the records)."""
        if prompts is not None and len(prompts) != len(metadata):
            raise ValueError(f"{self.name}: {len(prompts)} prompts but {len(metadata)} records")
        return render(self.tokens(metadata, seeds).to(self.device), patch=self.patch)


class OracleGenerator(ShapesGenerator):
    """Draws exactly what each record asks (see `layouts.oracle_tokens`)."""

    name = "shapes-oracle"

    def _one(self, record: Mapping[str, Any], rng: np.random.Generator) -> torch.Tensor:
        return oracle_tokens(record, rng, grid=self.grid, patch=self.patch)


class RandomGenerator(ShapesGenerator):
    """Ignores the prompt: 1-6 random glyphs in random cells (see `layouts.random_tokens`)."""

    name = "shapes-random"

    def __init__(self, *, min_objects: int = 1, max_objects: int = 6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_objects, self.max_objects = min_objects, max_objects

    def _one(self, record: Mapping[str, Any], rng: np.random.Generator) -> torch.Tensor:
        return random_tokens(rng, grid=self.grid, min_objects=self.min_objects, max_objects=self.max_objects)


GENERATORS: dict[str, type[ShapesGenerator]] = {g.name: g for g in (OracleGenerator, RandomGenerator)}
"""The built-in generators by registry name."""
