"""`tiny`: a small bidirectional transformer over a synthetic world's token grid, trainable on a CPU.

`world` names the world it draws (`harness.worlds`: `shapes` by default, `blocks`, `blocks-control`),
which sets the grid, the codebook size and the decoder; policies saved before worlds existed are
shapes-world policies. In a world whose objects span blocks of tokens, the image embeddings also pass
through one 3×3 convolution over the grid before the transformer, so each token sees its neighbours
directly: the locality prior a real backbone learns from data. Without it this 2-layer model did not
learn that a fill depends on its own block's anchor in a CPU-sized warm start (measured: the right fill
family got probability 0.06 whether or not the anchor was visible, after 1,200 steps at batch 64).

It has the shape of a discrete-diffusion MLLM in miniature: one sequence `[BOS] prompt words [PAD]... |
image tokens`, full (bidirectional) attention over both parts, learned positions (1-D for the text, row
plus column for the 8×8 image grid), a mask embedding for masked image cells, and a head over the 61
codebook entries at the image positions. Classifier-free guidance uses the empty prompt (`[BOS]` only)
as the unconditional branch, as MMaDA and DiMOO use an empty or null prompt; the supervised warm start
(`trainer.warmstart`) drops prompts at random so that branch is trained.

The text side is a word-level tokenizer whose vocabulary is every word of the shapes world's prompt
space (plus `[PAD]`, `[BOS]`, `[UNK]`); the vocabulary is saved with the policy, so a checkpoint keeps
working if the prompt generator later changes. Default size (d=128, 3 layers) is about 0.6 M
parameters: a rollout of 64 images with 8 steps takes well under a second on one CPU core.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from paintbench.harness import worlds
from paintbench.trainer.policy import MASK, MaskedImagePolicy, PromptBatch, cfg_combine

SPECIALS: tuple[str, ...] = ("[PAD]", "[BOS]", "[UNK]")
PAD, BOS, UNK = 0, 1, 2


def shapes_vocabulary() -> list[str]:
    """Specials plus every word of the shapes world's prompt space, sorted (deterministic)."""
    from paintbench.harness.shapes.prompts import TAGS, all_records

    words: set[str] = set()
    for tag in TAGS:
        for rec in all_records(tag):
            words.update(split_words(rec["prompt"]))
    return [*SPECIALS, *sorted(words)]


def split_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class WordTokenizer:
    """Lower-cased words → ids; `[BOS]` first, right-padded with `[PAD]` to `max_len`, truncated."""

    def __init__(self, vocab: Sequence[str], max_len: int) -> None:
        if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_len = max_len

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.full((len(texts), self.max_len), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [BOS] + [self.index.get(w, UNK) for w in split_words(text)]
            ids = ids[: self.max_len]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


class _Block(nn.Module):
    """Pre-norm transformer block with full attention (key padding only)."""

    def __init__(self, d: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)   # a key bias has zero gradient (softmax shift); Adam would amplify its float noise
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        x = x + self.proj(att.transpose(1, 2).reshape(b, s, d))
        return x + self.ff(self.norm2(x))


class TinyPolicy(MaskedImagePolicy):
    """The CPU policy of the shapes world (see the module docstring)."""

    kind: ClassVar[str] = "tiny"
    SAMPLER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "steps": 8, "cfg_scale": 1.0, "temperature": 1.0, "temperature_mode": "compound", "sampler": "maskgit",
    }

    def __init__(
        self,
        *,
        vocab: Sequence[str] | None = None,
        world: str = "shapes",
        grid: int | None = None,
        patch: int | None = None,
        codebook_size: int | None = None,
        d_model: int = 128,
        n_layers: int = 3,
        n_heads: int = 4,
        d_ff: int = 256,
        max_text_len: int = 16,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.world = worlds.get(world)
        grid = grid or self.world.grid
        patch = patch or self.world.patch
        codebook_size = codebook_size or self.world.codebook_size
        if codebook_size != self.world.codebook_size or (world != "shapes" and (grid, patch) != (self.world.grid, self.world.patch)):
            raise ValueError(f"world {world!r} has a {self.world.grid}x{self.world.grid} grid of {self.world.patch}-px "
                             f"patches and {self.world.codebook_size} codes, got grid {grid}, patch {patch}, "
                             f"codebook_size {codebook_size}")
        self.vocab = list(vocab) if vocab is not None else shapes_vocabulary()
        self.tokenizer = WordTokenizer(self.vocab, max_text_len)
        self.grid = (grid, grid)
        self.patch = patch
        self.image_size = (grid * patch, grid * patch)
        self.codebook_size = codebook_size
        self._cfg = {"world": world, "grid": grid, "patch": patch, "codebook_size": codebook_size, "d_model": d_model,
                     "n_layers": n_layers, "n_heads": n_heads, "d_ff": d_ff, "max_text_len": max_text_len,
                     "init_seed": init_seed}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.text_emb = nn.Embedding(len(self.vocab), d_model)
            self.text_pos = nn.Parameter(torch.randn(max_text_len, d_model) * 0.02)
            self.image_emb = nn.Embedding(codebook_size + 1, d_model)     # last row: the mask token
            self.row_pos = nn.Parameter(torch.randn(grid, d_model) * 0.02)
            self.col_pos = nn.Parameter(torch.randn(grid, d_model) * 0.02)
            self.local = nn.Conv2d(d_model, d_model, 3, padding=1) if self.world.block > 1 else None
            self.blocks = nn.ModuleList(_Block(d_model, n_heads, d_ff) for _ in range(n_layers))
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, codebook_size)
            for emb in (self.text_emb, self.image_emb):
                nn.init.normal_(emb.weight, std=0.02)
            nn.init.normal_(self.head.weight, std=0.02 / math.sqrt(n_layers))
            nn.init.zeros_(self.head.bias)

    def config(self) -> dict[str, Any]:
        return {**self._cfg, "vocab": self.vocab}

    # -- the contract -------------------------------------------------------------------------------
    def encode_prompts(self, texts: Sequence[str]) -> PromptBatch:
        return PromptBatch(list(texts), {"ids": self.tokenizer.encode(texts).to(self.device)})

    def _unconditional(self, rows: int) -> torch.Tensor:
        ids = torch.full((rows, self.tokenizer.max_len), PAD, dtype=torch.long, device=self.device)
        ids[:, 0] = BOS
        return ids

    def forward(self, text_ids: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
        """Logits [B, N, V] for text ids [B, L] and a canvas [B, N] (MASK = -1)."""
        n = canvas.shape[1]
        g_rows, g_cols = self.grid
        if n != g_rows * g_cols:
            raise ValueError(f"canvas has {n} tokens, the grid has {g_rows * g_cols}")
        img_ids = torch.where(canvas == MASK, torch.full_like(canvas, self.codebook_size), canvas)
        pos = (self.row_pos[:, None, :] + self.col_pos[None, :, :]).reshape(n, -1)
        img = self.image_emb(img_ids) + pos
        if self.local is not None:  # neighbours' embeddings, mixed by one 3×3 convolution over the grid
            grid = img.view(-1, g_rows, g_cols, img.shape[-1]).permute(0, 3, 1, 2)
            img = img + self.local(grid).permute(0, 2, 3, 1).reshape(img.shape)
        x = torch.cat([self.text_emb(text_ids) + self.text_pos[: text_ids.shape[1]], img], dim=1)
        keep = torch.cat([text_ids != PAD, torch.ones_like(canvas, dtype=torch.bool)], dim=1)
        for block in self.blocks:
            x = block(x, keep)
        return self.head(self.norm(x[:, text_ids.shape[1]:]))

    def image_logits(self, prompts: PromptBatch, canvas: torch.Tensor, *, cfg_scale: float = 0.0) -> torch.Tensor:
        ids = prompts.tensors["ids"]
        if len(ids) != len(canvas):
            raise ValueError(f"{len(ids)} prompts for {len(canvas)} canvases")
        if not cfg_scale:
            return self(ids, canvas)
        both = self(torch.cat([ids, self._unconditional(len(ids))]), torch.cat([canvas, canvas]))
        cond, uncond = both.chunk(2)
        return cfg_combine(cond, uncond, cfg_scale)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        g_rows, g_cols = self.grid
        grids = codes.reshape(-1, g_rows, g_cols)
        if self.world.name == "shapes":
            from paintbench.harness.shapes.render import render

            return render(grids, patch=self.patch)  # the shapes world renders at any patch size
        return self.world.render(grids)
