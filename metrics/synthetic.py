"""Deterministic synthetic weights: rebuild checkpoints from a manifest, and tiny checkpoints for demos.

Real weights cannot be downloaded everywhere (CI, air-gapped machines). Two uses:

- parity fixtures: the official scorers were run on weights defined by a manifest (key, shape, dtype,
  fill rule, sha256 per tensor); `build_state_dict` regenerates those exact tensors and checks their
  hashes, so our loaders can read the same checkpoint files the official code read;
- tiny checkpoints: `write_tiny_weights(metric, directory)` writes small random checkpoints in each
  metric's *official file format and name*, so `metrics.get(metric, weights_dir=directory)` runs the
  real loading and scoring code at toy size (tests, CPU demos).
"""

from __future__ import annotations

import hashlib
import importlib
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch


def make_tensor(key: str, shape: Iterable[int], fill: Mapping[str, Any], dtype: str, seed: int,
                value: Any = None) -> torch.Tensor:
    """One tensor by the fixture rule: seeded normal (seed = crc32(key) + seed), constant, or copy."""
    shape = tuple(shape)
    kind = fill["kind"]
    if kind == "normal":
        g = torch.Generator().manual_seed((zlib.crc32(key.encode("utf-8")) + seed) % 2**31)
        t = torch.randn(shape, generator=g, dtype=torch.float32) * float(fill["std"]) + float(fill["mean"])
    elif kind == "const":
        t = torch.full(shape, float(fill["value"]), dtype=torch.float32)
    elif kind == "copy":
        return torch.tensor(value, dtype=getattr(torch, dtype)).reshape(shape)
    else:
        raise ValueError(f"{key}: unknown fill kind {kind!r}")
    return t.to(getattr(torch, dtype))


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's C-contiguous little-endian bytes."""
    data = t.detach().cpu().contiguous().reshape(-1)  # 1-D, so 0-d tensors can be viewed as bytes too
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()


def state_digest(entries: Iterable[Mapping[str, Any]]) -> str:
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e['key']}\t{e['dtype']}\t{','.join(map(str, e['shape']))}\t{e['sha256']}\n".encode())
    return h.hexdigest()


def build_state_dict(entries: list[Mapping[str, Any]], seed: int, *, expected_digest: str | None = None,
                     verify: bool = True) -> OrderedDict[str, torch.Tensor]:
    """Regenerate every tensor of a manifest section, checking each sha256 and the state digest."""
    if expected_digest is not None and state_digest(entries) != expected_digest:
        raise ValueError("manifest entries do not match their state_digest")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for e in entries:
        t = make_tensor(e["key"], e["shape"], e["fill"], e["dtype"], seed, e.get("value"))
        if verify and tensor_sha256(t) != e["sha256"]:
            raise ValueError(f"{e['key']}: regenerated tensor does not match the manifest sha256")
        out[e["key"]] = t
    return out


# -- tiny checkpoints in official formats ---------------------------------------------------------
def write_tiny_weights(metric: str, directory: str | Path, *, seed: int = 0) -> list[Path]:
    """Write random tiny checkpoints for `metric` into `directory` under the official file names (the
    writer its module declares as `tiny_writer`)."""
    from paintbench.errors import InputError
    from paintbench.metrics.registry import spec

    s = spec(metric)
    if s.tiny_writer is None:
        raise InputError(f"metric {s.name!r} has no tiny checkpoint writer")
    module, _, attr = s.tiny_writer.partition(":")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = getattr(importlib.import_module(module), attr)(directory, seed=seed, metric=s.name)
    from paintbench.metrics.weights import mark_synthetic

    mark_synthetic(directory, [Path(w) for w in written])  # results made with them will say so
    return written


def tiny_metrics() -> list[str]:
    """The metrics that can write tiny checkpoints."""
    from paintbench.metrics.registry import available, spec

    return [m for m in available() if spec(m).tiny_writer is not None]


def random_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int, *, std: float = 0.02,
                      norm_keys: Iterable[str] = ()) -> OrderedDict[str, torch.Tensor]:
    """Random tensors for a tiny model: normal(0, std), LayerNorm weights around 1 (keys in `norm_keys`)."""
    norms = set(norm_keys)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, s in shapes.items():
        fill = {"kind": "normal", "mean": 1.0 if k in norms else 0.0, "std": std}
        out[k] = make_tensor(k, s, fill, "float32", seed)
    return out
