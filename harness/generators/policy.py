"""`policy:CHECKPOINT`: a trainer checkpoint benchmarked directly (MMaDA, Lumina-DiMOO, tiny).

The harness reaches the trainer through two names, never a top-level import: `trainer.policies.load`
(`load(path, device=..., dtype=...) -> MaskedImagePolicy`) and `trainer.generate.generate_images`
(`(policy, prompts, seeds, metadata=None, **sampler_options) -> uint8 [B,3,H,W]`). Sampler options
(steps, guidance, temperature...) pass through and are recorded in the run.
"""

from __future__ import annotations

import importlib

from paintbench.errors import UserError
from paintbench.harness.generators.base import GeneratedImage, Generator, Request


class PolicyGenerator(Generator):
    kind = "policy"

    def __init__(self, arg, options, suite, *, device="cpu"):
        super().__init__(arg, options, suite, device=device)
        if not arg:
            raise UserError("policy generator needs a checkpoint: --generator policy:PATH")
        try:
            policies = importlib.import_module("paintbench.trainer.policies")
            load = policies.load
            self._generate = importlib.import_module("paintbench.trainer.generate").generate_images
        except (ImportError, AttributeError) as e:
            raise UserError(f"policy generator: the trainer's policies are not available ({e})") from e
        self.dtype = self.options.pop("dtype", "float32")
        # a run folder means "its latest checkpoint": record which one, so a resumed eval never mixes two
        self.checkpoint = policies.resolve(arg)
        self.policy = load(self.checkpoint, device=device, dtype=self.dtype)

    def settings(self):
        from paintbench.metrics.weights import fingerprint

        return {**super().settings(), "dtype": self.dtype, "policy": type(self.policy).__name__,
                "checkpoint": str(self.checkpoint.resolve()), "checkpoint_sha256": fingerprint(self.checkpoint)}

    def generate(self, requests: list[Request]) -> list[GeneratedImage]:
        images = self._generate(self.policy, [r.item.prompt for r in requests], [r.seed for r in requests],
                                metadata=[r.item.metadata for r in requests], **self.options)
        return list(images)
