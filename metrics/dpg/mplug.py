"""mPLUG-large VQA, the answer model of DPG-Bench, as a self-contained torch port.

DPG-Bench asks every question of a prompt's table about every tile of its 2×2 grid with ModelScope's
`damo/mplug_visual-question-answering_coco_large_en` pipeline. That pipeline cannot be a dependency:
it imports fairseq, torchaudio, librosa, OFA and needs transformers < 5 (shared/reference/dpg_vqa.md).
This module re-implements only the VQA inference path, reads an **unmodified ModelScope model folder**
(`pytorch_model.bin`, `config.yaml`, `config_bert.json`, `vocab.txt`), and mirrors the official
operations in the official order so that, in reference mode, the numbers are the official ones:

- image: `convert("RGB")`, PIL bicubic squash of the tile to `image_res`² (config.yaml, 504 for the
  released model), `ToTensor`, CLIP mean/std (`preprocess`);
- question: lower-cased, BERT word pieces, padded/truncated to 25 tokens (`[CLS]` + 23 + `[SEP]`);
- CLIP ViT (all tokens after `ln_post`, no projection) → `visn_fc` → `visn_layer_norm`;
- BERT text encoder (`text_encoder_layers`), then the fusion encoder: only its last `fusion_layers`
  layers run; layer n (counted from the first that runs) with n ≠ 0 and n % `stride_layer` == 0 does
  joint self-attention over [image; text] and adds the new image part to the image states (the
  "skip connection"), every other layer does text self-attention → cross-attention to the image → FFN;
- BERT answer decoder (`text_decode_layers`, cross-attention to [fused image; fused question]);
- beam search exactly as ModelScope's `TextGenerator._fast_translate_batch` (`beam_search`): beam 5,
  min length 1, max length 10, length penalty ((5 + step + 1) / 6) ** 0.6, start id 101, end id 102;
- the best hypothesis decoded with special tokens skipped (`decode`), as transformers 4.x does.

Masks follow the official code: self-attention masks are `(1 - m) * -10000`, cross-attention masks
`(1 - m) * finfo.min` (transformers 4.x `invert_attention_mask`), the decoder's causal mask has no
padding. Dropout is a no-op (eval).

Two execution modes (`MPlugVQA(mode=...)`):

- `"reference"`: each question alone, batch 1 × 5 beams, the decoder re-run on the whole prefix with
  the memory re-projected at every step, fp32: the official computation, op for op. The tile is
  encoded once and its embeddings reused (the ViT pass is deterministic, so this is bitwise the
  same as re-encoding per question, which `reencode_image=True` does, like the official pipeline).
- `"fast"`: all questions of a tile in one batch; the image part of every cross-attention is
  projected once per tile and shared by all questions, beams and steps (while no skip layer has
  made it question-specific); the question part once per question; logits only for the last
  position. The same mathematics, so answers agree with reference mode up to float rounding
  (checked in tests; a near-tie between two beams is the only way they can differ).

Loading (`load_mplug`): `metrics.weights.load_state_dict` first (no pickled code runs); a checkpoint
that needs a full unpickle loads only with `trust_pickle=True`. The loader fails loudly when
config.yaml and the checkpoint disagree (positional embeddings vs `image_res`, layer counts, widths)
and when the answer head is untied (see `HEAD_TYING`).

Attribution: the architecture, parameter names, masks and beam-search rules are those of ModelScope's
mPLUG (modelscope/models/multi_modal/mplug: modeling_mplug.py, clip/clip.py, predictor.py; Apache-2.0,
Alibaba DAMO Academy, building on OpenAI CLIP and HuggingFace BERT). This file is a re-implementation
written for paintbench, not a copy.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from paintbench.errors import InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
START_ID = 101  # TextGenerator.start_token ([CLS] in bert-base-uncased)
END_ID = 102  # TextGenerator.end_token ([SEP])
LENGTH_PENALTY_ALPHA = 0.6
QUESTION_MAX_TOKENS = 25  # MPlugPreprocessor(tokenizer_max_length=25)

CHECKPOINT_FILES = ("pytorch_model.bin", "model.safetensors")
REQUIRED_FILES = ("config.yaml", "config_bert.json", "vocab.txt")
FOLDER_FILES = ("pytorch_model.bin", "config.yaml", "config_bert.json", "vocab.txt")

Mode = Literal["fast", "reference"]
MODES: tuple[str, ...] = ("fast", "reference")

HeadTying = Literal["strict", "transformers4", "untied"]
HEAD_TYING: tuple[str, ...] = ("strict", "transformers4", "untied")
"""How to treat the decoder's answer head (`text_decoder.cls.predictions.decoder.weight`/`.bias`)
against the word embeddings / `predictions.bias` it is tied to (`tie_word_embeddings`, default true):

- `"strict"` (default): one of a tied pair missing → the present one serves both (what the official
  model ends up with); both present but different → `MPlugLoadError` (an untied head: the
  official model on transformers 4.x would silently overwrite the embeddings with the head, on 5.x it
  would keep both; either way the checkpoint is not what this config describes);
- `"transformers4"`: reproduce transformers 4.x (ModelScope's tested stack): the tied parameter is
  loaded twice and the later key wins, i.e. the head's values serve as both;
- `"untied"`: use both tensors as stored (what transformers 5.x does).
"""


class MPlugLoadError(InputError):
    """A model folder that cannot be loaded as the configured mPLUG; the message says why and what to do."""


# ------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class BertSettings:
    """`config_bert.json` (BertConfig keys plus mPLUG's layer counts); defaults are BertConfig's."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_hidden_layers: int = 12  # the fusion model is built with this many layers ...
    fusion_layers: int = 6  # ... and only the last `fusion_layers` of them run
    text_encoder_layers: int = 6
    text_decode_layers: int = 12
    stride_layer: int = 100  # FusionLayer's getattr default: no skip layer
    encoder_width: int = 768
    tie_word_embeddings: bool = True
    position_embedding_type: str = "absolute"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def fusion_start(self) -> int:
        return max(0, self.num_hidden_layers - self.fusion_layers)


@dataclass(frozen=True)
class MPlugSettings:
    """`config.yaml` (ModelScope's MPlugConfig; defaults are MPlugConfig's, written for this model)."""

    image_res: int = 504
    vision_width: int = 1024
    clip_name: str = "ViT-L-14"
    clip_vision_width: int = 1024
    clip_vision_layers: int = 24
    clip_vision_patch_size: int = 14
    min_length: int = 1
    max_length: int = 10
    beam_size: int = 5
    eos: str = "[SEP]"
    bert_config: str = "config_bert.json"
    bert: BertSettings = field(default_factory=BertSettings)

    @property
    def vision_heads(self) -> int:
        return self.clip_vision_width // 64  # CLIP: heads = width // 64

    @property
    def grid(self) -> int:
        return self.image_res // self.clip_vision_patch_size

    @property
    def num_image_tokens(self) -> int:
        return self.grid**2 + 1

    @property
    def positional_rows(self) -> int:
        """Rows of the positional table ModelScope builds for `image_res` (int(res²/patch²) + 1)."""
        return int(self.image_res * self.image_res / (self.clip_vision_patch_size**2)) + 1

    @property
    def has_bridge(self) -> bool:
        """ModelScope's `large`: a visn_fc + LayerNorm bridge when the ViT and BERT widths differ."""
        return self.bert.hidden_size != self.vision_width

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "bert"}
        d["bert"] = {f.name: getattr(self.bert, f.name) for f in fields(self.bert)}
        return d


def _coerce(cls: type, raw: Mapping[str, Any], source: str):
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in raw or f.name == "bert":
            continue
        value = raw[f.name]
        kind = type(getattr(cls(), f.name))
        try:
            out[f.name] = kind(value) if kind is not bool else bool(value)
        except (TypeError, ValueError):
            raise MPlugLoadError(f"{source}: {f.name} = {value!r} is not a {kind.__name__}") from None
    return cls(**out)


def read_settings(folder: str | os.PathLike[str]) -> MPlugSettings:
    """Read config.yaml and the BERT config it names (YAML read with the safe loader)."""
    import yaml

    folder = Path(folder)
    cfg_path = folder / "config.yaml"
    if not cfg_path.is_file():
        raise MPlugLoadError(f"{folder}: no config.yaml (not a ModelScope mPLUG folder)")
    try:
        raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise MPlugLoadError(f"{cfg_path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise MPlugLoadError(f"{cfg_path}: expected a mapping of MPlugConfig fields")
    settings = _coerce(MPlugSettings, raw, str(cfg_path))
    bert_path = folder / settings.bert_config
    if not bert_path.is_file():
        raise MPlugLoadError(f"{folder}: config.yaml names bert_config {settings.bert_config!r}, which is missing")
    try:
        bert_raw = json.loads(bert_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MPlugLoadError(f"{bert_path}: not valid JSON ({e})") from None
    bert = _coerce(BertSettings, bert_raw, str(bert_path))
    settings = replace(settings, bert=bert)
    _check_settings(settings, cfg_path, bert_path)
    return settings


def _check_settings(s: MPlugSettings, cfg_path: Path, bert_path: Path) -> None:
    b = s.bert
    problems = []
    if b.hidden_act != "gelu":
        problems.append(f"{bert_path}: hidden_act {b.hidden_act!r} (only the exact 'gelu' of mPLUG is supported)")
    if b.position_embedding_type != "absolute":
        problems.append(f"{bert_path}: position_embedding_type {b.position_embedding_type!r} is not supported")
    if b.hidden_size % b.num_attention_heads:
        problems.append(f"{bert_path}: hidden_size {b.hidden_size} is not a multiple of {b.num_attention_heads} heads")
    if s.clip_vision_width != s.vision_width:
        problems.append(
            f"{cfg_path}: clip_vision_width {s.clip_vision_width} != vision_width {s.vision_width}"
            " (the bridge takes the ViT output)"
        )
    if s.vision_heads < 1 or s.clip_vision_width % 64:
        problems.append(f"{cfg_path}: clip_vision_width {s.clip_vision_width} must be a multiple of 64 (CLIP heads)")
    if s.image_res < s.clip_vision_patch_size:
        problems.append(f"{cfg_path}: image_res {s.image_res} is smaller than the patch size")
    if s.beam_size < 1 or s.max_length < 1 or s.min_length < 0:
        problems.append(f"{cfg_path}: beam_size/max_length must be >= 1 and min_length >= 0")
    if s.eos != "[SEP]":
        problems.append(f"{cfg_path}: eos {s.eos!r}; the official generator always ends on id 102 ([SEP])")
    if problems:
        raise MPlugLoadError("unsupported mPLUG configuration:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------- modules
def _clamp_inf(x: torch.Tensor) -> torch.Tensor:
    """ModelScope's `clamp_inf`: only fp16 tensors holding an inf are clamped."""
    if x.dtype == torch.float16 and torch.isinf(x).any():
        top = torch.finfo(x.dtype).max - 1000
        x = torch.clamp(x, min=-top, max=top)
    return x


class _Holder(nn.Module):
    """An empty module used only to reproduce a parameter-name prefix (e.g. `visual_encoder.visual`)."""


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=None)[0]  # same tensor thrice: packed in-proj
        return x + self.mlp(self.ln_2(x))


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class VisionTransformer(nn.Module):
    """CLIP's VisualTransformer as mPLUG calls it (`skip_last_layer=True`: ln_post of every token)."""

    def __init__(self, s: MPlugSettings) -> None:
        super().__init__()
        w, p = s.clip_vision_width, s.clip_vision_patch_size
        self.conv1 = nn.Conv2d(3, w, kernel_size=p, stride=p, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty(s.positional_rows, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = _Holder()
        self.transformer.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(w, s.vision_heads) for _ in range(s.clip_vision_layers)]
        )
        self.ln_post = nn.LayerNorm(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        zeros = torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([self.class_embedding.to(x.dtype) + zeros, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)[: x.size(1), :]
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)
        x = self.transformer.resblocks(x)
        x = x.permute(1, 0, 2)
        return self.ln_post(x)


class BertEmbeddings(nn.Module):
    def __init__(self, b: BertSettings) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(b.vocab_size, b.hidden_size, padding_idx=b.pad_token_id)
        self.position_embeddings = nn.Embedding(b.max_position_embeddings, b.hidden_size)
        self.token_type_embeddings = nn.Embedding(b.type_vocab_size, b.hidden_size)
        self.LayerNorm = nn.LayerNorm(b.hidden_size, eps=b.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        pos = torch.arange(n, device=ids.device).unsqueeze(0)
        types = torch.zeros_like(ids)
        x = self.word_embeddings(ids) + self.token_type_embeddings(types)
        x = x + self.position_embeddings(pos)
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    """Scaled dot-product attention in the official op order: (q·kᵀ) / √d + mask, softmax, ·v."""

    def __init__(self, b: BertSettings, kv_width: int) -> None:
        super().__init__()
        self.heads, self.head_dim = b.num_attention_heads, b.head_dim
        self.query = nn.Linear(b.hidden_size, b.hidden_size)
        self.key = nn.Linear(kv_width, b.hidden_size)
        self.value = nn.Linear(kv_width, b.hidden_size)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).permute(0, 2, 1, 3)

    def merge(self, ctx: torch.Tensor) -> torch.Tensor:
        ctx = ctx.permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.shape[0], ctx.shape[1], self.heads * self.head_dim)

    def kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.key(source)), self.split(self.value(source))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None, source: torch.Tensor | None = None):
        q = self.split(self.query(hidden))
        k, v = self.kv(hidden if source is None else source)
        scores = _clamp_inf(torch.matmul(q, k.transpose(-1, -2)))
        scores = scores / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        return self.merge(torch.matmul(torch.softmax(scores, dim=-1), v))

    def attend_parts(
        self, hidden: torch.Tensor, parts: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
    ) -> torch.Tensor:
        """Attention over the concatenation of several pre-projected key/value parts without
        materialising it: `parts` are (k, v, additive mask or None) with batch 1 (shared by every
        row of `hidden`) or the batch of `hidden`. Same mathematics as `forward` over the
        concatenated memory."""
        q = self.split(self.query(hidden))
        scale = math.sqrt(self.head_dim)
        scores = []
        for k, _, mask in parts:
            s = _clamp_inf(_batched_matmul(q, k.transpose(-1, -2))) / scale
            scores.append(s if mask is None else s + mask)
        probs = torch.softmax(torch.cat(scores, dim=-1), dim=-1)
        ctx = None
        start = 0
        for (_k, v, _m), s in zip(parts, scores, strict=True):
            n = s.shape[-1]
            c = _batched_matmul(probs[..., start : start + n], v)
            ctx = c if ctx is None else ctx + c
            start += n
        assert ctx is not None
        return self.merge(ctx)


def _batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a @ b` for a [G,H,L,x] and b [G or 1,H,x,y]. A shared `b` (batch 1) is not broadcast (torch
    would copy it G times): the G query blocks are folded into one [1,H,G*L,x] matrix instead."""
    g = a.shape[0]
    if b.shape[0] == g:
        return torch.matmul(a, b)
    _, h, length, x = a.shape
    folded = a.permute(1, 0, 2, 3).reshape(1, h, g * length, x)
    out = torch.matmul(folded, b)
    return out.reshape(h, g, length, out.shape[-1]).permute(1, 0, 2, 3)


class BertSelfOutput(nn.Module):
    def __init__(self, b: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(b.hidden_size, b.hidden_size)
        self.LayerNorm = nn.LayerNorm(b.hidden_size, eps=b.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, b: BertSettings, cross: bool = False) -> None:
        super().__init__()
        self.self = BertSelfAttention(b, b.encoder_width if cross else b.hidden_size)
        self.output = BertSelfOutput(b)

    def forward(self, hidden, mask, source=None):
        return self.output(self.self(hidden, mask, source), hidden)

    def forward_parts(self, hidden, parts):
        return self.output(self.self.attend_parts(hidden, parts), hidden)


class BertFeedForward(nn.Module):
    """`intermediate` + `output` of a BERT layer (kept as two children for the parameter names)."""

    def __init__(self, b: BertSettings) -> None:
        super().__init__()
        self.intermediate = _Holder()
        self.intermediate.dense = nn.Linear(b.hidden_size, b.intermediate_size)
        self.output = _Holder()
        self.output.dense = nn.Linear(b.intermediate_size, b.hidden_size)
        self.output.LayerNorm = nn.LayerNorm(b.hidden_size, eps=b.layer_norm_eps)


def _ffn(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = F.gelu(layer.intermediate.dense(x))
    h = _clamp_inf(_clamp_inf(layer.output.dense(h)))
    return layer.output.LayerNorm(h + x)


class BertLayer(nn.Module):
    """A text-encoder layer (self-attention + FFN) or decoder layer (+ cross-attention)."""

    def __init__(self, b: BertSettings, cross: bool) -> None:
        super().__init__()
        self.attention = BertAttention(b)
        if cross:
            self.crossattention = BertAttention(b, cross=True)
        ff = BertFeedForward(b)
        self.intermediate, self.output = ff.intermediate, ff.output


class FusionLayer(BertLayer):
    def __init__(self, b: BertSettings) -> None:
        super().__init__(b, cross=True)


class BertStack(nn.Module):
    def __init__(self, b: BertSettings, n_layers: int, cross: bool, embeddings: bool = True) -> None:
        super().__init__()
        if embeddings:
            self.embeddings = BertEmbeddings(b)
        self.encoder = _Holder()
        self.encoder.layer = nn.ModuleList([BertLayer(b, cross) for _ in range(n_layers)])


class FusionModel(nn.Module):
    """Only the layers that run are built, under their official indices (start .. num_hidden_layers-1)."""

    def __init__(self, b: BertSettings) -> None:
        super().__init__()
        self.encoder = _Holder()
        self.encoder.layer = nn.ModuleDict(
            {str(i): FusionLayer(b) for i in range(b.fusion_start, b.num_hidden_layers)}
        )

    def layers(self) -> list[tuple[int, FusionLayer]]:
        """(n, layer) with n counted from the first layer that runs, as FusionEncoder passes it."""
        return [(int(k) - int(next(iter(self.encoder.layer))), m) for k, m in self.encoder.layer.items()]


class LMHead(nn.Module):
    def __init__(self, b: BertSettings) -> None:
        super().__init__()
        self.predictions = _Holder()
        p = self.predictions
        p.transform = _Holder()
        p.transform.dense = nn.Linear(b.hidden_size, b.hidden_size)
        p.transform.LayerNorm = nn.LayerNorm(b.hidden_size, eps=b.layer_norm_eps)
        p.decoder = nn.Linear(b.hidden_size, b.vocab_size, bias=False)
        p.bias = nn.Parameter(torch.empty(b.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        p = self.predictions
        h = p.transform.LayerNorm(F.gelu(p.transform.dense(h)))
        return F.linear(h, p.decoder.weight, p.bias)  # the official decoder Linear carries the bias


class TextDecoder(nn.Module):
    def __init__(self, b: BertSettings) -> None:
        super().__init__()
        self.bert = BertStack(b, b.text_decode_layers, cross=True)
        self.cls = LMHead(b)


class MPlugForVQA(nn.Module):
    """Parameter layout of ModelScope's `MPlugForVisualQuestionAnswering` (inference parts only)."""

    def __init__(self, s: MPlugSettings) -> None:
        super().__init__()
        self.settings = s
        b = s.bert
        self.visual_encoder = _Holder()
        self.visual_encoder.visual = VisionTransformer(s)
        if s.has_bridge:
            self.visn_fc = nn.Linear(s.vision_width, b.hidden_size)
            self.visn_layer_norm = nn.LayerNorm(b.hidden_size, eps=1e-12)
        self.text_encoder = BertStack(b, b.text_encoder_layers, cross=False)
        self.fusion_encoder = FusionModel(b)
        self.text_decoder = TextDecoder(b)

    # -- shared pieces ---------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """[T,3,R,R] normalised pixels → [T, N, hidden] image states (ViT + bridge)."""
        x = self.visual_encoder.visual(pixels.to(self.dtype))
        if self.settings.has_bridge:
            x = self.visn_layer_norm(self.visn_fc(x))
        return x

    @property
    def dtype(self) -> torch.dtype:
        return self.visual_encoder.visual.conv1.weight.dtype

    def self_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """ModelScope's `get_extended_attention_mask` (encoder): (1 - m) * -10000, [B,1,1,L]."""
        m = attention_mask[:, None, None, :].to(self.dtype)
        return (1.0 - m) * -10000.0

    def cross_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """transformers 4.x `invert_attention_mask`: (1 - m) * finfo.min, [B,1,1,L]."""
        m = attention_mask[:, None, None, :].to(self.dtype)
        return (1.0 - m) * torch.finfo(self.dtype).min

    def causal_mask(self, rows: int, length: int, device: torch.device) -> torch.Tensor:
        ids = torch.arange(length, device=device)
        causal = (ids[None, None, :].repeat(rows, length, 1) <= ids[None, :, None]).to(self.dtype)
        ones = torch.ones(rows, length, device=device, dtype=self.dtype)
        ext = causal[:, None, :, :] * ones[:, None, None, :]
        return (1.0 - ext) * -10000.0

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.text_encoder.embeddings(ids)
        m = self.self_mask(mask)
        for layer in self.text_encoder.encoder.layer:
            h = _ffn(layer, layer.attention(h, m))
        return h

    # -- reference path (official op order) --------------------------------------------------------
    def fuse_reference(self, image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor):
        """FusionEncoder.forward: returns (image states, question states), both updated."""
        text_mask = self.self_mask(mask)
        image_atts = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
        image_mask = self.cross_mask(image_atts)
        stride = self.settings.bert.stride_layer
        n_img = image.shape[1]
        for n, layer in self.fusion_encoder.layers():
            if n == 0 or n % stride != 0:
                a = layer.attention(text, text_mask)
                a = layer.crossattention(a, image_mask, source=image)
                text = _ffn(layer, a)
            else:
                joint = torch.cat([image, text], 1)
                a = layer.attention(joint, torch.cat([image_mask, text_mask], 3))
                out = _ffn(layer, a)
                new_image, text = torch.split(out, (n_img, text.shape[1]), 1)
                image = image + new_image  # the official adds in place; never mutate cached tiles
        return image, text

    def decoder_logits_reference(self, seq: torch.Tensor, memory: torch.Tensor, memory_atts: torch.Tensor):
        """BertLMHeadModel forward on the whole prefix (no cache); logits of the last position."""
        dec = self.text_decoder
        h = dec.bert.embeddings(seq)
        causal = self.causal_mask(seq.shape[0], seq.shape[1], seq.device)
        cross = self.cross_mask(memory_atts)
        for layer in dec.bert.encoder.layer:
            a = layer.attention(h, causal)
            a = layer.crossattention(a, cross, source=memory)
            h = _ffn(layer, a)
        return dec.cls(h)[:, -1, :]

    # -- fast path (shared image projections) ------------------------------------------------------
    def fuse_fast(self, image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor):
        """Fusion for a batch of questions on one tile: `image` is [1,N,D] (shared) and stays shared
        until a skip layer makes it question-specific ([Q,N,D])."""
        text_mask = self.self_mask(mask)
        stride = self.settings.bert.stride_layer
        n_img = image.shape[1]
        for n, layer in self.fusion_encoder.layers():
            if n == 0 or n % stride != 0:
                a = layer.attention(text, text_mask)
                k, v = layer.crossattention.self.kv(image)
                a = layer.crossattention.forward_parts(a, [(k, v, None)])  # all-ones image mask adds 0
                text = _ffn(layer, a)
            else:
                q = text.shape[0]
                img = image.expand(q, -1, -1)
                zeros = torch.zeros(q, 1, 1, n_img, dtype=text_mask.dtype, device=text.device)
                a = layer.attention(torch.cat([img, text], 1), torch.cat([zeros, text_mask], 3))
                out = _ffn(layer, a)
                new_image, text = torch.split(out, (n_img, text.shape[1]), 1)
                image = img + new_image
        return image, text

    def decoder_caches(self, image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor):
        """Per decoder layer: (image k, v) [1 or Q, H, N, d] and (question k, v) [Q, H, L, d], plus the
        question part's cross mask [Q,1,1,L]."""
        caches = []
        for layer in self.text_decoder.bert.encoder.layer:
            att = layer.crossattention.self
            caches.append((att.kv(image), att.kv(text)))
        return caches, self.cross_mask(mask)

    def decoder_logits_fast(self, seq, items, caches, question_mask, beam: int):
        """Last-position logits for `seq` [rows, t]; rows are `items.numel()` groups of `beam` rows,
        group i answering question `items[i]`."""
        dec = self.text_decoder
        rows, t = seq.shape
        groups = rows // beam
        h = dec.bert.embeddings(seq)
        causal = self.causal_mask(1, t, seq.device)
        qmask = question_mask.index_select(0, items)
        for layer, ((ik, iv), (qk, qv)) in zip(dec.bert.encoder.layer, caches, strict=True):
            a = layer.attention(h, causal)
            if ik.shape[0] != 1:
                ik, iv = ik.index_select(0, items), iv.index_select(0, items)
            parts = [(ik, iv, None), (qk.index_select(0, items), qv.index_select(0, items), qmask)]
            a = a.reshape(groups, beam * t, -1)  # beams of one question share its memory
            a = layer.crossattention.forward_parts(a, parts).reshape(rows, t, -1)
            h = _ffn(layer, a)
        return dec.cls(h[:, -1:, :])[:, -1, :]


# ------------------------------------------------------------------------------------------- beam search
@dataclass(frozen=True)
class Hypothesis:
    """A finished beam: token ids (start token first, end token included when emitted) and its
    length-penalised score, as ModelScope's TextGenerator stores them."""

    ids: tuple[int, ...]
    score: float


StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def length_penalty(step: int, alpha: float = LENGTH_PENALTY_ALPHA) -> float:
    """GNMT length penalty of TextGenerator: ((5 + (step + 1)) / 6) ** alpha, step counted from 0."""
    return ((5.0 + (step + 1)) / 6.0) ** alpha


def beam_search(
    step_logits: StepFn,
    batch_size: int,
    *,
    beam_size: int = 5,
    min_length: int = 1,
    max_length: int = 10,
    start_id: int = START_ID,
    end_id: int = END_ID,
    alpha: float = LENGTH_PENALTY_ALPHA,
    device: torch.device | str = "cpu",
) -> list[list[Hypothesis]]:
    """ModelScope's `TextGenerator._fast_translate_batch` (do_sample=False), rule for rule.

    `step_logits(alive_seq, row_items)` returns next-token logits [rows, vocab] for the alive rows;
    `row_items[r]` is the batch item row r belongs to (rows come in groups of `beam_size`, one group
    per unfinished item). Returns, per batch item, its finished hypotheses best first (at most
    `beam_size`). The rules reproduced, quirks included:

    - log-probabilities are `log(softmax(logits))`; the end token is banned (-1e20) while
      step < min_length; only beam 0 is alive at the first step;
    - candidates are ranked by cumulative log-prob / length_penalty(step); the kept cumulative score
      is that ranked value × length_penalty (float round trip included);
    - every candidate that emits the end token is recorded as finished, but an item stops only when
      its top beam emits it; other finished beams stay alive and keep extending;
    - at max_length every beam is finished; an item's finished hypotheses are sorted by score,
      highest first, ties in the order they were recorded.
    """
    device = torch.device(device)
    topk_log_probs = torch.tensor([0.0] + [float("-inf")] * (beam_size - 1), device=device).repeat(batch_size)
    batch_offset = torch.arange(batch_size, dtype=torch.long, device=device)
    beam_offset = torch.arange(0, batch_size * beam_size, step=beam_size, dtype=torch.long, device=device)
    alive_seq = torch.full((batch_size * beam_size, 1), start_id, dtype=torch.long, device=device)
    row_items = batch_offset.repeat_interleave(beam_size)
    hypotheses: list[list[tuple[float, tuple[int, ...]]]] = [[] for _ in range(batch_size)]
    results: list[list[Hypothesis]] = [[] for _ in range(batch_size)]

    for step in range(max_length):
        logits = step_logits(alive_seq, row_items)
        vocab = logits.size(-1)
        log_probs = torch.log(torch.softmax(logits.view(-1, vocab), dim=-1))
        if step < min_length:
            log_probs[:, end_id] = -1e20
        lp = length_penalty(step, alpha)
        log_probs += topk_log_probs.view(-1).unsqueeze(1)
        curr_scores = (log_probs / lp).reshape(-1, beam_size * vocab)
        topk_scores, topk_ids = curr_scores.topk(beam_size, dim=-1)
        topk_log_probs = topk_scores * lp

        topk_beam_index = torch.div(topk_ids, vocab, rounding_mode="floor")
        topk_ids = topk_ids.fmod(vocab)
        batch_index = topk_beam_index + beam_offset[: topk_beam_index.size(0)].unsqueeze(1)
        select = batch_index.view(-1)
        alive_seq = torch.cat([alive_seq.index_select(0, select), topk_ids.view(-1, 1)], -1)
        row_items = row_items.index_select(0, select)

        is_finished = topk_ids.eq(end_id)
        if step + 1 == max_length:
            is_finished.fill_(True)
        end_condition = is_finished[:, 0].eq(True)
        if is_finished.any():
            predictions = alive_seq.view(-1, beam_size, alive_seq.size(-1))
            scores_cpu = topk_scores.detach().float().cpu()
            preds_cpu = predictions.cpu()
            for i in range(is_finished.size(0)):
                b = int(batch_offset[i])
                if bool(end_condition[i]):
                    is_finished[i].fill_(True)
                for j in is_finished[i].nonzero().view(-1).tolist():
                    hypotheses[b].append((float(scores_cpu[i, j]), tuple(preds_cpu[i, j].tolist())))
                if bool(end_condition[i]):
                    best = sorted(hypotheses[b], key=lambda h: h[0], reverse=True)
                    results[b] = [Hypothesis(ids, score) for score, ids in best[:beam_size]]
            non_finished = end_condition.eq(False).nonzero().view(-1)
            if len(non_finished) == 0:
                break
            topk_log_probs = topk_log_probs.index_select(0, non_finished)
            batch_offset = batch_offset.index_select(0, non_finished)
            keep = (non_finished.unsqueeze(1) * beam_size + torch.arange(beam_size, device=device)).view(-1)
            row_items = row_items.index_select(0, keep)
            alive_seq = predictions.index_select(0, non_finished).view(-1, alive_seq.size(-1))
    return results


# ------------------------------------------------------------------------------------------- text
_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip


def decode(tokens: Sequence[str], special: set[str]) -> str:
    """transformers 4.x `BertTokenizer.decode(ids, skip_special_tokens=True)` on the tokens of ids:
    special tokens dropped, word pieces joined, then `clean_up_tokenization` (4.x's BERT default).
    Done here so the answer strings do not depend on the installed transformers version (5.x's
    tokenizer does not clean up spaces by default)."""
    text = " ".join(t for t in tokens if t not in special).replace(" ##", "").strip()
    for a, b in _CLEANUPS:
        text = text.replace(a, b)
    return text


class QuestionTokenizer:
    """BERT word pieces from the model folder's vocab.txt (MPlugPreprocessor's tokenizer)."""

    def __init__(self, folder: str | os.PathLike[str], max_tokens: int = QUESTION_MAX_TOKENS) -> None:
        from transformers import BertTokenizer

        folder = Path(folder)
        if not (folder / "vocab.txt").is_file():
            raise MPlugLoadError(f"{folder}: no vocab.txt")
        self.max_tokens = max_tokens
        self.tok = BertTokenizer.from_pretrained(str(folder))
        self.special = set(self.tok.all_special_tokens)
        vocab = self.tok.get_vocab()
        if vocab.get("[CLS]") != START_ID or vocab.get("[SEP]") != END_ID:
            raise MPlugLoadError(
                f"{folder}/vocab.txt: [CLS]/[SEP] must have ids {START_ID}/{END_ID} (the official generator's"
                f" start and end ids), got {vocab.get('[CLS]')}/{vocab.get('[SEP]')}"
            )
        self.vocab_size = len(vocab)

    def __call__(self, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower-cased questions → (input_ids, attention_mask), each [Q, 25] (padded/truncated)."""
        enc = self.tok(
            [q.lower() for q in questions],
            padding="max_length",
            truncation=True,
            max_length=self.max_tokens,
        )
        ids = torch.tensor(enc["input_ids"], dtype=torch.long)
        mask = torch.tensor(enc["attention_mask"], dtype=torch.long)
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        return decode(self.tok.convert_ids_to_tokens(list(ids)), self.special)


# ------------------------------------------------------------------------------------------- images
def preprocess(image: Image.Image, image_res: int) -> torch.Tensor:
    """MPlugPreprocessor's transform: convert("RGB"), PIL bicubic resize to image_res × image_res
    (torchvision `Resize((r, r), BICUBIC)` on a PIL image is exactly this), ToTensor, CLIP Normalize.
    Returns float32 [3, r, r]."""
    img = image.convert("RGB").resize((image_res, image_res), Image.BICUBIC)
    arr = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    x = arr.to(torch.float32).div(255)
    mean = torch.as_tensor(CLIP_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(CLIP_STD, dtype=torch.float32).view(-1, 1, 1)
    return x.sub(mean).div(std)


# ------------------------------------------------------------------------------------------- loading
@dataclass
class LoadReport:
    """What the loader did with the checkpoint's keys (kept on the model for provenance)."""

    checkpoint: str
    loaded: int = 0
    ignored: dict[str, int] = field(default_factory=dict)  # reason -> count
    unknown: list[str] = field(default_factory=list)  # unexpected keys of no known kind
    head: str = ""
    unwrapped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "loaded": self.loaded, "ignored": dict(self.ignored),
                "unknown": list(self.unknown), "head": self.head, "unwrapped": self.unwrapped}


def checkpoint_path(folder: Path) -> Path:
    for name in CHECKPOINT_FILES[::-1]:  # a converted model.safetensors wins: no pickle at all
        if (folder / name).is_file():
            return folder / name
    raise MPlugLoadError(
        f"{folder}: no checkpoint ({' or '.join(CHECKPOINT_FILES)}); a ModelScope mPLUG folder holds "
        f"{', '.join(FOLDER_FILES)}"
    )


def read_checkpoint(path: Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """The raw checkpoint: weights-only first; a full unpickle only when `trust_pickle`."""
    from paintbench.metrics.weights import load_state_dict

    try:
        return load_state_dict(path)
    except ValueError as e:
        if not trust_pickle:
            raise MPlugLoadError(
                f"{path}: cannot be read without unpickling arbitrary objects ({e.__cause__ or e}). Only if you "
                "trust this file, load it with trust_pickle=True (CLI: --trust-pickle); better, convert it "
                "once to model.safetensors in the same folder (save_safetensors), which is then preferred."
            ) from None
    warnings.warn(f"{path}: loading with a full (unsafe) unpickle because trust_pickle=True", stacklevel=3)
    return torch.load(str(path), map_location="cpu", weights_only=False)


def unwrap(checkpoint: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """MPlug.from_pretrained's unwrapping: ['model'], then ['module'], then 'model.' removed from keys."""
    note = []
    ck: Any = checkpoint
    if isinstance(ck, Mapping) and "model" in ck:
        ck, note = ck["model"], [*note, "['model']"]
    if isinstance(ck, Mapping) and "module" in ck:
        ck, note = ck["module"], [*note, "['module']"]
    if not isinstance(ck, Mapping):
        raise MPlugLoadError(f"checkpoint holds {type(ck).__name__}, not a state dict")
    out = {}
    for k, v in ck.items():
        if isinstance(v, torch.Tensor):
            out[str(k).replace("model.", "")] = v
    return out, "".join(note)


_MOMENTUM = ("visual_encoder_m.", "text_encoder_m.", "fusion_encoder_m.", "text_decoder_m.",
             "visn_fc_m.", "visn_layer_norm_m.")  # fmt: skip
_LAYER_KEY = re.compile(
    r"^(visual_encoder\.visual\.transformer\.resblocks|text_encoder\.encoder\.layer|"
    r"fusion_encoder\.encoder\.layer|text_decoder\.bert\.encoder\.layer)\.(\d+)\."
)


def _ignored_reason(key: str, s: MPlugSettings) -> str | None:
    if key.startswith(_MOMENTUM):
        return "momentum (distillation) copies"
    if key.endswith("position_ids"):
        return "position_ids buffers"
    if key.startswith("visual_encoder.") and not key.startswith("visual_encoder.visual."):
        return "CLIP text tower"
    if key == "visual_encoder.visual.proj":
        return "CLIP image projection (skip_last_layer)"
    if ".pooler." in key:
        return "BERT poolers"
    m = _LAYER_KEY.match(key)
    if m and m.group(1) == "fusion_encoder.encoder.layer" and int(m.group(2)) < s.bert.fusion_start:
        return "fusion layers that never run (num_hidden_layers - fusion_layers)"
    return None


def _check_layer_counts(keys: Sequence[str], s: MPlugSettings, path: Path) -> None:
    found: dict[str, set[int]] = {}
    for k in keys:
        m = _LAYER_KEY.match(k)
        if m:
            found.setdefault(m.group(1), set()).add(int(m.group(2)))
    b = s.bert
    expected = {
        "visual_encoder.visual.transformer.resblocks": ("clip_vision_layers (config.yaml)", s.clip_vision_layers),
        "text_encoder.encoder.layer": ("text_encoder_layers (config_bert.json)", b.text_encoder_layers),
        "fusion_encoder.encoder.layer": ("num_hidden_layers (config_bert.json)", b.num_hidden_layers),
        "text_decoder.bert.encoder.layer": ("text_decode_layers (config_bert.json)", b.text_decode_layers),
    }
    problems = []
    for prefix, (what, n) in expected.items():
        have = found.get(prefix)
        if have and max(have) + 1 != n:
            problems.append(f"{prefix}: the checkpoint has {max(have) + 1} layers, {what} says {n}")
    if problems:
        raise MPlugLoadError(f"{path}: checkpoint and config disagree:\n  " + "\n  ".join(problems))


def _tie_head(sd: dict[str, torch.Tensor], s: MPlugSettings, tying: str, path: Path) -> str:
    """Resolve the answer head in place (see `HEAD_TYING`); returns a note for the load report.

    Afterwards `sd` holds both the word embeddings and `predictions.decoder.weight` (the same tensor
    when tied) and `predictions.bias`, never `predictions.decoder.bias`: in the official module
    `decoder.bias` *is* `predictions.bias` (one Parameter under two names, whatever transformers
    does), and its key is loaded second, so a stored `decoder.bias` always wins."""
    emb = "text_decoder.bert.embeddings.word_embeddings.weight"
    head = "text_decoder.cls.predictions.decoder.weight"
    bias, head_bias = "text_decoder.cls.predictions.bias", "text_decoder.cls.predictions.decoder.bias"
    notes = []
    if head_bias in sd:
        if bias in sd and not torch.equal(sd[bias], sd[head_bias]):
            notes.append("predictions.bias differed from predictions.decoder.bias; the latter is used (as officially)")
        sd[bias] = sd.pop(head_bias)
    has_e, has_h = emb in sd, head in sd
    tied = s.bert.tie_word_embeddings and tying != "untied"
    if not tied:
        if not (has_e and has_h):
            missing = emb if not has_e else head
            raise MPlugLoadError(
                f"{path}: {missing} is missing and the answer head is untied (tie_word_embeddings false or"
                " head_tying='untied'), so it would stay random"
            )
        notes.append("untied head, both tensors as stored")
        return "; ".join(notes)
    if has_e and has_h and not torch.equal(sd[emb], sd[head]):
        if tying == "strict":
            same = sd[emb].shape == sd[head].shape
            diff = (sd[emb].float() - sd[head].float()).abs().max().item() if same else float("nan")
            raise MPlugLoadError(
                f"{path}: untied answer head: {head} differs from {emb} (max |diff| {diff:.3g}), but"
                " config_bert.json ties them (tie_word_embeddings, default true). The official model on"
                " transformers 4.x silently uses the head for both, on transformers 5.x it keeps them apart."
                " Pass head_tying='transformers4' or 'untied' to choose explicitly."
            )
        sd[emb] = sd[head]  # transformers4: the head's key is loaded after the embeddings' and wins
        notes.append("head and word embeddings differed; the head's values serve both (transformers 4.x)")
    elif has_e and has_h:
        notes.append("head tied to the word embeddings (identical in the checkpoint)")
    elif has_h:
        sd[emb] = sd[head]
        notes.append("word embeddings taken from the tied head")
    elif has_e:
        sd[head] = sd[emb]
        notes.append("head tied to the word embeddings (head not stored)")
    return "; ".join(notes)


def _check_shapes(model: MPlugForVQA, sd: Mapping[str, torch.Tensor], s: MPlugSettings, path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    pos_key = "visual_encoder.visual.positional_embedding"
    if pos_key in sd and tuple(sd[pos_key].shape) != expected[pos_key]:
        rows = sd[pos_key].shape[0]
        side = math.isqrt(max(rows - 1, 0)) * s.clip_vision_patch_size
        raise MPlugLoadError(
            f"{path}: the checkpoint's positional embedding has {rows} rows ({tuple(sd[pos_key].shape)}), i.e. "
            f"the model was trained at image_res {side}, but config.yaml says image_res {s.image_res} "
            f"({expected[pos_key][0]} rows). Set image_res: {side} in config.yaml."
        )
    bad = [f"{k}: checkpoint {tuple(sd[k].shape)}, config {expected[k]}" for k in expected
           if k in sd and tuple(sd[k].shape) != expected[k]]
    if bad:
        raise MPlugLoadError(f"{path}: checkpoint and config disagree on shapes:\n  " + "\n  ".join(bad[:20]))
    missing = [k for k in expected if k not in sd]
    if missing:
        raise MPlugLoadError(
            f"{path}: {len(missing)} weights the VQA model needs are missing from the checkpoint, e.g. "
            f"{', '.join(missing[:8])}"
        )


def load_mplug(
    folder: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    trust_pickle: bool = False,
    head_tying: HeadTying = "strict",
) -> tuple[MPlugForVQA, MPlugSettings, LoadReport]:
    """Build the VQA model from an unmodified ModelScope folder (see the module docstring)."""
    if head_tying not in HEAD_TYING:
        raise ValueError(f"head_tying must be one of {HEAD_TYING}, got {head_tying!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise MPlugLoadError(f"{folder}: not a folder (expected a ModelScope mPLUG model folder)")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise MPlugLoadError(
            f"{folder}: missing {', '.join(missing)}; a ModelScope mPLUG folder holds {', '.join(FOLDER_FILES)}"
        )
    settings = read_settings(folder)
    path = checkpoint_path(folder)
    raw, unwrapped = unwrap(read_checkpoint(path, trust_pickle=trust_pickle))
    report = LoadReport(checkpoint=str(path), unwrapped=unwrapped)
    _check_layer_counts(list(raw), settings, path)
    report.head = _tie_head(raw, settings, head_tying, path)

    with torch.device("meta"):
        model = MPlugForVQA(settings)
    wanted = set(model.state_dict())
    sd: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        if k in wanted:
            sd[k] = v
            continue
        reason = _ignored_reason(k, settings)
        if reason is None:
            report.unknown.append(k)
        else:
            report.ignored[reason] = report.ignored.get(reason, 0) + 1
    _check_shapes(model, sd, settings, path)
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in sd.items()}, assign=True)
    report.loaded = len(sd)
    dec = model.text_decoder
    if settings.bert.tie_word_embeddings and head_tying != "untied":
        dec.cls.predictions.decoder.weight = dec.bert.embeddings.word_embeddings.weight
    model.eval().requires_grad_(False)
    if report.unknown:
        warnings.warn(
            f"{path}: {len(report.unknown)} checkpoint keys are not used by the VQA model "
            f"(e.g. {', '.join(report.unknown[:5])})",
            stacklevel=2,
        )
    return model, settings, report


def save_safetensors(folder: str | os.PathLike[str], *, trust_pickle: bool = False) -> Path:
    """Convert the folder's pytorch_model.bin once to model.safetensors (preferred by the loader), so
    later loads never unpickle. Shared tensors are cloned (safetensors stores no aliases)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    raw, _ = unwrap(read_checkpoint(folder / "pytorch_model.bin", trust_pickle=trust_pickle))
    target = folder / "model.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in raw.items()}, str(target))
    return target


# ------------------------------------------------------------------------------------------- inference
@dataclass(frozen=True)
class VQAResult:
    """One answer: the decoded string, the best hypothesis and every hypothesis ranked."""

    answer: str
    ids: tuple[int, ...]
    score: float
    beams: tuple[Hypothesis, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "ids": list(self.ids), "score": self.score,
                "beams": [{"ids": list(h.ids), "score": h.score} for h in self.beams]}


class MPlugVQA:
    """mPLUG VQA on tiles: `answer(images, questions)` for parallel lists, `answer_tile` per tile."""

    name = "mplug"

    def __init__(
        self,
        model: MPlugForVQA,
        settings: MPlugSettings,
        tokenizer: QuestionTokenizer,
        *,
        mode: Mode = "fast",
        report: LoadReport | None = None,
        folder: Path | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mPLUG mode must be one of {MODES}, got {mode!r}")
        if mode == "reference" and model.dtype != torch.float32:
            raise ValueError("mPLUG reference mode is fp32 (the official precision); use mode='fast' for fp16/bf16")
        if tokenizer.vocab_size != settings.bert.vocab_size:
            raise MPlugLoadError(
                f"vocab.txt has {tokenizer.vocab_size} tokens but config_bert.json says vocab_size "
                f"{settings.bert.vocab_size}"
            )
        self.model, self.settings, self.tokenizer = model, settings, tokenizer
        self.mode: Mode = mode
        self.report = report
        self.folder = folder
        self.tile_batch = 4  # tiles per ViT batch in fast mode (one DPG grid)

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        mode: Mode = "fast",
        trust_pickle: bool = False,
        head_tying: HeadTying = "strict",
    ) -> MPlugVQA:
        model, settings, report = load_mplug(
            folder, device=device, dtype=dtype, trust_pickle=trust_pickle, head_tying=head_tying
        )
        return cls(model, settings, QuestionTokenizer(folder), mode=mode, report=report, folder=Path(folder))

    @property
    def device(self) -> torch.device:
        return self.model.visual_encoder.visual.conv1.weight.device

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "mode": self.mode, "dtype": str(self.model.dtype).removeprefix("torch."),
                "folder": str(self.folder) if self.folder else None,
                "settings": {k: v for k, v in self.settings.to_dict().items() if k != "bert"},
                "load": self.report.to_dict() if self.report else None}

    # -- steps -------------------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return preprocess(image, self.settings.image_res)

    @torch.inference_mode()
    def encode_tiles(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self.model.encode_image(pixels)

    def _search(self, step: StepFn, batch: int) -> list[list[Hypothesis]]:
        s = self.settings
        return beam_search(step, batch, beam_size=s.beam_size, min_length=s.min_length,
                           max_length=s.max_length, device=self.device)

    def _result(self, hyps: list[Hypothesis]) -> VQAResult:
        best = hyps[0]
        return VQAResult(self.tokenizer.decode(best.ids), best.ids, best.score, tuple(hyps))

    @torch.inference_mode()
    def answer_reference(self, image_states: torch.Tensor, question: str) -> VQAResult:
        """One question on one encoded tile ([1,N,D]), batch 1, the official computation."""
        m = self.model
        ids, mask = self.tokenizer([question])
        ids, mask = ids.to(self.device), mask.to(self.device)
        text = m.encode_text(ids, mask)
        image, text = m.fuse_reference(image_states, text, mask)
        memory = torch.cat([image, text], 1)
        image_atts = torch.ones(image.shape[:-1], dtype=torch.long, device=self.device)
        memory_atts = torch.cat([image_atts, mask], 1)

        def step(seq: torch.Tensor, row_items: torch.Tensor) -> torch.Tensor:
            return m.decoder_logits_reference(
                seq, memory.index_select(0, row_items), memory_atts.index_select(0, row_items)
            )

        return self._result(self._search(step, 1)[0])

    @torch.inference_mode()
    def answer_fast(self, image_states: torch.Tensor, questions: Sequence[str]) -> list[VQAResult]:
        """All questions on one encoded tile ([1,N,D]) in one batch, shared image projections."""
        if not questions:
            return []
        m = self.model
        ids, mask = self.tokenizer(questions)
        ids, mask = ids.to(self.device), mask.to(self.device)
        text = m.encode_text(ids, mask)
        image, text = m.fuse_fast(image_states, text, mask)
        caches, qmask = m.decoder_caches(image, text, mask)
        beam = self.settings.beam_size

        def step(seq: torch.Tensor, row_items: torch.Tensor) -> torch.Tensor:
            items = row_items.view(-1, beam)[:, 0]
            return m.decoder_logits_fast(seq, items, caches, qmask, beam).float()

        return [self._result(h) for h in self._search(step, len(questions))]

    @torch.inference_mode()
    def answer_tile(self, image: Image.Image, questions: Sequence[str], *, reencode_image: bool = False):
        """Every question on one tile → VQAResults, in question order. `reencode_image` runs the ViT
        again for every question, as the official pipeline does (reference mode only; benchmarks)."""
        if self.mode == "fast":
            return self.answer_fast(self.encode_tiles([image]), questions)
        states = None if reencode_image else self.encode_tiles([image])
        out = []
        for q in questions:
            out.append(self.answer_reference(self.encode_tiles([image]) if reencode_image else states, q))
        return out

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        """Backend interface: `images[i]` answers `questions[i]`. Entries with the same image object are
        grouped, so a tile is encoded once and its questions batched (fast mode)."""
        return [r.answer for r in self.answer_details(images, questions)]

    def answer_details(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[VQAResult]:
        """`answer` with the full results. In fast mode the distinct tiles go through the ViT together
        (`tile_batch` at a time), then each tile's questions are decoded as one batch."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        groups: dict[int, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(id(im), []).append(i)
        out: list[VQAResult | None] = [None] * len(questions)
        order = list(groups.values())
        for start in range(0, len(order), self.tile_batch if self.mode == "fast" else 1):
            chunk = order[start : start + (self.tile_batch if self.mode == "fast" else 1)]
            if self.mode == "fast":
                states = self.encode_tiles([images[idx[0]] for idx in chunk])
                per_tile = [self.answer_fast(states[g : g + 1], [questions[i] for i in idx])
                            for g, idx in enumerate(chunk)]
            else:
                per_tile = [self.answer_tile(images[idx[0]], [questions[i] for i in idx]) for idx in chunk]
            for idx, results in zip(chunk, per_tile, strict=True):
                for i, r in zip(idx, results, strict=True):
                    out[i] = r
        return [r for r in out if r is not None]


# ------------------------------------------------------------------------------------------- tiny
_TINY_TEXT = (
    "yes no is there a an the of on in to and with at by for from near under above below behind front "
    "left right top bottom next side red blue green yellow white black brown orange pink purple gray "
    "color colour big small large tall short round square wooden metal glass cat dog man woman person "
    "people child car tree house sky water table chair cup book flower bird horse boat street city "
    "sitting standing holding wearing looking background image picture style photo painting one two "
    "three four many does do are it its this that"
)
TINY_WORDS = tuple(_TINY_TEXT.split())


def tiny_vocab() -> list[str]:
    """A toy BERT vocab with the special tokens at their bert-base-uncased ids ([PAD] 0, [UNK] 100,
    [CLS] 101, [SEP] 102, [MASK] 103), common DPG words, letters, digits and their ## pieces, so any
    lower-case question tokenizes into real pieces."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += ["!", ",", "-", ".", "?", "'", '"', "(", ")", ":", ";"]
    vocab += list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab += [w for w in TINY_WORDS if w not in vocab]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return vocab


TINY_CONFIG = {
    "image_res": 32, "vision_width": 64, "clip_name": "ViT-tiny", "clip_vision_width": 64,
    "clip_vision_layers": 2, "clip_vision_patch_size": 8, "clip_embed_dim": 16,
    "min_length": 1, "max_length": 10, "beam_size": 5, "eos": "[SEP]", "bert_config": "config_bert.json",
    "distill": False,
}  # fmt: skip
TINY_BERT = {
    "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu",
    "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    "num_hidden_layers": 3, "fusion_layers": 2, "text_encoder_layers": 2, "text_decode_layers": 2,
    "stride_layer": 1, "encoder_width": 32, "use_cache": False, "architectures": ["BertForMaskedLM"],
}  # fmt: skip


def tiny_state_dict(settings: MPlugSettings, vocab: Sequence[str], seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """Random weights in ModelScope's key layout (plus the kinds of keys a real checkpoint carries that
    the VQA path ignores: a CLIP text-tower tensor, a momentum copy, position_ids, a dead fusion layer).

    Weights are normal(0, 0.2) rather than BERT's 0.02 so the image and the question visibly change
    the answer; the answer head is biased towards the one-word answers `yes`/`no` followed by `[SEP]`,
    as a trained VQA model is, so toy runs exercise both outcomes and the early stop."""
    from paintbench.metrics.synthetic import make_tensor

    full = replace(settings, bert=replace(settings.bert, fusion_layers=settings.bert.num_hidden_layers))
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in MPlugForVQA(full).state_dict().items()}
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, shape in shapes.items():
        norm = k.endswith(".weight") and ("LayerNorm" in k or ".ln_" in k or "layer_norm" in k)
        fill = {"kind": "normal", "mean": 1.0 if norm else 0.0, "std": 0.02 if norm else 0.2}
        sd[k] = make_tensor(k, shape, fill, "float32", seed)
    ids = {t: i for i, t in enumerate(vocab)}
    bias = sd["text_decoder.cls.predictions.bias"]
    bias.zero_()
    bias[ids["yes"]] = bias[ids["no"]] = 6.0
    bias[END_ID] = 12.0
    sd["text_decoder.cls.predictions.decoder.weight"] = sd["text_decoder.bert.embeddings.word_embeddings.weight"]
    sd["text_decoder.cls.predictions.decoder.bias"] = bias
    sd["visual_encoder.visual.proj"] = make_tensor("visual_encoder.visual.proj", (64, 16), fill, "float32", seed)
    sd["visual_encoder.token_embedding.weight"] = make_tensor(
        "visual_encoder.token_embedding.weight", (8, 16), fill, "float32", seed)
    sd["visn_fc_m.weight"] = sd["visn_fc.weight"].clone()
    sd["text_encoder.embeddings.position_ids"] = torch.arange(settings.bert.max_position_embeddings)[None]
    return sd


def write_tiny_mplug(directory: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a toy-size mPLUG VQA model folder in ModelScope's format (configuration.json, config.yaml,
    config_bert.json, vocab.txt, pytorch_model.bin as a plain torch.save state dict) and return it.
    `MPlugVQA.from_folder` reads it through the real loader; answers are deterministic per seed."""
    import yaml

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG, sort_keys=False), encoding="utf-8")
    bert = dict(TINY_BERT, vocab_size=len(vocab))
    (folder / "config_bert.json").write_text(json.dumps(bert, indent=2) + "\n", encoding="utf-8")
    (folder / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "visual-question-answering",
        "model": {"type": "mplug"}, "pipeline": {"type": "visual-question-answering"},
        "preprocessor": {"type": "mplug-tasks-preprocessor"},
    }, indent=2) + "\n", encoding="utf-8")
    settings = read_settings(folder)
    torch.save(tiny_state_dict(settings, vocab, seed), folder / "pytorch_model.bin")
    return folder


MPLUG_WEIGHT = "mplug-vqa-large"
MPLUG_FOLDER = "mplug_visual-question-answering_coco_large_en"


def write_tiny_weights(directory: str | os.PathLike[str], *, seed: int = 0, metric: str = "dpg") -> list[Path]:
    """`metrics.synthetic.write_tiny_weights` hook: the tiny folder under the catalog's folder name."""
    return [write_tiny_mplug(Path(directory) / MPLUG_FOLDER, seed=seed)]
