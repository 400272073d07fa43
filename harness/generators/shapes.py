"""`shapes-oracle`, `shapes-random` and `blocks-oracle`: the synthetic worlds' built-in generators as
harness generators.

The oracles draw what each GenEval-style record asks (the suite's ceiling, ~1.0); the random generator
ignores the prompt (chance level). Each image depends only on its own seed.
"""

from __future__ import annotations

from paintbench.harness.generators.base import GeneratedImage, Generator, GeneratorError, Request


class _ShapesBase(Generator):
    batch_size = 64
    world_name: str

    def __init__(self, arg, options, suite, *, device="cpu"):
        super().__init__(arg, options, suite, device=device)
        from paintbench.harness.shapes.generators import GENERATORS

        self.world = GENERATORS[self.world_name](device=device, **self.options)

    def generate(self, requests: list[Request]) -> list[GeneratedImage]:
        missing = [r.item.id for r in requests if not r.item.metadata]
        if missing:
            raise GeneratorError(f"{self.kind} needs GenEval-style metadata for each prompt (none for {missing[:3]})")
        images = self.world.generate(None, [r.item.metadata for r in requests], [r.seed for r in requests])
        return list(images.cpu())


class ShapesOracleGenerator(_ShapesBase):
    kind = "shapes-oracle"
    world_name = "shapes-oracle"


class ShapesRandomGenerator(_ShapesBase):
    kind = "shapes-random"
    world_name = "shapes-random"


class BlocksOracleGenerator(Generator):
    """The blocks world's oracle (`harness.blocks.layouts.oracle_tokens`); option `world`: blocks (default)
    or blocks-control (the spelling differs, the scores do not)."""

    kind = "blocks-oracle"
    batch_size = 64

    def __init__(self, arg, options, suite, *, device="cpu"):
        super().__init__(arg, options, suite, device=device)
        from paintbench.harness.worlds import get

        opts = dict(self.options)
        self.world = get(opts.pop("world", "blocks"))
        if opts or not self.world.name.startswith("blocks"):
            raise GeneratorError(f"blocks-oracle: unsupported options {self.options} (only world: blocks | blocks-control)")

    def generate(self, requests: list[Request]) -> list[GeneratedImage]:
        import numpy as np
        import torch

        missing = [r.item.id for r in requests if not r.item.metadata]
        if missing:
            raise GeneratorError(f"{self.kind} needs GenEval-style metadata for each prompt (none for {missing[:3]})")
        grids = torch.stack([self.world.oracle(r.item.metadata, np.random.default_rng(int(r.seed))) for r in requests])
        return list(self.world.render(grids).cpu())
