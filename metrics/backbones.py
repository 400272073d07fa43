"""Frozen backbones shared across providers: each is loaded once per process and device.

The OpenAI CLIP ViT-L/14 serves the aesthetic predictor (image tower) and GenEval's colour classifier
(image and text towers). Both get the very same module object from `openai_clip`, so a run that
scores aesthetic and GenEval holds one copy of it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

# What this metric is and which files it reads, as literals: the registry reads them without
# importing this module (`metrics.registry`).
WEIGHTS = [
    {"name": "clip-vit-l-14", "filename": "ViT-L-14.pt",
     "description": "OpenAI CLIP ViT-L/14 (TorchScript archive or plain state dict); shared by aesthetic and "
                    "GenEval's colour classifier",
     "url": "https://openaipublic.azureedge.net/clip/models/"
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
     "sha256": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "size_bytes": 932_768_134},
]

_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str, torch.dtype], torch.nn.Module] = {}


def openai_clip(path: str | Path, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """An OpenAI-format CLIP (TorchScript archive or plain state dict) as an open_clip `CLIP`, in eval
    mode, frozen, on `device` in `dtype`. The architecture is read off the checkpoint's shapes, as
    OpenAI's `clip.build_model` does (QuickGELU, heads = width / 64), so tiny checkpoints in the same
    layout load through the same code."""
    key = (str(Path(path).resolve()), str(torch.device(device)), dtype)
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = fp32_norms(_build_openai_clip(Path(path)).to(device=device, dtype=dtype))
            _CACHE[key] = model
    return model


def _build_openai_clip(path: Path) -> torch.nn.Module:
    from open_clip.model import build_model_from_openai_state_dict

    from paintbench.metrics.weights import load_state_dict

    sd = load_state_dict(path)
    if "visual.proj" not in sd or "text_projection" not in sd:
        raise ValueError(f"{path}: not an OpenAI CLIP ViT checkpoint (no visual.proj / text_projection)")
    try:
        model = build_model_from_openai_state_dict(dict(sd), quick_gelu=True, cast_dtype=torch.float16)
    except RuntimeError as e:
        raise ValueError(f"{path}: does not load as an OpenAI CLIP ViT ({e})") from e
    # As `clip.load` on a CPU does: build in fp16 storage, then compute in fp32 (the caller may cast).
    model = model.float().eval()
    model.requires_grad_(False)
    return model


def evict(path: str | Path, device: torch.device | str, dtype: torch.dtype) -> bool:
    """Drop one cached backbone (frees its memory once no provider holds it). True if it was cached."""
    key = (str(Path(path).resolve()), str(torch.device(device)), dtype)
    with _LOCK:
        return _CACHE.pop(key, None) is not None


def clear() -> None:
    """Drop every cached backbone (tests; freeing memory between runs)."""
    with _LOCK:
        _CACHE.clear()


def fp32_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Keep open_clip's fp32 LayerNorms in fp32 in a low-precision model (as open_clip's own
    `convert_weights_to_lp` leaves them): they compute in fp32 and fail on CPU with bf16 weights."""
    from open_clip.transformer import LayerNormFp32

    for module in model.modules():
        if isinstance(module, LayerNormFp32):
            module.float()
    return model
