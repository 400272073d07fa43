"""How long the README's `paintbench train shapes-tiny --out DIR` takes, end to end, as a user runs it.

    python benchmarks/bench_train_cli.py                 # the shipped config, default threads
    python benchmarks/bench_train_cli.py --threads 1     # OMP_NUM_THREADS=1 (one intra-op thread)
    python benchmarks/bench_train_cli.py steps=10        # key=value overrides pass through

Prints the command's final line (reward first -> last round, held-out score before -> after), and wall
and CPU seconds with the phase split read from its progress lines: the supervised warm start, then the
RL rounds with their two held-out evaluations (the README's timing claim comes from this, on the
project's 2-core machine; run it on a quiet machine: other jobs inflate both numbers).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the run (0: torch's default)")
    args, overrides = ap.parse_known_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "paintbench", "train", "shapes-tiny", "--out", f"{tmp}/t",
                              *overrides], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    warm = [float(m.group(1)) for m in re.finditer(r"^warm start \d+/\d+.*\((\d+) s, ETA", out.stderr, re.M)]
    final = next((ln for ln in out.stdout.splitlines() if ln.startswith("final")), "")
    print(final)
    split = f" (warm start {warm[-1]:.0f} s, RL rounds and evaluations {wall - warm[-1]:.0f} s)" if warm else ""
    print(f"paintbench train shapes-tiny {' '.join(overrides)}: wall {wall:.0f} s{split}, CPU "
          f"{usage.ru_utime + usage.ru_stime:.0f} s, threads {args.threads or 'default'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
