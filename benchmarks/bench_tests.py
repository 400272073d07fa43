"""Where the test suite spends its time: the slowest tests, what each proves, and the wall time.

Runs the README's test command in one environment (the main `.venv`, or tox's `models` env) with
`--durations`, then prints a table of the slowest tests with seconds and the first line of each test's
docstring (what it proves; a test over 60 s must say there why it is that slow), and the wall time of
the whole run. Parallelism is pytest's own configuration (pyproject: `-n auto --maxprocesses 4`).

    python benchmarks/bench_tests.py                      # the main suite
    python benchmarks/bench_tests.py --env models         # tox's models environment (hf-marked tests)
    python benchmarks/bench_tests.py -- -m "not slow"     # the developer's inner loop
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\s*([0-9.]+)s (call|setup|teardown)\s+(\S+)")
LIMIT_S = 60.0


@cache
def _docstrings(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            doc = ast.get_docstring(node) or ""
            out[node.name] = " ".join(doc.split("\n\n")[0].split())
    return out


def what_it_proves(nodeid: str) -> str:
    """The first paragraph of the test's docstring, else its name in words."""
    file, _, rest = nodeid.partition("::")
    name = rest.split("[")[0].split("::")[-1]
    doc = _docstrings(REPO / file).get(name, "") if (REPO / file).is_file() else ""
    return doc or name.removeprefix("test_").replace("_", " ")


def parse_durations(output: str) -> list[tuple[float, str, str]]:
    """(seconds, phase, nodeid) of pytest's `--durations` section, slowest first."""
    rows = [(float(m.group(1)), m.group(2), m.group(3)) for line in output.splitlines() if (m := LINE.match(line))]
    return sorted(rows, reverse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", choices=("main", "models"), default="main")
    ap.add_argument("--top", type=int, default=50)
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()
    extra = [f"--durations={args.top}", "-q", *args.pytest_args]
    if args.env == "main":
        cmd = [str(REPO / ".venv" / "bin" / "python"), "-m", "pytest", *extra]
    else:
        cmd = [str(REPO / ".venv" / "bin" / "tox"), "-e", "models", "--", *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t
    summary = next((ln for ln in reversed(proc.stdout.splitlines()) if " passed" in ln or " failed" in ln), "")
    print(f"{args.env}: {' '.join(cmd[1:] if args.env == 'main' else cmd)}")
    print(f"wall {wall:.0f} s ({wall / 60:.1f} min); {summary.strip('= ')}\n")
    print("| seconds | phase | test | what it proves |")
    print("|---:|---|---|---|")
    over = []
    for sec, phase, nodeid in parse_durations(proc.stdout)[: args.top]:
        print(f"| {sec:.1f} | {phase} | `{nodeid}` | {what_it_proves(nodeid)} |")
        if sec > LIMIT_S:
            over.append(nodeid)
    if over:
        print(f"\nover {LIMIT_S:.0f} s (each must say why in its docstring): {', '.join(over)}")
    if proc.returncode not in (0, 5):
        print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
