"""The `paintbench` command line.

Each subcommand lives in its own module under `paintbench.commands` and is imported only when it
runs, so `paintbench metrics` starts fast and never loads model code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import io
import os
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from paintbench.errors import UserError
from paintbench.text import printable

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
    "serve": ("paintbench.commands.serve", "serve metrics over HTTP on Ray Serve (batched, for training and scoring)"),
}


def build_parser() -> argparse.ArgumentParser:
    from paintbench import __version__

    parser = argparse.ArgumentParser(
        prog="paintbench",
        description="Benchmark text-to-image models with official-parity metrics.",
    )
    parser.add_argument("--version", action="version", version=f"paintbench {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of every error (also PAINTBENCH_DEBUG=1)")
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
    sys.stdout = PlainText(sys.stdout)  # record text (categories, prompts, names) can carry escape sequences
    debug = bool(getattr(args, "debug", False)) or os.environ.get("PAINTBENCH_DEBUG", "") not in ("", "0")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        # on a line of its own (a progress bar may be mid-line), and true whether or not anything finished
        print(f"\npaintbench {args.command}: interrupted; whatever had finished is kept: rerun the same command "
              f"to resume{' (with --resume)' if args.command == 'train' else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `paintbench results ... | head`
        return 0
    except Exception as e:
        message = user_message(e)
        if message is None or debug:
            raise  # a bug (ours or in the user's own code): the traceback is the report
        print(f"paintbench {args.command}: error: {printable(message, 2000)}", file=sys.stderr)
        return 2
    finally:
        if isinstance(sys.stdout, PlainText):
            with contextlib.suppress(BrokenPipeError):
                sys.stdout.flush()
            sys.stdout = sys.stdout.raw


# The machine, not the code, is at fault: disk full, no permission, read-only file system.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


def user_message(e: BaseException) -> str | None:
    """The one line to print for an error the user can fix from its message, or None for a bug.

    `UserError` (and the domain errors that subclass it) always; an `OSError` only when the machine is
    the cause (disk full, permissions), since a missing file deep inside the code is a bug to report."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror or e}"
    return None


# C0 controls but tab and newline, DEL, and C1 controls: what a terminal acts on (ESC starts a sequence
# that can retitle the window, move the cursor and overwrite a line already printed).
# Bidirectional overrides and isolates (U+202E reverses what follows) and the line/paragraph separators
# are escaped too: they reorder or split what the reader sees. Tab and newline inside a *value* are
# escaped by the printers themselves (`paintbench.text.printable`), which know a value from the layout.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def plain(text: str) -> str:
    """`text` with every terminal control character shown as an escape (`\\u001b`), never acted on."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)  # also a valid escape inside JSON strings


class PlainText(io.TextIOBase):
    """A text stream that writes through `plain`: what paintbench prints cannot drive the terminal."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(plain(text))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", "utf-8")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
