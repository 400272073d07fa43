"""`paintbench compare RUN_A RUN_B`: per-metric difference (B − A) on shared prompts, paired test."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--metric", action="append", help="only these metrics")
    p.add_argument("--n-resamples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from paintbench.harness.report import compare_runs, format_comparison

    cmp = compare_runs(args.run_a, args.run_b, metrics=args.metric, n_resamples=args.n_resamples, seed=args.seed)
    print(json.dumps(cmp, indent=2) if args.json else format_comparison(cmp))
    return 0
