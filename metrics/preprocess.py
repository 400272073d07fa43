"""Preprocessing shared by several metrics, in two forms: the official PIL path and a device path.

The PIL path calls torchvision's transforms on PIL images exactly as OpenAI's `clip._transform`,
ImageReward and the aesthetic predictor do, so its pixels are bit-identical to theirs. The tensor path
does the same steps in torch ops on the tensor's device (for RL rewards); it resamples in float rather
than PIL's uint8, so pixels differ slightly (about 1e-2 in [0,1] units at worst on sharp edges).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pil(img: Image.Image, size: int = 224) -> torch.Tensor:
    """OpenAI CLIP's eval transform on one PIL image: Resize(size, bicubic) on the shorter side,
    CenterCrop, convert("RGB") (after the resize, as the official code does), ToTensor, Normalize.
    Returns a float32 [3,size,size] tensor on the CPU."""
    from torchvision import transforms as T

    tf = T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        lambda im: im.convert("RGB"),
        T.ToTensor(),
        T.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    ])
    return tf(img)


def clip_pil_batch(images: list[Image.Image], size: int = 224) -> torch.Tensor:
    """`clip_pil` for a list, stacked to [B,3,size,size] (CPU float32)."""
    return torch.stack([clip_pil(im, size) for im in images])


def shorter_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision's Resize(int) output size: the shorter side becomes `size`, the longer is truncated."""
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's CenterCrop for a [B,C,H,W] tensor at least `size` on each side."""
    h, w = x.shape[-2:]
    top = round((h - size) / 2.0)
    left = round((w - size) / 2.0)
    return x[..., top : top + size, left : left + size]


def normalize(x: torch.Tensor, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def clip_tensor(x01: torch.Tensor, size: int = 224) -> torch.Tensor:
    """The CLIP eval transform for a float [B,3,H,W] batch in [0,1], on its own device."""
    h, w = x01.shape[-2:]
    new_h, new_w = shorter_side_size(h, w, size)
    if (new_h, new_w) != (h, w):
        x01 = F.interpolate(x01, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    x01 = x01.clamp(0.0, 1.0)  # PIL clamps its uint8 result; keep the device path in the same range
    return normalize(center_crop(x01, size))


def openai_clip_pixels(images, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """OpenAI CLIP input pixels of an `ImageBatch`: PIL images by the official PIL transform (`clip_pil`),
    a tensor batch by `clip_tensor` on its device; returned on `device` in `dtype`."""
    if images.is_tensor:
        x = clip_tensor(images.float01(device, torch.float32), size)
    else:
        x = clip_pil_batch(images.pil, size)
    return x.to(device=device, dtype=dtype)

