"""Checkpoint loading: reading ModelScope's files (weights-only by default), unwrapping, the keys that are
ignored and why, layer-count and shape checks, the tied answer head (`HEAD_TYING`), and `load_mplug`."""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from paintbench.metrics.dpg.mplug.configuration import (
    CHECKPOINT_FILES,
    FOLDER_FILES,
    HEAD_TYING,
    REQUIRED_FILES,
    HeadTying,
    MPlugLoadError,
    MPlugSettings,
    read_settings,
)
from paintbench.metrics.dpg.mplug.modeling import MPlugForVQA


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
