"""Will a model fit? Estimated before loading, from the checkpoint's safetensors headers (no tensor is
read), against the free memory of the target device, so a 7-8B reward model that cannot fit says so at
once instead of failing (or swapping) minutes into loading."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

from paintbench.errors import UserError

OVERHEAD = 1.2   # activations, buffers and allocator slack on top of the weights (inference, small batches)


class InsufficientMemoryError(UserError, MemoryError):
    """A model does not fit the free memory of its device."""


def safetensors_elements(path: Path) -> int:
    """Number of tensor elements in a safetensors file, read from its JSON header only."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def estimated_bytes(files: Iterable[Path], dtype: torch.dtype, overhead: float = OVERHEAD) -> int:
    """Memory a model of these safetensors files needs in `dtype` (weights × overhead)."""
    elements = sum(safetensors_elements(f) for f in files)
    return int(elements * torch.empty((), dtype=dtype).element_size() * overhead)


def free_bytes(device: torch.device) -> int | None:
    """Free memory of `device` (CUDA: the driver's figure; CPU: MemAvailable); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def require_fits(what: str, files: Iterable[Path], device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, before loading, a model whose estimated size exceeds the device's free memory."""
    files = list(files)
    need = estimated_bytes(files, dtype)
    free = free_bytes(device)
    if free is not None and need > free:
        raise InsufficientMemoryError(
            f"{what}: needs about {need / 2**30:.1f} GiB on {device} in {str(dtype).removeprefix('torch.')} "
            f"(weights of {', '.join(str(f) for f in files[:2])}{' ...' if len(files) > 2 else ''} plus "
            f"{int((OVERHEAD - 1) * 100)} %), but {free / 2**30:.1f} GiB are free: put it on another device "
            "(device=...) or use a lower precision (dtype=...)")
