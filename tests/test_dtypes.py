"""Every provider works in every dtype it accepts, on the CPU (tiny weights, the real code paths).

`--dtype bfloat16` made every `aesthetic` sample fail on CPU (open_clip's fp32 LayerNorm with bf16
weights), although the README's own example uses bfloat16."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from paintbench import metrics
from paintbench.metrics.synthetic import write_tiny_weights

pytestmark = pytest.mark.hf

METRICS = ["aesthetic", "imagereward", "hps-v2.1", "pickscore", "clipscore", "clipscore-torchmetrics", "hpsv3", "unipercept-iaa", "unipercept-iqa", "unipercept-ista", "deqa", "geneval", "dpg"]
META = {"geneval": {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a cat"},
        "dpg": {"item_id": "x", "questions": [{"proposition_id": 1, "question": "is there a cat?", "dependency": "0",
                                               "tuple": "entity - whole (cat)"}]}}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    for m in METRICS:
        write_tiny_weights(m, d)
    return d


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("metric", METRICS)
def test_every_provider_scores_in_every_dtype_on_cpu(weights, metric, dtype):
    provider = metrics.get(metric, weights_dir=weights, dtype=dtype, device="cpu")
    size = 96 if metric == "dpg" else 64  # DPG: a 2x2 grid of 48 px tiles
    images = [Image.new("RGB", (size, size), (40 * i, 120, 200)) for i in range(2)]
    meta = [META[metric]] * 2 if metric in META else None
    results = provider.score_each(images, ["a photo of a cat"] * 2, meta)
    for value, _, error in results:
        assert error is None, error
        assert value is not None and math.isfinite(value)
