"""The `paintbench` command line.

Each subcommand lives in its own module under `paintbench.commands` and is imported only when it
runs, so `paintbench metrics` starts fast and never loads model code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from paintbench.errors import UserError

# name -> (module, one-line help). Each module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "metrics": ("paintbench.commands.metrics", "list metric providers, their versions and weights"),
    "score": ("paintbench.commands.score", "score a folder or a JSONL of images with one or more metrics"),
    "weights": ("paintbench.commands.weights", "list, locate, fetch or fake (tiny) weight files"),
    "suites": ("paintbench.commands.suites", "list benchmark suites"),
    "eval": ("paintbench.commands.eval", "run a suite: generate, score, aggregate with CIs (resumable)"),
    "results": ("paintbench.commands.results", "print the results table of a run directory"),
    "compare": ("paintbench.commands.compare", "compare two runs on shared prompts (paired bootstrap)"),
    "train": ("paintbench.commands.train", "train a masked-token policy with HT-GRPO (shapes-tiny runs offline on a CPU)"),
    "leaderboard": ("paintbench.commands.leaderboard", "build a static site: leaderboards, run pages, comparisons, training reports"),
    "dpg": ("paintbench.commands.dpg", "DPG-Bench: evaluate a folder of 2x2 grids, or rescore saved answers"),
    "geneval": ("paintbench.commands.geneval", "GenEval on a folder in GenEval's layout: official results + summary (resumable)"),
}


def build_parser() -> argparse.ArgumentParser:
    from paintbench import __version__

    parser = argparse.ArgumentParser(
        prog="paintbench",
        description="Benchmark text-to-image models with official-parity metrics.",
    )
    parser.add_argument("--version", action="version", version=f"paintbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come after the flags too (`paintbench train cfg --out D steps=5`)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `paintbench results ... | head`
        return 0
    except (UserError, OSError, KeyError, ValueError) as e:
        # Missing weights, unknown metric names, bad files: one line naming the problem, no traceback.
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"paintbench {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
