"""DeQA-Score against the official repository code's outputs (../shared/fixtures/deqa: zhiyuanyou/DeQA-Score
@ 8e4abc8 under transformers 4.36.1, a reduced synthetic mPLUG-Owl2 rebuilt from its manifest, the real
LLaMA tokenizer)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from paintbench import metrics
from paintbench.metrics.images import as_image_batch
from paintbench.metrics.synthetic import tensor_sha256
from tests.shared_data import SHARED, model_folder, require

pytestmark = pytest.mark.hf

FIXTURE = SHARED / "fixtures" / "deqa"


@pytest.fixture(scope="module")
def expected():
    return json.loads(require(FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return model_folder(FIXTURE / "model" / "DeQA-Score-Mix3",
                        FIXTURE / "manifests" / "DeQA-Score-Mix3.model.safetensors.manifest.json.gz",
                        tmp_path_factory.mktemp("deqa") / "DeQA-Score-Mix3")


def _images(expected):
    return [Image.open(FIXTURE / im["file"]) for im in expected["inputs"]["images"]]


@pytest.mark.parametrize("variant", ["scorer", "one_align"])
def test_ids_and_levels_are_the_official_ones(folder, expected, variant):
    provider = metrics.get("deqa", weights={"deqa-score-mix3": folder}, prompt=variant)
    assert provider.ids == expected["prompts"][variant]["input_ids"]
    assert provider.level_ids == expected["level_token_ids"]


def test_pixels_are_the_official_ones(folder, expected):
    provider = metrics.get("deqa", weights={"deqa-score-mix3": folder})
    for image, want in zip(_images(expected), expected["images"], strict=True):
        x = provider.pixels(as_image_batch([image]))
        assert tensor_sha256(x) == want["pixel_values_fp32"]["sha256"], want["image"]


@pytest.mark.parametrize("variant,dtype", [("scorer", "float32"), ("one_align", "float32"), ("scorer", "float16")])
def test_scores_equal_the_official_scorer(folder, expected, variant, dtype):
    provider = metrics.get("deqa", weights={"deqa-score-mix3": folder}, prompt=variant, dtype=dtype)
    got = provider.score(_images(expected))
    want = torch.tensor([im["variants"][f"{variant}/{'fp32' if dtype == 'float32' else 'fp16'}"]["score"]
                         for im in expected["images"]])
    tolerance = expected["tolerance"]["fp32 score" if dtype == "float32" else "fp16 score"]
    assert (got.values.cpu() - want).abs().max() <= tolerance
    assert provider.provenance()["prompt"]["variant"] == variant and got.details[0]["prompt"] == variant
