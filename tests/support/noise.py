"""A `python:` generator for suites whose prompts no shapes generator understands: seeded smooth noise."""

from __future__ import annotations

import numpy as np
from PIL import Image


def smooth_noise(prompts, seeds, size=(64, 64)):
    out = []
    for seed in seeds:
        base = np.random.default_rng(int(seed)).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        out.append(Image.fromarray(base).resize(size, Image.BICUBIC))
    return out
