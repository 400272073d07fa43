"""PickScore against the official snippet's outputs (../shared/fixtures/pickscore: transformers 4.27.3,
a synthetic CLIPModel rebuilt here from its manifest, the real CLIP BPE)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from paintbench.metrics.pickscore import PickScoreProvider, probabilities_by_prompt, write_clip_processor
from paintbench.metrics.synthetic import build_state_dict, tensor_sha256
from tests.shared_data import SHARED, require

pytestmark = pytest.mark.hf

FIXTURE = SHARED / "fixtures" / "pickscore"


@pytest.fixture(scope="module")
def expected():
    return json.loads(require(FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def provider(tmp_path_factory, expected):
    from safetensors.torch import save_file

    model_dir = tmp_path_factory.mktemp("pickscore") / "PickScore_v1"
    model_dir.mkdir()
    (model_dir / "config.json").write_bytes((FIXTURE / "model" / "PickScore_v1" / "config.json").read_bytes())
    with gzip.open(FIXTURE / "manifests" / "PickScore_v1.model.safetensors.manifest.json.gz", "rt") as f:
        manifest = json.load(f)
    state = build_state_dict(manifest["tensors"], manifest["seed"], expected_digest=manifest["state_digest"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(model_dir / "model.safetensors"),
              metadata={"format": "pt"})   # as save_pretrained writes it (transformers 4.x reads it)
    processor = FIXTURE / "processor" / "CLIP-ViT-H-14-laion2B-s32B-b79K"
    return PickScoreProvider(weights={"pickscore-v1": model_dir, "clip-vit-h-14-laion-processor": processor})


def test_token_ids_and_pixels_are_the_official_ones(provider, expected):
    for p in expected["inputs"]["prompts"]:
        ids = provider.text_ids([p["text"]])["input_ids"][0].tolist()
        assert ids == expected["prompts"][p["id"]]["input_ids"], p["id"]
    from paintbench.metrics.images import as_image_batch

    for im in expected["inputs"]["images"]:
        x = provider.pixels(as_image_batch([Image.open(FIXTURE / im["file"])]))
        assert tensor_sha256(x.cpu()) == expected["images"][im["id"]]["pixel_values"]["sha256"], im["id"]


def test_scores_and_probabilities_equal_the_official_snippet(provider, expected):
    files = {im["id"]: FIXTURE / im["file"] for im in expected["inputs"]["images"]}
    texts = {p["id"]: p["text"] for p in expected["inputs"]["prompts"]}
    pairs = expected["pairs"]
    got = provider.score([Image.open(files[q["image"]]) for q in pairs], [texts[q["prompt_id"]] for q in pairs])
    want = torch.tensor([q["score"] for q in pairs])
    assert (got.values.cpu() - want).abs().max() <= expected["tolerance"]["score"]
    probs = torch.tensor([d["prob"] for d in got.details])
    assert (probs - torch.tensor([q["prob"] for q in pairs])).abs().max() <= expected["tolerance"]["prob"]


def test_rgba_is_converted_by_dropping_alpha_as_the_official_transformers_did(provider, expected):
    """transformers 5 would composite the transparent band onto white; the official 4.27 drops alpha."""
    rgba = next(im for im in expected["inputs"]["images"] if im["mode"] == "RGBA")
    image = Image.open(FIXTURE / rgba["file"])
    from paintbench.metrics.images import as_image_batch

    dropped = provider.pixels(as_image_batch([image.convert("RGB")]))
    white = Image.new("RGB", image.size, (255, 255, 255))
    white.paste(image, mask=image.split()[3])
    assert torch.equal(provider.pixels(as_image_batch([image])), dropped)
    assert not torch.equal(provider.pixels(as_image_batch([white])), dropped)


def test_device_tensors_score_close_to_the_pil_path(provider, expected):
    im = next(i for i in expected["inputs"]["images"] if (i["width"], i["height"]) == (224, 224))
    image = Image.open(FIXTURE / im["file"]).convert("RGB")
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
    a = provider.score([image], ["a photo of a cat"]).values
    b = provider.score(tensor, ["a photo of a cat"]).values
    assert (a - b).abs().max() < 1e-3        # 224² input: no resampling, same pixels up to rounding


def test_probabilities_are_per_prompt_softmaxes():
    probs = probabilities_by_prompt(torch.tensor([1.0, 2.0, 5.0, 0.0]), ["a", "b", "a", "b"])
    assert probs[0] + probs[2] == pytest.approx(1.0) and probs[1] + probs[3] == pytest.approx(1.0)
    assert probs[2] == pytest.approx(1 / (1 + np.exp(-4.0)))


def test_the_tiny_processor_has_the_real_clip_vocabulary(tmp_path):
    write_clip_processor(tmp_path)
    ours = (tmp_path / "vocab.json").read_bytes()
    real = require(FIXTURE / "processor" / "CLIP-ViT-H-14-laion2B-s32B-b79K" / "vocab.json")
    assert json.loads(ours) == json.loads(real.read_text())
    merges = (tmp_path / "merges.txt").read_text().splitlines()
    assert merges[1:] == real.with_name("merges.txt").read_text().splitlines()[1:]
