"""Checkpoints that resume exactly.

`DIR/checkpoints/step_<n>/` holds:
- `policy/`: the policy as `trainer.policies.load` reads it (policy.json + weights.safetensors: the whole
  tiny model, or only the LoRA adapter of an 8B backbone) — also what `paintbench eval --generator
  policy:...` takes;
- `reference.safetensors`: the frozen reference policy when it is a separate copy (full fine-tuning; a
  LoRA reference is the adapter-disabled base and needs nothing);
- `trainer_state.pt`: optimizer and LR-scheduler state, the round counter, the data position, every RNG
  state (Python, NumPy, torch CPU and CUDA) and the config it was written under.

Under `parallel: ddp | fsdp` (trainer.parallel) every rank takes part: `sharded/` holds the policy's
trainable weights, the AdamW state and the frozen reference copy as `torch.distributed.checkpoint` writes
them (one file per rank and a `.metadata`; resumable on the same world size bit for bit, and on another,
which DCP re-splits); `policy/` is still the whole policy, gathered to rank 0, for `eval` and `export`;
`trainer_state.pt` then holds everything but the optimizer, plus the world size and placement.

`DIR/checkpoints/latest` names the newest. Writing goes to a temporary folder renamed at the end, so a
crash never leaves a half-written checkpoint that `latest` points to. The rollouts and subsets draw from
generators seeded by (seed, round, row), so the RNG states matter only for code outside the trainer
(dropout, user rewards); they are restored anyway.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
LATEST = "latest"
_STEP_NAME = re.compile(r"step_\d{6,}")
STATE_FILE = "trainer_state.pt"
REFERENCE_FILE = "reference.safetensors"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"step_{step:06d}"


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    *,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data_position: int,
    config: dict[str, Any],
    reference_state: dict[str, torch.Tensor] | None = None,
    sampler: dict[str, Any] | None = None,
    keep: int = 0,
) -> Path:
    from safetensors.torch import save_file

    final = checkpoint_dir(out_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    policy.save(tmp / "policy", sampler=sampler)
    if reference_state is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in reference_state.items()}, str(tmp / REFERENCE_FILE))
    torch.save({
        "step": int(step),
        "data_position": int(data_position),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "config": config,
    }, tmp / STATE_FILE)
    return _publish(tmp, final, keep)


SHARDED = "sharded"


def is_sharded(checkpoint: str | Path) -> bool:
    return (Path(checkpoint) / SHARDED / ".metadata").is_file()


def _sharded_state(policy: Any, optimizer: torch.optim.Optimizer, reference: Any | None) -> dict[str, Any]:
    """The state DCP saves and loads in place: trainable weights only (a LoRA policy's frozen base is
    reloaded from its own folder), the optimizer, and the reference copy when there is one."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    model, optim = get_state_dict(policy, optimizer, options=StateDictOptions(ignore_frozen_params=True))
    state: dict[str, Any] = {"policy": model, "optimizer": optim}
    if reference is not None:
        state["reference"] = get_model_state_dict(reference)
    return state


def save_sharded_checkpoint(
    out_dir: str | Path,
    step: int,
    *,
    dist: Any,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data_position: int,
    config: dict[str, Any],
    reference: Any | None,
    sampler: dict[str, Any] | None,
    keep: int,
    parallel: str,
) -> Path:
    """Collective: every rank writes its shards; rank 0 the gathered policy folder and the small state.
    The same temporary-folder-then-rename protocol as `save_checkpoint`."""
    import torch.distributed.checkpoint as dcp

    from paintbench.trainer.parallel import full_state

    final = checkpoint_dir(out_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if dist.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    dist.barrier()
    dcp.save(_sharded_state(policy, optimizer, reference), checkpoint_id=str(tmp / SHARDED))
    whole = full_state(policy, trainable_only=True)   # collective; rank 0 gets what `policy/` stores
    if dist.is_main:
        policy.save(tmp / "policy", sampler=sampler, state=whole)
        torch.save({
            "step": int(step),
            "data_position": int(data_position),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "config": config,
            "world_size": int(dist.world_size),
            "parallel": parallel,
        }, tmp / STATE_FILE)
        _publish(tmp, final, keep)
    dist.barrier()
    return final


def load_sharded(checkpoint: str | Path, policy: Any, optimizer: torch.optim.Optimizer, reference: Any | None) -> None:
    """Load `sharded/` into the wrapped policy, its optimizer and the reference copy, in place (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    state = _sharded_state(policy, optimizer, reference)
    dcp.load(state, checkpoint_id=str(Path(checkpoint) / SHARDED))
    set_state_dict(policy, optimizer, model_state_dict=state["policy"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(ignore_frozen_params=True))
    if reference is not None:
        set_model_state_dict(reference, state["reference"])


def _publish(tmp: Path, final: Path, keep: int) -> Path:
    """The written temporary folder becomes the checkpoint, `latest` names it, old ones are pruned."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    write_marker(final.parent / LATEST, final.name)
    if keep > 0:
        prune(final.parent, keep)
    return final


def prune(folder: Path, keep: int) -> None:
    """Delete all but the `keep` newest step_* checkpoints."""
    steps = sorted(p for p in folder.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def write_marker(path: Path, text: str) -> None:
    """Replace a small marker file atomically (temp file, fsync, rename): a kill leaves the old marker or
    the new one, never an empty one."""
    from paintbench.files import write_atomic

    write_atomic(path, (text + "\n").encode("utf-8"))


def is_complete(folder: Path) -> bool:
    """A checkpoint folder that finished writing: a `step_NNNNNN` folder (not a link) with its state file."""
    return (_STEP_NAME.fullmatch(folder.name) is not None and folder.is_dir() and not folder.is_symlink()
            and (folder / STATE_FILE).is_file())


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint `latest` names, if it is a complete one; else the newest complete `step_*`
    (a marker left empty or damaged by an older version, or pointing elsewhere, is not trusted)."""
    folder = Path(out_dir) / CHECKPOINTS
    marker = folder / LATEST
    if marker.is_file() and not marker.is_symlink():
        name = marker.read_text(encoding="utf-8", errors="replace").strip()
        if _STEP_NAME.fullmatch(name) and is_complete(folder / name):
            return folder / name
    steps = sorted(p for p in folder.glob("step_*") if is_complete(p))
    return steps[-1] if steps else None


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True)


def load_reference_state(checkpoint: str | Path) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    p = Path(checkpoint) / REFERENCE_FILE
    return load_file(str(p)) if p.is_file() else None
