"""GenEval's object detector, Mask2Former Swin-S (COCO instance), without compiled extensions.

GenEval runs mmdet 2.x's `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco` through `inference_detector`,
which needs a CUDA build of mmcv. Here the same network is transformers'
`Mask2FormerForUniversalSegmentation` (pure PyTorch: the deformable attention is `grid_sample`), and the
official checkpoint is loaded into it by a key map. Around the model sit mmdet's own pre- and
post-processing, rewritten in torch so that a whole batch stays on the device:

- preprocessing (mmdet 2.x test pipeline of that config): keep-ratio resize into 1333×800 (mmcv's
  `rescale_size` rounding), bilinear with half-pixel centres on the uint8 image, result rounded to uint8
  as cv2 does; pad bottom/right to a multiple of 32 with the value 128 (the config pads *before*
  Normalize); then ImageNet mean/std on the 0-255 scale, in RGB order. cv2 resizes uint8 with 11-bit
  fixed-point weights, which we do not emulate: after rounding, a resized pixel can differ from
  mmcv's by one grey level. GenEval images are square, and 512² and 1024² inputs become 800×800;
- post-processing (`MaskFormerFusionHead.instance_postprocess`): class probabilities are the softmax
  without the no-object column; the top 100 (query, class) pairs over the flattened matrix are kept;
  each pair's mask logits are upsampled bilinearly to the padded input, cropped to the resized image,
  resized bilinearly to the original size, and only then thresholded at 0; the score is
  class probability × mean sigmoid over the mask pixels; the box is the tight box of the mask,
  `[x0, y0, x1 + 1, y1 + 1]`. HF's own `post_process_instance_segmentation` differs on all of these
  (fixed 384² resize, nearest upsampling of binarised masks, no boxes), so it is not used.

Checkpoints accepted (the format is recognised from the keys):

- `mmdet2`: the official GenEval file `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth` (mmdet v2.0
  release `..._20220504_001756-743b7d99.pth`), keys named after mmcv 1.x `BaseTransformerLayer`
  (`attentions.0`, `ffns.0`);
- `mmdet3`: mmdet's v3.0 re-keyed copy of the same run (`..._20220504_001756-c9d0c4f2.pth`), which
  GenEval's download script fetched before 2024-07;
- `hf`: a transformers folder (`config.json` + `model.safetensors` or `pytorch_model.bin`), e.g.
  `facebook/mask2former-swin-small-coco-instance`. That is a conversion of Meta's Detectron2 training,
  not GenEval's checkpoint: same architecture and class order, different weights, so scores differ.

The architecture of an mmdet checkpoint is read off its tensor shapes (depths, widths, heads, window,
queries, layers), so the tiny random checkpoints the tests write in each format go through exactly the
code the real file does. Class index i is GenEval's `object_names.txt` line i: the COCO order with
"computer mouse", "tv remote" and "computer keyboard" for COCO's mouse, remote and keyboard.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from paintbench.metrics.geneval.rules import Detection

# --------------------------------------------------------------------------------------------- classes

OBJECT_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
"""GenEval's `object_names.txt`, in detector index order (GenEval maps output index i to line i)."""

GENEVAL_SPELLINGS: dict[int, tuple[str, str]] = {
    64: ("mouse", "computer mouse"),
    65: ("remote", "tv remote"),
    66: ("keyboard", "computer keyboard"),
}
"""0-based index → (COCO/mmdet/HF name, GenEval name) where GenEval spells a class differently."""

COCO_NAMES: tuple[str, ...] = tuple(
    GENEVAL_SPELLINGS[i][0] if i in GENEVAL_SPELLINGS else n for i, n in enumerate(OBJECT_NAMES)
)
"""The same 80 classes as mmdet's `CocoDataset.CLASSES` and HF's `id2label` spell them."""

# --------------------------------------------------------------------------------------------- config

MMDET_MEAN = (123.675, 116.28, 103.53)
MMDET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture and test-time settings of the Mask2Former instance model.

    Defaults are GenEval's detector (mmdet config `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`):
    Swin-S backbone, 6-layer deformable pixel decoder, 9 decoder layers, 100 queries, 80 classes.
    `decoder_layers` counts real layers (HF's config field is one more). Attention heads of the pixel
    decoder and decoder are not visible in tensor shapes; 8 as in every mmdet Mask2Former config.
    """

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    hidden_dim: int = 256
    encoder_layers: int = 6
    encoder_ffn_dim: int = 1024
    decoder_layers: int = 9
    decoder_ffn_dim: int = 2048
    attention_heads: int = 8
    num_queries: int = 100
    num_classes: int = 80
    # test-time settings (not part of the checkpoint)
    scale: tuple[int, int] = (1333, 800)
    size_divisor: int = 32
    pad_value: float = 128.0
    max_per_image: int = 100

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


SWIN_S_CONFIG = DetectorConfig()

TINY_CONFIG = DetectorConfig(
    embed_dim=32,
    depths=(2, 2, 2, 2),
    swin_heads=(1, 2, 4, 8),
    hidden_dim=32,
    encoder_layers=1,
    encoder_ffn_dim=64,
    decoder_layers=2,
    decoder_ffn_dim=64,
    num_queries=12,
)
"""A small model of the same architecture (two blocks per stage, so shifted windows are exercised),
for tests and CPU demos with random weights."""


def hf_config(cfg: DetectorConfig):
    """The transformers `Mask2FormerConfig` of `cfg` (class names in COCO spelling, as on the hub)."""
    from transformers import Mask2FormerConfig, SwinConfig

    n = len(cfg.depths)
    backbone = SwinConfig(
        image_size=224,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depths=list(cfg.depths),
        num_heads=list(cfg.swin_heads),
        window_size=cfg.window_size,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=True,
        drop_path_rate=0.0,
        out_features=[f"stage{i + 1}" for i in range(n)],
    )
    names = COCO_NAMES if cfg.num_classes == len(COCO_NAMES) else tuple(f"class_{i}" for i in range(cfg.num_classes))
    return Mask2FormerConfig(
        backbone_config=backbone,
        feature_size=cfg.hidden_dim,
        mask_feature_size=cfg.hidden_dim,
        hidden_dim=cfg.hidden_dim,
        encoder_layers=cfg.encoder_layers,
        encoder_feedforward_dim=cfg.encoder_ffn_dim,
        decoder_layers=cfg.decoder_layers + 1,  # HF builds decoder_layers - 1 layers
        dim_feedforward=cfg.decoder_ffn_dim,
        num_attention_heads=cfg.attention_heads,
        num_queries=cfg.num_queries,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )


def build_model(cfg: DetectorConfig) -> torch.nn.Module:
    """A randomly initialised HF Mask2Former of architecture `cfg`, in eval mode."""
    from transformers import Mask2FormerForUniversalSegmentation

    model = Mask2FormerForUniversalSegmentation(hf_config(cfg))
    return model.eval()


def config_from_hf(hf_cfg: Any, base: DetectorConfig = SWIN_S_CONFIG) -> DetectorConfig:
    """Our `DetectorConfig` of a transformers Mask2Former config (architecture fields only)."""
    bb = hf_cfg.backbone_config
    return replace(
        base,
        embed_dim=bb.embed_dim,
        depths=tuple(bb.depths),
        swin_heads=tuple(bb.num_heads),
        window_size=bb.window_size,
        patch_size=bb.patch_size,
        mlp_ratio=bb.mlp_ratio,
        hidden_dim=hf_cfg.hidden_dim,
        encoder_layers=hf_cfg.encoder_layers,
        encoder_ffn_dim=hf_cfg.encoder_feedforward_dim,
        decoder_layers=hf_cfg.decoder_layers - 1,
        decoder_ffn_dim=hf_cfg.dim_feedforward,
        attention_heads=hf_cfg.num_attention_heads,
        num_queries=hf_cfg.num_queries,
        num_classes=len(hf_cfg.id2label),
    )


def config_from_mmdet(sd: Mapping[str, torch.Tensor], base: DetectorConfig = SWIN_S_CONFIG) -> DetectorConfig:
    """The architecture of an mmdet 3.x-keyed state dict, read off its tensor shapes."""

    def count(pattern: str) -> int:
        rx = re.compile(pattern)
        return len({m.group(1) for k in sd if (m := rx.match(k))})

    try:
        patch = sd["backbone.patch_embed.projection.weight"]
        embed_dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
        n_stages = count(r"backbone\.stages\.(\d+)\.")
        depths = tuple(count(rf"backbone\.stages\.{s}\.blocks\.(\d+)\.") for s in range(n_stages))
        heads, window = [], 0
        for s in range(n_stages):
            table = sd[f"backbone.stages.{s}.blocks.0.attn.w_msa.relative_position_bias_table"]
            heads.append(int(table.shape[1]))
            window = (math.isqrt(int(table.shape[0])) + 1) // 2
        fc1 = sd["backbone.stages.0.blocks.0.ffn.layers.0.0.weight"]
        query = sd["panoptic_head.query_feat.weight"]
        cls = sd["panoptic_head.cls_embed.weight"]
        enc_ffn = sd["panoptic_head.pixel_decoder.encoder.layers.0.ffn.layers.0.0.weight"]
        dec_ffn = sd["panoptic_head.transformer_decoder.layers.0.ffn.layers.0.0.weight"]
    except KeyError as e:
        raise ValueError(f"not a Mask2Former Swin checkpoint in mmdet layout: no tensor {e.args[0]!r}") from None
    return replace(
        base,
        embed_dim=embed_dim,
        depths=depths,
        swin_heads=tuple(heads),
        window_size=window,
        patch_size=patch_size,
        mlp_ratio=fc1.shape[0] / embed_dim,
        hidden_dim=int(query.shape[1]),
        encoder_layers=count(r"panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\."),
        encoder_ffn_dim=int(enc_ffn.shape[0]),
        decoder_layers=count(r"panoptic_head\.transformer_decoder\.layers\.(\d+)\."),
        decoder_ffn_dim=int(dec_ffn.shape[0]),
        num_queries=int(query.shape[0]),
        num_classes=int(cls.shape[0]) - 1,
    )


# --------------------------------------------------------------------------------------------- key maps

CheckpointFormat = Literal["mmdet2", "mmdet3", "hf"]

_BB = "model.pixel_level_module.encoder."
_PD = "model.pixel_level_module.decoder."
_TM = "model.transformer_module."

# mmdet 2.x (mmcv 1.x BaseTransformerLayer) → mmdet 3.x names. The decoder's operation order in the
# 2.x config is (cross_attn, norm, self_attn, norm, ffn, norm), so attentions.0 is the cross-attention.
_MMDET2_TO_3: tuple[tuple[str, str], ...] = (
    (r"^(panoptic_head\.transformer_decoder\.layers\.\d+)\.attentions\.0\.", r"\1.cross_attn."),
    (r"^(panoptic_head\.transformer_decoder\.layers\.\d+)\.attentions\.1\.", r"\1.self_attn."),
    (r"^(panoptic_head\.pixel_decoder\.encoder\.layers\.\d+)\.attentions\.0\.", r"\1.self_attn."),
    (r"\.ffns\.0\.", ".ffn."),
)
_MMDET3_TO_2: tuple[tuple[str, str], ...] = (
    (r"^(panoptic_head\.transformer_decoder\.layers\.\d+)\.cross_attn\.", r"\1.attentions.0."),
    (r"^(panoptic_head\.transformer_decoder\.layers\.\d+)\.self_attn\.", r"\1.attentions.1."),
    (r"^(panoptic_head\.pixel_decoder\.encoder\.layers\.\d+)\.self_attn\.", r"\1.attentions.0."),
    (r"^(panoptic_head\.(?:pixel_decoder\.encoder|transformer_decoder)\.layers\.\d+)\.ffn\.", r"\1.ffns.0."),
)


def _rename(sd: Mapping[str, torch.Tensor], rules: Sequence[tuple[str, str]]) -> OrderedDict[str, torch.Tensor]:
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    compiled = [(re.compile(a), b) for a, b in rules]
    for k, v in sd.items():
        for rx, repl in compiled:
            k = rx.sub(repl, k)
        out[k] = v
    return out


def mmdet2_to_mmdet3(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Rename an mmdet 2.x Mask2Former state dict to mmdet 3.x keys (tensors unchanged)."""
    return _rename(sd, _MMDET2_TO_3)


def mmdet3_to_mmdet2(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """The inverse of `mmdet2_to_mmdet3` (used to write checkpoints in the official 2.x layout)."""
    return _rename(sd, _MMDET3_TO_2)


_MERGE_ORDER = (0, 2, 1, 3)
"""PatchMerging: mmdet's `nn.Unfold` puts channel c of kernel position k (row-major: r0c0, r0c1, r1c0,
r1c1) at c*4 + k; HF concatenates the four positions as (r0c0, r1c0, r0c1, r1c1), group g at g*C + c.
HF group g is unfold position `_MERGE_ORDER[g]` (the permutation is its own inverse)."""


def merge_mmdet_to_hf(t: torch.Tensor) -> torch.Tensor:
    """Reorder the 4C input axis (last axis) of a PatchMerging weight/norm from mmdet to HF order."""
    c4 = t.shape[-1]
    x = t.reshape(*t.shape[:-1], c4 // 4, 4)[..., list(_MERGE_ORDER)]
    return x.transpose(-1, -2).reshape(*t.shape[:-1], c4).contiguous()


def merge_hf_to_mmdet(t: torch.Tensor) -> torch.Tensor:
    """Inverse of `merge_mmdet_to_hf`."""
    c4 = t.shape[-1]
    x = t.reshape(*t.shape[:-1], 4, c4 // 4).transpose(-1, -2)[..., list(_MERGE_ORDER)]
    return x.reshape(*t.shape[:-1], c4).contiguous()


def mmdet_relative_position_index(window: int) -> torch.Tensor:
    """The `relative_position_index` buffer mmdet's `WindowMSA` stores (persistent, so it is in the
    checkpoint); HF recomputes the same index itself."""
    seq1 = torch.arange(0, (2 * window - 1) * window, 2 * window - 1)
    seq2 = torch.arange(0, window, 1)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


# Simple one-to-one renames mmdet 3.x → HF (regex on the mmdet key). Tensor operations are in
# `mmdet3_to_hf` for the fused q/k/v projections and the PatchMerging layers.
_MMDET3_TO_HF: tuple[tuple[str, str], ...] = (
    (r"^backbone\.patch_embed\.projection\.", _BB + "swin.embeddings.patch_embeddings.projection."),
    (r"^backbone\.patch_embed\.norm\.", _BB + "swin.embeddings.norm."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.norm1\.", _BB + r"swin.encoder.layers.\1.blocks.\2.layernorm_before."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.norm2\.", _BB + r"swin.encoder.layers.\1.blocks.\2.layernorm_after."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.proj\.", _BB + r"swin.encoder.layers.\1.blocks.\2.attention.o_proj."),
    (
        r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.relative_position_bias_table$",
        _BB + r"swin.encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table",
    ),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.", _BB + r"swin.encoder.layers.\1.blocks.\2.mlp.fc1."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.", _BB + r"swin.encoder.layers.\1.blocks.\2.mlp.fc2."),
    (r"^backbone\.norm(\d+)\.", _BB + r"hidden_states_norms.stage{\1+1}."),
    (r"^panoptic_head\.pixel_decoder\.input_convs\.(\d+)\.conv\.", _PD + r"input_projections.\1.0."),
    (r"^panoptic_head\.pixel_decoder\.input_convs\.(\d+)\.gn\.", _PD + r"input_projections.\1.1."),
    (r"^panoptic_head\.pixel_decoder\.level_encoding\.weight$", _PD + "level_embed"),
    (r"^panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.self_attn\.", _PD + r"encoder.layers.\1.self_attn."),
    (r"^panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.", _PD + r"encoder.layers.\1.fc1."),
    (r"^panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.ffn\.layers\.1\.", _PD + r"encoder.layers.\1.fc2."),
    (r"^panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.norms\.0\.", _PD + r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\.norms\.1\.", _PD + r"encoder.layers.\1.final_layer_norm."),
    (r"^panoptic_head\.pixel_decoder\.lateral_convs\.(\d+)\.conv\.", _PD + r"adapter_{\1+1}.0."),
    (r"^panoptic_head\.pixel_decoder\.lateral_convs\.(\d+)\.gn\.", _PD + r"adapter_{\1+1}.1."),
    (r"^panoptic_head\.pixel_decoder\.output_convs\.(\d+)\.conv\.", _PD + r"layer_{\1+1}.0."),
    (r"^panoptic_head\.pixel_decoder\.output_convs\.(\d+)\.gn\.", _PD + r"layer_{\1+1}.1."),
    (r"^panoptic_head\.pixel_decoder\.mask_feature\.", _PD + "mask_projection."),
    (r"^panoptic_head\.query_feat\.", _TM + "queries_features."),
    (r"^panoptic_head\.query_embed\.", _TM + "queries_embedder."),
    (r"^panoptic_head\.level_embed\.", _TM + "level_embed."),
    (r"^panoptic_head\.transformer_decoder\.layers\.(\d+)\.cross_attn\.attn\.", _TM + r"decoder.layers.\1.cross_attn."),
    (r"^panoptic_head\.transformer_decoder\.layers\.(\d+)\.self_attn\.attn\.out_proj\.", _TM + r"decoder.layers.\1.self_attn.out_proj."),
    (r"^panoptic_head\.transformer_decoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.", _TM + r"decoder.layers.\1.fc1."),
    (r"^panoptic_head\.transformer_decoder\.layers\.(\d+)\.ffn\.layers\.1\.", _TM + r"decoder.layers.\1.fc2."),
    (r"^panoptic_head\.transformer_decoder\.layers\.(\d+)\.norms\.0\.", _TM + r"decoder.layers.\1.cross_attn_layer_norm."),
    (r"^panoptic_head\.transformer_decoder\.layers\.(\d+)\.norms\.1\.", _TM + r"decoder.layers.\1.self_attn_layer_norm."),
    (r"^panoptic_head\.transformer_decoder\.layers\.(\d+)\.norms\.2\.", _TM + r"decoder.layers.\1.final_layer_norm."),
    (r"^panoptic_head\.transformer_decoder\.post_norm\.", _TM + "decoder.layernorm."),
    (r"^panoptic_head\.cls_embed\.", "class_predictor."),
    (r"^panoptic_head\.mask_embed\.(\d+)\.", _TM + r"decoder.mask_predictor.mask_embedder.{\1//2}.0."),
)
_COMPILED_TO_HF = [(re.compile(a), b) for a, b in _MMDET3_TO_HF]
_ARITH = re.compile(r"\{(\d+)([+/]+)(\d+)\}")


def _apply_arith(s: str) -> str:
    """Evaluate the `{n+1}` / `{n//2}` index arithmetic left in a substituted key."""

    def ev(m: re.Match[str]) -> str:
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        return str(a + b if op == "+" else a // b)

    return _ARITH.sub(ev, s)


_SWIN_QKV = re.compile(r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.qkv\.(weight|bias)$")
_DEC_QKV = re.compile(r"^panoptic_head\.transformer_decoder\.layers\.(\d+)\.self_attn\.attn\.in_proj_(weight|bias)$")
_MERGE = re.compile(r"^backbone\.stages\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$")
_REL_INDEX = re.compile(r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.relative_position_index$")


def mmdet3_to_hf(sd: Mapping[str, torch.Tensor]) -> tuple[OrderedDict[str, torch.Tensor], list[str]]:
    """Map an mmdet 3.x state dict onto transformers' Mask2Former keys.

    Returns the mapped dict and the mmdet keys that had no rule (the caller reports them). The
    `relative_position_index` buffers are checked against the standard index and dropped (HF computes
    its own); a different index means a different window layout and is an error.
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    unmapped: list[str] = []
    for k, v in sd.items():
        if m := _SWIN_QKV.match(k):
            s, b, part = m.groups()
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0), strict=True):
                out[f"{_BB}swin.encoder.layers.{s}.blocks.{b}.attention.{name}.{part}"] = chunk.contiguous()
            continue
        if m := _DEC_QKV.match(k):
            n, part = m.groups()
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0), strict=True):
                out[f"{_TM}decoder.layers.{n}.self_attn.{name}.{part}"] = chunk.contiguous()
            continue
        if m := _MERGE.match(k):
            s, part = m.groups()
            out[f"{_BB}swin.encoder.layers.{s}.downsample.{part}"] = merge_mmdet_to_hf(v)
            continue
        if _REL_INDEX.match(k):
            window = math.isqrt(v.shape[0])
            if v.dim() != 2 or window * window != v.shape[0] or not torch.equal(
                v.to(torch.long).cpu(), mmdet_relative_position_index(window)
            ):
                raise ValueError(f"{k}: not the standard Swin relative position index")
            continue
        for rx, repl in _COMPILED_TO_HF:
            if rx.match(k):
                out[_apply_arith(rx.sub(repl, k))] = v
                break
        else:
            unmapped.append(k)
    return out, unmapped


def hf_to_mmdet3(sd: Mapping[str, torch.Tensor], cfg: DetectorConfig) -> OrderedDict[str, torch.Tensor]:
    """The inverse of `mmdet3_to_hf`: an HF Mask2Former state dict in mmdet 3.x keys, including the
    `relative_position_index` buffers mmdet stores, in mmdet's module order. Used to write tiny
    checkpoints in the official layouts and by `paintbench` users converting HF weights."""

    def get(key: str) -> torch.Tensor:
        return sd[key]

    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    bb = _BB + "swin."
    out["backbone.patch_embed.projection.weight"] = get(bb + "embeddings.patch_embeddings.projection.weight")
    out["backbone.patch_embed.projection.bias"] = get(bb + "embeddings.patch_embeddings.projection.bias")
    out["backbone.patch_embed.norm.weight"] = get(bb + "embeddings.norm.weight")
    out["backbone.patch_embed.norm.bias"] = get(bb + "embeddings.norm.bias")
    index = mmdet_relative_position_index(cfg.window_size)
    for s, depth in enumerate(cfg.depths):
        for b in range(depth):
            src = f"{bb}encoder.layers.{s}.blocks.{b}."
            dst = f"backbone.stages.{s}.blocks.{b}."
            out[dst + "norm1.weight"] = get(src + "layernorm_before.weight")
            out[dst + "norm1.bias"] = get(src + "layernorm_before.bias")
            out[dst + "attn.w_msa.relative_position_bias_table"] = get(
                src + "attention.relative_position_bias.relative_position_bias_table"
            )
            out[dst + "attn.w_msa.relative_position_index"] = index.clone()
            for part in ("weight", "bias"):
                out[dst + f"attn.w_msa.qkv.{part}"] = torch.cat(
                    [get(src + f"attention.{n}.{part}") for n in ("q_proj", "k_proj", "v_proj")], dim=0
                )
            for part in ("weight", "bias"):
                out[dst + f"attn.w_msa.proj.{part}"] = get(src + f"attention.o_proj.{part}")
            out[dst + "norm2.weight"] = get(src + "layernorm_after.weight")
            out[dst + "norm2.bias"] = get(src + "layernorm_after.bias")
            for part in ("weight", "bias"):
                out[dst + f"ffn.layers.0.0.{part}"] = get(src + f"mlp.fc1.{part}")
            for part in ("weight", "bias"):
                out[dst + f"ffn.layers.1.{part}"] = get(src + f"mlp.fc2.{part}")
        if s < len(cfg.depths) - 1:
            src = f"{bb}encoder.layers.{s}.downsample."
            out[f"backbone.stages.{s}.downsample.norm.weight"] = merge_hf_to_mmdet(get(src + "norm.weight"))
            out[f"backbone.stages.{s}.downsample.norm.bias"] = merge_hf_to_mmdet(get(src + "norm.bias"))
            out[f"backbone.stages.{s}.downsample.reduction.weight"] = merge_hf_to_mmdet(get(src + "reduction.weight"))
    for i in range(len(cfg.depths)):
        for part in ("weight", "bias"):
            out[f"backbone.norm{i}.{part}"] = get(f"{_BB}hidden_states_norms.stage{i + 1}.{part}")

    ph, pd = "panoptic_head.", "panoptic_head.pixel_decoder."
    n_levels = sd[_PD + "level_embed"].shape[0]
    for i in range(n_levels):
        for part in ("weight", "bias"):
            out[f"{pd}input_convs.{i}.conv.{part}"] = get(f"{_PD}input_projections.{i}.0.{part}")
        for part in ("weight", "bias"):
            out[f"{pd}input_convs.{i}.gn.{part}"] = get(f"{_PD}input_projections.{i}.1.{part}")
    for n in range(cfg.encoder_layers):
        src, dst = f"{_PD}encoder.layers.{n}.", f"{pd}encoder.layers.{n}."
        for mod in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            for part in ("weight", "bias"):
                out[dst + f"self_attn.{mod}.{part}"] = get(src + f"self_attn.{mod}.{part}")
        for a, b in (("fc1", "ffn.layers.0.0"), ("fc2", "ffn.layers.1")):
            for part in ("weight", "bias"):
                out[dst + f"{b}.{part}"] = get(src + f"{a}.{part}")
        for a, b in (("self_attn_layer_norm", "norms.0"), ("final_layer_norm", "norms.1")):
            for part in ("weight", "bias"):
                out[dst + f"{b}.{part}"] = get(src + f"{a}.{part}")
    out[f"{pd}level_encoding.weight"] = get(_PD + "level_embed")
    n_fpn = len([k for k in sd if re.match(re.escape(_PD) + r"adapter_\d+\.0\.weight$", k)])
    for i in range(n_fpn):
        out[f"{pd}lateral_convs.{i}.conv.weight"] = get(f"{_PD}adapter_{i + 1}.0.weight")
        for part in ("weight", "bias"):
            out[f"{pd}lateral_convs.{i}.gn.{part}"] = get(f"{_PD}adapter_{i + 1}.1.{part}")
        out[f"{pd}output_convs.{i}.conv.weight"] = get(f"{_PD}layer_{i + 1}.0.weight")
        for part in ("weight", "bias"):
            out[f"{pd}output_convs.{i}.gn.{part}"] = get(f"{_PD}layer_{i + 1}.1.{part}")
    for part in ("weight", "bias"):
        out[f"{pd}mask_feature.{part}"] = get(f"{_PD}mask_projection.{part}")

    for n in range(cfg.decoder_layers):
        src, dst = f"{_TM}decoder.layers.{n}.", f"{ph}transformer_decoder.layers.{n}."
        out[dst + "self_attn.attn.in_proj_weight"] = torch.cat(
            [get(src + f"self_attn.{p}.weight") for p in ("q_proj", "k_proj", "v_proj")], dim=0
        )
        out[dst + "self_attn.attn.in_proj_bias"] = torch.cat(
            [get(src + f"self_attn.{p}.bias") for p in ("q_proj", "k_proj", "v_proj")], dim=0
        )
        for part in ("weight", "bias"):
            out[dst + f"self_attn.attn.out_proj.{part}"] = get(src + f"self_attn.out_proj.{part}")
        for part in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            out[dst + f"cross_attn.attn.{part}"] = get(src + f"cross_attn.{part}")
        for a, b in (("fc1", "ffn.layers.0.0"), ("fc2", "ffn.layers.1")):
            for part in ("weight", "bias"):
                out[dst + f"{b}.{part}"] = get(src + f"{a}.{part}")
        for a, b in (("cross_attn_layer_norm", "norms.0"), ("self_attn_layer_norm", "norms.1"),
                     ("final_layer_norm", "norms.2")):
            for part in ("weight", "bias"):
                out[dst + f"{b}.{part}"] = get(src + f"{a}.{part}")
    for part in ("weight", "bias"):
        out[f"{ph}transformer_decoder.post_norm.{part}"] = get(f"{_TM}decoder.layernorm.{part}")
    out[f"{ph}query_embed.weight"] = get(_TM + "queries_embedder.weight")
    out[f"{ph}query_feat.weight"] = get(_TM + "queries_features.weight")
    out[f"{ph}level_embed.weight"] = get(_TM + "level_embed.weight")
    for part in ("weight", "bias"):
        out[f"{ph}cls_embed.{part}"] = get(f"class_predictor.{part}")
    for i in range(3):
        for part in ("weight", "bias"):
            out[f"{ph}mask_embed.{2 * i}.{part}"] = get(f"{_TM}decoder.mask_predictor.mask_embedder.{i}.0.{part}")
    return out


def checkpoint_format(sd: Mapping[str, Any]) -> CheckpointFormat:
    """Which layout a state dict's keys are in; raises for anything else."""
    keys = list(sd)
    if any(k.startswith("panoptic_head.") for k in keys):
        legacy = any(".attentions." in k or ".ffns." in k for k in keys)
        return "mmdet2" if legacy else "mmdet3"
    if any(k.startswith(("model.pixel_level_module.", "model.transformer_module.")) for k in keys):
        return "hf"
    sample = ", ".join(keys[:3]) or "no keys"
    raise ValueError(f"not a Mask2Former checkpoint (mmdet 2.x, mmdet 3.x or transformers keys); first keys: {sample}")


# HF parameters a converted mmdet checkpoint legitimately leaves unset: the Swin final norm that
# SwinBackbone never calls, and the loss's class weights.
_HF_UNUSED = re.compile(r"(^model\.pixel_level_module\.encoder\.(swin\.)?layernorm\.|^criterion\.)")

# transformers 4.x named Swin's tensors differently; map our (5.x) names when the model uses the old ones.
_HF4_NAMES: tuple[tuple[str, str], ...] = (
    (".attention.q_proj.", ".attention.self.query."),
    (".attention.k_proj.", ".attention.self.key."),
    (".attention.v_proj.", ".attention.self.value."),
    (".attention.o_proj.", ".attention.output.dense."),
    (".attention.relative_position_bias.relative_position_bias_table", ".attention.self.relative_position_bias_table"),
    (".mlp.fc1.", ".intermediate.dense."),
    (".mlp.fc2.", ".output.dense."),
    (_BB + "swin.", _BB),
)


def _adapt_to_model(sd: Mapping[str, torch.Tensor], model_keys: set[str]) -> OrderedDict[str, torch.Tensor]:
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        if k not in model_keys and k.startswith(_BB):
            alt = k
            for a, b in _HF4_NAMES:
                alt = alt.replace(a, b)
            k = alt if alt in model_keys else k
        out[k] = v
    return out


def load_mapped(model: torch.nn.Module, hf_sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Load an HF-keyed state dict strictly (apart from `_HF_UNUSED`), naming the file on failure."""
    model_sd = model.state_dict()
    hf_sd = _adapt_to_model(hf_sd, set(model_sd))
    missing = [k for k in model_sd if k not in hf_sd and not _HF_UNUSED.search(k)]
    unexpected = [k for k in hf_sd if k not in model_sd]
    wrong = [
        f"{k} {tuple(v.shape)} vs model {tuple(model_sd[k].shape)}"
        for k, v in hf_sd.items()
        if k in model_sd and tuple(v.shape) != tuple(model_sd[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with wrong shapes (e.g. {'; '.join(wrong[:3])})")
        raise ValueError(f"{source}: does not load into the Mask2Former model: {'; '.join(parts)}")
    model.load_state_dict(hf_sd, strict=False)


# --------------------------------------------------------------------------------------------- reading

def _numpy_safe_globals() -> list[Any]:
    """The numpy globals that mmcv/mmdet checkpoint `meta` dicts pickle (`np.float64` scores, small
    arrays, dtypes), under both numpy 2 (`numpy._core`) and numpy 1 (`numpy.core`) module names.

    Each only rebuilds a numpy value from plain data; whatever the arrays or scalars hold is itself
    unpickled by torch's restricted loader, so nothing else becomes reachable."""
    import numpy as np

    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # numpy 1.26
        from numpy.core import multiarray

    out: list[Any] = [np.dtype, np.ndarray]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        out += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
    # torch only BUILDs (sets the pickled state of) objects of allow-listed classes, and a dtype's class
    # is its per-kind subclass (`numpy.dtypes.Float64DType` ...), never named in the pickle itself
    out += sorted({type(np.dtype(c)) for c in np.typecodes["All"]}, key=lambda t: t.__name__)
    return out


def read_checkpoint(path: str | Path) -> tuple[OrderedDict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and the `meta` dict of an mmdet/mmcv `.pth` file (or a bare state dict).

    Only ever read with torch's restricted `weights_only=True` unpickler (zip and legacy formats
    alike): first as is, then with the numpy metadata types of `_numpy_safe_globals` allowed, because
    real mmcv checkpoints carry numpy scalars in `meta`. Any other global in the pickle (a class, or a
    function such as `os.system` a crafted file would call) is refused with a ValueError naming it.
    """
    from paintbench.metrics import weights as wts

    path = Path(path)
    try:
        obj = wts.load_state_dict(path)
    except ValueError:
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            found = re.search(r"GLOBAL (\S+)", str(e))
            if found:
                raise ValueError(
                    f"{path}: refused: its pickle needs `{found.group(1)}`, and paintbench unpickles only "
                    "tensors and numpy metadata (nothing that could run code); convert the file to a plain "
                    "state dict or safetensors"
                ) from e
            raise ValueError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    sd = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
    tensors = OrderedDict(
        (k.removeprefix("module."), v) for k, v in sd.items() if isinstance(v, torch.Tensor)
    )
    if not tensors:
        raise ValueError(f"{path}: no tensors found")
    return tensors, dict(meta)


@dataclass
class LoadedDetector:
    """A model with where it came from (for provenance)."""

    model: torch.nn.Module
    config: DetectorConfig
    path: Path
    format: CheckpointFormat
    class_names: tuple[str, ...] = OBJECT_NAMES
    notes: list[str] = field(default_factory=list)


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_detector(path: str | Path, *, base: DetectorConfig = SWIN_S_CONFIG) -> LoadedDetector:
    """Build the HF Mask2Former and load `path` into it: an mmdet 2.x/3.x `.pth` (any name) or an HF
    folder. Everything is checked (every checkpoint tensor used, every model parameter set, shapes)."""
    path = Path(path)
    if path.is_dir():
        if not is_hf_folder(path):
            raise ValueError(f"{path}: a folder, but not a transformers model folder (no config.json)")
        return _load_hf_folder(path, base)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    sd, meta = read_checkpoint(path)
    fmt = checkpoint_format(sd)
    notes: list[str] = []
    if fmt == "hf":
        raise ValueError(
            f"{path}: transformers-keyed weights; pass the model folder (with its config.json) instead"
        )
    if fmt == "mmdet2":
        sd = mmdet2_to_mmdet3(sd)
    cfg = config_from_mmdet(sd, base)
    dataset_meta = meta.get("dataset_meta")
    classes = meta.get("CLASSES") or (dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None)
    if isinstance(classes, (list, tuple)) and len(classes) != cfg.num_classes:
        raise ValueError(f"{path}: meta lists {len(classes)} classes but the head has {cfg.num_classes}")
    if cfg.num_classes != len(OBJECT_NAMES):
        raise ValueError(f"{path}: the head predicts {cfg.num_classes} classes; GenEval needs the 80 COCO classes")
    mapped, unmapped = mmdet3_to_hf(sd)
    if unmapped:
        raise ValueError(
            f"{path}: {len(unmapped)} tensors have no place in the Mask2Former model "
            f"(e.g. {', '.join(unmapped[:3])}); is this the Swin instance-segmentation checkpoint?"
        )
    model = build_model(cfg)
    load_mapped(model, mapped, str(path))
    return LoadedDetector(model=model, config=cfg, path=path, format=fmt, notes=notes)


@contextlib.contextmanager
def _quiet_transformers():
    """No transformers progress bars or warnings while we load/save (we report problems ourselves)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_hf_folder(path: Path, base: DetectorConfig) -> LoadedDetector:
    from transformers import Mask2FormerForUniversalSegmentation

    with _quiet_transformers():
        model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True
        )
    missing = [k for k in info.get("missing_keys", []) if not _HF_UNUSED.search(k)]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        raise ValueError(
            f"{path}: incomplete transformers checkpoint: {len(missing)} missing tensors "
            f"(e.g. {', '.join(list(missing)[:3])}), {len(mismatched)} with wrong shapes"
        )
    cfg = config_from_hf(model.config, base)
    notes = []
    labels = [str(model.config.id2label[i]).lower() for i in range(len(model.config.id2label))]
    if len(labels) != len(OBJECT_NAMES):
        raise ValueError(f"{path}: the model predicts {len(labels)} classes; GenEval needs the 80 COCO classes")
    odd = [f"{i}: {a!r} (GenEval: {OBJECT_NAMES[i]!r})" for i, a in enumerate(labels)
           if a not in (COCO_NAMES[i], OBJECT_NAMES[i])]
    if odd:
        note = f"{path}: id2label differs from the COCO order at {len(odd)} indices ({'; '.join(odd[:3])})"
        warnings.warn(note + "; classes are matched by index, as GenEval does", stacklevel=3)
        notes.append(note)
    return LoadedDetector(model=model.eval(), config=cfg, path=path, format="hf", notes=notes)


# --------------------------------------------------------------------------------------------- writing

def save_checkpoint(model: torch.nn.Module, cfg: DetectorConfig, path: str | Path, fmt: CheckpointFormat) -> Path:
    """Write `model` in one of the official layouts: an mmdet 2.x or 3.x `.pth` (`{"meta", "state_dict"}`
    as mmcv saves it) or an HF folder (`save_pretrained`). Used for tiny test/demo weights."""
    path = Path(path)
    if fmt == "hf":
        with _quiet_transformers():
            model.save_pretrained(str(path))
        return path
    sd = hf_to_mmdet3({k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg)
    if fmt == "mmdet2":
        sd = mmdet3_to_mmdet2(sd)
        meta: dict[str, Any] = {"mmdet_version": "2.25.0", "CLASSES": COCO_NAMES}
    else:
        meta = {"mmdet_version": "3.0.0", "dataset_meta": {"classes": COCO_NAMES}}
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"meta": meta, "state_dict": sd}, buf)
    path.write_bytes(buf.getvalue())
    return path


def random_tiny_model(
    seed: int = 0,
    cfg: DetectorConfig = TINY_CONFIG,
    *,
    class_scale: float = 4.0,
    class_bias: Mapping[int, float] | None = None,
) -> torch.nn.Module:
    """A tiny Mask2Former with seeded weights that gives a spread of scores on ordinary images.

    Every tensor is drawn from `metrics.synthetic.make_tensor` (seed = crc32(key) + seed), so it does
    not depend on transformers' init order: norm weights N(1, 0.1), biases N(0, 0.02), embeddings N(0, 1),
    matrices N(0, 1/fan_in). The class head is scaled by `class_scale` so class probabilities spread
    over (0, 1) and some detections pass GenEval's 0.3 threshold; `class_bias` ({class index: logit})
    makes chosen classes likely, so a demo or test sees the classes its prompts ask about.
    """
    from paintbench.metrics.synthetic import make_tensor

    model = build_model(cfg)
    new: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            continue
        shape = tuple(v.shape)
        leaf = k.rsplit(".", 1)[-1]
        if re.search(r"(norm|layernorm|layer_norm|_norms\.stage\d|\.1)\.weight$", k) and v.dim() == 1:
            fill = {"kind": "normal", "mean": 1.0, "std": 0.1}
        elif leaf == "bias" or v.dim() == 1:
            fill = {"kind": "normal", "mean": 0.0, "std": 0.02}
        elif "queries" in k or "level_embed" in k or "relative_position_bias_table" in k:
            fill = {"kind": "normal", "mean": 0.0, "std": 1.0 if "relative" not in k else 0.02}
        else:
            fan_in = max(1, math.prod(shape[1:]))
            fill = {"kind": "normal", "mean": 0.0, "std": fan_in ** -0.5}
        t = make_tensor(k, shape, fill, "float32", seed)
        if k == "class_predictor.weight":
            t = t * class_scale
        if k == "class_predictor.bias" and class_bias:
            for index, logit in class_bias.items():
                t[index] += logit
        new[k] = t
    model.load_state_dict(new, strict=False)
    return model.eval()


# --------------------------------------------------------------------------------------------- preprocessing

def rescale_size(height: int, width: int, scale: tuple[int, int] = (1333, 800)) -> tuple[int, int]:
    """mmcv's `rescale_size` for a keep-ratio resize into `scale`: the long side ≤ max(scale), the short
    side ≤ min(scale), the factor the smaller of the two, each side rounded as `int(x * f + 0.5)`.
    Returns (new_height, new_width)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def padded_size(height: int, width: int, divisor: int = 32) -> tuple[int, int]:
    """mmcv's `impad_to_multiple`: each side rounded up to a multiple of `divisor` (pad bottom/right)."""
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor


def to_uint8_batch(images: torch.Tensor) -> torch.Tensor:
    """A [B,3,H,W] batch as uint8 values (float 0-1 inputs are quantised as saving a PNG would be:
    ×255, rounded, clamped), on its own device."""
    if images.dtype == torch.uint8:
        return images
    return (images.float() * 255.0).round().clamp(0, 255).to(torch.uint8)


def resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of uint8-valued [B,3,H,W] pixels with half-pixel centres and no antialiasing (cv2
    INTER_LINEAR geometry), rounded back to integers as cv2 does. Returns float32 integer values."""
    x = x.float()
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    return y.add_(0.5).floor_().clamp_(0, 255)


def preprocess(
    images: torch.Tensor,
    cfg: DetectorConfig = SWIN_S_CONFIG,
    *,
    swap_rb: bool = False,
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """mmdet's test pipeline for a batch of same-size RGB images ([B,3,H,W] uint8 or float 0-1).

    Returns the normalised, padded `pixel_values` [B,3,Hp,Wp] (float32, on the input's device), the
    resized size (h, w) and the padded size. `swap_rb` feeds the detector B,G,R instead of R,G,B, which
    is what Flow-GRPO's reward server does by passing RGB arrays to mmdet (which expects BGR).
    """
    x = to_uint8_batch(images)
    if swap_rb:
        x = x.flip(1)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    new_h, new_w = rescale_size(h, w, cfg.scale)
    pad_h, pad_w = padded_size(new_h, new_w, cfg.size_divisor)
    y = resize_uint8(x, (new_h, new_w))
    if (pad_h, pad_w) != (new_h, new_w):
        y = F.pad(y, (0, pad_w - new_w, 0, pad_h - new_h), value=float(cfg.pad_value))
    mean = torch.tensor(MMDET_MEAN, device=y.device, dtype=torch.float32).view(1, 3, 1, 1)
    inv_std = (1.0 / torch.tensor(MMDET_STD, dtype=torch.float64)).to(device=y.device, dtype=torch.float32)
    return (y - mean) * inv_std.view(1, 3, 1, 1), (new_h, new_w), (pad_h, pad_w)


# --------------------------------------------------------------------------------------------- postprocessing

@dataclass
class InstanceResult:
    """Raw instance detections of one image (mmdet's `instance_postprocess` output), on the device.

    `labels`, `scores` (float32), `boxes` ([x1, y1, x2, y2], float32), `class_probs` and `queries` (the
    decoder query each came from) have one row per detection in descending class-probability order. `masks` holds one bool H×W mask per distinct query and
    `mask_index[i]` is the row of detection i (a query can carry several classes).
    """

    labels: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor
    class_probs: torch.Tensor
    queries: torch.Tensor
    masks: torch.Tensor | None
    mask_index: torch.Tensor
    height: int
    width: int

    def __len__(self) -> int:
        return int(self.labels.numel())

    def mask(self, i: int) -> torch.Tensor:
        if self.masks is None:
            raise ValueError("this result was computed without masks")
        return self.masks[int(self.mask_index[i])]

    def to_detections(
        self, names: Sequence[str] = OBJECT_NAMES, *, with_masks: bool = False
    ) -> tuple[dict[str, list[Detection]], dict[Detection, int]]:
        """GenEval's view: class name → raw `Detection`s (scores as float32 values), plus each
        detection's row here (to find its mask on the device later). `with_masks` also copies each
        mask to the CPU as a bool array, as the official code holds them."""
        labels = self.labels.tolist()
        scores = self.scores.float().cpu().numpy()
        boxes = self.boxes.float().cpu().numpy()
        out: dict[str, list[Detection]] = defaultdict(list)
        rows: dict[Detection, int] = {}
        for i, label in enumerate(labels):
            mask = self.mask(i).cpu().numpy() if with_masks else None
            det = Detection(box=tuple(float(v) for v in boxes[i]), score=float(scores[i]), mask=mask)
            out[names[label]].append(det)
            rows[det] = i
        return dict(out), rows


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """mmdet's `mask2bbox`: the tight box `[x0, y0, x1 + 1, y1 + 1]` of each bool mask [N,H,W];
    all zeros for an empty mask."""
    n, h, w = masks.shape
    if n == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    has = rows.any(dim=1) & cols.any(dim=1)
    y0 = rows.to(torch.uint8).argmax(dim=1)
    y1 = h - 1 - rows.flip(1).to(torch.uint8).argmax(dim=1)
    x0 = cols.to(torch.uint8).argmax(dim=1)
    x1 = w - 1 - cols.flip(1).to(torch.uint8).argmax(dim=1)
    boxes = torch.stack([x0, y0, x1 + 1, y1 + 1], dim=1).to(torch.float32)
    return boxes * has[:, None]


def instance_postprocess(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    *,
    padded_hw: tuple[int, int],
    image_hw: tuple[int, int],
    original_hw: tuple[int, int],
    max_per_image: int = 100,
    min_class_prob: float | None = None,
    keep_masks: bool = True,
) -> InstanceResult:
    """mmdet's instance post-processing for one image.

    `class_logits` [Q, C+1] (last column = no object), `mask_logits` [Q, h, w] at 1/4 of the padded
    input. `min_class_prob` (optional) drops, after the top-k, the pairs whose class probability is not
    above it: their final score (class probability × mask score ≤ 1) cannot be above it either, so a
    caller that thresholds at t loses nothing by passing t, and skips their masks.
    """
    q, c1 = class_logits.shape
    n_classes = c1 - 1
    probs = class_logits.float().softmax(dim=-1)[:, :-1]
    k = min(max_per_image, q * n_classes)
    top_probs, top_idx = probs.flatten().topk(k, sorted=True)
    if min_class_prob is not None:
        keep = top_probs > min_class_prob
        top_probs, top_idx = top_probs[keep], top_idx[keep]
    query = torch.div(top_idx, n_classes, rounding_mode="floor")
    labels = top_idx % n_classes
    h0, w0 = original_hw
    if query.numel() == 0:
        empty = torch.zeros(0, device=class_logits.device)
        return InstanceResult(
            labels=labels, scores=empty.float(), boxes=empty.float().reshape(0, 4), class_probs=top_probs,
            queries=query,
            masks=torch.zeros((0, h0, w0), dtype=torch.bool, device=class_logits.device) if keep_masks else None,
            mask_index=labels.clone(), height=h0, width=w0,
        )
    unique_q, mask_index = torch.unique(query, return_inverse=True)
    m = mask_logits[unique_q].float()[None]
    m = F.interpolate(m, size=padded_hw, mode="bilinear", align_corners=False)
    m = m[..., : image_hw[0], : image_hw[1]]
    if tuple(image_hw) != tuple(original_hw):
        m = F.interpolate(m, size=original_hw, mode="bilinear", align_corners=False)
    m = m[0]
    binary = m > 0
    mask_scores = (m.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    boxes = masks_to_boxes(binary)
    return InstanceResult(
        labels=labels,
        scores=top_probs * mask_scores[mask_index],
        boxes=boxes[mask_index],
        class_probs=top_probs,
        queries=query,
        masks=binary if keep_masks else None,
        mask_index=mask_index,
        height=h0,
        width=w0,
    )


# --------------------------------------------------------------------------------------------- the detector

ImagesIn = torch.Tensor | Sequence[torch.Tensor]


class Mask2FormerDetector:
    """GenEval's detector on HF Mask2Former: batched, on one device, mmdet's pre/post-processing.

    `detect(images)` takes a [B,3,H,W] tensor or a list of [3,H,W] tensors (uint8 0-255 or float 0-1,
    RGB) and returns one `InstanceResult` per image. Images of the same size are run as one batch;
    different sizes go in separate batches, so each image is processed exactly as if alone (mmdet pads
    a mixed batch to a common size, which changes what the network sees).
    """

    backend = "transformers"

    def __init__(
        self,
        loaded: LoadedDetector,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        scale: tuple[int, int] | None = None,
        max_batch: int = 16,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.loaded = loaded
        self.config = loaded.config if scale is None else replace(loaded.config, scale=tuple(scale))
        self.model = loaded.model.to(device=self.device, dtype=dtype).eval()
        self.model.requires_grad_(False)
        self.class_names = loaded.class_names
        self.max_batch = max_batch

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs: Any) -> Mask2FormerDetector:
        return cls(load_detector(path), **kwargs)

    def provenance(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "format": self.loaded.format,
            "path": str(self.loaded.path),
            "scale": list(self.config.scale),
            "queries": self.config.num_queries,
        }

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [B,Q,C+1] and mask logits [B,Q,Hp/4,Wp/4] (float32)."""
        out = self.model(pixel_values=pixel_values.to(self.dtype))
        return out.class_queries_logits.float(), out.masks_queries_logits.float()

    @torch.inference_mode()
    def detect(
        self,
        images: ImagesIn,
        *,
        min_class_prob: float | None = None,
        swap_rb: bool = False,
        keep_masks: bool = True,
    ) -> list[InstanceResult]:
        items = list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)
        results: list[InstanceResult | None] = [None] * len(items)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(items):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i}: expected a [3,H,W] RGB tensor, got shape {tuple(img.shape)}")
            groups[(int(img.shape[-2]), int(img.shape[-1]))].append(i)
        for (h, w), idx in groups.items():
            for start in range(0, len(idx), self.max_batch):
                part = idx[start : start + self.max_batch]
                batch = torch.stack([items[i].to(self.device) for i in part])
                pixels, image_hw, padded_hw = preprocess(batch, self.config, swap_rb=swap_rb)
                cls_logits, mask_logits = self.forward(pixels)
                for j, i in enumerate(part):
                    results[i] = instance_postprocess(
                        cls_logits[j], mask_logits[j], padded_hw=padded_hw, image_hw=image_hw,
                        original_hw=(h, w), max_per_image=self.config.max_per_image,
                        min_class_prob=min_class_prob, keep_masks=keep_masks,
                    )
        return [r for r in results if r is not None]

    def detect_objects(self, images: ImagesIn, *, with_masks: bool = False) -> list[dict[str, list[Detection]]]:
        """GenEval's input per image: class name → raw `Detection`s (all of mmdet's top 100)."""
        return [r.to_detections(self.class_names, with_masks=with_masks)[0] for r in self.detect(images)]


# --------------------------------------------------------------------------------------------- mmdet backend

def mmdet_available() -> tuple[bool, str]:
    """Whether the optional mmdet backend can run here, and why not."""
    try:
        import mmcv.ops  # noqa: F401
        import mmdet.apis  # noqa: F401
    except Exception as e:  # ImportError, or mmcv without its compiled ops
        return False, f"mmdet/mmcv.ops not importable ({type(e).__name__}: {e})"
    return True, ""


def default_mmdet_config() -> Path:
    """GenEval's config inside the installed mmdet: the 2.x repo's `configs/` (editable install) or
    the 3.x wheel's `.mim/configs/` (renamed `..._8xb2-lsj-50e_coco.py` there)."""
    import mmdet

    root = Path(mmdet.__file__).resolve().parent
    for candidate in (
        root.parent / "configs/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py",
        root / ".mim/configs/mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py",
        root.parent / "configs/mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"GenEval's Mask2Former config was not found under {root} (mmdet installs from pip lack configs/; "
        "pass the config path explicitly)"
    )


class MmdetDetector:
    """The optional reference backend: mmdet's own `init_detector` / `inference_detector` (needs mmdet
    and a compiled mmcv; never required). Same `detect` interface as `Mask2FormerDetector`, one image at
    a time as GenEval runs it; masks stay as mmdet returns them (moved to a tensor)."""

    backend = "mmdet"

    def __init__(
        self,
        checkpoint: str | Path | None,
        *,
        config: str | Path | None = None,
        device: str | torch.device = "cpu",
        model: Any = None,
    ) -> None:
        ok, why = mmdet_available()
        if not ok:
            raise ImportError(f"the mmdet backend needs mmdet with a compiled mmcv: {why}")
        from mmdet.apis import init_detector

        self.device = torch.device(device)
        self.config_path = Path(config) if config is not None else default_mmdet_config()
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.model = model if model is not None else init_detector(
            str(self.config_path), None if checkpoint is None else str(checkpoint), device=str(self.device)
        )
        self.class_names = OBJECT_NAMES

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.backend, "config": str(self.config_path), "path": str(self.checkpoint)}

    @torch.inference_mode()
    def detect(self, images: ImagesIn, *, min_class_prob: float | None = None, swap_rb: bool = False,
               keep_masks: bool = True) -> list[InstanceResult]:
        import numpy as np
        from mmdet.apis import inference_detector

        items = list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)
        out = []
        for img in items:
            rgb = to_uint8_batch(img[None])[0].permute(1, 2, 0).cpu().numpy()
            bgr = np.ascontiguousarray(rgb if swap_rb else rgb[..., ::-1])
            res = inference_detector(self.model, bgr)
            out.append(self._to_result(res, rgb.shape[0], rgb.shape[1], min_class_prob))
        return out

    def _to_result(self, res: Any, h: int, w: int, min_prob: float | None) -> InstanceResult:
        import numpy as np

        if hasattr(res, "pred_instances"):  # mmdet 3.x DetDataSample
            inst = res.pred_instances
            labels = inst.labels.cpu()
            scores = inst.scores.float().cpu()
            boxes = inst.bboxes.float().cpu()
            masks = inst.masks.cpu().bool() if "masks" in inst else torch.zeros((len(labels), h, w), dtype=torch.bool)
        else:  # mmdet 2.x: (bbox_results, segm_results), one list entry per class
            bbox_results, segm_results = res if isinstance(res, tuple) else (res, None)
            labels_l, rows, mask_l = [], [], []
            for c, arr in enumerate(bbox_results):
                for j in range(arr.shape[0]):
                    labels_l.append(c)
                    rows.append(arr[j])
                    mask_l.append(np.asarray(segm_results[c][j], dtype=bool) if segm_results else np.zeros((h, w), bool))
            labels = torch.tensor(labels_l, dtype=torch.long)
            arr = torch.tensor(np.asarray(rows, dtype=np.float32).reshape(-1, 5))
            boxes, scores = arr[:, :4], arr[:, 4]
            masks = torch.from_numpy(np.asarray(mask_l, dtype=bool).reshape(-1, h, w))
        order = torch.argsort(scores, descending=True, stable=True)
        labels, scores, boxes, masks = labels[order], scores[order], boxes[order], masks[order]
        if min_prob is not None:
            keep = scores > min_prob
            labels, scores, boxes, masks = labels[keep], scores[keep], boxes[keep], masks[keep]
        return InstanceResult(
            labels=labels.to(self.device), scores=scores.to(self.device), boxes=boxes.to(self.device),
            class_probs=scores.to(self.device), queries=torch.full_like(labels, -1).to(self.device),
            masks=masks.to(self.device),
            mask_index=torch.arange(len(labels), device=self.device), height=h, width=w,
        )
