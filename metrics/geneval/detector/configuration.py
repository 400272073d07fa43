"""Mask2Former Swin-S for GenEval: the class names, the architecture config, and building the model
(transformers' `Mask2FormerForUniversalSegmentation`) from a config, an HF config or an mmdet checkpoint's shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

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
