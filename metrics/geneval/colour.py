"""GenEval's colour classifier: zero-shot CLIP ViT-L/14 (OpenAI) over the 10 colours, on masked crops.

What the official `evaluate_images.py` does for a colour clause, and what this reproduces:

- crop construction (`ImageCrops`): `Image.composite(image.convert("RGB"), grey, mask)` with a #999 grey
  canvas, so pixels outside the instance mask become (153, 153, 153); then `crop(box)`, where Pillow
  rounds the float box coordinates (Python `round`, half to even);
- the open_clip eval transform of `ViT-L-14` / `openai` on that PIL crop: Resize(224, bicubic) on the
  short side, CenterCrop(224), RGB, ToTensor, Normalize (OpenAI mean/std) = `metrics.preprocess.clip_pil`;
- the zero-shot head of clip-benchmark 1.4.0: for each colour c, the texts of the three templates
  "a photo of a {c} {class}", "a photo of a {c}-colored {class}", "a photo of a {c} object" are
  encoded, each L2-normalised, averaged and re-normalised; computed once per class name and cached;
- `logits = 100 · normalise(encode_image(crop)) @ W`, the colour is the argmax. On CUDA the official code
  runs both encoders under fp16 autocast (`amp=True`); `amp` here does the same on CUDA and nothing on CPU.

The CLIP model is the shared `metrics.backbones.openai_clip` instance (one copy per process and device
for this and the aesthetic metric). Every crop of a batch, whatever its image and class, goes through
the image encoder in one forward; text weights are looked up per crop.

Device tensors take the same steps in torch ops (`crop_tensor`): compositing and cropping are exact, the
resize is `metrics.preprocess.clip_tensor` (float bicubic), which differs slightly from PIL's uint8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from paintbench.metrics import backbones
from paintbench.metrics.geneval.rules import COLORS
from paintbench.metrics.preprocess import clip_pil, clip_tensor

TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} {classname}",
    "a photo of a {c}-colored {classname}",
    "a photo of a {c} object",
)
"""The official templates; `{classname}` is filled first, `{c}` per colour (clip-benchmark 1.4.0)."""

BACKGROUND = (153, 153, 153)
"""GenEval's default `bgcolor` "#999"."""


def pil_box(box: Sequence[float]) -> tuple[int, int, int, int]:
    """The integer box `Image.crop` uses for float coordinates: each rounded with Python's `round`."""
    x0, y0, x1, y1 = (round(float(v)) for v in box[:4])
    return x0, y0, x1, y1


def crop_pil(image: Image.Image, box: Sequence[float], mask: np.ndarray | None,
             background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """The official crop: pixels outside `mask` (bool H×W, image size) set to `background`, then the box."""
    rgb = image.convert("RGB")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (rgb.height, rgb.width):
            raise ValueError(f"mask of shape {mask.shape} for an image of size {rgb.height}x{rgb.width}")
        rgb = Image.composite(rgb, Image.new("RGB", rgb.size, background), Image.fromarray(mask))
    return rgb.crop(pil_box(box))


def crop_tensor(image: torch.Tensor, box: Sequence[float], mask: torch.Tensor | None,
                background: tuple[int, int, int] = BACKGROUND) -> torch.Tensor:
    """`crop_pil` for a [3,H,W] uint8 (0-255) or float (0-1) tensor, on its device; returns float 0-1.

    Pillow pads a crop that leaves the image with black; so do we (boxes from masks never leave it)."""
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float().clamp(0, 1)
    if mask is not None:
        bg = torch.tensor(background, device=x.device, dtype=x.dtype).view(3, 1, 1) / 255.0
        x = torch.where(mask.to(x.device)[None].bool(), x, bg)
    x0, y0, x1, y1 = pil_box(box)
    h, w = x.shape[-2:]
    out = x.new_zeros((3, max(y1 - y0, 0), max(x1 - x0, 0)))
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = x[:, sy0:sy1, sx0:sx1]
    return out


@dataclass(frozen=True)
class ColourResult:
    colour: str
    logits: tuple[float, ...]


class ColourClassifier:
    """Zero-shot colour of object crops with an OpenAI-format CLIP (the official ViT-L/14 in production,
    any OpenAI-layout checkpoint in tests)."""

    def __init__(
        self,
        clip_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        amp: bool = True,
        colours: Sequence[str] = COLORS,
        templates: Sequence[str] = TEMPLATES,
        background: tuple[int, int, int] = BACKGROUND,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.amp = amp
        self.colours = tuple(colours)
        self.templates = tuple(templates)
        self.background = background
        self.clip_path = Path(clip_path)
        self.clip = backbones.openai_clip(clip_path, self.device, dtype)
        size = self.clip.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.context_length = int(getattr(self.clip, "context_length", 77))
        self._text: dict[str, torch.Tensor] = {}

    def _autocast(self):
        if self.amp and self.device.type == "cuda" and self.dtype == torch.float32:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    # -- text side -------------------------------------------------------------------------------
    def texts(self, classname: str) -> list[list[str]]:
        """Per colour, the template texts for `classname` (the official two-step formatting)."""
        filled = [t.replace("{classname}", classname) for t in self.templates]
        return [[t.format(c=c) for t in filled] for c in self.colours]

    def class_weights(self, classname: str) -> torch.Tensor:
        """The zero-shot weights [D, n_colours] of one class name (cached: encoded once per process)."""
        cached = self._text.get(classname)
        if cached is not None:
            return cached
        from open_clip.tokenizer import tokenize

        per_colour = self.texts(classname)
        flat = [t for group in per_colour for t in group]
        tokens = tokenize(flat, context_length=self.context_length).to(self.device)
        with torch.inference_mode(), self._autocast():
            emb = self.clip.encode_text(tokens)
            emb = F.normalize(emb, dim=-1).view(len(self.colours), len(self.templates), -1).mean(dim=1)
            emb = emb / emb.norm(dim=-1, keepdim=True)
        weights = emb.T.contiguous()
        self._text[classname] = weights
        return weights

    # -- image side ------------------------------------------------------------------------------
    def pixels_pil(self, crops: Sequence[Image.Image]) -> torch.Tensor:
        """CLIP input of PIL crops (the official open_clip eval transform), [N,3,S,S] on the device."""
        if not crops:
            return torch.empty((0, 3, self.image_size, self.image_size), device=self.device, dtype=self.dtype)
        return torch.stack([clip_pil(c, self.image_size) for c in crops]).to(self.device, self.dtype)

    def pixels_tensor(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """CLIP input of float 0-1 [3,h,w] crops on the device (each resized on its own, then stacked)."""
        if not crops:
            return torch.empty((0, 3, self.image_size, self.image_size), device=self.device, dtype=self.dtype)
        return torch.cat([clip_tensor(c[None].to(self.device), self.image_size) for c in crops]).to(self.dtype)

    def classify(self, pixels: torch.Tensor, classnames: Sequence[str]) -> list[ColourResult]:
        """Colours of N preprocessed crops [N,3,S,S] of the given classes: ONE image-encoder forward."""
        if len(classnames) != pixels.shape[0]:
            raise ValueError(f"{pixels.shape[0]} crops but {len(classnames)} class names")
        if pixels.shape[0] == 0:
            return []
        weights = torch.stack([self.class_weights(c) for c in classnames])  # [N, D, K]
        with torch.inference_mode(), self._autocast():
            features = F.normalize(self.clip.encode_image(pixels.to(self.device, self.dtype)), dim=-1)
            logits = 100.0 * torch.einsum("nd,ndk->nk", features, weights.to(features.dtype))
        logits = logits.float().cpu()
        best = logits.argmax(dim=1).tolist()
        return [ColourResult(self.colours[b], tuple(row)) for b, row in zip(best, logits.tolist(), strict=True)]

    def colours_pil(self, image: Image.Image, objects: Sequence[tuple[Sequence[float], np.ndarray | None]],
                    classname: str) -> list[str]:
        """Official-style call for one image and one class: the colours of `objects` (box, mask)."""
        crops = [crop_pil(image, box, mask, self.background) for box, mask in objects]
        return [r.colour for r in self.classify(self.pixels_pil(crops), [classname] * len(crops))]
