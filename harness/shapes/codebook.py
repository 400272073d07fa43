"""The shapes world's vocabulary: shape classes, GenEval's ten colours, and the codebook of patches.

An image of this world is an H×W grid of tokens (8×8 by default); each token is one P×P patch
(16×16 px by default, so images are 128×128). Token 0 is the plain background; every other token
is one (shape, colour) glyph, so the codebook has 1 + 6×10 = 61 codes - small enough for a tiny
masked-token policy to learn on a CPU, large enough that a GenEval-style prompt has one right answer
per cell and many wrong ones.

Design choices, and why:

- **One object per cell.** Objects never span cells, so every object is exactly one token: the
  structure of an image (how many objects, where, which class and colour) *is* its token grid, and a
  policy's early, layout-defining tokens are exactly the ones a GenEval prompt checks.
- **A background margin inside every cell.** Each glyph is drawn inside the cell's inner
  (P-2m)×(P-2m) box (m = `margin`, 1 px at P=16), so glyphs in neighbouring cells are at least 2 px
  apart and never touch, not even diagonally. Connected components of non-background pixels are
  therefore exactly the placed objects, for any token grid a policy can produce, including
  same-colour neighbours.
- **Every glyph fills its inner box.** Each glyph's tight bounding box is the whole inner box (the
  builder checks it), so every object's box is its cell shrunk by the margin: the box centre is the
  cell centre and all widths are equal. GenEval's position rule then depends only on cell offsets,
  which lets `layouts` place "A left of B" exactly.
- **Analytic shapes, rasterised at pixel centres.** Glyphs are defined on [-1,1]² and sampled at
  pixel centres, so any patch size >= 8 gives a valid codebook; the masks are binary (no
  anti-aliasing), so rendering is exact and detection can match masks bit for bit.
- **Colours** are fixed, saturated sRGB values for GenEval's ten colour names, all far (>= 80 in
  some channel) from the background grey, so a foreground test with a generous tolerance survives
  mild resampling or compression.

Shape names follow GenEval's prompt conventions: no name starts with a vowel (article "a") and the
plurals come out right with its rule ("crosses", "circles").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
"""The shape classes, in token order. These are the GenEval class names of this world."""

COLOURS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)
"""GenEval's ten colour names, in GenEval's order."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 220, 20),
    "green": (30, 160, 60),
    "blue": (30, 80, 220),
    "purple": (130, 40, 170),
    "pink": (255, 120, 200),
    "brown": (125, 75, 25),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}
"""Fixed sRGB value of each colour name."""

BACKGROUND_RGB: tuple[int, int, int] = (128, 128, 128)
"""The plain background: a neutral grey, distinct from every palette colour."""

BACKGROUND = 0
"""Token id of the empty cell."""

GRID = 8
"""Default token grid side (8×8 tokens)."""

PATCH = 16
"""Default patch side in pixels (16 px → 128×128 images)."""

NUM_TOKENS = 1 + len(SHAPES) * len(COLOURS)
"""Codebook size: background + one glyph per (shape, colour)."""


def token_of(shape: str, colour: str) -> int:
    """Token id of the glyph `colour` `shape`; `ValueError` on names outside `SHAPES` / `COLOURS`."""
    try:
        s, c = SHAPES.index(shape), COLOURS.index(colour)
    except ValueError:
        raise ValueError(f"unknown glyph {colour!r} {shape!r}; shapes {SHAPES}, colours {COLOURS}") from None
    return 1 + s * len(COLOURS) + c


def glyph_of(token: int) -> tuple[str, str] | None:
    """(shape, colour) of a token, or None for the background."""
    token = int(token)
    if not 0 <= token < NUM_TOKENS:
        raise ValueError(f"token {token} outside the codebook [0, {NUM_TOKENS})")
    if token == BACKGROUND:
        return None
    s, c = divmod(token - 1, len(COLOURS))
    return SHAPES[s], COLOURS[c]


def margin_for(patch: int) -> int:
    """Background margin (px) kept on each side of a glyph inside its cell: 1 px per 16 px of patch."""
    return max(1, patch // 16)


# -- analytic shapes on [-1, 1]², y pointing down ----------------------------------------------------
def _star_polygon() -> np.ndarray:
    """A five-pointed star (outer/inner radius 1 : 0.45), stretched to fill [-1, 1]²."""
    angles = -math.pi / 2 + np.arange(10) * math.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return (pts - lo) / (hi - lo) * 2.0 - 1.0


def _inside_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over points."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % n]
        crosses = (y0 > v) != (y1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, half_pixel: float) -> np.ndarray:
    """Binary mask of `shape` at pixel centres (u, v); `half_pixel` widens sharp tips to the border."""
    e = half_pixel
    if shape == "circle":
        return u * u + v * v <= (1.0 + e) ** 2
    if shape == "square":
        return np.ones(u.shape, dtype=bool)
    if shape == "triangle":  # apex at the top centre, base along the bottom
        return np.abs(u) <= (v + 1.0) / 2.0 + e
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0 + e
    if shape == "cross":  # a plus sign with arms 30% of the width
        return (np.abs(u) <= 0.3) | (np.abs(v) <= 0.3)
    if shape == "star":
        # Scale up a little so the sharp tips reach the pixel centres on the border.
        return _inside_polygon(u, v, _star_polygon() * (1.0 + 2.5 * e))
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=64)
def glyph_masks(inner: int) -> np.ndarray:
    """bool [len(SHAPES), inner, inner]: every shape rasterised to fill an inner×inner box exactly.

    The raster depends only on `inner`, so the detector can build exact templates for any patch size.
    Checks that each glyph touches all four sides of its box and that no two glyphs coincide.
    """
    if inner < 6:
        raise ValueError(f"glyphs need an inner box of at least 6 px, got {inner}")
    centres = (np.arange(inner) + 0.5) / inner * 2.0 - 1.0
    v, u = np.meshgrid(centres, centres, indexing="ij")
    out = np.zeros((len(SHAPES), inner, inner), dtype=bool)
    for s, shape in enumerate(SHAPES):
        glyph = _shape_mask(shape, u, v, 1.0 / inner)
        rows, cols = np.flatnonzero(glyph.any(axis=1)), np.flatnonzero(glyph.any(axis=0))
        if rows[0] != 0 or cols[0] != 0 or rows[-1] != inner - 1 or cols[-1] != inner - 1:
            raise AssertionError(f"{shape} glyph does not fill its {inner}x{inner} box")
        out[s] = glyph
    if len({g.tobytes() for g in out}) != len(SHAPES):
        raise AssertionError(f"two shape glyphs coincide at inner size {inner}")
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Codebook:
    """The patch images of one patch size.

    `patches` is uint8 [V, 3, P, P] (V = `NUM_TOKENS`); `masks` is bool [len(SHAPES), P, P], the glyph
    of each shape inside its cell, margin included.
    """

    patch: int
    margin: int
    patches: np.ndarray
    masks: np.ndarray

    @property
    def inner(self) -> int:
        return self.patch - 2 * self.margin


@lru_cache(maxsize=8)
def codebook(patch: int = PATCH) -> Codebook:
    """Build (once per patch size) the codebook of `patch`-px cells."""
    if patch < 8:
        raise ValueError(f"patch size must be >= 8 px to draw distinguishable glyphs, got {patch}")
    m = margin_for(patch)
    masks = np.zeros((len(SHAPES), patch, patch), dtype=bool)
    masks[:, m:patch - m, m:patch - m] = glyph_masks(patch - 2 * m)
    patches = np.empty((NUM_TOKENS, 3, patch, patch), dtype=np.uint8)
    patches[:] = np.asarray(BACKGROUND_RGB, dtype=np.uint8)[:, None, None]
    for s, shape in enumerate(SHAPES):
        for colour in COLOURS:
            t = token_of(shape, colour)
            rgb = np.asarray(PALETTE[colour], dtype=np.uint8)[:, None, None]
            patches[t] = np.where(masks[s][None], rgb, patches[t])
    patches.setflags(write=False)
    masks.setflags(write=False)
    return Codebook(patch=patch, margin=m, patches=patches, masks=masks)
