"""Image inputs: paths, PIL images or device tensors, validated once, with documented conversions.

Providers receive an `ImageBatch`, which is either a list of PIL images (from PIL objects or paths,
each decoded eagerly so a bad file is reported with its name) or one [B,3,H,W] tensor that stays on
its device. PIL inputs go through each metric's official PIL preprocessing (bit-exact parity with the
official scorers); tensor inputs go through the same steps written in torch ops on the device (the RL
path). For HPS the two paths are bit-identical (its official resize is itself a tensor op); for
metrics whose official resize is PIL's uint8 bicubic (ImageReward, aesthetic, CLIP colour) the device
path agrees to about 1e-3 on scores, not bit-exactly, because the two resamplers round differently.

Conversions applied to decoded files and PIL inputs (everything else is left to the metric's own
official `convert("RGB")`, so parity holds):

- 16-bit and 32-bit grayscale (`I;16*`, `I`, `F`) are scaled to 8-bit `L` (value * 255 / max of the
  type), since PIL's own `convert("RGB")` would clip them to 255;
- palette images (`P`, `PA`) become `RGBA` or `RGB`, bilevel (`1`) becomes `L`, `LA` becomes `L` and
  `CMYK` / `YCbCr` / `LAB` / `HSV` become `RGB`;
- `RGBA` is kept, so the official scorers drop alpha exactly as they do (no compositing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from paintbench.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class BadImageError(InputError):
    """An input image that cannot be used; the message names the sample."""


# Checked from the header, before any pixel is decoded: a 13000x13000 PNG needs GBs per scorer and a
# 467-byte 1x100000 PNG asked CLIP's resize for ~15 GB. Override with the environment variables.
MAX_PIXELS_ENV, MAX_ASPECT_ENV = "PAINTBENCH_MAX_IMAGE_PIXELS", "PAINTBENCH_MAX_ASPECT_RATIO"
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024  # 8192 x 8192
DEFAULT_MAX_ASPECT = 20.0


def image_limits() -> tuple[int, float]:
    """(most pixels, largest aspect ratio) an input image may have."""
    try:
        return (int(os.environ.get(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)),
                float(os.environ.get(MAX_ASPECT_ENV, DEFAULT_MAX_ASPECT)))
    except ValueError as e:
        raise InputError(f"{MAX_PIXELS_ENV}/{MAX_ASPECT_ENV}: not a number ({e})") from e


def check_size(width: int, height: int, label: str) -> None:
    """Refuse an image too large or too elongated to score, before it is decoded."""
    max_pixels, max_aspect = image_limits()
    if width < 1 or height < 1:
        raise BadImageError(f"{label}: empty image ({width}x{height})")
    if width * height > max_pixels:
        raise BadImageError(f"{label}: {width}x{height} is {width * height:,} pixels, more than the limit of "
                            f"{max_pixels:,} (set {MAX_PIXELS_ENV} to score it anyway)")
    if max(width, height) / min(width, height) > max_aspect:
        raise BadImageError(f"{label}: {width}x{height} has an aspect ratio above {max_aspect:g} (set "
                            f"{MAX_ASPECT_ENV} to score it anyway)")


HEADER_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                 Image.DecompressionBombWarning)


def image_header(source: str | os.PathLike[str] | BinaryIO, label: str | None = None) -> tuple[int, int]:
    """(width, height) from an image file's header, checked against `image_limits()` before any pixel is
    decoded. Every entry point that sizes an image first reads it here: a 45-byte PNG declaring
    30000x30000 (PIL's own decompression-bomb error included) is one `BadImageError` naming the file."""
    label = label or str(source)
    try:
        with Image.open(source) as im:
            width, height = im.size
    except HEADER_ERRORS as e:
        if isinstance(e, BadImageError):
            raise
        raise BadImageError(f"{label}: cannot be read as an image ({type(e).__name__}: {e})") from None
    check_size(width, height, label)
    return width, height


def load_image(source: str | os.PathLike[str] | Image.Image, *, name: str | None = None) -> Image.Image:
    """Decode one image fully (so truncation is caught here) and apply the documented conversions. Its
    size is checked against `image_limits()` from the header first. An animated image is its first
    frame (`frames_of` tells how many it has)."""
    label = name or (str(source) if not isinstance(source, Image.Image) else "<PIL image>")
    if isinstance(source, Image.Image):
        img = source
    else:
        path = Path(source)
        if not path.exists():
            raise BadImageError(f"{label}: no such file")
        if path.is_dir():
            raise BadImageError(f"{label}: is a directory, not an image")
        image_header(path, label)   # the limits, from the header, before any pixel is decoded
        try:
            with Image.open(path) as opened:
                opened.load()
                img = opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            if isinstance(e, BadImageError):
                raise
            raise BadImageError(f"{label}: cannot decode image ({type(e).__name__}: {e})") from e
    if img.width < 1 or img.height < 1:
        raise BadImageError(f"{label}: empty image ({img.width}x{img.height})")
    return normalize_mode(img)


def frames_of(path: str | os.PathLike[str] | BinaryIO) -> int:
    """How many frames an image file (or its bytes) has (1 for a still image, or when it cannot be read)."""
    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 1


def normalize_mode(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("RGB", "L", "RGBA"):
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        if mode == "F":
            top = 1.0 if arr.max(initial=0) <= 1.0 else top
        arr = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L")
    if mode == "P":
        return img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if mode == "PA":
        return img.convert("RGBA")
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")


@dataclass
class ImageBatch:
    """A validated batch: exactly one of `pil` and `tensor` is set. `names` label samples in errors."""

    names: list[str]
    pil: list[Image.Image] | None = None
    tensor: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def is_tensor(self) -> bool:
        return self.tensor is not None

    def slice(self, start: int, stop: int) -> ImageBatch:
        return ImageBatch(
            names=self.names[start:stop],
            pil=None if self.pil is None else self.pil[start:stop],
            tensor=None if self.tensor is None else self.tensor[start:stop],
        )

    def pil_images(self) -> list[Image.Image]:
        """The batch as PIL images: as given, or a tensor batch quantised to uint8 (for metrics whose
        official preprocessing is PIL's own, so a tensor takes exactly the path a saved image would)."""
        if self.pil is not None:
            return self.pil
        x = (self.float01("cpu", torch.float32) * 255).round().clamp(0, 255).to(torch.uint8)
        return [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in x]

    def float01(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The batch as a float [B,3,H,W] tensor in [0,1] on `device` (tensor batches only)."""
        if self.tensor is None:
            raise TypeError("float01() is for tensor batches; PIL batches use the metric's PIL preprocessing")
        t = self.tensor.to(device)
        if t.dtype == torch.uint8:
            return t.to(dtype) / 255.0
        return t.to(dtype).clamp(0.0, 1.0)


def as_image_batch(images: Any) -> ImageBatch:
    """Validate `images`: a [B,3,H,W] tensor (uint8 0-255 or float 0-1), or a sequence of PIL/paths."""
    if isinstance(images, torch.Tensor):
        return ImageBatch(names=[f"#{i}" for i in range(images.shape[0] if images.dim() else 0)],
                          tensor=check_tensor(images))
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    if not isinstance(images, Sequence):
        raise TypeError(f"images must be a tensor or a sequence of PIL images/paths, got {type(images).__name__}")
    names, pil = [], []
    for i, item in enumerate(images):
        name = str(item) if isinstance(item, (str, os.PathLike)) else f"#{i}"
        if not isinstance(item, (str, os.PathLike, Image.Image)):
            raise BadImageError(f"{name}: expected a PIL image or a path, got {type(item).__name__}")
        pil.append(load_image(item, name=name))
        names.append(name)
    return ImageBatch(names=names, pil=pil)


def check_tensor(t: torch.Tensor) -> torch.Tensor:
    if t.dim() != 4 or t.shape[1] != 3:
        raise BadImageError(f"image tensor must be [B,3,H,W], got shape {tuple(t.shape)}")
    if t.shape[2] < 1 or t.shape[3] < 1:
        raise BadImageError(f"image tensor has an empty spatial size {tuple(t.shape[2:])}")
    if t.dtype != torch.uint8 and not t.is_floating_point():
        raise BadImageError(f"image tensor must be uint8 (0-255) or float (0-1), got {t.dtype}")
    return t


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 [3,H,W] tensor of an image after `convert("RGB")`."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def list_image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside `folder` (sorted by name)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
