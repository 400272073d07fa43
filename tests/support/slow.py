"""Deliberately slow pieces, so a test can kill a run in the middle of generation or scoring.

`slow_oracle` is a `python:` generator; importing this module (PAINTBENCH_PLUGINS=tests.support.slow)
registers the `slow-shapes` metric, the shapes-world GenEval scorer with a pause per batch.
"""

from __future__ import annotations

import os
import time

from paintbench import metrics
from paintbench.harness.shapes.generators import OracleGenerator
from paintbench.harness.shapes.provider import ShapesGenEvalProvider
from paintbench.metrics.registry import ProviderSpec

DELAY = float(os.environ.get("PAINTBENCH_TEST_DELAY", "0.05"))


def slow_oracle(prompts, seeds, metadata):
    time.sleep(DELAY * len(prompts))
    return list(OracleGenerator().generate(prompts, metadata, seeds))


def wrong_count(prompts, seeds, metadata):
    return list(OracleGenerator().generate(prompts, metadata, seeds))[:-1]


def wrong_size(prompts, seeds):
    import torch

    return [torch.zeros(3, 8, 8, dtype=torch.uint8) for _ in prompts]


class SlowShapes(ShapesGenEvalProvider):
    name = "slow-shapes"

    def _score_batch(self, images, prompts, metadata):
        time.sleep(DELAY * len(images))
        return super()._score_batch(images, prompts, metadata)


if "slow-shapes" not in metrics.available():
    metrics.register(ProviderSpec(name="slow-shapes", target="tests.support.slow:SlowShapes", version="slow-shapes/1",
                                  higher_is_better=True, nominal_range=(0.0, 1.0), summary="test only"))
