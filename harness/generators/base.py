"""The generator contract: prompts and seeds in, images out.

`Generator.generate(requests)` receives a batch of `Request`s (prompt item, sample index, seed, size)
and returns one image per request, in order: a PIL image, a [3,H,W] uint8/float tensor, or (for
generators that bring existing files) a path. The harness checks the count and sizes, saves images
atomically, and records `settings()` in the run, so a run says exactly how its images were made.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from paintbench.errors import UserError
from paintbench.harness.suite import PromptItem, Suite

GeneratedImage = Image.Image | torch.Tensor | Path


@dataclass(frozen=True)
class Request:
    item: PromptItem
    sample_index: int
    seed: int
    width: int
    height: int


class Generator(ABC):
    kind: ClassVar[str]
    batch_size: int = 8
    brings_files: ClassVar[bool] = False  # True: generate() returns paths of existing images

    def __init__(self, arg: str | None, options: dict[str, Any], suite: Suite, *, device: str = "cpu") -> None:
        self.arg = arg
        self.options = dict(options)
        self.suite = suite
        self.device = device
        self.batch_size = int(self.options.pop("batch_size", self.batch_size))

    def settings(self) -> dict[str, Any]:
        """Everything that determines the images (recorded in config.yaml and every sample record)."""
        return {"generator": self.kind, "arg": self.arg, **self.options}

    @abstractmethod
    def generate(self, requests: list[Request]) -> list[GeneratedImage]:
        """One image per request, in order."""


class GeneratorError(UserError):
    """A generator misbehaved (wrong count, wrong size, crashed); reported as one clear line, and the
    run stays resumable (finished images are kept)."""
