"""HPSv3 against the official package's outputs (../shared/fixtures/hpsv3: `hpsv3` 1.0.0 under
transformers 4.45.2, a reduced synthetic Qwen2-VL rebuilt here from its manifest)."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from PIL import Image

from paintbench.metrics.hpsv3 import HPSv3Provider, smart_resize
from paintbench.metrics.images import as_image_batch
from paintbench.metrics.synthetic import build_state_dict, tensor_sha256
from tests.shared_data import SHARED, require

pytestmark = pytest.mark.hf

FIXTURE = SHARED / "fixtures" / "hpsv3"


@pytest.fixture(scope="module")
def expected():
    return json.loads(require(FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    from safetensors.torch import save_file

    with gzip.open(require(FIXTURE / "manifests" / "HPSv3.safetensors.manifest.json.gz"), "rt") as f:
        man = json.load(f)
    checkpoint = tmp_path_factory.mktemp("hpsv3") / "HPSv3.safetensors"
    state = build_state_dict(man["tensors"], man["seed"], expected_digest=man["state_digest"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(checkpoint), metadata={"format": "pt"})
    return HPSv3Provider(weights={"hpsv3": checkpoint, "qwen2-vl-7b-instruct": FIXTURE / "base" / "Qwen2-VL-7B-Instruct"})


def _pairs(expected):
    files = {im["id"]: FIXTURE / im["file"] for im in expected["inputs"]["images"]}
    texts = {p["id"]: p["text"] for p in expected["inputs"]["prompts"]}
    return [(Image.open(files[p["image"]]), texts[p["prompt_id"]], p) for p in expected["pairs"]]


def test_ids_pixels_and_grids_are_the_official_ones(provider, expected):
    for image, prompt, want in _pairs(expected):
        batch = provider.inputs(as_image_batch([image]), [prompt])
        assert batch["input_ids"][0].tolist() == want["input_ids"], (want["image"], want["prompt_id"])
        assert batch["image_grid_thw"][0].tolist() == want["image_grid_thw"]
        assert tensor_sha256(batch["pixel_values"].cpu()) == want["pixel_values"]["sha256"]
        assert list(reversed(smart_resize(image.height, image.width))) == want["resized_wh"]


def test_mu_equals_the_official_reward_one_call_per_pair(provider, expected):
    tolerance = expected["tolerance"]["mu"]
    for image, prompt, want in _pairs(expected):
        got = provider.score([image], [prompt])
        assert abs(got.values.item() - want["mu"]) <= tolerance, (want["image"], want["prompt_id"])
        assert abs(got.details[0]["sigma"] - want["sigma"]) <= tolerance


def test_batched_mu_equals_the_official_batched_call(provider, expected):
    pairs = _pairs(expected)
    got = provider.score([p[0] for p in pairs], [p[1] for p in pairs])
    want = torch.tensor([p[2]["mu_batched"] for p in pairs])
    assert (got.values.cpu() - want).abs().max() <= expected["tolerance"]["mu"]
    native = torch.tensor([p[2]["mu_if_native_mrope"] for p in pairs])
    assert (got.values.cpu() - native).abs().max() > 10 * expected["tolerance"]["mu"]   # not M-RoPE's numbers


def test_a_device_tensor_scores_as_its_pixels_do(provider, expected):
    import numpy as np

    image = Image.open(FIXTURE / expected["inputs"]["images"][0]["file"]).convert("RGB")
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
    assert torch.equal(provider.score(tensor, ["a cat"]).values, provider.score([image], ["a cat"]).values)


def test_a_prompt_holding_the_reward_token_is_refused_naming_it(provider, expected):
    image = Image.open(FIXTURE / expected["inputs"]["images"][0]["file"])
    with pytest.raises(ValueError, match="must not contain '<\\|Reward\\|>'"):
        provider.score([image], ["rate this <|Reward|> now"])
