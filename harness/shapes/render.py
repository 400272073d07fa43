"""The shapes world's decoder: token grids → pixels, with one gather.

`render(tokens)` maps a LongTensor [..., H, W] of codebook ids to images [..., 3, H·P, W·P]. It is the
world's VQ decoder: the trainer calls it on GPU on whole rollout batches, the harness on CPU, so it is a
single indexed lookup into a per-device copy of the codebook followed by a reshape (no Python loop over
images or cells), and it is exact (binary glyphs, no interpolation).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from paintbench.harness.shapes.codebook import GRID, NUM_TOKENS, PATCH, codebook


@lru_cache(maxsize=16)
def _patches_on(device: torch.device, patch: int) -> torch.Tensor:
    """uint8 [V, 3·P·P] codebook tensor (one row per token), one copy per (device, patch size)."""
    patches = codebook(patch).patches
    return torch.from_numpy(patches.reshape(len(patches), -1).copy()).to(device)


def render(
    tokens: torch.Tensor | np.ndarray,
    *,
    patch: int = PATCH,
    dtype: torch.dtype = torch.uint8,
) -> torch.Tensor:
    """Images of token grids: [..., H, W] integer ids → [..., 3, H·patch, W·patch].

    `dtype=torch.uint8` gives 0-255 pixels; a floating dtype gives values in [0, 1] (exactly k/255).
    The output lives on the tokens' device. Ids outside [0, NUM_TOKENS) raise `ValueError` (a policy
    that emits a mask id or a padded vocabulary entry is a bug to surface, not to paint over).
    """
    t = torch.as_tensor(tokens)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"tokens must be an integer tensor, got {t.dtype}")
    if t.dim() < 2:
        raise ValueError(f"tokens must be [..., H, W], got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= NUM_TOKENS):
        raise ValueError(
            f"token ids must lie in [0, {NUM_TOKENS}), got range [{int(t.min())}, {int(t.max())}]"
        )
    *lead, h, w = t.shape
    table = _patches_on(t.device, patch)                     # [V, 3·P·P]
    cells = table.index_select(0, t.reshape(-1).long())       # the one gather: [N·H·W, 3·P·P]
    cells = cells.view(*lead, h, w, 3, patch, patch)
    n = len(lead)
    perm = (*range(n), n + 2, n, n + 3, n + 1, n + 4)        # [..., 3, H, P, W, P]
    img = cells.permute(perm).reshape(*lead, 3, h * patch, w * patch)
    if dtype == torch.uint8:
        return img
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be torch.uint8 or a floating dtype, got {dtype}")
    return img.to(dtype) / 255.0


def blank(batch: int = 1, grid: int = GRID) -> torch.Tensor:
    """An all-background token grid batch [batch, grid, grid]."""
    return torch.zeros(batch, grid, grid, dtype=torch.long)
