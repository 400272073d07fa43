"""The linear MLP head shared by the LAION aesthetic predictor and ImageReward.

Both official heads are the same `MLP(input_size)`: Linear D→1024, Dropout .2, →128, Dropout .2, →64,
Dropout .1, →16, →1, with no activations (ImageReward's ReLUs are commented out), i.e. an affine map at
eval. Same module layout as the official code, so the official state dicts load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

# Linear sizes after the input dimension, and the Dropout between them (index in `layers` -> p).
# Linear layers sit at indices 0, 2, 4, 6, 7 of the Sequential, which fixes the checkpoint keys.
HEAD_WIDTHS = (1024, 128, 64, 16, 1)
HEAD_DROPOUT = {1: 0.2, 3: 0.2, 5: 0.1}
HEAD_LINEAR_INDICES = (0, 2, 4, 6, 7)


class LinearMLPHead(nn.Module):
    def __init__(self, input_dim: int) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        width_in, widths = input_dim, iter(HEAD_WIDTHS)
        for index in range(len(HEAD_LINEAR_INDICES) + len(HEAD_DROPOUT)):
            if index in HEAD_DROPOUT:
                modules.append(nn.Dropout(HEAD_DROPOUT[index]))
            else:
                width_out = next(widths)
                modules.append(nn.Linear(width_in, width_out))
                width_in = width_out
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def head_shapes(input_dim: int, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Checkpoint key -> shape of the head for `input_dim` (keys `{prefix}layers.{i}.weight|bias`)."""
    out: dict[str, tuple[int, ...]] = {}
    width_in = input_dim
    for index, width_out in zip(HEAD_LINEAR_INDICES, HEAD_WIDTHS, strict=True):
        out[f"{prefix}layers.{index}.weight"] = (width_out, width_in)
        out[f"{prefix}layers.{index}.bias"] = (width_out,)
        width_in = width_out
    return out
