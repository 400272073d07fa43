"""Checkpoint conversion: key maps between mmdet 2.x, mmdet 3.x and transformers' Mask2Former (Swin qkv
and patch-merging layouts, relative position indices), format recognition, and loading a mapped state dict."""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from paintbench.metrics.geneval.detector.configuration import DetectorConfig

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

    sd = hf5_names(sd)

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


def hf5_names(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """An HF Mask2Former state dict with transformers 5.x's Swin names, whichever version produced it
    (the inverse of `_HF4_NAMES`; 4.x also stores `relative_position_index` buffers, dropped here as
    mmdet's are rebuilt)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        if k.startswith(tuple(_BB + part for part in ("embeddings.", "encoder.", "layernorm."))):
            if k.endswith(".relative_position_index"):
                continue
            for new, old in _HF4_NAMES[:-1]:
                k = k.replace(old, new)
            k = _BB + "swin." + k[len(_BB):]
        out[k] = v
    return out


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
    # transformers 4.x keeps Swin's relative_position_index as a persistent buffer; the model computes it
    # itself (mmdet's, validated by `mmdet3_to_hf`, is the same standard index)
    missing = [k for k in model_sd if k not in hf_sd and not _HF_UNUSED.search(k)
               and not k.endswith(".relative_position_index")]
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
