"""The detector: Mask2Former with mmdet's pre/post-processing around it, on batches of device tensors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from paintbench.metrics.geneval.detector.checkpoint import LoadedDetector, load_detector
from paintbench.metrics.geneval.detector.processing import InstanceResult, instance_postprocess, preprocess
from paintbench.metrics.geneval.rules import Detection

# --------------------------------------------------------------------------------------------- the detector

ImagesIn = torch.Tensor | Sequence[torch.Tensor]


class Mask2FormerDetector:
    """GenEval's detector on HF Mask2Former: batched, on one device, mmdet's pre/post-processing.

    `detect(images)` takes a [B,3,H,W] tensor or a list of [3,H,W] tensors (uint8 0-255 or float 0-1,
    RGB) and returns one `InstanceResult` per image. Images of the same size are run as one batch;
    different sizes go in separate batches, so each image is processed exactly as if alone (mmdet pads
    a mixed batch to a common size, which changes what the network sees).
    """

    backend = "transformers"

    def __init__(
        self,
        loaded: LoadedDetector,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        scale: tuple[int, int] | None = None,
        max_batch: int = 16,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.loaded = loaded
        self.config = loaded.config if scale is None else replace(loaded.config, scale=tuple(scale))
        self.model = loaded.model.to(device=self.device, dtype=dtype).eval()
        self.model.requires_grad_(False)
        self.class_names = loaded.class_names
        self.max_batch = max_batch

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs: Any) -> Mask2FormerDetector:
        return cls(load_detector(path), **kwargs)

    def provenance(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "format": self.loaded.format,
            "path": str(self.loaded.path),
            "scale": list(self.config.scale),
            "queries": self.config.num_queries,
        }

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [B,Q,C+1] and mask logits [B,Q,Hp/4,Wp/4] (float32)."""
        out = self.model(pixel_values=pixel_values.to(self.dtype))
        return out.class_queries_logits.float(), out.masks_queries_logits.float()

    @torch.inference_mode()
    def detect(
        self,
        images: ImagesIn,
        *,
        min_class_prob: float | None = None,
        swap_rb: bool = False,
        keep_masks: bool = True,
    ) -> list[InstanceResult]:
        items = list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)
        results: list[InstanceResult | None] = [None] * len(items)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(items):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i}: expected a [3,H,W] RGB tensor, got shape {tuple(img.shape)}")
            groups[(int(img.shape[-2]), int(img.shape[-1]))].append(i)
        for (h, w), idx in groups.items():
            for start in range(0, len(idx), self.max_batch):
                part = idx[start : start + self.max_batch]
                batch = torch.stack([items[i].to(self.device) for i in part])
                pixels, image_hw, padded_hw = preprocess(batch, self.config, swap_rb=swap_rb)
                cls_logits, mask_logits = self.forward(pixels)
                for j, i in enumerate(part):
                    results[i] = instance_postprocess(
                        cls_logits[j], mask_logits[j], padded_hw=padded_hw, image_hw=image_hw,
                        original_hw=(h, w), max_per_image=self.config.max_per_image,
                        min_class_prob=min_class_prob, keep_masks=keep_masks,
                    )
        return [r for r in results if r is not None]

    def detect_objects(self, images: ImagesIn, *, with_masks: bool = False) -> list[dict[str, list[Detection]]]:
        """GenEval's input per image: class name → raw `Detection`s (all of mmdet's top 100)."""
        return [r.to_detections(self.class_names, with_masks=with_masks)[0] for r in self.detect(images)]
