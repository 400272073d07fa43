"""Policies by kind, and `load(path)`: the entry point of the harness's `policy:CHECKPOINT` generator.

Kinds: `tiny` (the shapes world's CPU transformer), `mmada` (MMaDA-8B + MAGVIT-v2) and `lumina-dimoo`
(Lumina-DiMOO 8B + its VQ-VAE). Modules are imported only when their kind is built, so the tiny policy
never imports transformers or peft.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch

from paintbench.errors import UserError
from paintbench.trainer.policy import POLICY_FILE, MaskedImagePolicy, load_weights

KINDS: dict[str, str] = {
    "tiny": "paintbench.trainer.policies.tiny:TinyPolicy",
    "mmada": "paintbench.trainer.policies.mmada:MMaDAPolicy",
    "lumina-dimoo": "paintbench.trainer.policies.dimoo:DiMOOPolicy",
}


def policy_class(kind: str) -> type[MaskedImagePolicy]:
    if kind not in KINDS:
        raise UserError(f"unknown policy kind {kind!r}; kinds are {', '.join(KINDS)}")
    module, _, attr = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def build(kind: str, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
          **options: Any) -> MaskedImagePolicy:
    """A fresh policy of `kind` (the 8B kinds load their base weights from `options['model_path']`)."""
    cls = policy_class(kind)
    if hasattr(cls, "from_options"):
        return cls.from_options(device=device, dtype=dtype, **options)
    policy = cls(**options)
    return policy.to(device=torch.device(device), dtype=_dtype(dtype))


def resolve(path: str | Path) -> Path:
    """The policy folder (with policy.json) for a policy folder, a checkpoint folder or a run folder
    (its latest checkpoint)."""
    p = Path(path).expanduser()
    if (p / POLICY_FILE).is_file():
        return p
    if (p / "policy" / POLICY_FILE).is_file():
        return p / "policy"
    from paintbench.trainer.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(p)
    if ckpt is not None and (ckpt / "policy" / POLICY_FILE).is_file():
        return ckpt / "policy"
    raise UserError(f"{p}: no policy here (expected {POLICY_FILE}, a checkpoint folder, or a run folder "
                    "with checkpoints/)")


def saved_policy(path: str | Path) -> Path | None:
    """The saved-policy folder `path` holds (see `resolve`), or None when it holds none (e.g. a base model)."""
    try:
        return resolve(path)
    except UserError:
        return None


def load(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32") -> MaskedImagePolicy:
    """Rebuild a saved policy (any kind) on `device` in `dtype`, in eval mode."""
    folder = resolve(path)
    meta = json.loads((folder / POLICY_FILE).read_text(encoding="utf-8"))
    cls = policy_class(meta["kind"])
    if hasattr(cls, "from_saved"):
        policy = cls.from_saved(meta["config"], folder, device=device, dtype=dtype)
    else:
        policy = cls(**meta["config"])
        policy.load_policy_state(load_weights(folder))
        policy = policy.to(device=torch.device(device), dtype=_dtype(dtype))
    policy.sampler_overrides = dict(meta.get("sampler") or {})
    policy.eval()
    return policy


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    from paintbench.metrics.base import resolve_dtype

    return resolve_dtype(dtype)
