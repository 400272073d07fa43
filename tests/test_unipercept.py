"""UniPercept's three dimensions against the official package's outputs (../shared/fixtures/unipercept:
`unipercept-reward` 1.0.3 under transformers 4.49, a reduced synthetic InternVL rebuilt from its manifest)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from paintbench import metrics
from paintbench.metrics.images import as_image_batch
from paintbench.metrics.synthetic import tensor_sha256
from paintbench.metrics.unipercept import level_token, shared_model
from tests.shared_data import SHARED, model_folder, require

pytestmark = pytest.mark.hf

FIXTURE = SHARED / "fixtures" / "unipercept"
NAMES = {"iaa": "unipercept-iaa", "iqa": "unipercept-iqa", "ista": "unipercept-ista"}


@pytest.fixture(scope="module")
def expected():
    return json.loads(require(FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return model_folder(FIXTURE / "model" / "UniPercept", FIXTURE / "manifests" / "UniPercept.model.safetensors.manifest.json.gz",
                        tmp_path_factory.mktemp("unipercept") / "UniPercept")


@pytest.fixture(scope="module")
def providers(folder):
    return {dim: metrics.get(name, weights={"unipercept": folder}) for dim, name in NAMES.items()}


def _images(expected):
    return [Image.open(FIXTURE / im["file"]) for im in expected["inputs"]["images"]]


def test_level_tokens_ids_and_pixels_are_the_official_ones(providers, expected):
    shared = providers["iaa"].shared
    assert [level_token(n) for n in (0, 25, 26, 50, 51, 75, 76, 100)] == ["aa", "az", "ca", "cy", "da", "dy", "ea", "ey"]
    assert shared.level_ids == expected["level_token_ids"]
    assert shared.image_context_id == expected["img_context_token_id"]
    from paintbench.metrics.unipercept import DIMENSIONS, query

    for dim in NAMES:
        ids = shared.tokenizer(query(DIMENSIONS[dim], shared.system_message, 256))["input_ids"]
        assert ids == expected["images"][0]["tasks"][dim]["input_ids"], dim
    for image, want in zip(_images(expected), expected["images"], strict=True):
        x = providers["iaa"].pixels(as_image_batch([image]))
        assert tensor_sha256(x) == want["pixel_values"]["sha256"], want["image"]


def test_three_scores_equal_the_official_ones_batched_with_one_vision_pass(providers, expected, monkeypatch):
    images = _images(expected)
    calls = []
    vision = providers["iaa"].shared.vision
    monkeypatch.setattr(vision, "forward", lambda x, f=vision.forward: (calls.append(x.shape[0]), f(x))[1])
    for dim, provider in providers.items():
        got = provider.score(images)
        want = torch.tensor([im["tasks"][dim]["score"] for im in expected["images"]])
        assert (got.values.cpu() - want).abs().max() <= expected["tolerance"]["score"], dim
    assert sum(calls) == len(images)             # the vision tower ran once per image for three dimensions


def test_level_logits_equal_the_official_ones(providers, expected):
    shared = providers["iqa"].shared
    image = _images(expected)[0]
    logits = shared.level_logits(providers["iqa"].pixels(as_image_batch([image])), "iqa")[0]
    want = torch.tensor(expected["images"][0]["tasks"]["iqa"]["level_logits"])
    assert (logits - want).abs().max() <= expected["tolerance"].get("level_logits", 1e-4)


def test_the_model_is_loaded_once_for_the_three_metrics(providers, folder):
    assert providers["iaa"].shared is providers["iqa"].shared is providers["ista"].shared
    assert shared_model(folder, torch.device("cpu"), torch.float32) is providers["iaa"].shared
