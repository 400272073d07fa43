"""The optional backend that runs mmdet itself (needs mmdet and a compiled mmcv; never required)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from paintbench.metrics.geneval.detector.configuration import OBJECT_NAMES
from paintbench.metrics.geneval.detector.modeling import ImagesIn
from paintbench.metrics.geneval.detector.processing import InstanceResult, to_uint8_batch

# --------------------------------------------------------------------------------------------- mmdet backend

def mmdet_available() -> tuple[bool, str]:
    """Whether the optional mmdet backend can run here, and why not."""
    try:
        import mmcv.ops  # noqa: F401
        import mmdet.apis  # noqa: F401
    except Exception as e:  # ImportError, or mmcv without its compiled ops
        return False, f"mmdet/mmcv.ops not importable ({type(e).__name__}: {e})"
    return True, ""


def default_mmdet_config() -> Path:
    """GenEval's config inside the installed mmdet: the 2.x repo's `configs/` (editable install) or
    the 3.x wheel's `.mim/configs/` (renamed `..._8xb2-lsj-50e_coco.py` there)."""
    import mmdet

    root = Path(mmdet.__file__).resolve().parent
    for candidate in (
        root.parent / "configs/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py",
        root / ".mim/configs/mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py",
        root.parent / "configs/mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"GenEval's Mask2Former config was not found under {root} (mmdet installs from pip lack configs/; "
        "pass the config path explicitly)"
    )


def mmdet_pipeline(mmdet_version: str) -> dict[str, Any]:
    """Which test pipeline `inference_detector` runs under this mmdet, recorded with every result.

    GenEval's numbers come from mmdet 2.x running its config's 2.x test pipeline (grey-128 padding
    *before* Normalize, OpenCV's uint8 resize). mmdet 3.x runs its own converted pipeline instead (zero
    padding of the normalised tensor in its data preprocessor): on non-square images scores differ from
    GenEval's by up to 0.94, so those are labelled as not GenEval's numbers. paintbench's own detector
    (`detector="geneval"`) runs GenEval's 2.x pipeline on any install."""
    major = int(mmdet_version.split(".")[0])
    if major < 3:
        return {"pipeline": "mmdet 2.x test pipeline (GenEval's)", "geneval_numbers": True}
    return {"pipeline": f"mmdet {mmdet_version}'s own 3.x test pipeline (zero padding after Normalize): "
                        "not GenEval's numbers", "geneval_numbers": False}


class MmdetDetector:
    """The optional reference backend: mmdet's own `init_detector` / `inference_detector` (needs mmdet
    and a compiled mmcv; never required). Same `detect` interface as `Mask2FormerDetector`, one image at
    a time as GenEval runs it; masks stay as mmdet returns them (moved to a tensor)."""

    backend = "mmdet"

    def __init__(
        self,
        checkpoint: str | Path | None,
        *,
        config: str | Path | None = None,
        device: str | torch.device = "cpu",
        model: Any = None,
    ) -> None:
        ok, why = mmdet_available()
        if not ok:
            raise ImportError(f"the mmdet backend needs mmdet with a compiled mmcv: {why}")
        from mmdet.apis import init_detector

        self.device = torch.device(device)
        self.config_path = Path(config) if config is not None else default_mmdet_config()
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.model = model if model is not None else init_detector(
            str(self.config_path), None if checkpoint is None else str(checkpoint), device=str(self.device)
        )
        self.class_names = OBJECT_NAMES
        import mmdet

        if not mmdet_pipeline(mmdet.__version__)["geneval_numbers"]:
            import warnings

            warnings.warn(f"detector='mmdet' on mmdet {mmdet.__version__} runs mmdet 3.x's own test pipeline, "
                          "not GenEval's (results record it); detector='geneval' runs GenEval's", stacklevel=2)

    def provenance(self) -> dict[str, Any]:
        import mmdet

        return {"backend": self.backend, "config": str(self.config_path), "path": str(self.checkpoint),
                "mmdet": mmdet.__version__, **mmdet_pipeline(mmdet.__version__)}

    @torch.inference_mode()
    def detect(self, images: ImagesIn, *, min_class_prob: float | None = None, swap_rb: bool = False,
               keep_masks: bool = True) -> list[InstanceResult]:
        import numpy as np
        from mmdet.apis import inference_detector

        items = list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)
        out = []
        for img in items:
            rgb = to_uint8_batch(img[None])[0].permute(1, 2, 0).cpu().numpy()
            bgr = np.ascontiguousarray(rgb if swap_rb else rgb[..., ::-1])
            res = inference_detector(self.model, bgr)
            out.append(self._to_result(res, rgb.shape[0], rgb.shape[1], min_class_prob))
        return out

    def _to_result(self, res: Any, h: int, w: int, min_prob: float | None) -> InstanceResult:
        import numpy as np

        if hasattr(res, "pred_instances"):  # mmdet 3.x DetDataSample
            inst = res.pred_instances
            labels = inst.labels.cpu()
            scores = inst.scores.float().cpu()
            boxes = inst.bboxes.float().cpu()
            masks = inst.masks.cpu().bool() if "masks" in inst else torch.zeros((len(labels), h, w), dtype=torch.bool)
        else:  # mmdet 2.x: (bbox_results, segm_results), one list entry per class
            bbox_results, segm_results = res if isinstance(res, tuple) else (res, None)
            labels_l, rows, mask_l = [], [], []
            for c, arr in enumerate(bbox_results):
                for j in range(arr.shape[0]):
                    labels_l.append(c)
                    rows.append(arr[j])
                    mask_l.append(np.asarray(segm_results[c][j], dtype=bool) if segm_results else np.zeros((h, w), bool))
            labels = torch.tensor(labels_l, dtype=torch.long)
            arr = torch.tensor(np.asarray(rows, dtype=np.float32).reshape(-1, 5))
            boxes, scores = arr[:, :4], arr[:, 4]
            masks = torch.from_numpy(np.asarray(mask_l, dtype=bool).reshape(-1, h, w))
        order = torch.argsort(scores, descending=True, stable=True)
        labels, scores, boxes, masks = labels[order], scores[order], boxes[order], masks[order]
        if min_prob is not None:
            keep = scores > min_prob
            labels, scores, boxes, masks = labels[keep], scores[keep], boxes[keep], masks[keep]
        return InstanceResult(
            labels=labels.to(self.device), scores=scores.to(self.device), boxes=boxes.to(self.device),
            class_probs=scores.to(self.device), queries=torch.full_like(labels, -1).to(self.device),
            masks=masks.to(self.device),
            mask_index=torch.arange(len(labels), device=self.device), height=h, width=w,
        )
