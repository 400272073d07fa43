"""mPLUG's settings: the ModelScope folder's config.yaml and config_bert.json, read and checked, and the
constants of the official preprocessing and decoding."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

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
