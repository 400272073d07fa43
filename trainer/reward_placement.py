"""Where rewards are computed: on every rank (`per_rank`), or on a few ranks for all (`reward_ranks`).

The trainer has one reward interface, a *scorer*: `scorer(images uint8 [B,3,H,W], prompts, metadata) ->
RewardResult` (`trainer.rewards.RewardModel` in process; any object with that call works). This module
places it. With `reward_ranks: [r, ...]` only those ranks load the reward models (an 8B policy and a 7B
HPSv3 need not share a GPU): every rank's decoded images are gathered, the global batch is split into
contiguous chunks, one per reward rank, each reward rank scores its chunk in the scorer's own batches,
and one all-reduce of a [rows, values] table (each row written by exactly one rank, zeros elsewhere:
x + 0 is x, so the sum is exact) brings every rank the rewards of its own rows. Group statistics are
computed afterwards over the gathered global batch, as with `per_rank`, so they stay exact when a prompt
group spans ranks. Nothing is pickled: the extra keys travel as UTF-8 JSON in a byte tensor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from paintbench.harness.dist import Dist
from paintbench.trainer.rewards import RewardResult


def chunks(total: int, parts: int) -> list[range]:
    """`total` rows split into `parts` contiguous, near-equal ranges (the first ones one longer)."""
    base, extra = divmod(total, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        out.append(range(start, stop))
        start = stop
    return out


def check_reward_ranks(reward_ranks: Sequence[int], world_size: int) -> None:
    bad = [r for r in reward_ranks if r >= world_size]
    if bad:
        from paintbench.errors import UserError

        raise UserError(f"reward_ranks {list(reward_ranks)}: rank(s) {bad} do not exist with {world_size} process(es)")


def _broadcast_keys(dist: Dist, keys: list[str], src: int) -> list[str]:
    import torch.distributed as td

    dev = dist._collective_device
    data = json.dumps(keys).encode("utf-8") if dist.rank == src else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    td.broadcast(size, src=src)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=dev)
    if dist.rank == src:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    td.broadcast(buf, src=src)
    return json.loads(bytes(buf.cpu().tolist()).decode("utf-8"))


def score_on_reward_ranks(dist: Dist, scorer: Any, reward_ranks: Sequence[int], names: Sequence[str],
                          images: torch.Tensor, rows: range, prompts: Sequence[str],
                          metadata: Sequence[Mapping[str, Any]]) -> RewardResult:
    """This rank's rewards (rows `rows` of the global batch), scored on `reward_ranks`. Collective: every
    rank calls it once per round with its own decoded images; `prompts`/`metadata` cover the *global*
    batch (every rank knows the round's records). `scorer` is None on ranks that hold no reward models."""
    import torch.distributed as td

    dev = dist._collective_device
    everyone = dist.all_gather_cat(images.to(dev).contiguous())          # [B·G, 3, H, W] on every rank
    ranks = sorted(reward_ranks)
    mine = chunks(len(everyone), len(ranks))
    table: torch.Tensor | None = None
    extra_keys: list[str] = []
    part = mine[ranks.index(dist.rank)] if dist.rank in ranks else range(0)
    if len(part):
        result = scorer(everyone[part.start:part.stop], list(prompts[part.start:part.stop]),
                        list(metadata[part.start:part.stop]))
        extra_keys = sorted(result.extras)
    extra_keys = _broadcast_keys(dist, extra_keys, ranks[0])
    columns = [*names, *extra_keys]
    table = torch.zeros(len(everyone), len(columns), dtype=torch.float32, device=dev)
    if len(part):
        values = [result.components[n] for n in names] + [result.extras[k] for k in extra_keys]
        table[part.start:part.stop] = torch.stack([v.float().to(dev) for v in values], dim=1)
    td.all_reduce(table)
    local = table[rows.start:rows.stop].cpu()
    return RewardResult({n: local[:, i].contiguous() for i, n in enumerate(names)},
                        {k: local[:, len(names) + i].contiguous() for i, k in enumerate(extra_keys)})
