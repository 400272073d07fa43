"""The blocks world's tokens and their 16-px patches, and the renderer (one gather, like the shapes world).

Token families (V = 4 + 6·4 + 60·4 = 268):

- `blank(v)`, v < 4: plain background; the bits of v set corner pixels (the variant marks) to a darker grey;
- `anchor(s, v)`: shape s's glyph in dark ink (the object's class, no colour), with variant marks;
- `fill(s, c, v)`: shape s's glyph in colour c, with variant marks.

Variant marks sit in the 1-px margin the glyphs never touch, so every token has its own patch and the
detector can read tokens back from pixels exactly. Geometry: an 8×8 token grid, 2×2 tokens per slot
(4×4 slots); a slot's anchor is its top-left token, the other three are its fills.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from paintbench.harness.shapes.codebook import (
    BACKGROUND_RGB,
    COLOURS,
    PALETTE,
    SHAPES,
    glyph_masks,
    margin_for,
)

PATCH = 16
GRID = 8
BLOCK = 2
SLOTS = GRID // BLOCK
VARIANTS = 4
INK_RGB = (40, 40, 40)
MARK_RGB = (100, 100, 100)

NUM_BLANK = VARIANTS
NUM_ANCHOR = len(SHAPES) * VARIANTS
NUM_FILL = len(SHAPES) * len(COLOURS) * VARIANTS
NUM_TOKENS = NUM_BLANK + NUM_ANCHOR + NUM_FILL


def blank(v: int = 0) -> int:
    return _check_variant(v)


def anchor(shape: str, v: int = 0) -> int:
    return NUM_BLANK + SHAPES.index(shape) * VARIANTS + _check_variant(v)


def fill(shape: str, colour: str, v: int = 0) -> int:
    return NUM_BLANK + NUM_ANCHOR + (SHAPES.index(shape) * len(COLOURS) + COLOURS.index(colour)) * VARIANTS + _check_variant(v)


def _check_variant(v: int) -> int:
    if not 0 <= v < VARIANTS:
        raise ValueError(f"variant {v} outside 0..{VARIANTS - 1}")
    return int(v)


@dataclass(frozen=True)
class TokenInfo:
    """What a token means: `kind` ("blank" | "anchor" | "fill"), shape and colour where it has them."""

    kind: str
    shape: str | None
    colour: str | None
    variant: int


def info(token: int) -> TokenInfo:
    t = int(token)
    if not 0 <= t < NUM_TOKENS:
        raise ValueError(f"token {t} outside the blocks codebook [0, {NUM_TOKENS})")
    if t < NUM_BLANK:
        return TokenInfo("blank", None, None, t)
    t -= NUM_BLANK
    if t < NUM_ANCHOR:
        s, v = divmod(t, VARIANTS)
        return TokenInfo("anchor", SHAPES[s], None, v)
    t -= NUM_ANCHOR
    sc, v = divmod(t, VARIANTS)
    s, c = divmod(sc, len(COLOURS))
    return TokenInfo("fill", SHAPES[s], COLOURS[c], v)


@lru_cache(maxsize=1)
def token_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind [V] 0 blank / 1 anchor / 2 fill, shape index [V] (-1 none), colour index [V] (-1 none))."""
    kinds, shapes, colours = (np.full(NUM_TOKENS, -1, dtype=np.int64) for _ in range(3))
    for t in range(NUM_TOKENS):
        i = info(t)
        kinds[t] = ("blank", "anchor", "fill").index(i.kind)
        shapes[t] = SHAPES.index(i.shape) if i.shape else -1
        colours[t] = COLOURS.index(i.colour) if i.colour else -1
    for a in (kinds, shapes, colours):
        a.setflags(write=False)
    return kinds, shapes, colours


@lru_cache(maxsize=1)
def patches() -> np.ndarray:
    """uint8 [V, 3, P, P]: every token's patch (all distinct; checked)."""
    m = margin_for(PATCH)
    glyphs = np.zeros((len(SHAPES), PATCH, PATCH), dtype=bool)
    glyphs[:, m:PATCH - m, m:PATCH - m] = glyph_masks(PATCH - 2 * m)
    corners = [(0, 0), (0, PATCH - 1), (PATCH - 1, 0), (PATCH - 1, PATCH - 1)]
    out = np.empty((NUM_TOKENS, 3, PATCH, PATCH), dtype=np.uint8)
    out[:] = np.asarray(BACKGROUND_RGB, dtype=np.uint8)[:, None, None]
    for t in range(NUM_TOKENS):
        i = info(t)
        if i.kind != "blank":
            rgb = INK_RGB if i.kind == "anchor" else PALETTE[i.colour]  # type: ignore[index]
            mask = glyphs[SHAPES.index(i.shape)]  # type: ignore[arg-type]
            out[t][:, mask] = np.asarray(rgb, dtype=np.uint8)[:, None]
        for bit, (y, x) in enumerate(corners):
            if i.variant >> bit & 1:
                out[t][:, y, x] = MARK_RGB
    if len({p.tobytes() for p in out}) != NUM_TOKENS:
        raise AssertionError("two blocks tokens share a patch")
    out.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def _table_on(device: torch.device) -> torch.Tensor:
    p = patches()
    return torch.from_numpy(p.reshape(len(p), -1).copy()).to(device)


def render(tokens: torch.Tensor) -> torch.Tensor:
    """uint8 images [..., 3, 8·16, 8·16] from token grids [..., 8, 8] (or flat [..., 64])."""
    t = torch.as_tensor(tokens)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"tokens must be an integer tensor, got {t.dtype}")
    if t.shape[-1] == GRID * GRID and (t.dim() == 1 or t.shape[-2] != GRID):
        t = t.reshape(*t.shape[:-1], GRID, GRID)
    if t.dim() < 2 or tuple(t.shape[-2:]) != (GRID, GRID):
        raise ValueError(f"tokens must be [..., {GRID}, {GRID}], got {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= NUM_TOKENS):
        raise ValueError(f"token ids must lie in [0, {NUM_TOKENS}), got [{int(t.min())}, {int(t.max())}]")
    *lead, h, w = t.shape
    cells = _table_on(t.device).index_select(0, t.reshape(-1).long()).view(*lead, h, w, 3, PATCH, PATCH)
    n = len(lead)
    return cells.permute(*range(n), n + 2, n, n + 3, n + 1, n + 4).reshape(*lead, 3, h * PATCH, w * PATCH)


def read_tokens(images: np.ndarray) -> np.ndarray:
    """Token grids [B, 8, 8] read back from uint8 images [B, 3, 128, 128] by exact patch lookup; a cell
    whose pixels are no token's patch (an edited or resampled image) reads as -1."""
    b, c, h, w = images.shape
    if (c, h, w) != (3, GRID * PATCH, GRID * PATCH):
        raise ValueError(f"blocks images are [B, 3, {GRID * PATCH}, {GRID * PATCH}], got {tuple(images.shape)}")
    cells = images.reshape(b, 3, GRID, PATCH, GRID, PATCH).transpose(0, 2, 4, 1, 3, 5).reshape(b * GRID * GRID, -1)
    lookup = _lookup()
    out = np.array([lookup.get(row.tobytes(), -1) for row in np.ascontiguousarray(cells)], dtype=np.int64)
    return out.reshape(b, GRID, GRID)


@lru_cache(maxsize=1)
def _lookup() -> dict[bytes, int]:
    p = patches()
    return {p[t].tobytes(): t for t in range(NUM_TOKENS)}


def anchor_positions() -> np.ndarray:
    """bool [64]: the anchor (top-left) token of every slot."""
    g = np.zeros((GRID, GRID), dtype=bool)
    g[::BLOCK, ::BLOCK] = True
    return g.reshape(-1)


def slot_tokens(slot: int) -> list[int]:
    """Flat token positions of a slot: [anchor, fill, fill, fill] in raster order."""
    r, c = divmod(slot, SLOTS)
    top, left = r * BLOCK, c * BLOCK
    return [(top + dy) * GRID + left + dx for dy in range(BLOCK) for dx in range(BLOCK)]
