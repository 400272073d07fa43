"""Modules for the TorchScript reader's tests (scripting needs their source in a file)."""

from __future__ import annotations

import torch


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.register_buffer("scale", torch.tensor([0.5, 2.0]))
        self.attn_mask = torch.full((2, 2), float("-inf"))  # a plain tensor attribute, not in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x)) * self.scale[0] + self.attn_mask.sum()


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(), Block()])
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6))
        self.visual = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 2), torch.nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x * self.logit_scale


class Hostile(torch.nn.Module):
    """Its scripted __setstate__ runs on `torch.jit.load`: it prints a marker and changes the weight."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(2))
        self.training = False

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("PAINTBENCH-SETSTATE-RAN")
        self.weight = state[0] * 1000.0
        self.training = state[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight
