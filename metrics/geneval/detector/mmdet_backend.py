"""The optional backend that runs mmdet itself (needs mmdet and a compiled mmcv; never required).

`pipeline="geneval"` (default) feeds the network what GenEval's mmdet 2.x test pipeline makes, on any
mmdet version, with mmcv's own functions: `imrescale` into 1333×800 (OpenCV's uint8 bilinear resize),
`impad_to_multiple(32, pad_val=(128, 128, 128))` *before* `imnormalize` (BGR → RGB, ImageNet mean/std),
then `predict` with the 2.x metas (`img_shape` = the resized size, `batch_input_shape` = the padded one).
mmdet 3.x's own `Pad`/`DetDataPreprocessor` cannot be configured into that (its `Pad` overwrites
`img_shape`, its preprocessor pads with 0 after normalising), so the 3.x path calls the model directly.
`pipeline="mmdet"` runs `inference_detector` with the installed mmdet's own pipeline (under 3.x: not
GenEval's numbers; recorded). `scripts/mmdet_goldens.py` uses the first to make the goldens that CI
compares paintbench's detector with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from paintbench.metrics.geneval.detector.configuration import (
    MMDET_MEAN,
    MMDET_STD,
    OBJECT_NAMES,
    SWIN_S_CONFIG,
    DetectorConfig,
)
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


def mmdet_config(cfg: DetectorConfig | None = None, base: str | Path | None = None) -> Any:
    """GenEval's mmdet config (`base`, default `default_mmdet_config()`) with the architecture of `cfg`
    (default: GenEval's own Swin-S): the mmdet model a checkpoint of that architecture loads into."""
    from mmengine import Config

    c = Config.fromfile(str(base or default_mmdet_config()))
    if cfg is None:
        return c
    widths = [cfg.embed_dim * 2**i for i in range(len(cfg.depths))]
    c.model.backbone.update(embed_dims=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.swin_heads),
                            window_size=cfg.window_size, init_cfg=None,
                            mlp_ratio=int(cfg.mlp_ratio) if float(cfg.mlp_ratio).is_integer() else cfg.mlp_ratio)
    head = c.model.panoptic_head
    head.update(in_channels=widths, feat_channels=cfg.hidden_dim, out_channels=cfg.hidden_dim,
                num_queries=cfg.num_queries, num_things_classes=cfg.num_classes)
    head.pixel_decoder.encoder.num_layers = cfg.encoder_layers
    head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.update(embed_dims=cfg.hidden_dim, num_heads=cfg.attention_heads)
    head.pixel_decoder.encoder.layer_cfg.ffn_cfg.update(embed_dims=cfg.hidden_dim, feedforward_channels=cfg.encoder_ffn_dim)
    head.pixel_decoder.positional_encoding.num_feats = cfg.hidden_dim // 2
    head.positional_encoding.num_feats = cfg.hidden_dim // 2
    dec = head.transformer_decoder
    dec.num_layers = cfg.decoder_layers
    dec.layer_cfg.self_attn_cfg.update(embed_dims=cfg.hidden_dim, num_heads=cfg.attention_heads)
    dec.layer_cfg.cross_attn_cfg.update(embed_dims=cfg.hidden_dim, num_heads=cfg.attention_heads)
    dec.layer_cfg.ffn_cfg.update(embed_dims=cfg.hidden_dim, feedforward_channels=cfg.decoder_ffn_dim)
    c.model.panoptic_fusion_head.num_things_classes = cfg.num_classes
    c.model.test_cfg.max_per_image = cfg.max_per_image
    return c


def geneval_inputs(bgr: Any, cfg: DetectorConfig = SWIN_S_CONFIG) -> tuple[torch.Tensor, dict[str, Any]]:
    """GenEval's mmdet 2.x test pipeline on one BGR uint8 image [H, W, 3], with mmcv's own functions:
    (the normalised, padded input [1, 3, Hp, Wp], the 2.x image metas)."""
    import mmcv
    import numpy as np

    h0, w0 = bgr.shape[:2]
    img = mmcv.imrescale(bgr, cfg.scale, interpolation="bilinear", backend="cv2")
    h, w = img.shape[:2]
    img = mmcv.impad_to_multiple(img, cfg.size_divisor, pad_val=(int(cfg.pad_value),) * 3)
    img = mmcv.imnormalize(img, np.array(MMDET_MEAN, dtype=np.float32), np.array(MMDET_STD, dtype=np.float32),
                           to_rgb=True)
    metas = {"ori_shape": (h0, w0), "img_shape": (h, w), "pad_shape": img.shape[:2],
             "batch_input_shape": img.shape[:2], "scale_factor": (w / w0, h / h0)}
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None], metas


def mmdet_pipeline(mmdet_version: str, pipeline: str = "mmdet") -> dict[str, Any]:
    """Which test pipeline `inference_detector` runs under this mmdet, recorded with every result.

    GenEval's numbers come from mmdet 2.x running its config's 2.x test pipeline (grey-128 padding
    *before* Normalize, OpenCV's uint8 resize). mmdet 3.x runs its own converted pipeline instead (zero
    padding of the normalised tensor in its data preprocessor): on non-square images scores differ from
    GenEval's by up to 0.94, so those are labelled as not GenEval's numbers. paintbench's own detector
    (`detector="geneval"`) runs GenEval's 2.x pipeline on any install."""
    major = int(mmdet_version.split(".")[0])
    if pipeline == "geneval":
        return {"pipeline": "GenEval's mmdet 2.x test pipeline (mmcv imrescale, grey-128 pad, imnormalize) "
                            f"before mmdet {mmdet_version}'s model", "geneval_numbers": True}
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
        pipeline: str = "geneval",
        architecture: DetectorConfig | None = None,
    ) -> None:
        if pipeline not in ("geneval", "mmdet"):
            raise ValueError(f"pipeline must be 'geneval' or 'mmdet', got {pipeline!r}")
        ok, why = mmdet_available()
        if not ok:
            raise ImportError(f"the mmdet backend needs mmdet with a compiled mmcv: {why}")
        from mmdet.apis import init_detector

        self.device = torch.device(device)
        self.pipeline = pipeline
        self.architecture = architecture or SWIN_S_CONFIG
        self.config_path = Path(config) if config is not None else default_mmdet_config()
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.model = model if model is not None else init_detector(
            mmdet_config(architecture, self.config_path) if architecture is not None else str(self.config_path),
            None if checkpoint is None else str(checkpoint), device=str(self.device)
        )
        self.class_names = OBJECT_NAMES
        import mmdet

        if not mmdet_pipeline(mmdet.__version__, pipeline)["geneval_numbers"]:
            import warnings

            warnings.warn(f"detector='mmdet' on mmdet {mmdet.__version__} runs mmdet 3.x's own test pipeline, "
                          "not GenEval's (results record it); pipeline='geneval' runs GenEval's", stacklevel=2)

    def provenance(self) -> dict[str, Any]:
        import mmdet

        return {"backend": self.backend, "config": str(self.config_path), "path": str(self.checkpoint),
                "mmdet": mmdet.__version__, **mmdet_pipeline(mmdet.__version__, self.pipeline)}

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
            res = self._geneval_predict(bgr) if self.pipeline == "geneval" else inference_detector(self.model, bgr)
            out.append(self._to_result(res, rgb.shape[0], rgb.shape[1], min_class_prob))
        return out

    def _geneval_predict(self, bgr: Any) -> Any:
        import mmdet

        if int(mmdet.__version__.split(".")[0]) < 3:   # mmdet 2.x: its own pipeline is GenEval's
            from mmdet.apis import inference_detector

            return inference_detector(self.model, bgr)
        from mmdet.structures import DetDataSample

        inputs, metas = geneval_inputs(bgr, self.architecture)
        sample = DetDataSample(metainfo=metas)
        return self.model.predict(inputs.to(self.device), [sample], rescale=True)[0]

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
