"""Placement and parallelism as configuration over torch's own engine: FSDP2 (`fully_shard`).

`parallel` in the trainer config picks one of three placements of the policy over the processes that
`torchrun` started (the loop itself does not change):

- `none`: every rank holds the whole policy; gradients are summed by `Dist.all_reduce_grads`, one flat
  all-reduce. The reference path the others are tested against, and the single-process default.
- `ddp`: data parallelism through torch: `fully_shard` over a 2-D mesh (world × 1) — replicated
  parameters, gradients all-reduced by FSDP2's hooks (HSDP with shards of one, i.e. "FSDP without
  sharding"). Same memory as `none`, torch's overlapped communication.
- `fsdp`: FSDP2 over all ranks: each transformer block is one unit (`fully_shard(block)`), then the root,
  so a rank holds 1/world of the parameters, gradients and AdamW state and all-gathers one block at a
  time. Mixed precision is `MixedPrecisionPolicy(param_dtype, reduce_dtype)`; activation checkpointing
  (the backbone's own switch) is applied first and composes with it. LoRA and full fine-tuning both
  work: FSDP2 shards frozen and trainable parameters alike.

Gradients are *summed* over ranks, never averaged (`set_gradient_divide_factor(1.0)`): the loss is
already normalised by the global token count (`loss.normalizer_of` summed over ranks), so the sum is the
global batch's gradient and no result depends on the number of processes.

Under `ddp`/`fsdp` every forward is collective: all ranks run every forward the same number of times
(rollouts and micro-batches are equal shares by construction; the periodic evaluation runs on every rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

PARALLEL = ("auto", "none", "ddp", "fsdp")


def resolve(parallel: str, world_size: int) -> str:
    """`auto`: `none` in one process, `ddp` in several."""
    if parallel == "auto":
        return "ddp" if world_size > 1 else "none"
    return parallel


@dataclass(frozen=True)
class Placement:
    """How the policy is spread over the ranks (from the config; see the module docstring)."""

    parallel: str = "none"
    param_dtype: str = ""             # "" = the policy's own dtype (no cast)
    reduce_dtype: str = "float32"
    reshard_after_forward: bool = True
    reference_offload: bool = False    # the frozen reference copy's shards live on the CPU (fsdp only)

    @property
    def wrapped(self) -> bool:
        return self.parallel in ("ddp", "fsdp")


def transformer_blocks(root: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformer: the longest `nn.ModuleList` under `root` whose members are
    all of one class (the tiny policy's `blocks`; LLaDA's `transformer.blocks` in MMaDA and Lumina-DiMOO)."""
    best: list[nn.Module] = []
    for _, module in root.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > len(best):
            kinds = {type(m) for m in module}
            if len(kinds) == 1:
                best = list(module)
    return best


def shard_units(policy: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """(blocks, root) of a policy: the policy's own `shard_root()` when it has one (the backbones: their
    language model, called through `__call__` so FSDP2's hooks run), else the policy itself."""
    root = policy.shard_root() if hasattr(policy, "shard_root") else policy
    return transformer_blocks(root), root


def _dtype(name: str) -> torch.dtype | None:
    return getattr(torch, name) if name else None


def device_mesh(parallel: str, world_size: int, device: torch.device):
    from torch.distributed.device_mesh import init_device_mesh

    kind = device.type
    if parallel == "ddp":   # replicate over every rank, shards of one: DDP through FSDP2's engine
        return init_device_mesh(kind, (world_size, 1), mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(kind, (world_size,), mesh_dim_names=("shard",))


def apply(module: nn.Module, placement: Placement, mesh: Any, *, frozen: bool = False) -> nn.Module:
    """Wrap `module` (a policy, or the frozen reference copy) in place with `fully_shard`: each block,
    then the root. Returns it (its class is now FSDP2's subclass of the original)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=_dtype(placement.param_dtype), reduce_dtype=_dtype(placement.reduce_dtype))
    offload: OffloadPolicy = OffloadPolicy()
    if frozen and placement.reference_offload and placement.parallel == "fsdp":
        offload = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())   # pinned host memory needs CUDA
    blocks, root = shard_units(module)
    units = [*blocks, root]
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=mp, offload_policy=offload,
                    reshard_after_forward=placement.reshard_after_forward)
    for unit in units:
        unit.set_gradient_divide_factor(1.0)          # sum over ranks: the loss is normalised globally
        unit.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM); scaling by 1 is exact
    return module


def is_wrapped(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())


def set_gradient_sync(module: nn.Module, enabled: bool) -> None:
    """Skip the reduce-scatter on all but the last micro-batch of an accumulation (FSDP2 keeps the
    unsharded gradients until then)."""
    from torch.distributed.fsdp import FSDPModule

    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.set_requires_gradient_sync(enabled, recurse=False)


def full_state(module: nn.Module, *, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict on rank 0, on the CPU; `{}` on the other ranks. Collective.
    `trainable_only` leaves frozen parameters out (a LoRA policy's 8B base, which its folder already holds)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                 ignore_frozen_params=trainable_only))


def local_bytes(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes this rank actually holds: parameters and persistent buffers, gradients (trainable parameters'
    gradients, whether allocated yet or not), optimizer state. Sharded tensors count their local shard only. What
    `trainer.plan` predicts; compared in a test."""
    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    params = sum(local(p).numel() * local(p).element_size() for p in module.parameters())
    saved = set(module.state_dict().keys())      # persistent buffers (a VQ codebook) are held whole on every rank
    params += sum(b.numel() * b.element_size() for name, b in module.named_buffers() if name in saved)
    grads = sum(local(p).numel() * local(p).element_size() for p in module.parameters() if p.requires_grad)
    opt = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            for v in state.values():
                if torch.is_tensor(v) and v.dim() > 0:
                    opt += local(v).numel() * local(v).element_size()
    return {"parameters": params, "gradients": grads, "optimizer": opt}
