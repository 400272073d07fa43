"""How long the README's `paintbench train shapes-tiny --out DIR` takes, end to end, as a user runs it.

    python benchmarks/bench_train_cli.py            # the shipped config, default threads
    python benchmarks/bench_train_cli.py steps=10   # key=value overrides pass through

Prints wall and CPU seconds (the README's timing claim comes from this, on the project's 2-core machine).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "paintbench", "train", "shapes-tiny", "--out", f"{tmp}/t",
                              "--quiet", *sys.argv[1:]], capture_output=True, text=True)
        wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    print(out.stdout.strip().splitlines()[0] if out.stdout.strip() else "")
    print(f"paintbench train shapes-tiny {' '.join(sys.argv[1:])}: wall {wall:.0f} s, "
          f"CPU {usage.ru_utime + usage.ru_stime:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
