"""`paintbench results RUN`: the results table of a run directory."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--json", action="store_true", help="print results.json")


def run(args: argparse.Namespace) -> int:
    from paintbench.harness.report import format_results, load_results

    results = load_results(args.run)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0
