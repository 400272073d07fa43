"""Reading and writing detector checkpoints: weights-only reads of the official files (with a numpy
allow-list), HF folders, and tiny random checkpoints in every format for the tests."""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from paintbench.metrics.geneval.detector.configuration import (
    COCO_NAMES,
    OBJECT_NAMES,
    SWIN_S_CONFIG,
    TINY_CONFIG,
    DetectorConfig,
    build_model,
    config_from_hf,
    config_from_mmdet,
)
from paintbench.metrics.geneval.detector.conversion import (
    _HF_UNUSED,
    CheckpointFormat,
    checkpoint_format,
    hf5_names,
    hf_to_mmdet3,
    load_mapped,
    mmdet2_to_mmdet3,
    mmdet3_to_hf,
    mmdet3_to_mmdet2,
)
from paintbench.metrics.remote_code import checked_folder

# --------------------------------------------------------------------------------------------- reading

def _numpy_safe_globals() -> list[Any]:
    """The numpy globals that mmcv/mmdet checkpoint `meta` dicts pickle (`np.float64` scores, small
    arrays, dtypes), under both numpy 2 (`numpy._core`) and numpy 1 (`numpy.core`) module names.

    Each only rebuilds a numpy value from plain data; whatever the arrays or scalars hold is itself
    unpickled by torch's restricted loader, so nothing else becomes reachable."""
    import numpy as np

    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # numpy 1.26
        from numpy.core import multiarray

    out: list[Any] = [np.dtype, np.ndarray]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        out += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
    # torch only BUILDs (sets the pickled state of) objects of allow-listed classes, and a dtype's class
    # is its per-kind subclass (`numpy.dtypes.Float64DType` ...), never named in the pickle itself
    out += sorted({type(np.dtype(c)) for c in np.typecodes["All"]}, key=lambda t: t.__name__)
    return out


def read_checkpoint(path: str | Path) -> tuple[OrderedDict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and the `meta` dict of an mmdet/mmcv `.pth` file (or a bare state dict).

    Only ever read with torch's restricted `weights_only=True` unpickler (zip and legacy formats
    alike): first as is, then with the numpy metadata types of `_numpy_safe_globals` allowed, because
    real mmcv checkpoints carry numpy scalars in `meta`. Any other global in the pickle (a class, or a
    function such as `os.system` a crafted file would call) is refused with a ValueError naming it.
    """
    from paintbench.metrics import weights as wts

    path = Path(path)
    try:
        obj = wts.load_state_dict(path)
    except ValueError:
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            found = re.search(r"GLOBAL (\S+)", str(e))
            if found:
                raise ValueError(
                    f"{path}: refused: its pickle needs `{found.group(1)}`, and paintbench unpickles only "
                    "tensors and numpy metadata (nothing that could run code); convert the file to a plain "
                    "state dict or safetensors"
                ) from e
            raise ValueError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    sd = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
    tensors = OrderedDict(
        (k.removeprefix("module."), v) for k, v in sd.items() if isinstance(v, torch.Tensor)
    )
    if not tensors:
        raise ValueError(f"{path}: no tensors found")
    return tensors, dict(meta)


@dataclass
class LoadedDetector:
    """A model with where it came from (for provenance)."""

    model: torch.nn.Module
    config: DetectorConfig
    path: Path
    format: CheckpointFormat
    class_names: tuple[str, ...] = OBJECT_NAMES
    notes: list[str] = field(default_factory=list)


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_detector(path: str | Path, *, base: DetectorConfig = SWIN_S_CONFIG) -> LoadedDetector:
    """Build the HF Mask2Former and load `path` into it: an mmdet 2.x/3.x `.pth` (any name) or an HF
    folder. Everything is checked (every checkpoint tensor used, every model parameter set, shapes)."""
    path = Path(path)
    if path.is_dir():
        if not is_hf_folder(path):
            raise ValueError(f"{path}: a folder, but not a transformers model folder (no config.json)")
        return _load_hf_folder(path, base)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    sd, meta = read_checkpoint(path)
    fmt = checkpoint_format(sd)
    notes: list[str] = []
    if fmt == "hf":
        raise ValueError(
            f"{path}: transformers-keyed weights; pass the model folder (with its config.json) instead"
        )
    if fmt == "mmdet2":
        sd = mmdet2_to_mmdet3(sd)
    cfg = config_from_mmdet(sd, base)
    dataset_meta = meta.get("dataset_meta")
    classes = meta.get("CLASSES") or (dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None)
    if isinstance(classes, (list, tuple)) and len(classes) != cfg.num_classes:
        raise ValueError(f"{path}: meta lists {len(classes)} classes but the head has {cfg.num_classes}")
    if cfg.num_classes != len(OBJECT_NAMES):
        raise ValueError(f"{path}: the head predicts {cfg.num_classes} classes; GenEval needs the 80 COCO classes")
    mapped, unmapped = mmdet3_to_hf(sd)
    if unmapped:
        raise ValueError(
            f"{path}: {len(unmapped)} tensors have no place in the Mask2Former model "
            f"(e.g. {', '.join(unmapped[:3])}); is this the Swin instance-segmentation checkpoint?"
        )
    model = build_model(cfg)
    load_mapped(model, mapped, str(path))
    return LoadedDetector(model=model, config=cfg, path=path, format=fmt, notes=notes)


@contextlib.contextmanager
def _quiet_transformers():
    """No transformers progress bars or warnings while we load/save (we report problems ourselves)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_hf_folder(path: Path, base: DetectorConfig) -> LoadedDetector:
    from transformers import Mask2FormerForUniversalSegmentation

    with _quiet_transformers():
        model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
            str(checked_folder(path)), local_files_only=True, output_loading_info=True, trust_remote_code=False
        )
    missing = [k for k in info.get("missing_keys", []) if not _HF_UNUSED.search(k)]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        raise ValueError(
            f"{path}: incomplete transformers checkpoint: {len(missing)} missing tensors "
            f"(e.g. {', '.join(list(missing)[:3])}), {len(mismatched)} with wrong shapes"
        )
    cfg = config_from_hf(model.config, base)
    notes = []
    labels = [str(model.config.id2label[i]).lower() for i in range(len(model.config.id2label))]
    if len(labels) != len(OBJECT_NAMES):
        raise ValueError(f"{path}: the model predicts {len(labels)} classes; GenEval needs the 80 COCO classes")
    odd = [f"{i}: {a!r} (GenEval: {OBJECT_NAMES[i]!r})" for i, a in enumerate(labels)
           if a not in (COCO_NAMES[i], OBJECT_NAMES[i])]
    if odd:
        note = f"{path}: id2label differs from the COCO order at {len(odd)} indices ({'; '.join(odd[:3])})"
        warnings.warn(note + "; classes are matched by index, as GenEval does", stacklevel=3)
        notes.append(note)
    return LoadedDetector(model=model.eval(), config=cfg, path=path, format="hf", notes=notes)


# --------------------------------------------------------------------------------------------- writing

def save_checkpoint(model: torch.nn.Module, cfg: DetectorConfig, path: str | Path, fmt: CheckpointFormat) -> Path:
    """Write `model` in one of the official layouts: an mmdet 2.x or 3.x `.pth` (`{"meta", "state_dict"}`
    as mmcv saves it) or an HF folder (`save_pretrained`). Used for tiny test/demo weights."""
    path = Path(path)
    if fmt == "hf":
        with _quiet_transformers():
            model.save_pretrained(str(path))
        return path
    sd = hf_to_mmdet3({k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg)
    if fmt == "mmdet2":
        sd = mmdet3_to_mmdet2(sd)
        meta: dict[str, Any] = {"mmdet_version": "2.25.0", "CLASSES": COCO_NAMES}
    else:
        meta = {"mmdet_version": "3.0.0", "dataset_meta": {"classes": COCO_NAMES}}
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"meta": meta, "state_dict": sd}, buf)
    path.write_bytes(buf.getvalue())
    return path


def random_tiny_model(
    seed: int = 0,
    cfg: DetectorConfig = TINY_CONFIG,
    *,
    class_scale: float = 4.0,
    class_bias: Mapping[int, float] | None = None,
) -> torch.nn.Module:
    """A tiny Mask2Former with seeded weights that gives a spread of scores on ordinary images.

    Every tensor is drawn from `metrics.synthetic.make_tensor` (seed = crc32(key) + seed), so it does
    not depend on transformers' init order: norm weights N(1, 0.1), biases N(0, 0.02), embeddings N(0, 1),
    matrices N(0, 1/fan_in). The class head is scaled by `class_scale` so class probabilities spread
    over (0, 1) and some detections pass GenEval's 0.3 threshold; `class_bias` ({class index: logit})
    makes chosen classes likely, so a demo or test sees the classes its prompts ask about.
    """
    from paintbench.metrics.synthetic import make_tensor

    model = build_model(cfg)
    new: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    # seeded by transformers 5.x's names, so transformers 4.x (other Swin names) draws the same weights
    names = {own: new for new, own in hf5_names({k: k for k in state}).items()}
    for own, v in state.items():
        if not v.is_floating_point():
            continue
        k = names.get(own, own)
        shape = tuple(v.shape)
        leaf = k.rsplit(".", 1)[-1]
        if re.search(r"(norm|layernorm|layer_norm|_norms\.stage\d|\.1)\.weight$", k) and v.dim() == 1:
            fill = {"kind": "normal", "mean": 1.0, "std": 0.1}
        elif leaf == "bias" or v.dim() == 1:
            fill = {"kind": "normal", "mean": 0.0, "std": 0.02}
        elif "queries" in k or "level_embed" in k or "relative_position_bias_table" in k:
            fill = {"kind": "normal", "mean": 0.0, "std": 1.0 if "relative" not in k else 0.02}
        else:
            fan_in = max(1, math.prod(shape[1:]))
            fill = {"kind": "normal", "mean": 0.0, "std": fan_in ** -0.5}
        t = make_tensor(k, shape, fill, "float32", seed)
        if k == "class_predictor.weight":
            t = t * class_scale
        if k == "class_predictor.bias" and class_bias:
            for index, logit in class_bias.items():
                t[index] += logit
        new[own] = t
    model.load_state_dict(new, strict=False)
    return model.eval()
