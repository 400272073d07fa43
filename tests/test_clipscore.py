"""Both CLIPScore conventions against their official code's outputs (../shared/fixtures/clipscore):
jmhessel's `clipscore.py` on a full-size synthetic OpenAI ViT-B/32, and torchmetrics 1.9.0's `CLIPScore`
on a reduced transformers CLIPModel in the layout of openai/clip-vit-large-patch14."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
import torch
from PIL import Image

from paintbench.metrics.clipscore import ClipScoreProvider, TorchmetricsClipScoreProvider
from paintbench.metrics.images import as_image_batch
from paintbench.metrics.synthetic import build_state_dict, tensor_sha256
from tests.shared_data import SHARED, cached_file, require

pytestmark = [pytest.mark.slow, pytest.mark.hf]
FIXTURE = SHARED / "fixtures" / "clipscore"


def _manifest(name: str) -> dict:
    with gzip.open(require(FIXTURE / "manifests" / f"{name}.manifest.json.gz"), "rt") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def expected():
    return json.loads(require(FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def pairs(expected):
    files = {im["id"]: FIXTURE / im["file"] for im in expected["inputs"]["images"]}
    texts = {p["id"]: p["text"] for p in expected["inputs"]["prompts"]}
    return files, texts


@pytest.fixture(scope="module")
def hessel():
    man = _manifest("ViT-B-32.pt")

    def write(path):
        torch.save(build_state_dict(man["tensors"], man["seed"], expected_digest=man["state_digest"]), path)

    checkpoint = cached_file(man["state_digest"], "ViT-B-32.pt", write)   # 300 MB, built once per machine
    return ClipScoreProvider(weights={"clip-vit-b-32": checkpoint})


@pytest.fixture(scope="module")
def torchmetrics_provider(tmp_path_factory):
    from safetensors.torch import save_file

    man = _manifest("clip-vit-large-patch14.model.safetensors")
    folder = tmp_path_factory.mktemp("tm") / "clip-vit-large-patch14"
    shutil.copytree(require(FIXTURE / "openai" / "clip-vit-large-patch14"), folder)
    state = build_state_dict(man["tensors"], man["seed"], expected_digest=man["state_digest"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return TorchmetricsClipScoreProvider(weights={"clip-vit-large-patch14": folder})


def test_hessel_token_ids_and_pixels_are_the_official_ones(hessel, expected, pairs):
    files, texts = pairs
    official = expected["jmhessel"]
    for pid, text in texts.items():
        assert hessel.tokens([text])[0].tolist() == official["prompts"][pid]["input_ids_77"], pid
    for iid, path in files.items():
        x = hessel.pixels(as_image_batch([Image.open(path)]))
        assert tensor_sha256(x.cpu()) == official["images"][iid]["pixel_values"]["sha256"], iid


def test_hessel_scores_equal_clipscore_py(hessel, expected, pairs):
    files, texts = pairs
    official = expected["jmhessel"]
    got = hessel.score([Image.open(files[p["image"]]) for p in official["pairs"]],
                       [texts[p["prompt_id"]] for p in official["pairs"]])
    want = torch.tensor([p["clipscore"] for p in official["pairs"]])
    assert (got.values.cpu() - want).abs().max() <= official["tolerance"]["clipscore"]
    assert got.values.mean().item() == pytest.approx(official["mean_over_pairs"], abs=1e-5)


def test_torchmetrics_ids_pooling_and_pixels_are_the_official_ones(torchmetrics_provider, expected, pairs):
    files, texts = pairs
    official = expected["torchmetrics"]
    for pid, text in texts.items():
        ids, kept = torchmetrics_provider.text_ids([text])
        assert ids["input_ids"][0].tolist() == official["prompts"][pid]["input_ids_used"], pid
        assert kept == [official["prompts"][pid]["eos_kept"]], pid
    for iid, path in files.items():
        x = torchmetrics_provider.pixels(as_image_batch([Image.open(path)]))
        assert tensor_sha256(x.cpu()) == official["images"][iid]["pixel_values"]["sha256"], iid


def test_torchmetrics_scores_equal_torchmetrics(torchmetrics_provider, expected, pairs):
    files, texts = pairs
    official = expected["torchmetrics"]
    got = torchmetrics_provider.score([Image.open(files[p["image"]]) for p in official["pairs"]],
                                      [texts[p["prompt_id"]] for p in official["pairs"]])
    raw = torch.tensor([d["score_unclamped"] for d in got.details])
    assert (raw - torch.tensor([p["score"] for p in official["pairs"]])).abs().max() <= official["tolerance"]["score"]
    single = torch.tensor([p["clip_score_single"] for p in official["pairs"]])
    assert (got.values.cpu() - single).abs().max() <= official["tolerance"]["score"]
    assert max(raw.mean().item(), 0.0) == pytest.approx(official["class_compute_over_64"], abs=1e-4)
