"""mPLUG's modules (CLIP ViT-L/14 vision encoder, BERT text encoder, fusion layers, answer decoder), with
the official parameter names so the checkpoint loads as is."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from paintbench.metrics.dpg.mplug.configuration import BertSettings, MPlugSettings


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
