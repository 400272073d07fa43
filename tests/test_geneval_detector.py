"""GenEval's Mask2Former without compiled extensions: classes, mmdet's pre/post-processing, key maps,
checkpoint formats, batching, and (where mmdet is installed) agreement with mmdet itself."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from paintbench.metrics.geneval import detector as D
from paintbench.metrics.geneval.detector.conversion import _HF_UNUSED
from tests.shared_data import SHARED, require

pytestmark = pytest.mark.hf

SCALE = (160, 96)  # a small resize target keeps the tiny model fast; the rules are the same


# --------------------------------------------------------------------------------------------- classes
def test_class_names_are_geneval_object_names_by_index():
    names = require(SHARED / "data" / "geneval" / "object_names.txt").read_text().splitlines()
    assert tuple(n.strip() for n in names if n.strip()) == D.OBJECT_NAMES
    assert len(D.OBJECT_NAMES) == 80
    # GenEval's three spellings, and the COCO/mmdet/HF spelling at the same indices
    # (0-based: laptop is 63; "63-65" in metrics.md counts from 1 after person)
    assert D.OBJECT_NAMES[63:67] == ("laptop", "computer mouse", "tv remote", "computer keyboard")
    assert D.COCO_NAMES[64:67] == ("mouse", "remote", "keyboard")
    differing = [i for i, (a, b) in enumerate(zip(D.OBJECT_NAMES, D.COCO_NAMES, strict=True)) if a != b]
    assert differing == [64, 65, 66]
    assert D.OBJECT_NAMES[0] == "person" and D.OBJECT_NAMES[62] == "tv" and D.OBJECT_NAMES[78] == "hair drier"


def test_detections_are_named_by_class_index():
    res = D.InstanceResult(
        labels=torch.tensor([64, 65, 66, 0]), scores=torch.tensor([0.9, 0.8, 0.7, 0.6]),
        boxes=torch.tensor([[0, 0, 1, 1]] * 4, dtype=torch.float32), class_probs=torch.ones(4),
        queries=torch.arange(4), masks=None, mask_index=torch.arange(4), height=2, width=2,
    )
    dets, rows = res.to_detections()
    assert set(dets) == {"computer mouse", "tv remote", "computer keyboard", "person"}
    assert dets["tv remote"][0].score == pytest.approx(0.8)
    assert rows[dets["person"][0]] == 3


# --------------------------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize(
    ("hw", "resized", "padded"),
    [
        ((512, 512), (800, 800), (800, 800)),
        ((1024, 1024), (800, 800), (800, 800)),
        ((480, 640), (800, 1067), (800, 1088)),  # landscape 4:3
        ((500, 2000), (333, 1333), (352, 1344)),  # long side bound: 1333/2000, short side int(333.25+.5)
        ((1000, 300), (1333, 400), (1344, 416)),  # portrait, long side bound
        ((100, 100), (800, 800), (800, 800)),  # upscaled
        ((333, 500), (800, 1201), (800, 1216)),  # 800/333 * 333 rounds to 800, 500 * 2.4024 = 1201.2
    ],
)
def test_resize_and_pad_sizes_follow_mmcv(hw, resized, padded):
    h, w = hw
    assert D.rescale_size(h, w, (1333, 800)) == resized
    assert D.rescale_size(h, w, (800, 1333)) == resized  # order of the scale tuple does not matter
    assert D.padded_size(*resized, 32) == padded


def test_preprocess_normalises_rgb_and_pads_with_128_before_normalising():
    img = torch.zeros(1, 3, 30, 40, dtype=torch.uint8)
    img[:, 0] = 255  # pure red, RGB order
    cfg = D.DetectorConfig(scale=(100, 50))  # 30x40 → factor min(100/40, 50/30) = 1.667 → 50x67, pad 64x96
    pixels, resized, padded = D.preprocess(img, cfg)
    assert resized == (50, 67) and padded == (64, 96) and pixels.shape == (1, 3, 64, 96)
    mean, std = torch.tensor(D.MMDET_MEAN), torch.tensor(D.MMDET_STD)
    inside = pixels[0, :, :50, :67]
    expected = (torch.tensor([255.0, 0.0, 0.0]) - mean) / std
    assert torch.allclose(inside, expected.view(3, 1, 1).expand_as(inside), atol=1e-5)
    pad = (128.0 - mean) / std
    assert torch.allclose(pixels[0, :, 50:, :], pad.view(3, 1, 1).expand(3, 14, 96), atol=1e-5)
    assert torch.allclose(pixels[0, :, :, 67:], pad.view(3, 1, 1).expand(3, 64, 29), atol=1e-5)
    # swap_rb feeds B,G,R (Flow-GRPO's reward server quirk): red lands in the last channel
    swapped, _, _ = D.preprocess(img, cfg, swap_rb=True)
    assert torch.allclose(swapped[0, 2, 0, 0], (255.0 - mean[2]) / std[2])
    # float 0-1 inputs are quantised like a PNG save: same pixels as the uint8 image
    same, _, _ = D.preprocess(img.float() / 255.0, cfg)
    assert torch.equal(same, pixels)


def _bilinear_1d(values: np.ndarray, out_len: int) -> np.ndarray:
    """Half-pixel-centre linear interpolation (cv2 INTER_LINEAR / align_corners=False), written out."""
    n = len(values)
    out = np.empty(out_len)
    for x in range(out_len):
        src = (x + 0.5) * n / out_len - 0.5
        src = max(src, 0.0)
        i0 = min(int(np.floor(src)), n - 1)
        i1 = min(i0 + 1, n - 1)
        t = src - i0
        out[x] = values[i0] * (1 - t) + values[i1] * t
    return out


@pytest.mark.parametrize("height,width", [(512, 512), (1024, 1024), (256, 384), (333, 517), (600, 200),
                                          (97, 1333), (64, 64), (768, 512), (800, 1333), (1, 7)])
def test_resize_is_opencvs_uint8_bilinear_bit_for_bit(height, width):
    """mmcv resizes with cv2's fixed-point uint8 INTER_LINEAR; paintbench's resize, at the size the
    keep-ratio rule gives, must equal it exactly on every aspect ratio (and 4.7.0, GenEval's pin, gives
    the same bytes as 5.1 on these sizes: measured)."""
    import cv2

    rng = np.random.default_rng(height * 10007 + width)
    images = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    new_h, new_w = D.rescale_size(height, width)
    got = D.resize_uint8(batch, (new_h, new_w))
    want = np.stack([cv2.resize(im, (new_w, new_h), interpolation=cv2.INTER_LINEAR) for im in images])
    assert got.dtype == torch.float32 and got.shape == (2, 3, new_h, new_w)
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy().astype(np.uint8), want)
    assert torch.equal(D.resize_uint8(batch, (height, width)), batch.float())          # same size: untouched


def test_a_float_bilinear_resize_rounded_is_not_opencvs():
    """Why cv2 itself resizes: the half-pixel float interpolation paintbench used before, rounded to
    integers, is one grey level off on a sizeable share of values (12.8 % here; 8-11 % on GenEval images, measured)."""
    import cv2

    image = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    want = cv2.resize(image, (800, 800), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    floaty = torch.nn.functional.interpolate(x, size=(800, 800), mode="bilinear", align_corners=False)
    floaty = floaty.add(0.5).floor().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(np.int16)
    off = np.abs(floaty - want)
    assert off.max() == 1 and 0.02 < (off > 0).mean() < 0.2


# --------------------------------------------------------------------------------------------- post-processing
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_postprocess_upsamples_logits_before_thresholding_and_scores_by_mask_mean():
    # one query, two classes (+ no-object); mask logits vary along x only
    cls = torch.tensor([[2.0, 0.5, -1.0]])
    col = np.array([-3.0, -0.2, 3.0, 3.0])
    low = torch.tensor(np.tile(col, (4, 1)), dtype=torch.float32)[None]  # [1, 4, 4] at 1/4 of 16x16
    res = D.instance_postprocess(cls, low, padded_hw=(16, 16), image_hw=(16, 12), original_hw=(16, 12),
                                 max_per_image=2)
    up = _bilinear_1d(col, 16)[:12]  # upsampled to the padded width, then cropped to the image
    positive = up > 0
    # thresholding after the bilinear upsampling puts the left edge at x=6; thresholding the 4x4
    # logits first and upsampling the binary mask (HF's way) would give x=8
    assert positive.argmax() == 6
    assert res.boxes[0].tolist() == [6.0, 0.0, 12.0, 16.0]
    sig = 1 / (1 + np.exp(-up))
    mask_score = (sig * positive).sum() * 16 / (positive.sum() * 16 + 1e-6)
    probs = _softmax(np.array([2.0, 0.5, -1.0]))[:2]
    assert res.labels.tolist() == [0, 1]
    assert np.allclose(res.class_probs.numpy(), probs, rtol=1e-6)
    assert np.allclose(res.scores.numpy(), probs * mask_score, rtol=1e-5)
    # the two classes of the query share one mask
    assert res.masks.shape == (1, 16, 12) and res.mask_index.tolist() == [0, 0]


def test_postprocess_resizes_to_the_original_size_bilinearly():
    col = np.array([-1.0, 1.0, -1.0, 1.0])
    low = torch.tensor(np.tile(col, (2, 1)), dtype=torch.float32)[None]  # [1, 2, 4] for an 8x16 input
    res = D.instance_postprocess(torch.tensor([[3.0, -3.0]]), low, padded_hw=(8, 16), image_hw=(8, 16),
                                 original_hw=(8, 8), max_per_image=1)
    up = _bilinear_1d(col, 16)
    down = _bilinear_1d(up, 8)  # a 2x reduction without antialiasing: the mean of each pixel pair
    assert np.allclose(down, (up[0::2] + up[1::2]) / 2)
    assert res.masks[0, 0].numpy().tolist() == (down > 0).tolist()


def test_postprocess_takes_the_top_pairs_over_query_x_class():
    rng = np.random.default_rng(0)
    q, c = 60, 2  # 120 (query, class) pairs, of which the top 100 are kept
    logits = torch.tensor(rng.normal(size=(q, c + 1)), dtype=torch.float32)
    masks = torch.ones(q, 2, 2)  # all-positive masks: the mask score is sigmoid(1) everywhere
    res = D.instance_postprocess(logits, masks, padded_hw=(8, 8), image_hw=(8, 8), original_hw=(8, 8))
    probs = _softmax(logits.numpy().astype(np.float64))[:, :c].reshape(-1)
    top = set(np.argsort(-probs)[:100].tolist())
    got = {int(qi) * c + int(lab) for qi, lab in zip(res.queries.tolist(), res.labels.tolist(), strict=True)}
    assert len(res) == 100 and got == top
    assert np.allclose(np.sort(res.class_probs.numpy())[::-1], np.sort(probs)[::-1][:100], rtol=1e-5)
    assert torch.allclose(res.scores, res.class_probs * torch.sigmoid(torch.tensor(1.0)), rtol=1e-6)
    # min_class_prob keeps exactly the pairs above it, and their scores are unchanged
    ranked = np.sort(probs)[::-1]
    cut = float(ranked[9] + ranked[10]) / 2
    few = D.instance_postprocess(logits, masks, padded_hw=(8, 8), image_hw=(8, 8), original_hw=(8, 8),
                                 min_class_prob=cut)
    assert len(few) == 10 and torch.allclose(few.scores, res.scores[:10])


def test_masks_to_boxes_is_the_tight_box_plus_one():
    m = torch.zeros(3, 6, 7, dtype=torch.bool)
    m[0, 2:4, 1:5] = True
    m[1, 5, 6] = True
    boxes = D.masks_to_boxes(m)
    assert boxes.tolist() == [[1, 2, 5, 4], [6, 5, 7, 6], [0, 0, 0, 0]]  # empty mask → zeros


# --------------------------------------------------------------------------------------------- key maps
def test_patch_merging_permutation_matches_mmdet_unfold():
    """mmdet merges 2x2 patches with nn.Unfold (channel c of kernel position k at c*4+k); HF concatenates
    the four positions. A layer converted with the key map must compute mmdet's function."""
    from transformers.models.swin.modeling_swin import SwinPatchMerging

    torch.manual_seed(0)
    c, h, w = 5, 4, 6
    x = torch.randn(2, h * w, c)
    reduction = torch.randn(2 * c, 4 * c)
    norm_w, norm_b = torch.randn(4 * c), torch.randn(4 * c)
    # mmdet's PatchMerging, written out: unfold → LayerNorm → Linear (no bias)
    grid = x.view(2, h, w, c).permute(0, 3, 1, 2)
    unfolded = F.unfold(grid, kernel_size=2, stride=2).transpose(1, 2)  # [B, L, C*4]
    ref = F.linear(F.layer_norm(unfolded, (4 * c,), norm_w, norm_b), reduction)
    import inspect

    # transformers 4.x: SwinPatchMerging(input_resolution, dim); 5.x: SwinPatchMerging(dim)
    two = "input_resolution" in inspect.signature(SwinPatchMerging).parameters
    hf = SwinPatchMerging((h, w), c) if two else SwinPatchMerging(c)
    hf.reduction.weight.data = D.merge_mmdet_to_hf(reduction)
    hf.norm.weight.data, hf.norm.bias.data = D.merge_mmdet_to_hf(norm_w), D.merge_mmdet_to_hf(norm_b)
    assert torch.allclose(hf(x, (h, w)), ref, atol=1e-5)
    assert torch.equal(D.merge_hf_to_mmdet(D.merge_mmdet_to_hf(reduction)), reduction)


def test_fused_attention_projection_split_matches_torch_multihead_attention():
    """mmdet's decoder self-attention is nn.MultiheadAttention (fused in_proj); HF splits q, k, v."""
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerAttention

    torch.manual_seed(0)
    d, heads = 16, 4
    mha = torch.nn.MultiheadAttention(d, heads).eval()
    sd = {"panoptic_head.transformer_decoder.layers.0.self_attn.attn.in_proj_weight": mha.in_proj_weight.data,
          "panoptic_head.transformer_decoder.layers.0.self_attn.attn.in_proj_bias": mha.in_proj_bias.data}
    mapped, unmapped = D.mmdet3_to_hf(sd)
    assert not unmapped
    attn = Mask2FormerAttention(d, heads).eval()
    prefix = "model.transformer_module.decoder.layers.0.self_attn."
    for p in ("q_proj", "k_proj", "v_proj"):
        getattr(attn, p).weight.data = mapped[prefix + p + ".weight"]
        getattr(attn, p).bias.data = mapped[prefix + p + ".bias"]
    attn.out_proj.load_state_dict(mha.out_proj.state_dict())
    x, pos = torch.randn(7, 2, d), torch.randn(7, 2, d)  # (sequence, batch, dim)
    # mmdet's wrapper adds the query position embedding to query and key, not to the value
    ref, _ = mha(x + pos, x + pos, x)
    got = attn(hidden_states=x, position_embeddings=pos)[0]
    got = got if got.shape == ref.shape else got.transpose(0, 1)
    assert torch.allclose(got, ref, atol=1e-5)


def test_mmdet2_keys_rename_to_mmdet3_and_back():
    pairs = {
        "panoptic_head.transformer_decoder.layers.3.attentions.0.attn.in_proj_weight":
            "panoptic_head.transformer_decoder.layers.3.cross_attn.attn.in_proj_weight",
        "panoptic_head.transformer_decoder.layers.3.attentions.1.attn.out_proj.bias":
            "panoptic_head.transformer_decoder.layers.3.self_attn.attn.out_proj.bias",
        "panoptic_head.transformer_decoder.layers.8.ffns.0.layers.0.0.weight":
            "panoptic_head.transformer_decoder.layers.8.ffn.layers.0.0.weight",
        "panoptic_head.pixel_decoder.encoder.layers.5.attentions.0.sampling_offsets.weight":
            "panoptic_head.pixel_decoder.encoder.layers.5.self_attn.sampling_offsets.weight",
        "panoptic_head.pixel_decoder.encoder.layers.5.ffns.0.layers.1.bias":
            "panoptic_head.pixel_decoder.encoder.layers.5.ffn.layers.1.bias",
        "panoptic_head.transformer_decoder.layers.0.norms.2.weight":
            "panoptic_head.transformer_decoder.layers.0.norms.2.weight",
        "backbone.stages.2.blocks.17.ffn.layers.0.0.weight": "backbone.stages.2.blocks.17.ffn.layers.0.0.weight",
    }
    t = torch.zeros(1)
    v3 = D.mmdet2_to_mmdet3(dict.fromkeys(pairs, t))
    assert list(v3) == list(pairs.values())
    assert list(D.mmdet3_to_mmdet2(v3)) == list(pairs)
    assert D.checkpoint_format(dict.fromkeys(pairs, t)) == "mmdet2"
    assert D.checkpoint_format(v3) == "mmdet3"


def test_swin_s_key_map_covers_the_official_architecture():
    """On the full GenEval architecture (built on the meta device, no memory): the mmdet 3.x state dict
    has the official file's 649 entries (625 parameters + 24 `relative_position_index` buffers) and
    68,739,547 parameters; the map back to HF sets every HF tensor except the two never used."""
    try:
        with torch.device("meta"):
            model = D.build_model(D.SWIN_S_CONFIG)
    except RuntimeError:  # transformers 4.x's Swin calls .item() while it is built: build it for real
        model = D.build_model(D.SWIN_S_CONFIG)
    hf = D.hf5_names(model.state_dict())   # transformers 5.x's names, whichever version built the model
    mm = D.hf_to_mmdet3(hf, D.SWIN_S_CONFIG)
    buffers = [k for k in mm if k.endswith("relative_position_index")]
    assert len(mm) == 649 and len(buffers) == 24
    assert sum(v.numel() for k, v in mm.items() if k not in buffers) == 68_739_547
    assert D.config_from_mmdet(mm) == D.SWIN_S_CONFIG
    assert D.config_from_mmdet(D.mmdet2_to_mmdet3(D.mmdet3_to_mmdet2(mm))) == D.SWIN_S_CONFIG
    back, unmapped = D.mmdet3_to_hf(mm)
    assert not unmapped
    never_used = {"model.pixel_level_module.encoder.swin.layernorm.weight",
                  "model.pixel_level_module.encoder.swin.layernorm.bias", "criterion.empty_weight"}
    assert "criterion.empty_weight" in hf
    assert set(hf) - set(back) == never_used & set(hf)   # transformers 4.x's Swin backbone has no final layernorm
    assert set(back) <= set(hf)
    # names from the real mmdet 3.x file (mask2former.md's mapping table)
    for k in ("backbone.stages.2.blocks.17.attn.w_msa.qkv.weight", "backbone.norm3.weight",
              "panoptic_head.pixel_decoder.level_encoding.weight", "panoptic_head.mask_embed.4.bias",
              "panoptic_head.transformer_decoder.post_norm.weight", "backbone.stages.2.downsample.reduction.weight"):
        assert k in mm


def test_relative_position_index_is_mmdets():
    idx = D.mmdet_relative_position_index(7)
    assert idx.shape == (49, 49) and int(idx.max()) == 13 * 13 - 1 and int(idx.diagonal().unique()) == 84
    bad = {"backbone.stages.0.blocks.0.attn.w_msa.relative_position_index": idx.flip(0)}
    with pytest.raises(ValueError, match="relative position index"):
        D.mmdet3_to_hf(bad)


# --------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m2f")
    model = D.random_tiny_model(seed=3)
    paths = {
        "mmdet2": D.save_checkpoint(model, D.TINY_CONFIG, folder / "geneval_v2.pth", "mmdet2"),
        "mmdet3": D.save_checkpoint(model, D.TINY_CONFIG, folder / "geneval_v3.pth", "mmdet3"),
        "hf": D.save_checkpoint(model, D.TINY_CONFIG, folder / "hf", "hf"),
    }
    return model, paths


def _images(n: int, size=(48, 64), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (n, 3, 6, 8), generator=g, dtype=torch.uint8).float()
    return F.interpolate(base, size=size, mode="bilinear", align_corners=False).round().to(torch.uint8)


def test_each_official_format_loads_through_the_key_map_and_detects_identically(tiny):
    model, paths = tiny
    reference = {k: v for k, v in model.state_dict().items() if not _HF_UNUSED.search(k)}
    images = _images(2)
    outputs = {}
    for fmt, path in paths.items():
        loaded = D.load_detector(path)
        assert loaded.format == fmt
        assert loaded.config == D.TINY_CONFIG
        got = loaded.model.state_dict()
        assert all(torch.equal(got[k], v) for k, v in reference.items()), fmt
        det = D.Mask2FormerDetector(loaded, scale=SCALE)
        outputs[fmt] = det.detect(images)
    for fmt in ("mmdet3", "hf"):
        for a, b in zip(outputs["mmdet2"], outputs[fmt], strict=True):
            assert torch.equal(a.labels, b.labels) and torch.equal(a.boxes, b.boxes)
            assert torch.equal(a.scores, b.scores)
    first = outputs["mmdet2"][0]
    assert len(first) == 100 and first.masks.shape[1:] == (48, 64)
    assert float(first.scores.max()) > 0.3  # the tiny weights give detections GenEval would keep


def test_mmdet2_file_is_the_official_container(tiny):
    _, paths = tiny
    obj = torch.load(paths["mmdet2"], map_location="cpu", weights_only=True)
    assert set(obj) == {"meta", "state_dict"}
    assert "panoptic_head.transformer_decoder.layers.0.attentions.0.attn.in_proj_weight" in obj["state_dict"]
    assert list(obj["meta"]["CLASSES"]) == list(D.COCO_NAMES)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_checkpoint_with_numpy_metadata_loads_without_unpickling_code(tiny, tmp_path, zipped):
    """Real mmcv checkpoints can carry numpy objects in `meta`, which torch's weights_only loader
    refuses by default; read_checkpoint allows exactly those numpy types and still reads the tensors."""
    _, paths = tiny
    obj = torch.load(paths["mmdet2"], map_location="cpu", weights_only=True)
    obj["meta"]["hook_msgs"] = {"best_score": np.float64(0.46), "arr": np.arange(3), "dt": np.dtype("f4")}
    target = tmp_path / "with_numpy.pth"
    torch.save(obj, target, _use_new_zipfile_serialization=zipped)
    with pytest.raises(Exception):  # noqa: B017 - torch's own safe loader refuses this file
        torch.load(target, map_location="cpu", weights_only=True)
    sd, meta = D.read_checkpoint(target)
    assert D.checkpoint_format(sd) == "mmdet2"
    assert set(sd) == set(obj["state_dict"])
    assert all(torch.equal(sd[k], v) for k, v in obj["state_dict"].items())
    msgs = meta["hook_msgs"]
    assert type(msgs["best_score"]) is np.float64 and msgs["best_score"] == 0.46
    assert np.array_equal(msgs["arr"], np.arange(3)) and msgs["dt"] == np.dtype("f4")


class _WritesMarker:
    """Unpickling this runs `os.system`, which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsPrint:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("where", ["meta", "top"])
def test_crafted_checkpoint_that_would_run_code_is_refused(tiny, tmp_path, zipped, where):
    _, paths = tiny
    obj = torch.load(paths["mmdet2"], map_location="cpu", weights_only=True)
    marker = tmp_path / "pwned"
    evil = _WritesMarker(marker)
    obj["meta"]["best_score"] = np.float64(0.46)  # so the numpy-allowing second read is reached too
    if where == "meta":
        obj["meta"]["evil"] = evil
    else:
        obj = {"state_dict": obj["state_dict"], "evil": evil}
    target = tmp_path / "crafted.pth"
    torch.save(obj, target, _use_new_zipfile_serialization=zipped)
    with pytest.raises(ValueError, match=r"crafted\.pth: refused: its pickle needs `(posix|os|nt)\.system`"):
        D.read_checkpoint(target)
    with pytest.raises(ValueError, match="refused"):
        D.load_detector(target)
    assert not marker.exists()
    obj = {"state_dict": {"x": torch.zeros(1)}, "meta": {"evil": _CallsPrint()}}
    torch.save(obj, target, _use_new_zipfile_serialization=zipped)
    with pytest.raises(ValueError, match=r"needs `(builtins\.)?print`"):
        D.read_checkpoint(target)


def test_incomplete_or_foreign_checkpoints_are_refused_with_the_file_name(tiny, tmp_path):
    _, paths = tiny
    sd, _ = D.read_checkpoint(paths["mmdet3"])
    missing = dict(sd)
    del missing["panoptic_head.transformer_decoder.layers.1.norms.2.bias"]
    p = tmp_path / "missing.pth"
    torch.save({"state_dict": missing}, p)
    with pytest.raises(ValueError, match=r"missing\.pth.*1 missing.*norms|missing\.pth.*final_layer_norm"):
        D.load_detector(p)
    extra = dict(sd)
    extra["panoptic_head.something_else.weight"] = torch.zeros(2)
    p2 = tmp_path / "extra.pth"
    torch.save({"state_dict": extra}, p2)
    with pytest.raises(ValueError, match=r"extra\.pth.*something_else"):
        D.load_detector(p2)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a Mask2Former checkpoint"):
        D.load_detector(other)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth"):
        D.load_detector(junk)


def test_batched_detection_equals_one_image_at_a_time(tiny):
    _, paths = tiny
    det = D.Mask2FormerDetector.from_checkpoint(paths["mmdet2"], scale=SCALE)
    same = _images(3, seed=1)
    odd = _images(1, size=(40, 40), seed=2)[0]
    batch = det.detect([same[0], odd, same[1], same[2]])  # mixed sizes: grouped, order kept
    singles = [det.detect([im])[0] for im in (same[0], odd, same[1], same[2])]
    assert [r.height for r in batch] == [48, 40, 48, 48]
    for a, b in zip(batch, singles, strict=True):
        assert torch.equal(a.labels, b.labels)
        assert torch.allclose(a.scores, b.scores, atol=1e-5)
        assert (a.boxes - b.boxes).abs().max() <= 1.0


def test_mmdet_backend_agrees_with_transformers_backend(tmp_path):
    """Same random weights through mmdet itself and through our key map: same detections.

    Tolerance: scores within 1e-4 absolute, boxes equal for at least 98% of detections (the study in
    mask2former.md measured 1e-5 / identical boxes on CPU float32)."""
    ok, why = D.mmdet_available()
    if not ok:
        pytest.skip(f"mmdet backend unavailable: {why}")
    from mmdet.apis import init_detector

    model = init_detector(str(D.default_mmdet_config()), None, device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or ".gn" in name):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        model.panoptic_head.cls_embed.weight.mul_(8)
    ckpt = tmp_path / "random.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    img = _images(1, size=(800, 800), seed=5)[0]  # 800x800: no resize, no padding in either pipeline
    ours = D.Mask2FormerDetector.from_checkpoint(ckpt).detect([img])[0]
    theirs = D.MmdetDetector(None, model=model, config=D.default_mmdet_config()).detect([img])[0]
    keep = theirs.scores > 0.05
    matched = 0
    for lab, box, score in zip(theirs.labels[keep], theirs.boxes[keep], theirs.scores[keep], strict=True):
        same = (ours.labels == lab) & (ours.boxes == box).all(dim=1)
        if same.any() and (ours.scores[same] - score).abs().min() < 1e-4:
            matched += 1
    assert matched >= 0.98 * int(keep.sum())


def test_the_mmdet_backend_labels_mmdet3_results_as_not_genevals_numbers():
    from paintbench.metrics.geneval.detector.mmdet_backend import mmdet_pipeline

    assert mmdet_pipeline("2.18.0") == {"pipeline": "mmdet 2.x test pipeline (GenEval's)", "geneval_numbers": True}
    label = mmdet_pipeline("3.3.0")
    assert label["geneval_numbers"] is False and "not GenEval's numbers" in label["pipeline"]
    ours = mmdet_pipeline("3.3.0", "geneval")        # the backend's default: GenEval's 2.x pipeline on 3.x
    assert ours["geneval_numbers"] is True and "grey-128 pad" in ours["pipeline"]
