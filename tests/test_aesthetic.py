"""The LAION aesthetic v2 provider against the official `simple_inference.py` fixtures, plus its contract.

Parity: the fixture CLIPs and head are rebuilt from their manifests (every tensor hash checked), saved in
the official containers, loaded through `metrics.get("aesthetic", weights=...)` and scored through the
PIL path on CPU in float32. The fixture README suggests |Δ| <= 2e-5 on scores; pixel statistics and
CLIP features are compared too, so a failure says which stage diverged.
"""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paintbench import metrics
from paintbench.metrics import backbones
from paintbench.metrics.aesthetic import (
    TINY_CLIP,
    AestheticProvider,
    l2_normalize,
    openai_clip_shapes,
    random_head_state_dict,
    random_openai_clip_state_dict,
    write_tiny_weights,
)
from paintbench.metrics.images import ImageBatch, as_image_batch, pil_to_tensor
from paintbench.metrics.synthetic import build_state_dict, tensor_sha256
from paintbench.metrics.weights import MissingWeightsError, load_state_dict

import shared_data as sd

SCORE_TOL = 2e-5  # the fixture README's suggestion for aesthetic scores on CPU float32
TINY_MANIFEST = "aesthetic__tiny"
FULL_MANIFEST = "aesthetic__vit_l_14"


# -- helpers ----------------------------------------------------------------------------------------
def rebuild(manifest_name: str, section: str) -> dict[str, torch.Tensor]:
    m = sd.manifest(manifest_name)
    return build_state_dict(m[section]["tensors"], m["seed"], expected_digest=m[section]["state_digest"])


def fixture_images(variant: str) -> tuple[list[str], list[Path]]:
    files = list(sd.preference_expected()["aesthetic_v2"][variant]["images"])
    return files, [sd.preference_image(f) for f in files]


def smooth_image(w: int, h: int) -> Image.Image:
    """A smooth RGB test card (sine, ramp, Gaussian blob): resampling differences stay small on it."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.sin(x / w * 2 * math.pi) * 0.5 + 0.5
    g = y / h
    b = np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (2 * (0.3 * min(w, h)) ** 2))
    return Image.fromarray(np.round(np.stack([r, g, b], -1) * 255).astype(np.uint8))


def numpy_normalized(a: np.ndarray) -> np.ndarray:
    """The official `normalized(a, axis=-1, order=2)` semantics: divide by the L2 norm, 1 where it is 0."""
    norm = np.atleast_1d(np.linalg.norm(a, 2, -1))
    norm[norm == 0] = 1
    return a / np.expand_dims(norm, -1)


def check_parity(provider: AestheticProvider, variant: str) -> None:
    """Score every fixture image in one batch and compare score, pixels and features."""
    expected = sd.preference_expected()["aesthetic_v2"][variant]["images"]
    files, paths = fixture_images(variant)
    batch = as_image_batch(paths)
    scores = provider.score(batch)
    with torch.inference_mode():
        pixels = provider.pixels(batch).double().cpu()
        features = provider.image_features(batch).cpu()
    normalized = l2_normalize(features)
    score_err = []
    for i, f in enumerate(files):
        e = expected[f]
        assert list(pixels[i : i + 1].shape) == e["pixel_shape"], f
        assert float(pixels[i].sum()) == pytest.approx(e["pixel_sum"], rel=1e-9, abs=1e-6), f
        assert float(pixels[i].abs().sum()) == pytest.approx(e["pixel_abs_sum"], rel=1e-9), f
        for c, yy, xx, v in e["pixel_samples_chw"]:
            assert float(pixels[i, c, yy, xx]) == v, (f, c, yy, xx)  # the PIL path is bit-exact
        norm = float(features[i].norm())
        assert norm == pytest.approx(e["clip_image_features_unnormalized_norm"], rel=1e-5), f
        torch.testing.assert_close(features[i, :8], torch.tensor(e["clip_image_features_unnormalized_first8"]),
                                   atol=1e-5, rtol=1e-5, msg=f"{f}: unnormalised CLIP features")
        torch.testing.assert_close(normalized[i, :8], torch.tensor(e["normalized_embedding_first8"]),
                                   atol=1e-6, rtol=1e-5, msg=f"{f}: normalised embedding")
        assert scores.details[i]["score"] == pytest.approx(float(scores.values[i]), abs=1e-7)
        assert scores.details[i]["embedding_norm"] == pytest.approx(norm, rel=1e-6)
        score_err.append(abs(float(scores.values[i]) - e["aesthetic_score"]))
    assert max(score_err) <= SCORE_TOL, dict(zip(files, score_err, strict=True))


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_fixture_files(tmp_path_factory) -> dict[str, Path]:
    """The reduced fixture variant in the official containers: a plain fp16 OpenAI-layout state dict
    and the float32 head, both regenerated from the manifest."""
    folder = tmp_path_factory.mktemp("aesthetic-tiny-fixture")
    files = {"clip-vit-l-14": folder / "ViT-L-14.pt", "aesthetic-head": folder / "sac+logos+ava1-l14-linearMSE.pth"}
    torch.save(rebuild(TINY_MANIFEST, "clip"), files["clip-vit-l-14"])
    torch.save(rebuild(TINY_MANIFEST, "head"), files["aesthetic-head"])
    return files


@pytest.fixture(scope="module")
def tiny_provider(tiny_fixture_files) -> AestheticProvider:
    return metrics.get("aesthetic", weights=tiny_fixture_files, batch_size=8)


@pytest.fixture(scope="module")
def tiny_weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("aesthetic-tiny-weights")
    write_tiny_weights(folder, seed=0)
    return folder


# -- parity -----------------------------------------------------------------------------------------
def test_parity_reduced_tiny(tiny_provider):
    check_parity(tiny_provider, "reduced_tiny")


def test_stored_fixture_checkpoints_load_and_agree(tiny_provider):
    """The README says the stored tiny files load directly; they must give the same scores as the
    manifest rebuild (same bytes, other container path)."""
    stored = {
        "clip-vit-l-14": sd.require(sd.PREFERENCE / "checkpoints" / "clip_tiny_openai_format.pt"),
        "aesthetic-head": sd.require(sd.PREFERENCE / "checkpoints" / "sac+logos+ava1-l14-linearMSE.pth"),
    }
    provider = metrics.get("aesthetic", weights=stored, batch_size=8)
    _, paths = fixture_images("reduced_tiny")
    torch.testing.assert_close(provider.score(paths).values, tiny_provider.score(paths).values, atol=0, rtol=0)


@pytest.mark.slow
@pytest.mark.full_size
def test_parity_full_vit_l_14(tmp_path):
    """The one full-size aesthetic check (why it is slow: OpenAI ViT-L/14, 427 M elements, 855 MB fp16,
    rebuilt once and cached by digest, loaded and run on CPU)."""
    m = sd.manifest(FULL_MANIFEST)

    def write(path: Path) -> None:
        torch.save(rebuild(FULL_MANIFEST, "clip"), path)

    clip = sd.cached_file(m["clip"]["state_digest"], "ViT-L-14.pt", write)
    head = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(rebuild(FULL_MANIFEST, "head"), head)
    provider = metrics.get("aesthetic", weights={"aesthetic-head": head, "clip-vit-l-14": clip}, batch_size=8)
    try:
        check_parity(provider, "full_vit_l_14")
    finally:
        # Drop only this 1.7 GB backbone (other tests still hold cached ones).
        backbones.evict(clip, "cpu", torch.float32)


def test_synthetic_rule_reproduces_manifests():
    """`write_tiny_weights` uses the fixture fill rule and OpenAI's key layout: generating the fixture
    configurations with it must give the manifests' keys, shapes, order and tensor bytes."""
    for name in (TINY_MANIFEST, FULL_MANIFEST):
        m = sd.manifest(name)
        shapes = openai_clip_shapes(**m["clip"]["openai_clip_ctor_args"])
        assert list(shapes.items()) == [(e["key"], tuple(e["shape"])) for e in m["clip"]["tensors"]], name
    m = sd.manifest(TINY_MANIFEST)
    clip = random_openai_clip_state_dict(m["clip"]["openai_clip_ctor_args"], m["seed"])
    assert [tensor_sha256(clip[e["key"]]) for e in m["clip"]["tensors"]] == [e["sha256"] for e in m["clip"]["tensors"]]
    head = random_head_state_dict(768, m["seed"])
    assert [tensor_sha256(head[e["key"]]) for e in m["head"]["tensors"]] == [e["sha256"] for e in m["head"]["tensors"]]


# -- behaviour --------------------------------------------------------------------------------------
def test_batching_invariance(tiny_fixture_files):
    _, paths = fixture_images("reduced_tiny")
    one = metrics.get("aesthetic", weights=tiny_fixture_files, batch_size=1).score(paths)
    eight = metrics.get("aesthetic", weights=tiny_fixture_files, batch_size=8).score(paths)
    assert len(one) == len(eight) == 8
    # Only BLAS blocking changes with the batch: a few float32 ulps of the score (~1.4 here).
    torch.testing.assert_close(one.values, eight.values, atol=1e-6, rtol=2e-6)
    emb_one = metrics.get("aesthetic", weights=tiny_fixture_files, batch_size=1).embed(paths[:4])
    emb_three = metrics.get("aesthetic", weights=tiny_fixture_files, batch_size=3).embed(paths[:4])
    emb_eight = metrics.get("aesthetic", weights=tiny_fixture_files, batch_size=8).embed(paths[:4])
    assert emb_one.shape == (4, 768)
    torch.testing.assert_close(emb_one, emb_eight, atol=1e-6, rtol=0)
    torch.testing.assert_close(emb_three, emb_eight, atol=1e-6, rtol=0)
    torch.testing.assert_close(emb_one, emb_eight, atol=1e-6, rtol=0)


def test_tensor_path_matches_pil_path(tiny_provider):
    """Device tensors skip PIL. Tolerance (see `AestheticProvider`): exact for uint8 images already at
    224x224 (nothing is resampled); for resampled smooth images |Δ| <= 1e-4 per normalised-embedding
    component and <= 5e-4 on the score with these weights (measured: <= 1e-5 and <= 1.2e-4)."""
    square = smooth_image(224, 224)
    t = pil_to_tensor(square)[None]
    assert float((tiny_provider.score([square]).values - tiny_provider.score(t).values).abs()) == 0.0

    images = [smooth_image(w, h) for w, h in [(512, 512), (300, 200), (200, 500), (100, 150)]]
    for im in images:
        u8 = pil_to_tensor(im)[None]
        pil_scores, u8_scores = tiny_provider.score([im]), tiny_provider.score(u8)
        f01_scores = tiny_provider.score(u8.float() / 255.0)
        torch.testing.assert_close(u8_scores.values, f01_scores.values, atol=1e-6, rtol=0)
        assert float((pil_scores.values - u8_scores.values).abs()) <= 5e-4, im.size
        emb_pil, emb_t = tiny_provider.embed([im]), tiny_provider.embed(u8)
        assert float((emb_pil - emb_t).abs().max()) <= 1e-4, im.size
        assert float(emb_t.norm()) == pytest.approx(1.0, abs=1e-5)
    # A batch of tensors gives the per-image results (one resize call for a same-size batch).
    batch = torch.cat([pil_to_tensor(smooth_image(320, 240))[None], pil_to_tensor(smooth_image(320, 240).rotate(180))[None]])
    together = tiny_provider.score(batch).values
    apart = torch.cat([tiny_provider.score(batch[i : i + 1]).values for i in range(2)])
    torch.testing.assert_close(together, apart, atol=1e-6, rtol=0)


def test_grayscale_image(tiny_provider):
    """Mode-L images are resized as L and converted after the resize, like the official transform;
    channel replication commutes with that resize, so the RGB copy scores identically."""
    path = sd.preference_image("images/A6_gray_rings_L_333x448.png")
    gray = Image.open(path)
    assert gray.mode == "L"
    s_gray = tiny_provider.score([gray])
    s_rgb = tiny_provider.score([gray.convert("RGB")])
    assert float((s_gray.values - s_rgb.values).abs()) == 0.0
    expected = sd.preference_expected()["aesthetic_v2"]["reduced_tiny"]["images"]["images/A6_gray_rings_L_333x448.png"]
    assert abs(float(s_gray.values[0]) - expected["aesthetic_score"]) <= SCORE_TOL


def test_l2_normalize_matches_official_numpy():
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    x[2] = 0.0
    got = l2_normalize(x)
    want = torch.from_numpy(numpy_normalized(x.numpy()))
    torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-6)
    assert torch.equal(got[2], torch.zeros(16))  # zero norm divides by 1: no NaN
    assert torch.isfinite(got).all()


def test_tiny_weights_round_trip(tiny_weights_dir, tmp_path):

    clip_file = tiny_weights_dir / "ViT-L-14.pt"
    head_file = tiny_weights_dir / "sac+logos+ava1-l14-linearMSE.pth"
    assert clip_file.is_file() and head_file.is_file()
    clip_sd, head_sd = load_state_dict(clip_file), load_state_dict(head_file)
    assert {t.dtype for t in clip_sd.values()} == {torch.float16}
    assert {t.dtype for t in head_sd.values()} == {torch.float32}
    assert head_sd["layers.0.weight"].shape[1] == clip_sd["visual.proj"].shape[1] == TINY_CLIP["embed_dim"]

    provider = metrics.get("aesthetic", weights_dir=tiny_weights_dir)
    _, paths = fixture_images("reduced_tiny")
    scores = provider.score(paths[:4])
    assert torch.isfinite(scores.values).all()
    assert len(set(scores.tolist())) == 4  # random weights still tell images apart

    # The same seed through the generic dispatcher writes the same tensors; another seed does not.
    from paintbench.metrics.synthetic import write_tiny_weights as dispatch

    again = dispatch("aesthetic", tmp_path / "again", seed=0)
    assert sorted(p.name for p in again) == sorted(["ViT-L-14.pt", "sac+logos+ava1-l14-linearMSE.pth"])
    again_sd = load_state_dict(tmp_path / "again" / "ViT-L-14.pt")
    assert all(torch.equal(again_sd[k], v) for k, v in clip_sd.items())
    other = write_tiny_weights(tmp_path / "other", seed=1)
    other_scores = metrics.get("aesthetic", weights_dir=other[0].parent).score(paths[:4])
    assert not torch.allclose(other_scores.values, scores.values)


def test_shared_backbone_is_the_same_object(tiny_provider, tiny_fixture_files):
    clip_path = tiny_fixture_files["clip-vit-l-14"]
    assert tiny_provider.clip is backbones.openai_clip(clip_path, "cpu", torch.float32)
    second = metrics.get("aesthetic", weights=tiny_fixture_files)
    assert second.clip is tiny_provider.clip
    assert backbones.openai_clip(clip_path, "cpu", torch.float16) is not tiny_provider.clip


def test_provenance_records_weights(tiny_provider, tiny_fixture_files):
    from paintbench.metrics.weights import sha256_file

    prov = tiny_provider.provenance()
    assert prov["metric"] == "aesthetic" and prov["version"] == tiny_provider.spec.version
    assert prov["dtype"] == "float32"
    for name, path in tiny_fixture_files.items():
        assert prov["weights"][name]["path"] == str(path)
        assert prov["weights"][name]["sha256"] == sha256_file(path)


def test_missing_weights_name_the_file_and_the_fetch_command(tmp_path, tiny_weights_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingWeightsError) as info:
        metrics.get("aesthetic", weights_dir=empty)
    assert "sac+logos+ava1-l14-linearMSE.pth" in str(info.value)
    assert "paintbench weights fetch aesthetic-head" in str(info.value)
    # With the head given alone, the CLIP is the one reported.
    head_only = tmp_path / "head-only" / "sac+logos+ava1-l14-linearMSE.pth"
    head_only.parent.mkdir()
    shutil.copyfile(tiny_weights_dir / head_only.name, head_only)
    with pytest.raises(MissingWeightsError) as info:
        metrics.get("aesthetic", weights=head_only, weights_dir=empty)
    assert "ViT-L-14.pt" in str(info.value)
    assert "paintbench weights fetch clip-vit-l-14" in str(info.value)
    # A head given by path finds the CLIP beside it before looking in the weights directory.
    beside = metrics.get("aesthetic", weights=tiny_weights_dir / head_only.name, weights_dir=empty)
    assert beside.clip_path == tiny_weights_dir / "ViT-L-14.pt"


def test_head_dimension_mismatch_is_a_clear_error(tiny_weights_dir, tiny_fixture_files):
    """The fixture head expects 768-d embeddings; the tiny CLIP produces 128-d ones."""
    head = tiny_fixture_files["aesthetic-head"]
    clip = tiny_weights_dir / "ViT-L-14.pt"
    with pytest.raises(ValueError) as info:
        metrics.get("aesthetic", weights={"aesthetic-head": head, "clip-vit-l-14": clip})
    msg = str(info.value)
    assert str(head) in msg and str(clip) in msg
    assert "768" in msg and str(TINY_CLIP["embed_dim"]) in msg


def test_not_a_head_file_is_reported(tmp_path, tiny_weights_dir):
    bad = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    sd_ = random_head_state_dict(TINY_CLIP["embed_dim"], 0)
    sd_["layers.3.weight"] = sd_.pop("layers.2.weight")  # a head with a different layout
    torch.save(sd_, bad)
    with pytest.raises(ValueError, match="not an aesthetic predictor head"):
        metrics.get("aesthetic", weights={"aesthetic-head": bad, "clip-vit-l-14": tiny_weights_dir / "ViT-L-14.pt"})
    wrong_width = random_head_state_dict(TINY_CLIP["embed_dim"], 0)
    wrong_width["layers.2.weight"] = torch.zeros(100, 1024)
    torch.save(wrong_width, bad)
    with pytest.raises(ValueError, match=r"layers\.2 has weight \(100, 1024\)"):
        metrics.get("aesthetic", weights={"aesthetic-head": bad, "clip-vit-l-14": tiny_weights_dir / "ViT-L-14.pt"})


def test_no_prompt_needed_and_empty_batch(tiny_provider):
    assert tiny_provider.needs_prompt is False
    _, paths = fixture_images("reduced_tiny")
    with_prompts = tiny_provider.score(paths[:2], prompts=["a", "b"])
    without = tiny_provider.score(paths[:2])
    torch.testing.assert_close(with_prompts.values, without.values, atol=0, rtol=0)
    empty = tiny_provider.score(ImageBatch(names=[], pil=[]))
    assert len(empty) == 0


def write_torchscript_clip(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive shaped like OpenAI's released `ViT-L-14.pt`: the traced model, fp16
    weights, the text attention mask as a graph constant (not a buffer) and the `input_resolution` /
    `context_length` / `vocab_size` entries that OpenAI's archives carry in their state dict."""
    from open_clip.model import build_model_from_openai_state_dict

    model = build_model_from_openai_state_dict(dict(state_dict), quick_gelu=True, cast_dtype=torch.float16)
    model = model.float().eval()
    mask = model._buffers.pop("attn_mask")
    model.attn_mask = mask
    size = model.visual.image_size[0]
    for name, value in (("input_resolution", size), ("context_length", model.context_length),
                        ("vocab_size", model.vocab_size)):
        if name in model.__dict__:  # plain int attributes on open_clip's CLIP
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    image = torch.zeros(1, 3, size, size)
    text = torch.zeros(1, int(model.positional_embedding.shape[0]), dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream, still supported
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks frozen at 1 image: intended
        traced = torch.jit.trace_module(
            model, {"encode_image": (image,), "encode_text": (text,), "forward": (image, text)}, check_trace=False
        )
        torch.jit.save(traced.half(), str(path))


def test_torchscript_archive_clip_scores_like_the_state_dict(tmp_path, tiny_fixture_files, tiny_provider):
    archive = tmp_path / "ViT-L-14.pt"
    plain = load_state_dict(tiny_fixture_files["clip-vit-l-14"])
    write_torchscript_clip(plain, archive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from_archive = load_state_dict(archive)
        assert set(from_archive) - set(plain) == {"input_resolution", "context_length", "vocab_size"}
        assert all(torch.equal(from_archive[k], plain[k]) for k in plain)
        provider = metrics.get(
            "aesthetic", weights={"aesthetic-head": tiny_fixture_files["aesthetic-head"], "clip-vit-l-14": archive}
        )
    _, paths = fixture_images("reduced_tiny")
    torch.testing.assert_close(provider.score(paths).values, tiny_provider.score(paths).values, atol=0, rtol=0)
