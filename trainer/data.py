"""Training prompts and the order they are drawn in.

A record is a dict with at least `prompt`; GenEval-format records (`tag`, `include`, ...) also carry
what the GenEval-rule rewards need, and are handed to every reward provider as its `metadata`.

The order is a pure function of (seed, position): epoch e is a permutation of all records drawn from a
generator seeded by (seed, e), and round r takes positions r·B .. r·B+B-1 of the concatenated epochs.
So the data position of a run is just the number of prompts consumed, resuming needs no sampler state,
and every process computes the same global batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from paintbench.errors import UserError


def load_records(source: str, *, seed: int = 1, per_tag: int = 200, split: str = "train") -> list[dict[str, Any]]:
    """Records from 'shapes' (the shapes world's generator, one side of its held-out split: `split` is
    "train", "heldout" or "all"), a JSONL file or a plain .txt file."""
    if source == "shapes":
        from paintbench.harness.shapes.prompts import make_prompts

        return [dict(r) for r in make_prompts(seed, per_tag, split=None if split == "all" else split)]
    from paintbench.files import read_text

    path = Path(source).expanduser()
    if not path.exists() and not path.is_symlink():
        raise UserError(f"prompts: {source!r} is neither 'shapes' nor a file")
    text = read_text(path, "prompts")   # a regular file within the cap: a FIFO or /dev/zero never hangs
    if path.suffix == ".txt":
        return [{"prompt": line.strip()} for line in text.splitlines() if line.strip()]
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: malformed JSON ({e})") from e
        if not isinstance(rec, dict) or "prompt" not in rec:
            raise UserError(f"{path}:{lineno}: a record needs a 'prompt'")
        records.append(rec)
    if not records:
        raise UserError(f"{path}: no prompts")
    return records


def epoch_order(num_records: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator()
    g.manual_seed(hash_seed(seed, "epoch", epoch))
    return torch.randperm(num_records, generator=g)


def batch_indices(num_records: int, seed: int, position: int, size: int) -> list[int]:
    """Record indices at data positions position .. position+size-1."""
    out: list[int] = []
    cache: dict[int, torch.Tensor] = {}
    for p in range(position, position + size):
        epoch, offset = divmod(p, num_records)
        if epoch not in cache:
            cache[epoch] = epoch_order(num_records, seed, epoch)
        out.append(int(cache[epoch][offset]))
    return out


def hash_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python runs)."""
    import hashlib

    h = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)
