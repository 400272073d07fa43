"""Timings that used to be asserted in tests: bootstrap CIs of 2,000 prompts and the shapes detector.

    python benchmarks/bench_stats.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from paintbench.harness.shapes.detector import detect_batch
from paintbench.harness.shapes.layouts import random_tokens
from paintbench.harness.shapes.render import render
from paintbench.harness.stats import bootstrap_ci, paired_bootstrap


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    data = {f"p{i:04d}": rng.random(15).tolist() for i in range(2000)}
    shifted = {k: [x + 0.01 for x in v] for k, v in data.items()}
    bootstrap_ci(data, n_resamples=100)  # warm-up
    print(f"bootstrap BCa CI, 2,000 prompts x 15, 10,000 resamples: {best_of(lambda: bootstrap_ci(data, method='bca')):.3f} s")
    print(f"paired bootstrap, same size:                           {best_of(lambda: paired_bootstrap(data, shifted)):.3f} s")
    tokens = torch.stack([random_tokens(np.random.default_rng(i)) for i in range(1000)])
    images = render(tokens)
    t = best_of(lambda: detect_batch(images), repeats=2)
    print(f"shapes detector, 1,000 images of 128 px:               {t:.3f} s ({1000 / t:.0f} images/s)")


if __name__ == "__main__":
    main()
