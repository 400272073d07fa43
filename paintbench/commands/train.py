"""`paintbench train CONFIG [key=value ...] --out DIR [--resume]`: HT-GRPO training.

CONFIG is a YAML file or the name of a shipped config (`shapes-tiny`, the offline default; the paper's
backbones: `mmada-geneval`, `lumina-dimoo-geneval`, `mmada-preference`). Every key of
`trainer.config.HTGRPOConfig` can be overridden as key=value (values read as YAML: numbers, booleans,
lists such as `reward=[shapes-geneval=1.0,hps-v2.1=0.5]`); `--reward NAME=WEIGHT` (repeatable) replaces
the reward list. Multi-GPU: `torchrun --nproc-per-node 8 -m paintbench train CONFIG --out DIR`.

    paintbench train CONFIG --dry-run                       # check it all without loading a model
    paintbench train plan CONFIG --gpus 8 --gpu-memory 80GiB  # per-rank memory, and whether it fits
    paintbench train export RUN --out DIR                   # the trained policy in the model's own format
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file, or the name of a shipped config (shapes-tiny)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (see --list-keys)")
    p.add_argument("--out", help="run directory (metrics.jsonl, samples/, checkpoints/, config.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--reward", action="append", metavar="NAME=WEIGHT",
                   help="reward provider and weight (repeatable; replaces the config's list)")
    p.add_argument("--weights-dir", help="weights directory of the reward metrics (default: $PAINTBENCH_WEIGHTS or "
                   "~/.cache/paintbench/weights)")
    p.add_argument("--list-keys", action="store_true", help="print every config key with its default and help")
    p.add_argument("--dry-run", action="store_true", help="check the config, prompts, reward weights, policy folders "
                   "and memory plan without loading a model; print the resolved config")
    p.add_argument("--gpus", type=int, help="plan / --dry-run: number of GPUs (ranks) to plan for "
                   "(default: $WORLD_SIZE or 1)")
    p.add_argument("--gpu-memory", help="plan / --dry-run: memory per GPU, e.g. 80GiB, to say whether it fits")
    p.add_argument("--quiet", action="store_true", help="no progress (a bar on a terminal, plain lines in a log)")


def run(args: argparse.Namespace) -> int:
    from paintbench.config import help_table, parse_overrides
    from paintbench.errors import UserError
    from paintbench.trainer.config import HTGRPOConfig, check_rewards, load_config

    if args.list_keys:
        print(help_table(HTGRPOConfig))
        return 0
    if args.config == "export":
        return export(args)
    planning = args.config == "plan"
    if planning:
        if not args.overrides:
            raise UserError("usage: paintbench train plan CONFIG [key=value ...] --gpus N [--gpu-memory 80GiB]")
        args.config, args.overrides = args.overrides[0], args.overrides[1:]
    overrides = parse_overrides(args.overrides)
    if args.reward:
        overrides["reward"] = list(args.reward)
    if args.weights_dir:
        overrides["weights_dir"] = args.weights_dir
    cfg = load_config(args.config, overrides)
    check_rewards(cfg)  # NAME=WEIGHT entries and metric names, before any model is built
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: a file, not a folder")
    if cfg.weights_dir and not Path(cfg.weights_dir).expanduser().is_dir():
        raise UserError(f"--weights-dir {cfg.weights_dir}: no such folder")
    if planning or args.dry_run:
        return plan_or_check(cfg, args, check=not planning)
    if not args.out:
        raise UserError("--out DIR is required")
    from paintbench.trainer.loop import train

    last = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    if last:
        print(final_line(args.out, last))
    print(f"run written to {args.out} (metrics.jsonl, checkpoints/)")
    return 0


def plan_or_check(cfg, args: argparse.Namespace, *, check: bool) -> int:
    """`plan`: the memory table. `--dry-run`: the resolved config, the problems found (exit 2 if any) and
    the plan. Neither loads a model."""
    import os

    from paintbench.config import to_dict
    from paintbench.errors import UserError
    from paintbench.trainer.plan import make_plan, parse_bytes, render

    gpus = args.gpus if args.gpus is not None else int(os.environ.get("WORLD_SIZE", "1") or 1)
    memory = parse_bytes(args.gpu_memory) if args.gpu_memory else None
    if check:
        from paintbench.trainer.preflight import problems

        print(json.dumps(to_dict(cfg), indent=2))
        found = problems(cfg)
        if found:
            raise UserError(f"--dry-run found {len(found)} problem(s): " + "; ".join(found))
    plan = make_plan(cfg, gpus, memory)
    print(render(plan, cfg))
    if check:
        print("dry run: config, prompts, reward weights and policy folders are ready" +
              ("" if plan.fits() is not False else " (but the memory plan does not fit)"))
    return 0 if plan.fits() is not False or check else 3


def export(args: argparse.Namespace) -> int:
    """`paintbench train export RUN --out DIR`: the run's latest policy (or a checkpoint's) in the model's
    own format: a backbone's LoRA merged into its weights and saved with `save_pretrained` (the model's
    own `from_pretrained` loads it; `policy_path=DIR` trains or evaluates it again), the tiny policy as
    its policy folder."""
    from paintbench.errors import UserError
    from paintbench.trainer import policies

    if len(args.overrides) != 1 or not args.out:
        raise UserError("usage: paintbench train export RUN_OR_CHECKPOINT --out DIR")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty folder (an export never overwrites)")
    folder = policies.resolve(args.overrides[0])
    policy = policies.load(folder, dtype="float32")
    written = policy.export(out)
    print(f"exported {folder} ({policy.kind}) to {written}")
    return 0


def final_line(out: str, last: dict) -> str:
    """'reward 0.212 -> 0.455 (round 1 -> 60); held-out shapes-geneval 0.209; kl 0.012': what a user reads
    to know whether training helped (a held-out score only when `eval_every` evaluated the run)."""
    import math

    from paintbench.trainer.logs import read_metrics

    rows = read_metrics(out)
    rewards = [(r["step"], r["reward/mean"]) for r in rows if isinstance(r.get("reward/mean"), (int, float))]
    parts = []
    if rewards:
        (s0, r0), (s1, r1) = rewards[0], rewards[-1]
        parts.append(f"reward {r0:.3f} -> {r1:.3f} (round {s0} -> {s1})")
    evals: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("eval/") and isinstance(v, (int, float)) and math.isfinite(v):
                evals.setdefault(k, []).append((r["step"], v))
    for k, pts in evals.items():   # the held-out score before training and after it
        (e0, v0), (e1, v1) = pts[0], pts[-1]
        parts.append(f"held-out {k.removeprefix('eval/')} {v0:.3f} -> {v1:.3f} (round {e0} -> {e1})" if len(pts) > 1
                     else f"held-out {k.removeprefix('eval/')} {v1:.3f} (round {e1})")
    parts += [f"{k} {last[k]:.4g}" for k in ("kl", "clip_frac") if isinstance(last.get(k), (int, float))]
    return "final: " + "; ".join(parts)
