"""paintbench's GenEval detector against mmdet running GenEval's pipeline, from the same PNG files.

The goldens (`tests/data/mmdet_goldens/`) were made once by `scripts/mmdet_goldens.py` in a side
environment with mmdet 3.3.0, a compiled mmcv 2.1.0 and OpenCV 4.7.0 (GenEval's pin): mmdet's own
Mask2Former, fed by GenEval's mmdet 2.x test pipeline made of mmcv's own functions. Here the same
synthetic checkpoint is rebuilt from the manifest (its sha256 must match), written in both official key
formats, loaded by paintbench, and run on the same PNGs, read with PIL as a user's files would be.
Bounds (issue #16): scores within 1e-4, identical boxes, mask IoU >= 0.99, and no detection on the other
side of GenEval's thresholds (0.3, and 0.9 for counting), on every aspect ratio and both formats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paintbench.metrics.geneval import detector as D
from scripts.mmdet_goldens import build_checkpoint_model, mmdet3_state, state_sha256

pytestmark = pytest.mark.hf

GOLDENS = Path(__file__).parent / "data" / "mmdet_goldens"
MANIFEST = json.loads((GOLDENS / "manifest.json").read_text())
THRESHOLDS = (0.3, 0.9)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    model, cfg = build_checkpoint_model(MANIFEST)
    assert state_sha256(mmdet3_state(model, cfg)) == MANIFEST["state_sha256"]   # the goldens' weights
    folder = tmp_path_factory.mktemp("mmdet-goldens")
    return {fmt: D.save_checkpoint(model, cfg, folder / f"synthetic_{fmt}.pth", fmt) for fmt in ("mmdet2", "mmdet3")}


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDENS / f"{name}.npz", allow_pickle=False) as z:
        g = {k: z[k] for k in z.files}
    h, w = g["shape"]
    g["masks"] = np.unpackbits(g["masks"], axis=1)[:, : h * w].reshape(-1, h, w).astype(bool)
    return g


def match(ours, g) -> list[tuple[int, int]]:
    """Pairs (our row, golden row): same label and box, nearest score; every golden row must pair."""
    boxes, labels, scores = ours.boxes.numpy(), ours.labels.numpy(), ours.scores.numpy()
    free = np.ones(len(labels), bool)
    pairs = []
    for j in range(len(g["labels"])):
        cand = np.flatnonzero(free & (labels == g["labels"][j]) & (boxes == g["boxes"][j]).all(axis=1))
        assert len(cand), f"golden detection {j} (label {g['labels'][j]}, box {g['boxes'][j]}) has no equal box"
        i = cand[np.argmin(np.abs(scores[cand] - g["scores"][j]))]
        free[i] = False
        pairs.append((int(i), j))
    return pairs


def test_the_goldens_are_mmdets_genevals_pipeline_on_several_aspect_ratios():
    prov = MANIFEST["provenance"]
    assert prov["geneval_numbers"] is True and prov["mmdet"] == "3.3.0" and prov["opencv"].startswith("4.7.0")
    ratios = {round(w / h, 2) for _, h, w in MANIFEST["images"]}
    assert len(ratios) >= 5 and 1.0 in ratios
    assert all(s["above_0.3"] > 0 for s in MANIFEST["summary"])     # detections on both sides of 0.3


@pytest.mark.parametrize("fmt", ["mmdet2", "mmdet3"])
@pytest.mark.parametrize("name", [n for n, _, _ in MANIFEST["images"]])
def test_paintbench_equals_mmdet_from_the_same_png(checkpoints, fmt, name):
    det = D.Mask2FormerDetector.from_checkpoint(checkpoints[fmt])
    assert det.loaded.format == fmt
    image = torch.from_numpy(np.array(Image.open(GOLDENS / f"{name}.png").convert("RGB"))).permute(2, 0, 1)
    ours = det.detect([image])[0]
    g = golden(name)
    assert len(ours) == len(g["labels"]) == 100
    pairs = match(ours, g)
    ds = np.array([abs(float(ours.scores[i]) - float(g["scores"][j])) for i, j in pairs])
    assert ds.max() <= 1e-4, ds.max()
    for t in THRESHOLDS:                                          # no verdict-changing flip
        assert all((float(ours.scores[i]) > t) == (float(g["scores"][j]) > t) for i, j in pairs)
    for i, j in pairs:
        a, b = ours.mask(i).cpu().numpy(), g["masks"][j]
        union = (a | b).sum()
        assert union == 0 or (a & b).sum() / union >= 0.99, (name, j)
