"""Process groups for `torchrun` / `accelerate launch`, and deterministic sharding.

Both launchers set RANK, WORLD_SIZE and LOCAL_RANK. Work is sharded by prompt (strided over the
suite's prompt order), never by batch position, and seeds depend only on (run seed, prompt id,
sample index), so the images and scores do not depend on the number of processes or the batch size.
Every rank appends to its own part files in the shared run directory; rank 0 merges them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    backend: str = "none"

    @classmethod
    def from_env(cls, requested_device: str | None = None) -> Dist:
        """Join the process group the launcher set up: NCCL when the ranks use GPUs, gloo on CPUs
        (also when CUDA exists but `--device cpu` was asked for)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        d = cls(rank=rank, world_size=world, local_rank=local)
        if world > 1:
            import torch
            import torch.distributed as td

            on_gpu = torch.cuda.is_available() and not (requested_device or "").startswith("cpu")
            if td.is_initialized():
                d.backend = td.get_backend()
            else:
                d.backend = "nccl" if on_gpu else "gloo"
                if on_gpu:
                    torch.cuda.set_device(local)
                td.init_process_group(backend=d.backend)
                d.initialized_here = True
        return d

    def device(self, requested: str | None) -> str:
        """The device for this rank: `cuda:LOCAL_RANK` under a multi-GPU launcher."""
        import torch

        if requested and requested != "cuda":
            return requested
        if torch.cuda.is_available():
            return f"cuda:{self.local_rank}" if self.world_size > 1 else "cuda"
        if requested == "cuda":
            from paintbench.errors import UserError

            raise UserError("--device cuda was asked for but CUDA is not available (use --device cpu)")
        return "cpu"

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as td

            td.barrier()

    def all_ok(self, ok: bool) -> bool:
        """True on every rank iff `ok` on every rank (so one rank's failure stops all cleanly)."""
        if self.world_size == 1:
            return ok
        import torch
        import torch.distributed as td

        device = f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"  # NCCL reduces GPU tensors only
        t = torch.tensor([0 if ok else 1], dtype=torch.int64, device=device)
        td.all_reduce(t)
        return int(t.item()) == 0

    def close(self) -> None:
        if self.initialized_here:
            import torch.distributed as td

            td.destroy_process_group()
            self.initialized_here = False


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Strided shard of `items` for `rank`: deterministic, balanced, independent of batch size."""
    return list(items[rank::world_size])


def derive_seed(run_seed: int, prompt_id: str, sample_index: int) -> int:
    """A 63-bit seed from (run seed, prompt id, sample index) only."""
    digest = hashlib.sha256(f"{run_seed}\x1f{prompt_id}\x1f{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
