"""Sharded training on the visible devices: step time, peak memory and held bytes per rank against the
memory plan (`paintbench train plan`), for each placement (`none` in one process; `ddp`, `fsdp` on all).

    python benchmarks/bench_train_parallel.py --device cuda --json out.json        # all visible GPUs
    python benchmarks/bench_train_parallel.py --device cpu --nproc 2 --quick       # gloo smoke run

It launches itself under `torch.distributed.run` once per placement; each rank trains the shipped
`shapes-tiny` config (or `--config`, with `key=value` overrides) for `--steps` rounds after one warm-up
round, then reports the median round time, `torch.cuda.max_memory_allocated` (GPU only), and the bytes
its shards hold beside the plan's parameters + gradients + optimizer figures for that rank. On a GPU the
plan's activation estimate can be compared with the measured peak here (it is labelled an estimate
until then).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    import statistics

    import torch

    from paintbench.config import parse_overrides
    from paintbench.trainer import parallel
    from paintbench.trainer.config import load_config
    from paintbench.trainer.loop import Trainer
    from paintbench.trainer.plan import make_plan

    over = {**parse_overrides(args.overrides), "parallel": args.placement, "device": args.device,
            "eval_every": 0, "save_every": 0, "sample_every": 0, "tensorboard": False, "steps": args.steps + 1}
    cfg = load_config(args.config, over)
    trainer = Trainer(cfg, args.out)
    trainer.setup()
    times = []
    for step in range(1, cfg.steps + 1):
        trainer.step = step
        if torch.cuda.is_available() and args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        trainer.round(step)
        if torch.cuda.is_available() and args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if step > 1:
            times.append(time.perf_counter() - t)
    held = parallel.local_bytes(trainer.policy, trainer.optimizer)
    peak = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") and torch.cuda.is_available() else -1
    mine = torch.tensor([held["parameters"], held["gradients"], held["optimizer"], peak], dtype=torch.float64,
                        device=trainer.device if trainer.dist.backend == "nccl" else "cpu")
    rows = trainer.dist.all_gather_cat(mine[None]).tolist()
    if trainer.dist.is_main:
        plan = make_plan(cfg, trainer.dist.world_size)
        ranks = [{"rank": r, "held_bytes": int(sum(row[:3])), "peak_allocated_bytes": int(row[3]),
                  "plan_bytes": plan.parameters[r] + plan.gradients[r] + plan.optimizer[r],
                  "plan_activations_estimate": plan.activations} for r, row in enumerate(rows)]
        result = {"label": args.label or args.config, "policy": cfg.policy,
                  "placement": trainer.placement.parallel, "world_size": trainer.dist.world_size,
                  "device": args.device, "median_round_s": statistics.median(times), "rounds": len(times),
                  "ranks": ranks}
        Path(args.result).write_text(json.dumps(result, indent=2))
    trainer.dist.barrier()
    trainer.dist.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="shapes-tiny")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--nproc", type=int, default=0, help="processes (default: every visible GPU; 2 on CPU)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--label", default="", help="what is trained, for the table (default: the config's name)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--placement", default="none", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    args.overrides = rest
    if args.worker:
        worker(args)
        return 0
    import torch

    nproc = args.nproc or (torch.cuda.device_count() if args.device.startswith("cuda") else 2)
    steps = 2 if args.quick else args.steps
    results = []
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))   # keep e.g. MMaDA's code
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for placement, n in (("none", 1), ("ddp", nproc), ("fsdp", nproc)):
        if n < 2 and placement != "none":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            me = [str(Path(__file__).resolve()), "--worker", "--placement", placement, "--device", args.device,
                  "--config", args.config, "--steps", str(steps), "--out", f"{tmp}/run", "--result", f"{tmp}/r.json",
                  "--label", args.label, *rest]
            cmd = ([sys.executable, *me] if n == 1 else
                   [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), *me])
            subprocess.run(cmd, check=True, cwd=REPO, env=env)
            results.append(json.loads(Path(f"{tmp}/r.json").read_text()))
    for r in results:
        worst = max(r["ranks"], key=lambda x: x["held_bytes"])
        print(f"{r['placement']:5} x{r['world_size']}  round {r['median_round_s']:.3f} s  held {worst['held_bytes']:,} B"
              f" (plan {worst['plan_bytes']:,} B)  peak {worst['peak_allocated_bytes']:,} B"
              f" (plan activations ~{worst['plan_activations_estimate']:,} B)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
