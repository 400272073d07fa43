"""Data parallelism with plain `torch.distributed` (launched by `torchrun` or `accelerate launch`).

The global batch of one round is B prompts × G images, prompt-major, split into equal contiguous shares
(rank r gets rows r·M/W .. (r+1)·M/W − 1), so a prompt group may span ranks. Everything that depends on
a group (advantages, the zero-std fraction) is computed after gathering all rewards; everything random
is drawn per global row or for the whole global batch, so no result depends on the number of processes.

Gradients are summed across ranks with one all-reduce of a flat buffer after the backward pass, and each
rank divides its loss by the *global* normaliser, so the summed gradient is exactly the single-process
gradient (up to float summation order). No DDP wrapper is needed, which keeps the policy interface (and
LoRA's adapter-disabled reference) untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, total: int) -> tuple[int, int]:
        """[start, stop) of this rank's rows among `total` global rows."""
        if total % self.world:
            raise ValueError(f"{total} rollouts per round do not split evenly over {self.world} processes "
                             "(choose prompts_per_step * group_size divisible by the world size)")
        per = total // self.world
        return self.rank * per, (self.rank + 1) * per

    def all_gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-sized tensors from every rank, in rank order (dim 0)."""
        if not self.enabled:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        torch_dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return list(values)
        device = f"cuda:{self.local_rank}" if torch_dist.get_backend() == "nccl" else "cpu"  # NCCL: GPU tensors only
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(t)
        return t.tolist()

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `params` over ranks (one flat buffer)."""
        if not self.enabled:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        torch_dist.all_reduce(flat)
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
        with torch.no_grad():
            for t in params:
                torch_dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


def init_from_env(device: str) -> Dist:
    """Join the process group when launched by torchrun/accelerate (WORLD_SIZE > 1), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        torch_dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local)


def shutdown(d: Dist) -> None:
    if d.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
