"""Will a model fit? Estimated before loading, from the checkpoint's safetensors headers (no tensor is
read), against the free memory of the target device, so a 7-8B reward model that cannot fit says so at
once instead of failing (or swapping) minutes into loading."""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

from paintbench.errors import InputError, UserError

OVERHEAD = 1.2   # activations, buffers and allocator slack on top of the weights (inference, small batches)


class InsufficientMemoryError(UserError, MemoryError):
    """A model does not fit the free memory of its device."""


MAX_HEADER_BYTES = 100 * 1024 * 1024   # safetensors' own limit on the JSON header


def safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor entries of a safetensors file's JSON header {name: {dtype, shape, data_offsets}}, read
    without reading any tensor and checked: a header length past the file or over 100 MB, JSON that is
    not a mapping, and shapes that are not lists of non-negative integers are one `InputError` naming
    the file (hostile headers used to give tracebacks or negative memory estimates)."""
    from paintbench.files import open_fd

    fd = open_fd(path)
    try:
        size = os.fstat(fd).st_size
        raw = os.read(fd, 8)
        if len(raw) < 8:
            raise InputError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", raw)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise InputError(f"{path}: not a safetensors file (header length {length:,} bytes, file {size:,} bytes)")
        data = b""
        while len(data) < length and (chunk := os.read(fd, length - len(data))):
            data += chunk
    finally:
        os.close(fd)
    try:
        header = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a safetensors file (its header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: not a safetensors file (its header is not a mapping)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, entry in tensors.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise InputError(f"{path}: tensor {name[:80]!r} has no valid shape (a list of non-negative integers)")
    return tensors


def safetensors_elements(path: Path) -> int:
    """Number of tensor elements in a safetensors file, read from its JSON header only."""
    return sum(math.prod(v["shape"]) for v in safetensors_header(path).values())


LAYER_KEY = re.compile(r"^(.*?)\.(?:layers|layer|blocks|h)\.(\d+)\.")


def checkpoint_layer_counts(files: Iterable[Path]) -> dict[str, int]:
    """{prefix: number of layers} of every stack of numbered layers in the checkpoints' headers
    (`model.layers.31.mlp...` → {"model": 32})."""
    counts: dict[str, int] = {}
    for f in files:
        for name in safetensors_header(f):
            if m := LAYER_KEY.match(name):
                counts[m.group(1)] = max(counts.get(m.group(1), 0), int(m.group(2)) + 1)
    return counts


def require_config_matches_checkpoint(config: dict, files: Iterable[Path], source: str | Path) -> None:
    """Refuse, before anything is built, a config whose layer counts no stack in the checkpoint has
    (`num_hidden_layers: 100000000` in a DeQA or UniPercept folder built for minutes at > 2 GB): every
    `num_hidden_layers` / `num_layers` in `config` (nested sections too) must equal the depth of one
    stack of numbered layers in the checkpoint."""
    files = list(files)
    stacks = checkpoint_layer_counts(files)
    found: list[tuple[str, int]] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("num_hidden_layers", "num_layers") and isinstance(v, int) and not isinstance(v, bool):
                    found.append((f"{where}{k}", v))
                elif isinstance(v, dict):
                    walk(v, f"{where}{k}.")

    walk(config, "")
    depths = set(stacks.values())
    for key, value in found:
        if value not in depths:
            raise InputError(f"{source}: {key} = {value}, but the checkpoint's layer stacks have "
                             f"{', '.join(str(d) for d in sorted(depths)) or 'no numbered layers'}; the config "
                             "does not describe these weights")


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
