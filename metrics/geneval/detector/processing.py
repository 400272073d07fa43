"""mmdet's test-time pre- and post-processing in torch, on a whole batch on the device (see the
package docstring for the exact steps and their official sources)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from paintbench.metrics.geneval.detector.configuration import (
    MMDET_MEAN,
    MMDET_STD,
    OBJECT_NAMES,
    SWIN_S_CONFIG,
    DetectorConfig,
)
from paintbench.metrics.geneval.rules import Detection

# --------------------------------------------------------------------------------------------- preprocessing

def rescale_size(height: int, width: int, scale: tuple[int, int] = (1333, 800)) -> tuple[int, int]:
    """mmcv's `rescale_size` for a keep-ratio resize into `scale`: the long side ≤ max(scale), the short
    side ≤ min(scale), the factor the smaller of the two, each side rounded as `int(x * f + 0.5)`.
    Returns (new_height, new_width)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def padded_size(height: int, width: int, divisor: int = 32) -> tuple[int, int]:
    """mmcv's `impad_to_multiple`: each side rounded up to a multiple of `divisor` (pad bottom/right)."""
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor


def to_uint8_batch(images: torch.Tensor) -> torch.Tensor:
    """A [B,3,H,W] batch as uint8 values (float 0-1 inputs are quantised as saving a PNG would be:
    ×255, rounded, clamped), on its own device."""
    if images.dtype == torch.uint8:
        return images
    return (images.float() * 255.0).round().clamp(0, 255).to(torch.uint8)


def resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """mmcv's `imresize(img, (w, h), interpolation="bilinear", backend="cv2")`, i.e. OpenCV's
    `cv2.resize(..., INTER_LINEAR)`, on each uint8-valued image of a [B,3,H,W] batch. Returns float32
    integer values on x's device.

    OpenCV itself does the resize: its uint8 bilinear path is fixed-point (11-bit weights, integer
    rounding), which a float interpolation rounded to integers does not reproduce (8-11 % of values one
    grey level off, enough to flip GenEval verdicts). OpenCV 4.7 (GenEval's pin) and 5.1 give identical
    bytes here (tests/test_geneval_detector.py checks paintbench's output against cv2 directly)."""
    import cv2
    import numpy as np

    if tuple(x.shape[-2:]) == tuple(size):
        return x.float()
    height, width = size
    pixels = to_uint8_batch(x).permute(0, 2, 3, 1).contiguous().cpu().numpy()   # [B, H, W, 3] as cv2 wants
    out = np.stack([cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR) for img in pixels])
    return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).float()


def preprocess(
    images: torch.Tensor,
    cfg: DetectorConfig = SWIN_S_CONFIG,
    *,
    swap_rb: bool = False,
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """mmdet's test pipeline for a batch of same-size RGB images ([B,3,H,W] uint8 or float 0-1).

    Returns the normalised, padded `pixel_values` [B,3,Hp,Wp] (float32, on the input's device), the
    resized size (h, w) and the padded size. `swap_rb` feeds the detector B,G,R instead of R,G,B, which
    is what Flow-GRPO's reward server does by passing RGB arrays to mmdet (which expects BGR).
    """
    x = to_uint8_batch(images)
    if swap_rb:
        x = x.flip(1)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    new_h, new_w = rescale_size(h, w, cfg.scale)
    pad_h, pad_w = padded_size(new_h, new_w, cfg.size_divisor)
    y = resize_uint8(x, (new_h, new_w))
    if (pad_h, pad_w) != (new_h, new_w):
        y = F.pad(y, (0, pad_w - new_w, 0, pad_h - new_h), value=float(cfg.pad_value))
    mean = torch.tensor(MMDET_MEAN, device=y.device, dtype=torch.float32).view(1, 3, 1, 1)
    inv_std = (1.0 / torch.tensor(MMDET_STD, dtype=torch.float64)).to(device=y.device, dtype=torch.float32)
    return (y - mean) * inv_std.view(1, 3, 1, 1), (new_h, new_w), (pad_h, pad_w)


# --------------------------------------------------------------------------------------------- postprocessing

@dataclass
class InstanceResult:
    """Raw instance detections of one image (mmdet's `instance_postprocess` output), on the device.

    `labels`, `scores` (float32), `boxes` ([x1, y1, x2, y2], float32), `class_probs` and `queries` (the
    decoder query each came from) have one row per detection in descending class-probability order. `masks` holds one bool H×W mask per distinct query and
    `mask_index[i]` is the row of detection i (a query can carry several classes).
    """

    labels: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor
    class_probs: torch.Tensor
    queries: torch.Tensor
    masks: torch.Tensor | None
    mask_index: torch.Tensor
    height: int
    width: int

    def __len__(self) -> int:
        return int(self.labels.numel())

    def mask(self, i: int) -> torch.Tensor:
        if self.masks is None:
            raise ValueError("this result was computed without masks")
        return self.masks[int(self.mask_index[i])]

    def to_detections(
        self, names: Sequence[str] = OBJECT_NAMES, *, with_masks: bool = False
    ) -> tuple[dict[str, list[Detection]], dict[Detection, int]]:
        """GenEval's view: class name → raw `Detection`s (scores as float32 values), plus each
        detection's row here (to find its mask on the device later). `with_masks` also copies each
        mask to the CPU as a bool array, as the official code holds them."""
        labels = self.labels.tolist()
        scores = self.scores.float().cpu().numpy()
        boxes = self.boxes.float().cpu().numpy()
        out: dict[str, list[Detection]] = defaultdict(list)
        rows: dict[Detection, int] = {}
        for i, label in enumerate(labels):
            mask = self.mask(i).cpu().numpy() if with_masks else None
            det = Detection(box=tuple(float(v) for v in boxes[i]), score=float(scores[i]), mask=mask)
            out[names[label]].append(det)
            rows[det] = i
        return dict(out), rows


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """mmdet's `mask2bbox`: the tight box `[x0, y0, x1 + 1, y1 + 1]` of each bool mask [N,H,W];
    all zeros for an empty mask."""
    n, h, w = masks.shape
    if n == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    has = rows.any(dim=1) & cols.any(dim=1)
    y0 = rows.to(torch.uint8).argmax(dim=1)
    y1 = h - 1 - rows.flip(1).to(torch.uint8).argmax(dim=1)
    x0 = cols.to(torch.uint8).argmax(dim=1)
    x1 = w - 1 - cols.flip(1).to(torch.uint8).argmax(dim=1)
    boxes = torch.stack([x0, y0, x1 + 1, y1 + 1], dim=1).to(torch.float32)
    return boxes * has[:, None]


def instance_postprocess(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    *,
    padded_hw: tuple[int, int],
    image_hw: tuple[int, int],
    original_hw: tuple[int, int],
    max_per_image: int = 100,
    min_class_prob: float | None = None,
    keep_masks: bool = True,
) -> InstanceResult:
    """mmdet's instance post-processing for one image.

    `class_logits` [Q, C+1] (last column = no object), `mask_logits` [Q, h, w] at 1/4 of the padded
    input. `min_class_prob` (optional) drops, after the top-k, the pairs whose class probability is not
    above it: their final score (class probability × mask score ≤ 1) cannot be above it either, so a
    caller that thresholds at t loses nothing by passing t, and skips their masks.
    """
    q, c1 = class_logits.shape
    n_classes = c1 - 1
    probs = class_logits.float().softmax(dim=-1)[:, :-1]
    k = min(max_per_image, q * n_classes)
    top_probs, top_idx = probs.flatten().topk(k, sorted=True)
    if min_class_prob is not None:
        keep = top_probs > min_class_prob
        top_probs, top_idx = top_probs[keep], top_idx[keep]
    query = torch.div(top_idx, n_classes, rounding_mode="floor")
    labels = top_idx % n_classes
    h0, w0 = original_hw
    if query.numel() == 0:
        empty = torch.zeros(0, device=class_logits.device)
        return InstanceResult(
            labels=labels, scores=empty.float(), boxes=empty.float().reshape(0, 4), class_probs=top_probs,
            queries=query,
            masks=torch.zeros((0, h0, w0), dtype=torch.bool, device=class_logits.device) if keep_masks else None,
            mask_index=labels.clone(), height=h0, width=w0,
        )
    unique_q, mask_index = torch.unique(query, return_inverse=True)
    m = mask_logits[unique_q].float()[None]
    m = F.interpolate(m, size=padded_hw, mode="bilinear", align_corners=False)
    m = m[..., : image_hw[0], : image_hw[1]]
    if tuple(image_hw) != tuple(original_hw):
        m = F.interpolate(m, size=original_hw, mode="bilinear", align_corners=False)
    m = m[0]
    binary = m > 0
    mask_scores = (m.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    boxes = masks_to_boxes(binary)
    return InstanceResult(
        labels=labels,
        scores=top_probs * mask_scores[mask_index],
        boxes=boxes[mask_index],
        class_probs=top_probs,
        queries=query,
        masks=binary if keep_masks else None,
        mask_index=mask_index,
        height=h0,
        width=w0,
    )
