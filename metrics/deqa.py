"""DeQA-Score (zhiyuanyou/DeQA-Score): mPLUG-Owl2 fine-tuned to rate image quality, score in 1..5.

What the official `src/evaluate/scorer.py::Scorer` computes, and what this provider reproduces:

- image: `convert("RGB")`, `expand2square` onto the CLIP mean colour (122, 116, 104) with the image
  centred (`//2`), then the CLIP image processor at 448 with the **PIL** backend;
- the mPLUG-Owl2 vision tower (a ViT-L/14 with pre- and post-LayerNorm, QuickGELU) and the visual
  abstractor (64 learned queries cross-attending, with fixed sin-cos positions, to the queries and the
  patch states; SwiGLU MLP; then `visual_fc` and an end-of-vision embedding) → 65 image embeddings;
- the fixed prompt with `<|image|>` (id -200) replaced by those 65 embeddings, through the
  modality-adaptive LLaMA-2: K/V projections and both RMSNorms have one weight set for text tokens and
  one for image tokens (`modality_indicators`); eager attention with a causal mask;
- score: softmax over the last-position logits of `excellent, good, fair, poor, bad` · [5, 4, 3, 2, 1],
  in the model's dtype as the official code.

Two official prompts exist, offered as `prompt=` and recorded in every result's provenance:

- `scorer` (default; the repository's `Scorer`): "USER: How would you rate the quality of this
  image?\\n<|image|>\\nASSISTANT: The quality of the image is";
- `one_align`: "... ASSISTANT: The image of the quality is" — the formatting of the `score()` of Q-Align's
  remote code (`.format(task_, input_, input_, task_)`), which Flow-GRPO's and MaskGRPO's reward servers
  call through DeQA's HF model (said to be inherited from it; DeQA's own remote code was not readable
  when this was written).

The paper's evaluation script `iqa_eval.py` has a third spelling (" ASSISTANT" after the image on the
same line) whose ids transformers 5's LLaMA tokenizer gives differently from the official 4.36 (one
token fewer), so it is not offered. Official dtype: fp16 (the default on a GPU); float32 on the CPU.

Parity: `tests/test_deqa.py` against the official code's outputs on a reduced synthetic mPLUG-Owl2
(`../shared/fixtures/deqa`). The modules are implemented here under the official key names, since
mPLUG-Owl2 is not in transformers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from paintbench.metrics import weights as wts
from paintbench.metrics.base import Device, DType, Metadata, PathArg, Prompts, Provider, Scores, WeightsArg
from paintbench.metrics.images import ImageBatch
from paintbench.metrics.remote_code import checked_folder

# What this metric is and which files it reads, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [{
    "name": "deqa", "provider": "DeQAProvider", "tiny_writer": "write_tiny_weights",
    "version": "deqa-score/1", "higher_is_better": True, "nominal_range": (1.0, 5.0), "hard_range": (1.0, 5.0),
    "summary": "DeQA-Score (mPLUG-Owl2): expected quality level 1-5 from the level-word logits",
    "weights": ("deqa-score-mix3",), "needs_prompt": False, "display": (1.0, 3),
}]
WEIGHTS = [
    {"name": "deqa-score-mix3", "filename": "DeQA-Score-Mix3", "description": "DeQA-Score-Mix3 model folder",
     "hf_repo": "zhiyuanyou/DeQA-Score-Mix3", "files": ("config.json", "tokenizer.model", "preprocessor_config.json")},
]

WEIGHT = "deqa-score-mix3"
IMAGE_TOKEN_INDEX = -200
IMAGE_TOKEN = "<|image|>"
LEVELS = ("excellent", "good", "fair", "poor", "bad")
LEVEL_VALUES = (5.0, 4.0, 3.0, 2.0, 1.0)
PROMPTS = {
    "scorer": "USER: How would you rate the quality of this image?\n<|image|>\nASSISTANT: The quality of the image is",
    "one_align": "USER: How would you rate the quality of this image?\n<|image|>\nASSISTANT: The image of the quality is",
}
DEFAULT_PROMPT = "scorer"
VISION_DEFAULTS = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "image_size": 448, "patch_size": 14, "layer_norm_eps": 1e-6}
ABSTRACTOR_DEFAULTS = {"num_learnable_queries": 64, "hidden_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 16,
                       "intermediate_size": 2816, "layer_norm_eps": 1e-6, "encoder_hidden_size": 1024, "grid_size": 32}


# -- pure rules ---------------------------------------------------------------------------------------
def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """The official padding to a square, the image centred (offset `(long - short) // 2`)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, (0, (width - height) // 2) if width > height else ((height - width) // 2, 0))
    return result


def tokenizer_image_token(prompt: str, tokenizer: Any) -> list[int]:
    """mPLUG-Owl2's `tokenizer_image_token`: the text around `<|image|>` tokenized chunk by chunk, the first
    chunk's BOS kept and later chunks' BOS dropped, -200 where the image goes."""
    chunks = [tokenizer(c).input_ids if c else [] for c in prompt.split(IMAGE_TOKEN)]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    omega = np.arange(dim // 2, dtype=np.float32) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", positions.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid: int) -> np.ndarray:
    """The abstractor's fixed key positions: a class slot of zeros, then 2-D sin-cos over the grid."""
    g = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)), axis=0)
    g = g.reshape(2, 1, grid, grid)
    emb = np.concatenate([sincos_1d(dim // 2, g[0]), sincos_1d(dim // 2, g[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0)


# -- the vision tower and the abstractor (official module layout) ------------------------------------
class _VisionEmbeddings(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        width, patch = c["hidden_size"], c["patch_size"]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.position_embedding = nn.Parameter(torch.zeros(1, (c["image_size"] // patch) ** 2 + 1, width))
        self.pre_layernorm = nn.LayerNorm(width, eps=c["layer_norm_eps"])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, -1).to(x.dtype), x], dim=1)
        x = x + self.position_embedding[:, : x.size(1)].to(x.dtype)
        return self.pre_layernorm(x)


class _VisionAttention(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        self.heads = c["num_attention_heads"]
        self.scale = (c["hidden_size"] // self.heads) ** -0.5
        self.query_key_value = nn.Linear(c["hidden_size"], 3 * c["hidden_size"])
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.query_key_value(x).reshape(b, s, self.heads, 3, d // self.heads).permute(3, 0, 2, 1, 4)
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        return self.dense(torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(b, s, d))


class _VisionMlp(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c["hidden_size"], c["intermediate_size"]), nn.Linear(c["intermediate_size"], c["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        return self.fc2(x * torch.sigmoid(1.702 * x))          # QuickGELU


class _VisionLayer(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        self.self_attn, self.mlp = _VisionAttention(c), _VisionMlp(c)
        self.input_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.post_attention_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.self_attn(self.input_layernorm(x)) + x
        return self.mlp(self.post_attention_layernorm(x)) + x


class _Layers(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class VisionModel(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        self.embeddings = _VisionEmbeddings(c)
        self.encoder = _Layers([_VisionLayer(c) for _ in range(c["num_hidden_layers"])])
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


class _AbstractorAttention(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        d = c["hidden_size"]
        self.heads, self.head_dim = c["num_attention_heads"], d // c["num_attention_heads"]
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(c["encoder_hidden_size"], d)
        self.value = nn.Linear(c["encoder_hidden_size"], d)
        queries = np.arange(c["num_learnable_queries"], dtype=np.float32)
        self.register_buffer("q_pos_embed", torch.from_numpy(sincos_1d(d, queries)).float())
        self.register_buffer("k_pos_embed", torch.from_numpy(sincos_2d(d, c["grid_size"])).float())

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        pos = torch.cat([self.q_pos_embed, self.k_pos_embed], dim=0).unsqueeze(0).to(queries.dtype)
        k = self._split(self.key(keys + pos))
        v = self._split(self.value(keys))
        q = self._split(self.query(queries + self.q_pos_embed.unsqueeze(0).to(queries.dtype)))
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim), dim=-1)
        out = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return out.view(*out.shape[:-2], self.heads * self.head_dim)


class _AbstractorMlp(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        d, h = c["hidden_size"], c["intermediate_size"]
        self.w1, self.w2, self.w3 = nn.Linear(d, h), nn.Linear(h, d), nn.Linear(d, h)
        self.ffn_ln = nn.LayerNorm(h, eps=c["layer_norm_eps"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.ffn_ln(F.silu(self.w1(x)) * self.w3(x)))


class _AbstractorOutput(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        self.out_proj = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.norm2 = nn.LayerNorm(c["hidden_size"])
        self.mlp = _AbstractorMlp(c)

    def forward(self, attended: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        x = queries + self.out_proj(attended)
        return x + self.mlp(self.norm2(x))


class _CrossAttention(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        self.attention, self.output = _AbstractorAttention(c), _AbstractorOutput(c)
        self.norm1, self.normk = nn.LayerNorm(c["hidden_size"]), nn.LayerNorm(c["hidden_size"])

    def forward(self, queries: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        queries = self.norm1(queries)
        keys = torch.cat([queries, self.normk(patches)], dim=1)
        return self.output(self.attention(queries, keys), queries)


class _AbstractorLayer(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        self.crossattention = _CrossAttention(c)


class VisualAbstractor(nn.Module):
    def __init__(self, c: Mapping[str, Any], language_hidden: int) -> None:
        super().__init__()
        self.encoder = _Layers([_AbstractorLayer(c) for _ in range(c["num_hidden_layers"])])
        self.visual_fc = nn.Linear(c["hidden_size"], language_hidden)
        self.query_embeds = nn.Parameter(torch.zeros(1, c["num_learnable_queries"], c["hidden_size"]))
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, language_hidden))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.query_embeds.repeat(patches.shape[0], 1, 1)
        for layer in self.encoder.layers:
            x = layer.crossattention(x, patches)
        x = self.visual_fc(x)
        return torch.cat([x, self.vit_eos.repeat(x.shape[0], 1, 1)], dim=1)


# -- the modality-adaptive LLaMA-2 ----------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(size)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Multiway(nn.Module):
    """One module per modality (0 text, 1 image), applied to its tokens as the official `MultiwayNetwork`."""

    def __init__(self, make) -> None:
        super().__init__()
        self.multiway = nn.ModuleList([make(), make()])

    def forward(self, x: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for index, module in enumerate(self.multiway):
            where = modality.eq(index).nonzero(as_tuple=True)
            part = x[where].unsqueeze(1).contiguous()
            if part.numel():
                out[where] = module(part).squeeze(1)
        return out.contiguous()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Attention(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        d, self.heads = c["hidden_size"], c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.head_dim = d // self.heads
        bias = bool(c.get("attention_bias", False))
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj = Multiway(lambda: nn.Linear(d, self.kv_heads * self.head_dim, bias=bias))
        self.v_proj = Multiway(lambda: nn.Linear(d, self.kv_heads * self.head_dim, bias=bias))
        self.o_proj = nn.Linear(d, d, bias=bias)

    def forward(self, x, modality, mask, cos, sin):
        b, s, d = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x, modality).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x, modality).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        groups = self.heads // self.kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        weights = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim) + mask
        weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.o_proj(torch.matmul(weights, v).transpose(1, 2).reshape(b, s, d))


class _Mlp(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        d, h = c["hidden_size"], c["intermediate_size"]
        self.gate_proj, self.up_proj = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False)
        self.down_proj = nn.Linear(h, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _DecoderLayer(nn.Module):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        self.self_attn, self.mlp = _Attention(c), _Mlp(c)
        self.input_layernorm = Multiway(lambda: RMSNorm(c["hidden_size"], c["rms_norm_eps"]))
        self.post_attention_layernorm = Multiway(lambda: RMSNorm(c["hidden_size"], c["rms_norm_eps"]))

    def forward(self, x, modality, mask, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x, modality), modality, mask, cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x, modality))


class MPLUGOwl2Model(nn.Module):
    """`model.*` of the official checkpoint: embeddings, decoder layers, norm, vision tower, abstractor."""

    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__()
        visual = c.get("visual_config") or {}
        vision = {**VISION_DEFAULTS, **{k: v for k, v in (visual.get("visual_model") or {}).items() if k in VISION_DEFAULTS}}
        abstractor = {**ABSTRACTOR_DEFAULTS,
                      **{k: v for k, v in (visual.get("visual_abstractor") or {}).items() if k in ABSTRACTOR_DEFAULTS and v is not None}}
        self.config = dict(c)
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(_DecoderLayer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.vision_model = VisionModel(vision)
        self.visual_abstractor = VisualAbstractor(abstractor, c["hidden_size"])

    def rotary(self, length: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """LLaMA's rotary tables as the official load leaves them: transformers 4.36 computes them in float32
        and stores them in the default dtype at construction, which its fp16 `from_pretrained` sets to
        float16, so the official tables carry fp16 rounding even when the model then runs in float32."""
        dim = self.config["hidden_size"] // self.config["num_attention_heads"]
        base = float(self.config.get("rope_theta", 10000.0))
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=device).float() / dim))
        t = torch.arange(length, device=device, dtype=inv_freq.dtype)
        emb = torch.cat([torch.outer(t, inv_freq)] * 2, dim=-1)
        cos, sin = emb.cos().to(torch.float16), emb.sin().to(torch.float16)
        return cos.to(dtype)[None, None], sin.to(dtype)[None, None]

    def forward(self, embeds: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        s = embeds.shape[1]
        position = torch.arange(s, device=embeds.device)
        mask = torch.full((s, s), torch.finfo(embeds.dtype).min, device=embeds.device)   # 4.36's additive causal mask
        mask = mask.masked_fill(position[:, None] >= position, 0.0).to(embeds.dtype)[None, None]
        cos, sin = self.rotary(s, embeds.dtype, embeds.device)
        x = embeds
        for layer in self.layers:
            x = layer(x, modality, mask, cos, sin)
        return self.norm(x)


class DeQAModel(nn.Module):
    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        if config.get("rope_scaling"):
            raise ValueError(f"deqa: rope_scaling {config['rope_scaling']} is not implemented")
        self.model = MPLUGOwl2Model(config)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)

    def last_logits(self, ids: Sequence[int], pixels: torch.Tensor) -> torch.Tensor:
        """Logits at the last position for the prompt `ids` (-200 = the image) and a batch of images."""
        image = self.model.visual_abstractor(self.model.vision_model(pixels))          # [B, 65, H]
        at = ids.index(IMAGE_TOKEN_INDEX)
        device = pixels.device
        before = self.model.embed_tokens(torch.tensor(ids[:at], device=device))
        after = self.model.embed_tokens(torch.tensor(ids[at + 1:], device=device))
        b = pixels.shape[0]
        embeds = torch.cat([before.expand(b, -1, -1), image.to(before.dtype), after.expand(b, -1, -1)], dim=1)
        modality = torch.cat([torch.zeros(len(before), dtype=torch.long), torch.ones(image.shape[1], dtype=torch.long),
                              torch.zeros(len(after), dtype=torch.long)]).to(device).expand(b, -1)
        return self.lm_head(self.model(embeds, modality)[:, -1])


def default_dtype(device: Device) -> str:
    """fp16 on a GPU (the official dtype), float32 elsewhere."""
    return "float16" if torch.device(device).type == "cuda" else "float32"


class DeQAProvider(Provider):
    """DeQA-Score of each image (no prompt); `prompt=` "scorer" (default) or "one_align"."""

    name = "deqa"
    needs_prompt = False

    def __init__(self, *, device: Device = "cpu", dtype: DType | None = None, batch_size: int = 8,
                 weights: WeightsArg = None, weights_dir: PathArg = None, prompt: str = DEFAULT_PROMPT) -> None:
        super().__init__(device=device, dtype=dtype or default_dtype(device), batch_size=batch_size)
        from safetensors.torch import load_file
        from transformers import LlamaTokenizer

        from paintbench import files as safe_files
        from paintbench.metrics.memory import require_config_matches_checkpoint, require_fits
        from paintbench.metrics.pickscore import pil_image_processor

        if prompt not in PROMPTS:
            raise ValueError(f"deqa: prompt must be one of {sorted(PROMPTS)}, got {prompt!r}")
        self.prompt = prompt
        self.folder = wts.pick(WEIGHT, weights, weights_dir, primary=WEIGHT)
        files = wts.safetensors_files(self.folder, "DeQA-Score")
        require_fits("deqa", files, self.device, self.dtype)
        # the official slow LlamaTokenizer (legacy=False, as its tokenizer_config.json says)
        self.tokenizer = LlamaTokenizer.from_pretrained(str(checked_folder(self.folder)), local_files_only=True,
                                                        legacy=False, trust_remote_code=False)
        self.image_processor = pil_image_processor(self.folder)
        self.background = tuple(int(x * 255) for x in self.image_processor.image_mean)
        config = json.loads(safe_files.read_text(self.folder / "config.json", "config"))
        require_config_matches_checkpoint(config, files, self.folder / "config.json")
        with torch.device("meta"):
            model = DeQAModel(config)
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        model.load_state_dict(state, strict=True, assign=True)
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.ids = tokenizer_image_token(PROMPTS[prompt], self.tokenizer)
        self.level_ids = [self.tokenizer([w]).input_ids[0][1] for w in LEVELS]

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["weights"] = {WEIGHT: {"path": str(self.folder), "sha256": wts.fingerprint(self.folder)}}
        out["prompt"] = {"variant": self.prompt, "text": PROMPTS[self.prompt]}
        return out

    def pixels(self, images: ImageBatch) -> torch.Tensor:
        pil = images.pil_images()
        square = [expand2square(im.convert("RGB"), self.background) for im in pil]
        return self.image_processor(images=square, return_tensors="pt")["pixel_values"]

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        pixels = self.pixels(images).to(device=self.device, dtype=self.dtype)
        logits = self.model.last_logits(self.ids, pixels)[:, self.level_ids]
        weights = torch.tensor(LEVEL_VALUES, device=self.device).to(logits.dtype)
        values = torch.softmax(logits, -1) @ weights
        return Scores(metric=self.name, values=values.float(),
                      details=[{"score": float(v), "prompt": self.prompt} for v in values.float().cpu().tolist()])




def write_tiny_weights(directory: str | Path, *, seed: int = 0, metric: str = "deqa") -> list[Path]:
    """A tiny `DeQA-Score-Mix3/` folder: an mPLUG-Owl2 `config.json` with a small `visual_config`, a small
    SentencePiece LLaMA-style `tokenizer.model` trained here on the prompts and level words, the CLIP
    processor settings, and a seeded `model.safetensors` under the official key names."""
    import io

    import sentencepiece as spm
    from safetensors.torch import save_file

    folder = Path(directory) / wts.catalog()[WEIGHT].filename
    folder.mkdir(parents=True, exist_ok=True)
    text = [p.replace(IMAGE_TOKEN, " ") for p in PROMPTS.values()] + [" ".join(LEVELS)] * 4
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text * 8), model_writer=model, vocab_size=320,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                   character_coverage=1.0, byte_fallback=True,   # deterministic for a fixed text
                                   minloglevel=2)   # its trainer's ~300 lines of logs said nothing to a user
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None}), encoding="utf-8")
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 448, "do_center_crop": True, "do_normalize": True, "do_resize": True, "resample": 3, "size": 448,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "CLIPImageProcessor"}), encoding="utf-8")
    config = {"architectures": ["MPLUGOwl2LlamaForCausalLM"], "model_type": "mplug_owl2", "attention_bias": False,
              "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 128,
              "max_position_embeddings": 2048, "num_attention_heads": 4, "num_hidden_layers": 1, "num_key_value_heads": 4,
              "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "vocab_size": 320,
              "visual_config": {
                  "visual_model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "image_size": 448, "patch_size": 14, "layer_norm_eps": 1e-6,
                                   "hidden_act": "quick_gelu"},
                  "visual_abstractor": {"num_learnable_queries": 64, "hidden_size": 32, "num_hidden_layers": 1,
                                        "num_attention_heads": 2, "intermediate_size": 64, "layer_norm_eps": 1e-6,
                                        "encoder_hidden_size": 32, "grid_size": 32}}}
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in DeQAModel(config).state_dict().items()}
    with torch.no_grad():
        for k, v in state.items():
            if k.endswith(("query_embeds", "vit_eos", "cls_token", "position_embedding")):
                v.normal_(0.0, 1.0)
    save_file({k: v.half() for k, v in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return [folder]
