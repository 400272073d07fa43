"""The shapes world's detector: exact, weight-free, batched.

It returns the same `Detection` objects as the GenEval detector (`metrics.geneval.Detection`), keyed by
class name, so GenEval's `judge`, Flow-GRPO's `reward` and `summarize` score this world unchanged. The
colour that GenEval asks a CLIP classifier for is read from the pixels at detection time and stored on
the detection (`ShapeDetection.colour`); `colour_of` hands it to the rules.

How it works, and why it is exact on rendered images:

1. Foreground = pixels farther than `tolerance` (max over channels) from the background grey.
2. Connected components (8-connectivity, `scipy.ndimage.label`) of the foreground, for the whole batch
   at once (a 3-D structuring element with no links across the batch axis). Glyphs keep a background
   margin inside their cells (`codebook.margin_for`), so components are exactly the drawn objects,
   whatever the token grid.
3. Shape class: a component whose tight box is k×k is compared pixel for pixel with the k×k glyph
   masks (`codebook.glyph_masks(k)`, the same rasters the renderer drew, for any patch size), all
   components at once. An exact match is a detection with score 1.0.
4. Anything else (not square, or not bit-equal: a resized, blurred or hand-made image) falls back to
   a scale-normalised comparison: the component's mask, resampled (nearest) to a square raster of its
   size, is compared with each glyph by IoU (unless it is exactly a glyph raster upscaled 2×, 3× or
   4× by nearest neighbour, which is recognised as such, score 1); the best shape is reported with score = IoU if
   that is at least `MIN_FALLBACK_IOU`, else the blob is ignored. So off-world blobs get honest, lower scores (below GenEval's 0.9
   counting threshold unless nearly perfect) instead of being silently dropped or trusted. Specks
   smaller than 6 px or with an aspect ratio beyond 4:3 are never objects.

   Limits: the margins that keep components apart are 1 px per 16 px of patch, so lossy JPEG (whose
   ringing bridges the 2 px gap between neighbouring glyphs) or downscaling can merge or erase
   objects; save images of this world losslessly (PNG), as the harness does.
5. Colour: the mean RGB of the component's pixels, nearest palette entry (Euclidean).
6. Box: `(x1, y1, x2, y2)` with exclusive ends, as mmdet's `mask2bbox` gives (`x2 = last column + 1`).

Detections of a class are listed in raster order of each object's first pixel (for rendered grids:
raster order of cells). Full-image masks cost
H×W bytes per object, so `detect_batch` leaves them out unless asked (the rules never read them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from paintbench.harness.shapes.codebook import (
    BACKGROUND_RGB,
    COLOURS,
    NUM_TOKENS,
    PALETTE,
    PATCH,
    SHAPES,
    codebook,
    glyph_masks,
    margin_for,
)
from paintbench.metrics.geneval import Detection

DEFAULT_TOLERANCE = 48
"""Max-channel distance from the background grey above which a pixel is foreground."""

MIN_FALLBACK_IOU = 0.5
"""Lowest template IoU at which an off-world blob still counts as a (low-scoring) detection."""

_CHUNK_PIXELS = 1 << 22  # pixels labelled per scipy call (256 images of 128²): bounds the buffers
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True  # 8-connected within an image, never across images
_PALETTE = np.asarray([PALETTE[c] for c in COLOURS], dtype=np.float64)


@dataclass(eq=False)
class ShapeDetection(Detection):
    """A GenEval `Detection` that also carries what this world's detector read off the pixels."""

    shape: str = ""
    colour: str = ""


Detections = dict[str, list[Detection]]


def colour_of(class_name: str, detection: Detection) -> str:
    """GenEval's colour oracle for this world: the colour read from the detection's pixels."""
    if not isinstance(detection, ShapeDetection):
        raise TypeError(f"colour_of needs a ShapeDetection from harness.shapes.detector, got {type(detection)}")
    return detection.colour


# -- input conversion ---------------------------------------------------------------------------------
def to_uint8_chw(images: Any) -> np.ndarray:
    """Images as one uint8 array [B, 3, H, W].

    Accepts a torch tensor [B,3,H,W] or [3,H,W] (uint8, or float in [0,1]; any device), a NumPy array
    in PIL layout [H,W,3] / [B,H,W,3] (uint8, or float in [0,1]), a PIL image or path, or a sequence of
    PIL images / paths / arrays of one size.
    """
    if isinstance(images, torch.Tensor):
        t = images.detach()
        if t.dim() == 3:
            t = t[None]
        if t.dim() != 4 or t.shape[1] != 3:
            raise ValueError(f"image tensor must be [B,3,H,W] or [3,H,W], got {tuple(images.shape)}")
        if t.dtype != torch.uint8:
            if not t.is_floating_point():
                raise TypeError(f"image tensor must be uint8 or float in [0,1], got {t.dtype}")
            t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return t.cpu().numpy()
    if isinstance(images, np.ndarray):
        a = images
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"image arrays must be [H,W,3] or [B,H,W,3], got {images.shape}")
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.floating):
                raise TypeError(f"image arrays must be uint8 or float in [0,1], got {a.dtype}")
            a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
    if isinstance(images, (Image.Image, str, os.PathLike)):
        images = [images]
    arrays = []
    for item in images:
        if isinstance(item, (str, os.PathLike)):
            with Image.open(item) as im:
                item = im.convert("RGB")
        if isinstance(item, Image.Image):
            item = np.asarray(item.convert("RGB"))
        arrays.append(to_uint8_chw(np.asarray(item))[0])
    if not arrays:
        return np.zeros((0, 3, 1, 1), dtype=np.uint8)
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"images in one batch must share a size, got {sorted(sizes)}")
    return np.stack(arrays)


# -- detection ----------------------------------------------------------------------------------------
def detect(image: Any, *, masks: bool = True, tolerance: int = DEFAULT_TOLERANCE) -> Detections:
    """Detections of one image, per class name (only classes that were found), with masks by default."""
    arr = to_uint8_chw(image)
    if arr.shape[0] != 1:
        raise ValueError(f"detect() takes one image, got a batch of {arr.shape[0]}; use detect_batch")
    return _detect_chunk(arr, masks=masks, tolerance=tolerance)[0]


def detect_batch(images: Any, *, masks: bool = False, tolerance: int = DEFAULT_TOLERANCE) -> list[Detections]:
    """Detections of every image of a batch (see `to_uint8_chw` for accepted inputs), in input order."""
    arr = to_uint8_chw(images)
    chunk = max(1, _CHUNK_PIXELS // (arr.shape[2] * arr.shape[3]))
    out: list[Detections] = []
    for start in range(0, arr.shape[0], chunk):
        out.extend(_detect_chunk(arr[start:start + chunk], masks=masks, tolerance=tolerance))
    return out


def foreground(arr: np.ndarray, tolerance: int = DEFAULT_TOLERANCE) -> np.ndarray:
    """bool [B, H, W]: pixels with some channel more than `tolerance` away from the background grey.

    Written as two uint8 comparisons per channel (no widening to int16), the cheapest form NumPy has.
    """
    fg = np.zeros((arr.shape[0], *arr.shape[2:]), dtype=bool)
    for c, level in enumerate(BACKGROUND_RGB):
        lo, hi = level - tolerance, level + tolerance
        if lo > 0:
            fg |= arr[:, c] < lo
        if hi < 255:
            fg |= arr[:, c] > hi
    return fg


def _detect_chunk(arr: np.ndarray, *, masks: bool, tolerance: int) -> list[Detections]:
    b, _, h, w = arr.shape
    labels, n = ndimage.label(foreground(arr, tolerance), structure=_STRUCTURE)
    results: list[Detections] = [{} for _ in range(b)]
    if n == 0:
        return results

    # Per-component statistics in a few vectorised passes over the foreground pixels (no per-object
    # Python): boxes, area and mean colour. Labels are numbered image after image, so a label's image
    # comes from the per-image label maxima.
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx].astype(np.int64) - 1
    last_label = np.maximum.accumulate(labels.reshape(b, -1).max(axis=1))
    img = np.searchsorted(last_label, np.arange(1, n + 1), side="left")
    coord_y, coord_x = _coordinates(h, w)
    pix = idx - img[lab] * (h * w)
    y, x = coord_y[pix], coord_x[pix]
    small = n * max(h, w) <= _CHUNK_PIXELS * 4  # else a swarm of specks (noise, not this world)
    y0, y1, x0, x1 = (_boxes_by_occupancy if small else _boxes_by_sort)(lab, y, x, n, h, w)

    area = np.bincount(lab, minlength=n)
    mean_rgb = np.stack(
        [np.bincount(lab, weights=arr[:, c].ravel()[idx], minlength=n) for c in range(3)], axis=1
    ) / area[:, None]
    colour_idx = ((mean_rgb[:, None, :] - _PALETTE[None]) ** 2).sum(axis=2).argmin(axis=1)

    shape_idx = np.full(n, -1, dtype=np.int64)
    score = np.zeros(n, dtype=np.float64)
    hh, ww = y1 - y0, x1 - x0
    _match_exact(labels, img, y0, x0, hh, ww, shape_idx, score)
    plausible = (np.minimum(hh, ww) >= 6) & (np.maximum(hh, ww) * 3 <= np.minimum(hh, ww) * 4)
    for i in np.flatnonzero((shape_idx < 0) & plausible):
        crop = labels[img[i], y0[i]:y1[i], x0[i]:x1[i]] == i + 1
        shape_idx[i], score[i] = _match_fallback(crop)

    found = np.flatnonzero(shape_idx >= 0)
    columns = (img, x0, y0, x1, y1, score, shape_idx, colour_idx)
    rows_out = zip(found.tolist(), *(c[found].tolist() for c in columns), strict=True)
    for i, bi, bx0, by0, bx1, by1, sc, si, ci in rows_out:
        det = ShapeDetection(
            box=(float(bx0), float(by0), float(bx1), float(by1)),
            score=sc,
            mask=(labels[bi] == i + 1) if masks else None,
            shape=SHAPES[si],
            colour=COLOURS[ci],
        )
        results[bi].setdefault(SHAPES[si], []).append(det)
    return results


def _boxes_by_occupancy(lab: np.ndarray, y: np.ndarray, x: np.ndarray, n: int, h: int, w: int) -> tuple:
    """Tight boxes (y0, y1, x0, x1; exclusive ends) of components 0..n-1 from their pixels, via
    n×h and n×w occupancy tables: a few linear passes, no sort."""
    rows = np.bincount(lab * h + y, minlength=n * h).reshape(n, h) > 0
    cols = np.bincount(lab * w + x, minlength=n * w).reshape(n, w) > 0
    return (rows.argmax(axis=1), h - rows[:, ::-1].argmax(axis=1),
            cols.argmax(axis=1), w - cols[:, ::-1].argmax(axis=1))


def _boxes_by_sort(lab: np.ndarray, y: np.ndarray, x: np.ndarray, n: int, h: int, w: int) -> tuple:
    """The same boxes by sorting pixels by component: for very many components, where the occupancy
    tables would not fit in memory."""
    order = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[order], np.arange(n))
    ys, xs = y[order], x[order]
    return (np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts) + 1,
            np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts) + 1)


@lru_cache(maxsize=8)
def _coordinates(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every flat pixel index of an h×w image: gathering from these is much cheaper
    than integer division of flat indices."""
    grid = np.indices((h, w), dtype=np.int64).reshape(2, -1)
    grid.setflags(write=False)
    return grid[0], grid[1]


def _match_exact(
    labels: np.ndarray,
    img: np.ndarray,
    y0: np.ndarray,
    x0: np.ndarray,
    hh: np.ndarray,
    ww: np.ndarray,
    shape_idx: np.ndarray,
    score: np.ndarray,
) -> None:
    """Bit-exact template match of all k×k components at once (one gather per box size k)."""
    square = (hh == ww) & (hh >= 6)
    for k in np.unique(hh[square]):
        sel = np.flatnonzero(square & (hh == k))
        ar = np.arange(k)
        crops = labels[img[sel, None, None], y0[sel, None, None] + ar[:, None], x0[sel, None, None] + ar[None, :]]
        crops = crops == (sel + 1)[:, None, None]                       # this component's own pixels
        templates = glyph_masks(int(k))
        equal = (crops[:, None] == templates[None]).all(axis=(2, 3))  # [n_sel, n_shapes]
        hit = equal.any(axis=1)
        shape_idx[sel[hit]] = equal[hit].argmax(axis=1)
        score[sel[hit]] = 1.0


def _match_fallback(crop: np.ndarray) -> tuple[int, float]:
    """Best glyph for a component that is not a bit-exact glyph.

    First: is the crop, pixel for pixel, a glyph raster of side k/2, k/3 or k/4 (k = mean side)
    upscaled by nearest neighbour? Then it is that glyph, score 1 (an integer-upscaled render).
    Otherwise: IoU of the crop, resampled (nearest, at cell centres) to k×k, with each k×k glyph;
    the best, if at least `MIN_FALLBACK_IOU`, with score = IoU. Returns (shape index, score), or
    (-1, 0.0) for specks, elongated blobs and poor matches.
    """
    h, w = crop.shape
    if min(h, w) < 6 or max(h, w) * 3 > min(h, w) * 4:
        return -1, 0.0
    k = (h + w) / 2
    for factor in (2, 3, 4):
        side = round(k / factor)
        if side >= 6:
            up = glyph_masks(side)[:, (np.arange(h) * side) // h][:, :, (np.arange(w) * side) // w]
            exact = (up == crop[None]).all(axis=(1, 2))
            if exact.any():
                return int(exact.argmax()), 1.0
    iou = _template_iou(crop, round(k))
    best = int(iou.argmax())
    if iou[best] < MIN_FALLBACK_IOU:
        return -1, 0.0
    return best, float(iou[best])


def _template_iou(crop: np.ndarray, side: int) -> np.ndarray:
    """IoU of the crop, resampled to side×side, with each glyph raster of that side."""
    h, w = crop.shape
    rows = ((np.arange(side) + 0.5) * h / side).astype(np.int64)
    cols = ((np.arange(side) + 0.5) * w / side).astype(np.int64)
    resized = crop[rows[:, None], cols[None, :]]
    templates = glyph_masks(side)
    inter = (templates & resized[None]).sum(axis=(1, 2))
    union = (templates | resized[None]).sum(axis=(1, 2))
    return inter / np.maximum(union, 1)


def detect_tokens(tokens: Any, *, patch: int = PATCH, masks: bool = False) -> list[Detections]:
    """What `detect_batch(render(tokens, patch=patch))` returns, read straight off the token grids.

    The shortcut for callers that hold the tokens (the trainer's rewards): no pixels, same classes,
    colours, boxes, scores and order (raster order of cells, which is the detector's order because
    every glyph's top row is its cell's first inner row). `tokens` is [B, H, W] or [H, W].
    """
    t = torch.as_tensor(tokens).detach().cpu()
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"tokens must be [B, H, W] or [H, W], got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= NUM_TOKENS):
        raise ValueError(f"token ids must lie in [0, {NUM_TOKENS})")
    b, gh, gw = t.shape
    m = margin_for(patch)
    cell_masks = codebook(patch).masks
    out: list[Detections] = [{} for _ in range(b)]
    nz = torch.nonzero(t, as_tuple=True)
    for i, row, col, tok in zip(*(x.tolist() for x in nz), t[nz].tolist(), strict=True):
        s_idx, c_idx = divmod(tok - 1, len(COLOURS))
        mask = None
        if masks:
            mask = np.zeros((gh * patch, gw * patch), dtype=bool)
            mask[row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] = cell_masks[s_idx]
        det = ShapeDetection(
            box=(float(col * patch + m), float(row * patch + m),
                 float((col + 1) * patch - m), float((row + 1) * patch - m)),
            score=1.0,
            mask=mask,
            shape=SHAPES[s_idx],
            colour=COLOURS[c_idx],
        )
        out[i].setdefault(SHAPES[s_idx], []).append(det)
    return out


def detections_to_json(dets: Detections) -> dict[str, list[dict[str, Any]]]:
    """A JSON-ready view of one image's detections: box, score and colour per object."""
    return {
        name: [
            {"box": [float(v) for v in d.box], "score": float(d.score),
             "colour": d.colour if isinstance(d, ShapeDetection) else None}
            for d in items
        ]
        for name, items in dets.items()
    }
