"""HPS v2 / v2.1: parity with the official hpsv2 scorer, and the provider's own guarantees.

Parity uses the golden fixtures in shared/fixtures/preference (synthetic weights in the official
container, rebuilt from their manifests and cached): the reduced ViT-B-32 variant runs in every test
run; the full ViT-H-14 variant is marked slow (run it under `flock /tmp/paintbench-heavy.lock`).
Everything else runs on tiny random checkpoints written by `metrics.hps.write_tiny_weights`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from paintbench import metrics
from paintbench.metrics import hps
from paintbench.metrics.images import as_image_batch, pil_to_tensor
from paintbench.metrics.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from paintbench.metrics.synthetic import build_state_dict
from paintbench.metrics.synthetic import write_tiny_weights as write_tiny_for_metric
from paintbench.metrics.weights import MissingWeightsError, sha256_file

import shared_data

TOL = 1e-5  # the fixture README's tolerance for HPS scores and normalised features


# -- helpers -----------------------------------------------------------------------------------------
def _fixture_checkpoint(manifest_name: str) -> Path:
    """The synthetic checkpoint of a manifest, rebuilt (every tensor hash and the digest verified) in the
    official `{'state_dict': ...}` fp16 container, cached across runs by its state digest."""
    m = shared_data.manifest(manifest_name)

    def write(path: Path) -> None:
        sd = build_state_dict(m["tensors"], m["seed"], expected_digest=m["state_digest"])
        with open(path, "wb") as f:
            torch.save({"state_dict": sd}, f)

    return shared_data.cached_file(m["state_digest"], f"{manifest_name}.pt", write)


def _official_names_dir(tmp: Path, checkpoint: Path) -> Path:
    """A weights directory serving one file under both official names (as the fixture run did)."""
    for name in ("HPS_v2_compressed.pt", "HPS_v2.1_compressed.pt"):
        (tmp / name).symlink_to(checkpoint)
    return tmp


def _rng_image(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (h, w, channels) if channels else (h, w)
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode)


def _encode_fixture(provider: hps.HPSProvider, block: dict) -> tuple[list[str], list[str], torch.Tensor, torch.Tensor]:
    """Unnormalised features of the 8 fixture images and 8 prompts: each encoded exactly once."""
    files, pids = list(block["images"]), list(block["texts"])
    prompts = shared_data.preference_prompts()
    img = provider.encode_images([str(shared_data.preference_image(f)) for f in files], normalize=False)
    txt = provider.encode_texts([prompts[p] for p in pids], normalize=False)
    return files, pids, img.float().cpu(), txt.float().cpu()


def _check_pairs(block: dict, files: list[str], pids: list[str], img: torch.Tensor, txt: torch.Tensor) -> float:
    """All 64 cosines from the 8 x 8 feature matrix (`encode_*(normalize=True)` is F.normalize of these)."""
    matrix = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    assert len(block["pairs"]) == 64
    worst = 0.0
    for pair in block["pairs"]:
        got = float(matrix[files.index(pair["image"]), pids.index(pair["prompt_id"])])
        worst = max(worst, abs(got - pair["score"]))
        for key in ("api_hpsv2_score_v2.0", "api_hpsv2_score_v2.1"):
            if key in pair:
                assert abs(got - pair[key]) <= TOL, (pair, got)
    assert worst <= TOL, f"max |Δscore| {worst:.3g} > {TOL}"
    return worst


def _check_pixels(provider: hps.HPSProvider, block: dict) -> None:
    """Preprocessed pixels against the official ones (sums and samples): the first place to look."""
    files = list(block["images"])
    batch = as_image_batch([str(shared_data.preference_image(f)) for f in files])
    for i, f in enumerate(files):
        ex = block["images"][f]
        px = provider.pixel_values(batch.slice(i, i + 1)).cpu()
        assert list(px.shape) == ex["pixel_shape"]
        assert float(px.double().sum()) == pytest.approx(ex["pixel_sum"], rel=1e-9, abs=1e-6), f
        assert float(px.double().abs().sum()) == pytest.approx(ex["pixel_abs_sum"], rel=1e-9), f
        for c, y, x, v in ex["pixel_samples_chw"]:
            assert float(px[0, c, y, x]) == v, (f, c, y, x)


def _check_features(block: dict, files: list[str], pids: list[str], img: torch.Tensor, txt: torch.Tensor) -> None:
    """Feature norms and the first normalised components: localises a tower that disagrees."""
    for rows, names, section, kind in ((img, files, "images", "image"), (txt, pids, "texts", "text")):
        for row, name in zip(rows.double(), names, strict=True):
            ex = block[section][name]
            assert float(row.norm()) == pytest.approx(ex[f"{kind}_features_unnormalized_norm"], rel=1e-5), name
            first8 = (row / row.norm())[:8].numpy()
            assert np.abs(first8 - ex[f"{kind}_features_normalized_first8"]).max() <= TOL, name


# -- tokenizer and geometry (no model) ------------------------------------------------------------------
def test_tokens_equal_the_official_ids():
    hps_block = shared_data.preference_expected()["hps_v2"]
    prompts = shared_data.preference_prompts()
    got = hps.tokenize(list(prompts.values()))
    assert got.dtype == torch.int64 and got.shape == (len(prompts), 77)
    for block in ("full_vit_h_14", "reduced_vit_b_32"):
        for i, pid in enumerate(prompts):
            assert got[i].tolist() == hps_block[block]["tokens"][pid], (block, pid)
    # At least one prompt is longer than the context: it is cut with EOT kept in the last slot.
    lengths = {pid: len(hps.clip_tokenizer().encode(text)) + 2 for pid, text in prompts.items()}
    long = [pid for pid, n in lengths.items() if n > 77]
    assert long
    for pid in long:
        assert got[list(prompts).index(pid), -1].item() == 49407


def test_empty_prompt_tokens():
    assert hps.tokenize([""])[0].tolist() == [49406, 49407] + [0] * 75


def test_bpe_vocab_is_the_file_the_official_run_used():
    from open_clip.tokenizer import default_bpe

    want = shared_data.preference_expected()["hps_v2"]["tokenizer"]["bpe_sha256"]
    assert sha256_file(default_bpe()) == want


def test_resize_geometry_matches_the_official_transform():
    for im in shared_data.preference_expected()["inputs"]["images"]:
        geo = im["derived_geometry"]
        h, w = hps.resized_size(im["height"], im["width"])
        assert [h, w] == geo["hps_resize_to_hw"], im["file"]
        assert list(hps.pad_amounts(h, w)) == geo["hps_pad_left_top_right_bottom"], im["file"]
    assert hps.resized_size(448, 333) == (224, 166)  # round(166.5) -> 166, half to even
    assert hps.resized_size(1, 2000) == (1, 224)  # never 0 pixels


# -- reduced ViT-B-32 parity --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    block = shared_data.preference_expected()["hps_v2"]["reduced_vit_b_32"]
    ckpt = _fixture_checkpoint("hps__ViT-B-32")
    folder = _official_names_dir(tmp_path_factory.mktemp("hps-b32"), ckpt)
    v2 = metrics.get("hps-v2", weights_dir=folder)
    v21 = metrics.get("hps-v2.1", weights=folder / "HPS_v2.1_compressed.pt")
    return block, ckpt, v2, v21


def test_reduced_pixels(reduced):
    block, _, v2, _ = reduced
    assert v2.arch == "ViT-B-32"
    _check_pixels(v2, block)


def test_reduced_all_pairs_both_versions(reduced):
    block, ckpt, v2, v21 = reduced
    worst = {}
    for provider in (v2, v21):
        files, pids, img, txt = _encode_fixture(provider, block)
        _check_features(block, files, pids, img, txt)
        worst[provider.name] = _check_pairs(block, files, pids, img, txt)
    # The public API gives the same numbers (one pair per prompt, image i with prompt i).
    prompts = shared_data.preference_prompts()
    scores = v2.score([str(shared_data.preference_image(f)) for f in files], [prompts[p] for p in pids])
    want = {(p["image"], p["prompt_id"]): p["score"] for p in block["pairs"]}
    for value, f, pid in zip(scores.tolist(), files, pids, strict=True):
        assert abs(value - want[f, pid]) <= TOL
    assert [d["cosine"] for d in scores.details] == scores.tolist()
    sha = sha256_file(ckpt)
    assert v2.provenance()["weights"] == {"hps-v2": {"file": "HPS_v2_compressed.pt", "sha256": sha,
                                                     "path": str(v2.weights_path)}}
    assert v21.provenance()["weights"] == {"hps-v2.1": {"file": "HPS_v2.1_compressed.pt", "sha256": sha,
                                                        "path": str(v21.weights_path)}}
    assert (v2.provenance()["hps_version"], v21.provenance()["hps_version"]) == ("v2.0", "v2.1")
    print(f"reduced ViT-B-32 max |Δscore|: {worst}")


# -- full ViT-H-14 parity -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.full_size
def test_full_vit_h_14_all_pairs(tmp_path):
    """The one full-size HPS check (why it is slow: 986 M parameters, a 2 GB cached fp16 file and a 4 GB
    fp32 model loaded and run on CPU; 8 + 8 encodings). Everything else in this module runs tiny weights."""
    block = shared_data.preference_expected()["hps_v2"]["full_vit_h_14"]
    ckpt = _fixture_checkpoint("hps__ViT-H-14")
    folder = _official_names_dir(tmp_path, ckpt)
    provider = metrics.get("hps-v2.1", weights_dir=folder)
    assert provider.arch == "ViT-H-14"
    _check_pixels(provider, block)
    files, pids, img, txt = _encode_fixture(provider, block)
    _check_features(block, files, pids, img, txt)
    worst = _check_pairs(block, files, pids, img, txt)
    print(f"full ViT-H-14 max |Δscore|: {worst:.3g}")


# -- tiny checkpoints: the provider's own guarantees ----------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hps-tiny")
    written = hps.write_tiny_weights(d, metric="hps-v2") + write_tiny_for_metric("hps-v2.1", d)
    assert sorted(p.name for p in written) == ["HPS_v2.1_compressed.pt", "HPS_v2_compressed.pt"]
    return d


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> hps.HPSProvider:
    return metrics.get("hps-v2.1", weights_dir=tiny_dir)


def _fixture_images() -> list[Image.Image]:
    files = [im["file"] for im in shared_data.preference_expected()["inputs"]["images"]]
    return [Image.open(shared_data.preference_image(f)) for f in files]


def test_tiny_round_trip(tiny_dir, tiny, tmp_path):
    assert tiny.arch == hps.TINY_ARCH
    stored = torch.load(tiny_dir / "HPS_v2.1_compressed.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in stored.values())
    loaded = tiny.model.state_dict()
    assert set(loaded) == set(stored)
    for k, v in stored.items():
        assert torch.equal(loaded[k], v.float()), k
    # Same seed, same bytes; another seed, other weights.
    again = hps.write_tiny_weights(tmp_path / "a", metric="hps-v2.1")[0]
    other = hps.write_tiny_weights(tmp_path / "b", metric="hps-v2.1", seed=1)[0]
    assert sha256_file(again) == sha256_file(tiny_dir / "HPS_v2.1_compressed.pt") != sha256_file(other)
    scores = tiny.score([_rng_image(64, 48, 0)], ["a photo of a cat"])
    assert scores.values.shape == (1,) and torch.isfinite(scores.values).all()
    assert -1.0 <= scores.tolist()[0] <= 1.0


def test_lazy_build_is_bitwise_equal_to_plain_build(tiny_dir):
    path = tiny_dir / "HPS_v2.1_compressed.pt"
    models = []
    for lazy in (True, False):
        sd = hps.unwrap_state_dict(torch.load(path, weights_only=True), path)
        models.append(hps.build_model(sd, hps.TINY_ARCH, lazy_init=lazy))
    lazy_model, plain = models
    assert torch.equal(lazy_model.attn_mask, plain.attn_mask)
    for (k, a), (_, b) in zip(lazy_model.state_dict().items(), plain.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    pixels = hps.preprocess_pil(_fixture_images()[:3])
    tokens = hps.tokenize(["a photo of a cat", "", "x " * 100])
    with torch.inference_mode():
        assert torch.equal(lazy_model.encode_image(pixels), plain.encode_image(pixels))
        assert torch.equal(lazy_model.encode_text(tokens), plain.encode_text(tokens))


def test_versions_never_share_model_or_provenance(tiny_dir, tiny):
    v2 = metrics.get("hps-v2", weights_dir=tiny_dir)
    assert v2.model is not tiny.model
    ptrs = {t.data_ptr() for t in tiny.model.state_dict().values()}
    assert not ptrs & {t.data_ptr() for t in v2.model.state_dict().values()}
    a, b = v2.provenance(), tiny.provenance()
    assert (a["metric"], a["hps_version"], a["version"]) == ("hps-v2", "v2.0", "hps-v2.0/1")
    assert (b["metric"], b["hps_version"], b["version"]) == ("hps-v2.1", "v2.1", "hps-v2.1/1")
    assert a["weights"]["hps-v2"]["sha256"] == sha256_file(tiny_dir / "HPS_v2_compressed.pt")
    assert b["weights"]["hps-v2.1"]["sha256"] == sha256_file(tiny_dir / "HPS_v2.1_compressed.pt")
    assert a["weights"]["hps-v2"]["sha256"] != b["weights"]["hps-v2.1"]["sha256"]
    images, prompts = [_rng_image(80, 60, 1)], ["a red cube"]
    assert v2.score(images, prompts).tolist() != tiny.score(images, prompts).tolist()


def test_each_version_loads_only_its_own_file(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match=r"HPS v2\.0 checkpoint"):
        metrics.get("hps-v2.1", weights=tiny_dir / "HPS_v2_compressed.pt")
    with pytest.raises(ValueError, match=r"HPS v2\.1 checkpoint"):
        metrics.get("hps-v2", weights=tiny_dir / "HPS_v2.1_compressed.pt")
    # A mapping naming only the other version's file does not satisfy this one.
    with pytest.raises(MissingWeightsError, match=r"HPS_v2\.1_compressed\.pt"):
        metrics.get("hps-v2.1", weights={"hps-v2": tiny_dir / "HPS_v2_compressed.pt"}, weights_dir=tmp_path)


def test_missing_weights_names_file_and_fetch_command(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        metrics.get("hps-v2.1", weights_dir=tmp_path)
    assert "HPS_v2.1_compressed.pt" in str(err.value)
    assert "paintbench weights fetch hps-v2.1" in str(err.value)


def test_architecture_mismatch_is_explained(tiny_dir, tmp_path):
    path = tiny_dir / "HPS_v2.1_compressed.pt"
    with pytest.raises(ValueError) as err:
        metrics.get("hps-v2.1", weights=path, arch="ViT-B-32")
    msg = str(err.value)
    assert str(path) in msg and "ViT-B-32" in msg and "vision width 64, 2 layers, patch 32" in msg
    # Not a CLIP checkpoint at all: a bare state dict, also accepted as a container, is rejected by shape.
    bogus = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"head.weight": torch.zeros(3, 4)}, bogus)
    with pytest.raises(ValueError, match="no OpenCLIP ViT image tower") as err:
        metrics.get("hps-v2.1", weights=bogus)
    assert str(bogus) in str(err.value)


def test_bare_and_safetensors_state_dicts_load(tiny_dir, tiny, tmp_path):
    from safetensors.torch import save_file

    sd = torch.load(tiny_dir / "HPS_v2.1_compressed.pt", weights_only=True)["state_dict"]
    bare = tmp_path / "bare" / "HPS_v2.1_compressed.pt"
    bare.parent.mkdir()
    torch.save(sd, bare)
    st = tmp_path / "hps21.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    images, prompts = [_rng_image(50, 70, 2)], ["a lighthouse"]
    want = tiny.score(images, prompts).values
    for source in (bare, st):
        assert torch.equal(metrics.get("hps-v2.1", weights=source).score(images, prompts).values, want)


def test_batching_invariance(tiny):
    images = _fixture_images()
    prompts = [p for p in shared_data.preference_prompts().values()]
    ref = tiny.score(images, prompts).values
    for bs in (1, 3):
        small = metrics.get("hps-v2.1", weights=tiny.weights_path, batch_size=bs)
        assert torch.allclose(small.score(images, prompts).values, ref, atol=1e-6, rtol=0)


def test_tensor_path_equals_pil_path(tiny):
    pil = [_rng_image(131, 97, s) for s in range(3)] + [_fixture_images()[4].resize((131, 97))]
    prompts = ["a cat", "a dog", "", "A red cube on top of a blue sphere"]
    u8 = torch.stack([pil_to_tensor(im) for im in pil])
    want_px = tiny.pixel_values(as_image_batch(pil))
    want = tiny.score(pil, prompts).values
    for tensor in (u8, u8.float() / 255):
        assert torch.equal(tiny.pixel_values(as_image_batch(tensor)), want_px)
        assert torch.equal(tiny.score(tensor, prompts).values, want)


def test_rgba_drops_alpha_and_mode_l_is_gray_rgb(tiny):
    rgba = _rng_image(90, 70, 3, mode="RGBA")
    gray = _fixture_images()[5]
    assert gray.mode == "L"
    prompts = ["a photo of a cat"] * 2
    got = tiny.score([rgba, gray], prompts).values
    want = tiny.score([rgba.convert("RGB"), gray.convert("RGB")], prompts).values
    assert torch.equal(got, want)
    px = tiny.pixel_values(as_image_batch([gray]))
    # Gray input: before normalisation the three channels are equal.
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    raw = px[0] * std + mean
    assert torch.allclose(raw[0], raw[1], atol=1e-6) and torch.allclose(raw[1], raw[2], atol=1e-6)


def test_one_pixel_and_thin_images(tiny):
    one = Image.new("RGB", (1, 1), (200, 100, 50))
    thin = _rng_image(224, 100, 4)  # longest side already 224: padded here (the official code crashes)
    px = tiny.pixel_values(as_image_batch([one, thin]))
    assert px.shape == (2, 3, 224, 224)
    want = hps.normalize(torch.tensor([200, 100, 50]).float().div(255).view(1, 3, 1, 1))[0, :, 0, 0]
    assert torch.allclose(px[0].amin(dim=(1, 2)), want, atol=1e-5)
    assert torch.allclose(px[0].amax(dim=(1, 2)), want, atol=1e-5)
    pad_value = hps.normalize(torch.zeros(1, 3, 1, 1))[0, :, 0, 0]
    assert torch.equal(px[1, :, :62, 0], pad_value.view(3, 1).expand(3, 62))  # 62 rows of zero padding on top
    assert torch.isfinite(tiny.score([one, thin], ["dot", "bars"]).values).all()


def test_empty_prompt_scores_as_the_official_tokens(tiny):
    image = [_rng_image(64, 64, 5)]
    got = tiny.score(image, [""]).values
    with torch.inference_mode():
        img = tiny.model.encode_image(tiny.pixel_values(as_image_batch(image)), normalize=True)
        txt = tiny.model.encode_text(torch.tensor([[49406, 49407] + [0] * 75]), normalize=True)
    assert torch.allclose(got, (img * txt).sum(-1), atol=1e-7)



def test_low_precision_dtypes_stay_close(tiny):
    images = [_rng_image(120, 90, 6), _rng_image(33, 200, 7)]
    prompts = ["a photo of a cat", "astronaut riding a horse"]
    want = tiny.score(images, prompts).values
    for dtype in ("float16", "bfloat16"):
        low = metrics.get("hps-v2.1", weights=tiny.weights_path, dtype=dtype)
        assert low.provenance()["dtype"] == dtype
        got = low.score(images, prompts).values
        assert got.dtype == torch.float32 and torch.allclose(got, want, atol=2e-2), dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_path_matches_cpu(tiny):
    images = [_rng_image(150, 100, s) for s in range(3)]
    prompts = ["a cat", "a dog", ""]
    want = tiny.score(images, prompts).values
    gpu = metrics.get("hps-v2.1", weights=tiny.weights_path, device="cuda")
    u8 = torch.stack([pil_to_tensor(im) for im in images]).cuda()
    got = gpu.score(u8, prompts).values
    assert got.device.type == "cuda"
    assert torch.allclose(got.cpu(), want, atol=1e-4)
