"""ImageReward's network: BLIP ViT + BERT with cross-attention + an activation-free MLP head.

Compact own modules rather than transformers' classes, because ImageReward's `med.py` BERT is not
transformers' `BertModel`: it has **no token_type embeddings** (transformers always adds the type-0
row), its cross-attention keys/values read the ViT width (`encoder_width`), and its additive mask is
`(1 - mask) * -10000` rather than the dtype minimum. Written out here, every operation follows the
official code in the same order (explicit `q @ k^T` attention with the scale where the official code
puts it, exact GELU, LayerNorm eps 1e-6 in the ViT and 1e-12 in BERT), which is what gives float32
parity with the official scorer at the 1e-6 level.

Sub-module and parameter names inside each tower are the official ones (`blocks.N.attn.qkv`,
`encoder.layer.N.crossattention.self.key`, ...), so the checkpoint key map in `metrics.imagereward`
is only a prefix map. Sizes are not hard-coded: `VisionConfig` and `TextConfig` are read off a
checkpoint's shapes, so tiny checkpoints in the official layout run through the same code.

Official sources (THUDM/ImageReward, PyPI image-reward 1.5): `models/BLIP/vit.py` (timm-style ViT
without `ln_pre`), `models/BLIP/med.py` (BERT), `ImageReward.py` (`MLP`, `score`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from paintbench.metrics.heads import LinearMLPHead


@dataclass(frozen=True)
class VisionConfig:
    """BLIP `VisionTransformer` sizes (ViT-L/16 @224: width 1024, depth 24, 16 heads, mlp 4096)."""

    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp_dim: int
    eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class TextConfig:
    """`med.py` BertModel sizes (BLIP: hidden 768, 12 layers, 12 heads, FFN 3072, vocab 30524)."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    encoder_width: int
    eps: float = 1e-12


# The official head: `Linear` output widths after the 768-d feature, and the `Dropout` indices of its
# Sequential (inert at eval). Linear layers sit at indices 0, 2, 4, 6, 7, which fixes the keys.


# -- vision ---------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, C]


class VitAttention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.scale = (cfg.width // cfg.heads) ** -0.5
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=True)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # scale after the matmul, as vit.py
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class VitMlp(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class VitBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.attn = VitAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = VitMlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """BLIP's ViT: patchify, prepend CLS, add positions (no `ln_pre`), pre-norm blocks, final norm.
    Returns all tokens [B, 1 + N, width]; ImageReward's text encoder attends to every one."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.width))
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VitBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed[:, : x.shape[1], :]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# -- text -----------------------------------------------------------------------------------------
class TextEmbeddings(nn.Module):
    """Word + absolute position embeddings, LayerNorm. No token_type embeddings (med.py has none)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        # The official module keeps position_ids as a persistent buffer and reads positions from it.
        self.register_buffer("position_ids", torch.arange(cfg.max_positions).expand((1, -1)))
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, : input_ids.shape[1]]
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: TextConfig, *, cross: bool) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        kv_width = cfg.encoder_width if cross else cfg.hidden
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(kv_width, cfg.hidden)
        self.value = nn.Linear(kv_width, cfg.hidden)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_dim).permute(0, 2, 1, 3)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.key(source)), self.split(self.value(source))

    def forward(
        self,
        hidden: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        additive_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        q = self.split(self.query(hidden))
        k, v = kv
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if additive_mask is not None:
            scores = scores + additive_mask
        context = scores.softmax(dim=-1) @ v
        context = context.permute(0, 2, 1, 3).contiguous()
        return context.view(*context.shape[:-2], self.heads * self.head_dim)


class BertResidualOutput(nn.Module):
    """`dense` → add the sub-layer input → LayerNorm (med.py's BertSelfOutput / BertOutput)."""

    def __init__(self, width_in: int, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: TextConfig, *, cross: bool) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg, cross=cross)
        self.output = BertResidualOutput(cfg.hidden, cfg)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # med_config "gelu" = exact erf GELU


class BertLayer(nn.Module):
    """Self-attention → cross-attention to the image tokens → feed-forward (med.py, mode "multimodal")."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg, cross=False)
        self.crossattention = BertAttention(cfg, cross=True)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertResidualOutput(cfg.intermediate, cfg)

    def forward(
        self,
        hidden: torch.Tensor,
        additive_mask: torch.Tensor,
        image_embeds: torch.Tensor,
        image_index: torch.Tensor | None,
    ) -> torch.Tensor:
        own = self.attention.self
        hidden = self.attention.output(own(hidden, own.project_kv(hidden), additive_mask), hidden)
        cross = self.crossattention.self
        k, v = cross.project_kv(image_embeds)  # once per distinct image, then shared by its prompts
        if image_index is not None:
            k, v = k.index_select(0, image_index), v.index_select(0, image_index)
        # ImageReward passes an all-ones image mask; its additive form is exactly zero, so it is omitted.
        hidden = self.crossattention.output(cross(hidden, (k, v), None), hidden)
        return self.output(self.intermediate(hidden), hidden)


class BertEncoder(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.layers))


class TextEncoder(nn.Module):
    """med.py `BertModel(add_pooling_layer=False)` run as ImageReward's `score()` runs it."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_embeds: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Last hidden state [B, L, hidden]. `image_embeds` is [U, T, encoder_width]; row b of the text
        batch attends to image `image_index[b]` (U == B and row b to image b when it is None)."""
        hidden = self.embeddings(input_ids)
        additive = extended_attention_mask(attention_mask, hidden.dtype)
        for layer in self.encoder.layer:
            hidden = layer(hidden, additive, image_embeds, image_index)
        return hidden


def extended_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """med.py's `get_extended_attention_mask` for a [B, L] padding mask: [B,1,1,L], `(1 - m) * -10000`."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * -10000.0


# -- head and the whole model ---------------------------------------------------------------------
class RewardHead(LinearMLPHead):
    """ImageReward's `MLP(768)`: five Linear layers, Dropouts between the first four, no activations."""


class ImageRewardNet(nn.Module):
    """vision (`blip.visual_encoder`) + text (`blip.text_encoder`) + head (`mlp`).

    `forward` returns the raw head output (before ImageReward's z-scoring) as float32 [B]. The head
    always runs in float32, as the official `score()` casts the text feature with `.float()` first.
    """

    def __init__(self, vision: VisionConfig, text: TextConfig) -> None:
        super().__init__()
        self.vision = VisionTransformer(vision)
        self.text = TextEncoder(text)
        self.head = RewardHead(text.hidden)

    @property
    def image_size(self) -> int:
        return self.vision.cfg.image_size

    def text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_embeds: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The CLS token of the last hidden state, float32 [B, hidden] (the head's input)."""
        return self.text(input_ids, attention_mask, image_embeds, image_index)[:, 0, :].float()

    def forward(
        self,
        pixels: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image_embeds = self.vision(pixels)
        return self.head(self.text_features(input_ids, attention_mask, image_embeds, image_index)).squeeze(-1)
