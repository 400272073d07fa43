"""The provider contract shared by evaluation and RL rewards.

A provider is built once (its models loaded once, on one device) and then called many times with
`score(images, prompts, metadata)`. The same object serves the offline harness (PIL images or paths,
batched internally) and the trainer (a [B,3,H,W] tensor already on the device, never round-tripped
through PIL). Everything a report needs beyond the number goes into `Scores.details`.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image

from paintbench.metrics.images import ImageBatch, as_image_batch, load_image
from paintbench.metrics.registry import ProviderSpec
from paintbench.metrics.registry import spec as registry_spec


@dataclass
class Scores:
    """Per-sample results of one provider call.

    `values` is a 1-D float32 tensor on the provider's device, one value per input sample, in input
    order. `details` has one dict per sample with whatever explains the value (raw head output,
    verdict, reason); it must be JSON-serialisable.
    """

    metric: str
    values: torch.Tensor
    details: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.values.dim() != 1:
            raise ValueError(f"{self.metric}: Scores.values must be 1-D, got shape {tuple(self.values.shape)}")
        if self.details and len(self.details) != self.values.numel():
            raise ValueError(
                f"{self.metric}: {len(self.details)} details for {self.values.numel()} values"
            )
        if not self.details:
            self.details = [{} for _ in range(self.values.numel())]

    def __len__(self) -> int:
        return self.values.numel()

    def tolist(self) -> list[float]:
        return [float(v) for v in self.values.detach().float().cpu()]


# The contract's argument types, named once (every provider's signature uses them).
Device = str | torch.device
DType = torch.dtype | str
PathArg = str | os.PathLike[str] | None
WeightsArg = str | os.PathLike[str] | Mapping[str, Any] | None  # one file, or weight name -> file
Prompts = list[str] | None
Metadata = list[dict[str, Any]] | None


_WARNED_HALF_ON_CPU: set[str] = set()


def warn_half_on_cpu(metric: str, device: torch.device, dtype: torch.dtype) -> None:
    """Once per metric and process: bf16/fp16 on a CPU is slow and moves the numbers (ImageReward 0.798 ->
    0.801 under bfloat16) without being the parity setting; every printed headline also carries the dtype."""
    if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and metric not in _WARNED_HALF_ON_CPU:
        import warnings

        _WARNED_HALF_ON_CPU.add(metric)
        warnings.warn(f"{metric}: scoring in {str(dtype).removeprefix('torch.')} on the CPU: numbers differ from the "
                      "official fp32 ones (and it is not faster here); use --dtype float32 for parity",
                      stacklevel=3)


class Provider(ABC):
    """Base class of every metric provider.

    Subclasses set `name` (the registry name) and implement `_score_batch`, which receives an already
    validated `ImageBatch` of at most `batch_size` samples. `score` handles validation, batching and
    `torch.inference_mode`.
    """

    name: ClassVar[str]
    needs_prompt: ClassVar[bool] = True

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 32,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        warn_half_on_cpu(self.name, self.device, self.dtype)
        if batch_size < 1:
            raise ValueError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def decode(self, path: str | os.PathLike[str]) -> Image.Image:
        """Read one image file as this metric's official code does (the run engine decodes the next
        batch with it on a thread pool while the device scores this one). A file that cannot be used
        raises `BadImageError` naming it."""
        return load_image(path, name=str(path))

    # -- declared facts, read from the registry so they are stated exactly once --------------------
    @property
    def spec(self) -> ProviderSpec:
        return registry_spec(self.name)

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def higher_is_better(self) -> bool:
        return self.spec.higher_is_better

    @property
    def nominal_range(self) -> tuple[float, float]:
        return self.spec.nominal_range

    def provenance(self) -> dict[str, Any]:
        """What a result must record to be reproducible: versions and the weights actually used."""
        return {"metric": self.name, "version": self.version, "dtype": str(self.dtype).removeprefix("torch.")}

    # -- the contract ----------------------------------------------------------------------------
    def score(
        self,
        images: ImageBatch | Sequence[Any] | torch.Tensor,
        prompts: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Scores:
        """Score `images` (PIL images, paths, or a [B,3,H,W] uint8/float tensor) against `prompts`."""
        batch = images if isinstance(images, ImageBatch) else as_image_batch(images)
        n = len(batch)
        prompts = check_prompts(self.name, prompts, n, required=self.needs_prompt)
        if metadata is not None and len(metadata) != n:
            raise ValueError(f"{self.name}: got {n} images but {len(metadata)} metadata records")
        values: list[torch.Tensor] = []
        details: list[dict[str, Any]] = []
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                stop = min(start + self.batch_size, n)
                part = self._score_batch(
                    batch.slice(start, stop),
                    None if prompts is None else prompts[start:stop],
                    None if metadata is None else list(metadata[start:stop]),
                )
                values.append(part.values.float())
                details.extend(part.details)
        out = torch.cat(values) if values else torch.empty(0, device=self.device)
        return Scores(metric=self.name, values=out, details=details)

    def score_each(
        self,
        images: Sequence[Any] | torch.Tensor,
        prompts: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> list[tuple[float | None, dict[str, Any], str | None]]:
        """`score`, but one bad sample never fails the others: (value, details, error) per sample.

        The batch is scored together; if that raises, each sample is scored alone, so the error is
        pinned on the sample that caused it. A NaN value (a provider's "cannot score this one") comes
        back as an error too, never as a number to average."""
        try:
            scores = self.score(images, prompts, metadata)
        except Exception as e:
            if len(images) == 1:
                return [(None, {}, f"{type(e).__name__}: {e}")]
            return [r for i in range(len(images)) for r in self.score_each(
                images[i : i + 1], None if prompts is None else prompts[i : i + 1],
                None if metadata is None else metadata[i : i + 1])]
        out: list[tuple[float | None, dict[str, Any], str | None]] = []
        for v, d in zip(scores.tolist(), scores.details, strict=True):
            out.append((None, d, d.get("error", "not scored (NaN)")) if math.isnan(v) else (v, d, None))
        return out

    @abstractmethod
    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        """Score one batch of at most `batch_size` samples."""


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
        "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    }
    try:
        return names[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}") from None


def check_prompts(metric: str, prompts: Sequence[str] | None, n: int, *, required: bool) -> list[str] | None:
    """Validate prompts against the number of images; empty and very long prompts are allowed.

    Empty prompts are scored as the official tokenizers encode them (only the special tokens); long
    prompts are truncated by each metric's tokenizer exactly as the official code does (35 BERT tokens
    for ImageReward, 77 CLIP tokens for HPS).
    """
    if prompts is None:
        if required:
            raise ValueError(f"{metric}: this metric needs one prompt per image, got none")
        return None
    if isinstance(prompts, str):
        raise TypeError(f"{metric}: prompts must be a sequence of strings, got a single string")
    prompts = list(prompts)
    if len(prompts) != n:
        raise ValueError(f"{metric}: got {n} images but {len(prompts)} prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"{metric}: prompt {i} is {type(p).__name__}, not str")
    return prompts
