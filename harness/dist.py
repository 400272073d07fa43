"""Process groups for `torchrun` / `accelerate launch`, and deterministic sharding: the one `Dist` of
the harness (evaluation) and the trainer (gradient all-reduce).

Both launchers set RANK, WORLD_SIZE and LOCAL_RANK. Evaluation work is sharded by prompt (strided over
the suite's prompt order), never by batch position, and seeds depend only on (run seed, prompt id,
sample index), so the images and scores do not depend on the number of processes or the batch size.
Every rank appends to its own part files in the shared run directory; rank 0 merges them.

Training splits a round's global batch into equal contiguous shares (`share`), gathers rewards
(`all_gather_cat`) and sums gradients with one all-reduce of a flat buffer (`all_reduce_grads`), so
no result depends on the number of processes. Collectives on NCCL use the rank's GPU (NCCL reduces GPU
tensors only); on gloo the CPU.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def _collective_device(self) -> str:
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"

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

        from paintbench.errors import UserError

        if requested and requested.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UserError(f"--device {requested} was asked for but CUDA is not available here "
                                "(use --device cpu)")
            index = requested.partition(":")[2]
            if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
                raise UserError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA "
                                f"device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        if requested and requested != "cuda":
            if requested != "cpu" and not requested.startswith("cuda"):
                try:
                    torch.device(requested)
                except RuntimeError as e:
                    hint = " (did you mean 'cuda'?)" if requested.lower() in ("gpu", "gpu0", "nvidia", "cuda0") else ""
                    raise UserError(f"--device {requested}: not a device{hint} ({e})") from None
            return requested
        if torch.cuda.is_available():
            return f"cuda:{self.local_rank}" if self.world_size > 1 else "cuda"
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

        t = torch.tensor([0 if ok else 1], dtype=torch.int64, device=self._collective_device)
        td.all_reduce(t)
        return int(t.item()) == 0

    # -- training collectives (no-ops in a single process) ----------------------------------------
    def share(self, total: int) -> tuple[int, int]:
        """[start, stop) of this rank's rows among `total` global rows."""
        if total % self.world_size:
            from paintbench.errors import InputError

            raise InputError(f"{total} rollouts per round do not split evenly over {self.world_size} processes "
                             "(choose prompts_per_step * group_size divisible by the world size)")
        per = total // self.world_size
        return self.rank * per, (self.rank + 1) * per

    def all_gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-sized tensors from every rank, in rank order (dim 0)."""
        if not self.enabled:
            return t
        import torch
        import torch.distributed as td

        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        td.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.enabled:
            return list(values)
        import torch
        import torch.distributed as td

        t = torch.tensor(values, dtype=torch.float64, device=self._collective_device)
        td.all_reduce(t)
        return t.tolist()

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `params` over ranks (one flat buffer)."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as td

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        td.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
            offset += n

    def broadcast_parameters(self, params: list[torch.nn.Parameter]) -> None:
        """Make every rank hold rank 0's trainable weights (a warm start on GPU need not be bitwise
        deterministic across processes; a frozen base model is loaded identically from its files)."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as td

        with torch.no_grad():
            for t in params:
                td.broadcast(t.data, src=0)

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
