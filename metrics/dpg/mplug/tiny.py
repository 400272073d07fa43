"""Tiny random mPLUG folders in the unmodified ModelScope layout, for tests and demos."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from paintbench.metrics.dpg.mplug.configuration import END_ID, MPlugSettings, read_settings
from paintbench.metrics.dpg.mplug.modeling import MPlugForVQA

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
