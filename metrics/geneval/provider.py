"""The `geneval` provider: GenEval's verdict and Flow-GRPO's GenEval reward from images, batched.

One `score(images, prompts, metadata)` call runs, for a batch:

1. the Mask2Former detector (`metrics.geneval.detector`) on all images at once (same-size images share a
   forward), with mmdet's pre/post-processing on the device;
2. GenEval's filtering (`metrics.geneval.rules.filter_detections`: score > 0.3, or > 0.9 for counting
   prompts, at most 16 per class, no NMS);
3. the CLIP colour classifier (`metrics.geneval.colour`) on every kept detection of a class a colour
   clause asks about, all crops of the batch in ONE image-encoder forward;
4. the pure rules: `judge_kept` (GenEval's `correct` / `reason`) and `reward_kept` (Flow-GRPO's score).

`value="reward"` (default) makes `Scores.values` the Flow-GRPO partial-credit reward (what the trainer
optimises; it can be negative when far too many objects are found); `value="correct"` gives GenEval's 0/1.
The details of each image always hold both, with the reason, the kept detections (boxes, scores) and the
colours. `metadata` (one official record per image: `tag`, `include`, optional `exclude`, `prompt`) is
required; the prompt text itself is not used by the rules.

Inputs: PIL images (or paths) use the official PIL crop path for the colour classifier (bit-exact crops);
a [B,3,H,W] tensor (uint8, or float 0-1 quantised to uint8 as a PNG save would) stays on the device
throughout. The detector always sees the image as a uint8 RGB tensor.

Which detector weights: the official GenEval checkpoint `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth`
(weight `geneval-mask2former`; mmdet 2.x or its 3.x conversion, recognised by keys). The HF checkpoint
`facebook/mask2former-swin-small-coco-instance` (weight `mask2former-swin-s-coco-hf`) is used only
when asked for with `detector="hf"`: it is a different training run, so its numbers are not GenEval's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from paintbench.metrics import weights as wts
from paintbench.metrics.base import Device, DType, Metadata, PathArg, Prompts, Provider, Scores, WeightsArg
from paintbench.metrics.geneval.colour import ColourClassifier, crop_pil, crop_tensor
from paintbench.metrics.geneval.detector import (
    OBJECT_NAMES,
    InstanceResult,
    Mask2FormerDetector,
    MmdetDetector,
    load_detector,
)
from paintbench.metrics.geneval.layout import exif_upright, validate_metadata
from paintbench.metrics.geneval.rules import (
    DEFAULT_OPTIONS,
    Detection,
    GenEvalOptions,
    filter_detections,
    judge_kept,
    reward_kept,
)
from paintbench.metrics.images import ImageBatch, load_image, pil_to_tensor

# What this metric is and which files it reads, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [{
    "name": "geneval", "provider": "GenEvalProvider", "tiny_writer": "write_tiny_weights", "version": "geneval-1.0/1",
    "higher_is_better": True, "nominal_range": (0.0, 1.0), "display": (1.0, 3),
    "hard_range": (None, 1.0),  # the reward's terms 1 - |n - k| / n are unbounded below, never above 1
    "summary": "GenEval object check (Mask2Former Swin-S COCO + CLIP ViT-L/14 colour): Flow-GRPO reward "
               "(default) or GenEval's 0/1 correctness (value='correct')",
    "weights": ("geneval-mask2former", "clip-vit-l-14"),
}]
WEIGHTS = [
    {"name": "geneval-mask2former", "filename": "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth",
     "description": "GenEval's detector: mmdet Mask2Former Swin-S COCO instance (the mmdet v2.0 release GenEval's "
                    "download_models.sh fetches, saved under GenEval's name; its mmdet 3.x conversion also loads)",
     "url": "https://download.openmmlab.com/mmdetection/v2.0/mask2former/"
            "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/"
            "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth"},
    {"name": "mask2former-swin-s-coco-hf", "filename": "mask2former-swin-small-coco-instance",
     "description": "Mask2Former Swin-S COCO instance in transformers format (a Detectron2 training, NOT GenEval's "
                    "weights; only with detector='hf')",
     "hf_repo": "facebook/mask2former-swin-small-coco-instance", "files": ("config.json", "model.safetensors"),
     "optional": True},
]

DETECTOR_WEIGHT = "geneval-mask2former"
HF_DETECTOR_WEIGHT = "mask2former-swin-s-coco-hf"
CLIP_WEIGHT = "clip-vit-l-14"

OFFICIAL_DETECTOR_FILE = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"

Value = Literal["reward", "correct"]
DetectorChoice = Literal["official", "hf", "mmdet"]


class GenEvalProvider(Provider):
    """GenEval correctness and Flow-GRPO reward per image (see the module docstring).

    Options beyond the common ones: `value` ("reward" | "correct"), `options` (GenEval's tunables:
    thresholds, max objects, NMS, position threshold), `position_quirk` (Flow-GRPO's extra 1.0 after a
    failed position check; True reproduces Flow-GRPO), `detector` ("official" checkpoint, "hf" hub
    checkpoint, or "mmdet" = the official checkpoint through mmdet itself when installed),
    `detector_scale` (resize target; the official (1333, 800) by default; tests use smaller),
    `swap_rb` (feed the detector BGR like Flow-GRPO's reward server does), `colour_amp` (fp16 autocast
    of CLIP on CUDA as the official code; no effect on CPU), `mmdet_config` (mmdet backend only).
    """

    name = "geneval"

    def __init__(
        self,
        *,
        device: Device = "cpu", dtype: DType = torch.float32, batch_size: int = 16,
        weights: WeightsArg = None, weights_dir: PathArg = None,
        value: Value = "reward",
        mode: Value | None = None,
        options: GenEvalOptions | Mapping[str, Any] | None = None,
        position_quirk: bool = True,
        detector: DetectorChoice = "official",
        detector_scale: tuple[int, int] | None = None,
        swap_rb: bool = False,
        colour_amp: bool = True,
        mmdet_config: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        value = mode or value  # `mode` is the name the shapes-world provider uses for the same choice
        if value not in ("reward", "correct"):
            raise ValueError(f"geneval: value must be 'reward' or 'correct', got {value!r}")
        if detector not in ("official", "hf", "mmdet"):
            raise ValueError(f"geneval: detector must be 'official', 'hf' or 'mmdet', got {detector!r}")
        self.value: Value = value
        if isinstance(options, Mapping):  # from YAML / --metric-opt geneval.options={threshold: 0.5}
            try:
                options = GenEvalOptions(**options)
            except TypeError as e:
                raise ValueError(f"geneval: bad options {dict(options)} ({e})") from None
        self.options = options or DEFAULT_OPTIONS
        self.position_quirk = position_quirk
        self.swap_rb = swap_rb
        self.detector_choice = detector
        det_weight = HF_DETECTOR_WEIGHT if detector == "hf" else DETECTOR_WEIGHT
        self.detector_path = wts.pick(det_weight, weights, weights_dir, primary=det_weight)
        self.clip_path = wts.pick(CLIP_WEIGHT, weights, weights_dir, primary=det_weight)
        if detector == "mmdet":
            self.detector: Mask2FormerDetector | MmdetDetector = MmdetDetector(
                self.detector_path, config=mmdet_config, device=self.device
            )
        else:
            self.detector = Mask2FormerDetector(
                load_detector(self.detector_path), device=self.device, dtype=self.dtype,
                scale=detector_scale, max_batch=batch_size,
            )
        self.colour = ColourClassifier(self.clip_path, device=self.device, dtype=self.dtype, amp=colour_amp)
        # Nothing at or below the lowest threshold can ever be kept (score ≤ class probability), so the
        # detector skips those pairs' masks; the raw output above it is exactly mmdet's.
        self.min_class_prob = min(self.options.threshold, self.options.counting_threshold)

    @staticmethod
    def metadata_problem(record: Mapping[str, Any]) -> str | None:
        """Why GenEval cannot score a prompt with this metadata (checked before any model loads)."""
        issues = validate_metadata(record)
        return "; ".join(issues) if issues else None

    def decode(self, path: str | os.PathLike[str]) -> Image.Image:
        """GenEval reads a file with its EXIF orientation applied (`ImageOps.exif_transpose`, as the
        official colour step does), on the folder command and the harness alike."""
        return exif_upright(load_image(path, name=str(path)), str(path))

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["weights"] = {
            "detector": {"path": str(self.detector_path), "sha256": wts.fingerprint(self.detector_path)},
            CLIP_WEIGHT: {"path": str(self.clip_path), "sha256": wts.fingerprint(self.clip_path)},
        }
        out["detector"] = self.detector.provenance()
        out["value"] = self.value
        out["options"] = asdict(self.options)
        out["position_quirk"] = self.position_quirk
        out["swap_rb"] = self.swap_rb
        return out

    # -- inference ---------------------------------------------------------------------------------
    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        if metadata is None:
            raise ValueError(
                "geneval: needs one official metadata record per image (tag, include, optional exclude); "
                "the prompt text alone does not say what to check"
            )
        for name, meta in zip(images.names, metadata, strict=True):
            issues = validate_metadata(meta)
            if issues:
                raise ValueError(f"geneval: {name}: bad metadata: {'; '.join(issues)}")
        if images.is_tensor:
            tensors = list(images.tensor.to(self.device).unbind(0))
        else:
            tensors = [pil_to_tensor(im).to(self.device) for im in images.pil]
        raw = self.detector.detect(tensors, min_class_prob=self.min_class_prob, swap_rb=self.swap_rb)
        per_image = [r.to_detections(OBJECT_NAMES) for r in raw]
        kept = [filter_detections(meta, dets, self.options) for meta, (dets, _) in zip(metadata, per_image, strict=True)]
        colours = self._colours(images, tensors, raw, per_image, kept, metadata)

        values: list[float] = []
        details: list[dict[str, Any]] = []
        for i, meta in enumerate(metadata):
            lookup = colours[i]

            def colour_of(cls: str, det: Detection, lookup: dict[Detection, str] = lookup) -> str:
                return lookup[det]

            verdict = judge_kept(meta, kept[i], colour_of, self.options)
            rew = reward_kept(meta, kept[i], colour_of, position_quirk=self.position_quirk, options=self.options)
            values.append(rew.score if self.value == "reward" else float(verdict.correct))
            details.append(self._details(meta, verdict, rew, per_image[i][0], kept[i], lookup))
        return Scores(
            metric=self.name,
            values=torch.tensor(values, dtype=torch.float32, device=self.device),
            details=details,
        )

    def _colours(
        self,
        images: ImageBatch,
        tensors: list[torch.Tensor],
        raw: list[InstanceResult],
        per_image: list[tuple[dict[str, list[Detection]], dict[Detection, int]]],
        kept: list[dict[str, list[Detection]]],
        metadata: list[dict[str, Any]],
    ) -> list[dict[Detection, str]]:
        """Colours of every kept detection of a class that a colour clause asks about, all images of the
        batch in one CLIP forward. (GenEval looks at the top-`count` ones, Flow-GRPO at all kept ones;
        classifying all kept covers both and changes neither: each crop is classified on its own.)"""
        requests: list[tuple[int, Detection, str]] = []
        for i, meta in enumerate(metadata):
            wanted = {c["class"] for c in meta.get("include", []) if "color" in c}
            for cls in sorted(wanted):
                for det in kept[i].get(cls, []):
                    requests.append((i, det, cls))
        out: list[dict[Detection, str]] = [{} for _ in metadata]
        if not requests:
            return out
        if images.is_tensor:
            crops = []
            for i, det, _ in requests:
                row = per_image[i][1][det]
                crops.append(crop_tensor(tensors[i], det.box, raw[i].mask(row), self.colour.background))
            pixels = self.colour.pixels_tensor(crops)
        else:
            crops_pil = []
            for i, det, _ in requests:
                row = per_image[i][1][det]
                mask = raw[i].mask(row).cpu().numpy()
                crops_pil.append(crop_pil(images.pil[i], det.box, mask, self.colour.background))
            pixels = self.colour.pixels_pil(crops_pil)
        results = self.colour.classify(pixels, [cls for _, _, cls in requests])
        for (i, det, _), res in zip(requests, results, strict=True):
            out[i][det] = res.colour
        return out

    @staticmethod
    def _details(meta, verdict, rew, raw: dict[str, list[Detection]], kept, colours: dict[Detection, str]) -> dict:
        def row(d: Detection) -> dict[str, Any]:
            return {"box": [float(v) for v in d.box], "score": float(d.score)}

        return {
            "correct": bool(verdict.correct),
            "reason": verdict.reason,
            "reward": float(rew.score),
            "strict": bool(rew.strict),
            "reward_reason": rew.reason,
            "tag": meta.get("tag"),
            # GenEval's `details` field: the kept detections per class, [x1, y1, x2, y2, score], best first
            "kept": {cls: [[*map(float, d.box), float(d.score)] for d in dets] for cls, dets in kept.items()},
            # every raw detection whose class probability is above the lowest threshold (all that any
            # GenEval option could keep), in detector order
            "detections": {cls: [row(d) for d in dets] for cls, dets in raw.items()},
            "colours": {cls: [colours[d] for d in dets if d in colours] for cls, dets in kept.items()
                        if any(d in colours for d in dets)},
        }


def official_record(filename: str, metadata: Mapping[str, Any], details: Mapping[str, Any]) -> dict[str, Any]:
    """One line of GenEval's `results.jsonl` (same fields: filename, tag, prompt, correct, reason,
    metadata and details as JSON strings), plus paintbench's extras: reward, strict, detections, colours."""
    return {
        "filename": filename,
        "tag": metadata["tag"],
        "prompt": metadata.get("prompt", ""),
        "correct": bool(details["correct"]),
        "reason": details["reason"],
        "metadata": json.dumps(metadata),
        "details": json.dumps(details["kept"]),
        "reward": details["reward"],
        "strict": details["strict"],
        "detections": details["detections"],
        "colours": details["colours"],
    }


# -- tiny checkpoints in the official formats -------------------------------------------------------
def write_tiny_weights(
    directory: str | Path, *, seed: int = 0, metric: str = "geneval", formats: Sequence[str] = ("mmdet2",)
) -> list[Path]:
    """Write a tiny random Mask2Former under the official GenEval file name (mmdet 2.x layout) and a tiny
    OpenAI-format CLIP `ViT-L-14.pt`, so `metrics.get("geneval", weights_dir=directory)` runs the real
    loaders at toy size. `formats` may add "mmdet3" (as `..._mmdet3.pth`) and "hf" (the HF folder
    name of `mask2former-swin-s-coco-hf`). Scores are meaningless; they exercise the code."""
    from paintbench.metrics.aesthetic import TINY_CLIP, random_openai_clip_state_dict
    from paintbench.metrics.geneval.detector import TINY_CONFIG, random_tiny_model, save_checkpoint

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = random_tiny_model(seed)
    written = []
    for fmt in formats:
        if fmt == "mmdet2":
            target = directory / OFFICIAL_DETECTOR_FILE
        elif fmt == "mmdet3":
            target = directory / OFFICIAL_DETECTOR_FILE.replace(".pth", "_mmdet3.pth")
        elif fmt == "hf":
            target = directory / wts.catalog()[HF_DETECTOR_WEIGHT].filename
        else:
            raise ValueError(f"unknown detector format {fmt!r} (mmdet2, mmdet3, hf)")
        written.append(save_checkpoint(model, TINY_CONFIG, target, fmt))  # type: ignore[arg-type]
    clip_file = directory / wts.catalog()[CLIP_WEIGHT].filename
    torch.save(random_openai_clip_state_dict(TINY_CLIP, seed), clip_file)
    written.append(clip_file)
    return written
