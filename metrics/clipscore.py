"""CLIPScore, in the two conventions papers report under that name (never mixed: two metric names).

`clipscore` — the CLIPScore paper (Hessel et al. 2021; jmhessel/clipscore `clipscore.py` with OpenAI's
`clip` package), reference-free:

    per = 2.5 * max(cos(encode_image(transform(image)), encode_text(tokenize("A photo depicts " + caption))), 0)

- OpenAI CLIP **ViT-B/32** (`ViT-B-32.pt`), built as `clip.load(jit=False)` does and run in float32 on
  the CPU (the shared `metrics.backbones.openai_clip` loader);
- image: OpenAI's transform on the PIL image *in its own mode* (resize, centre crop, then
  `convert("RGB")`: an RGBA image is resized with premultiplied alpha before the alpha is dropped);
- text: the prefix is always added (an empty caption is "A photo depicts "), OpenAI's tokenizer
  (ftfy, html unescape, lower case), 77 tokens with the end token forced into the last slot;
- both feature sets L2-normalised in float32 as the script's numpy path does.

`clipscore-torchmetrics` — torchmetrics' `CLIPScore` (the number most T2I papers print), with transformers'
`CLIPModel` of `openai/clip-vit-large-patch14`:

- image: the uint8 RGB pixels (`convert("RGB")`, alpha dropped) through the CLIP processor's **PIL**
  backend (transformers 5's torchvision default moves scores by up to 1e-3);
- text: padded, **not truncated**, then sliced to 77 tokens: a caption longer than 77 tokens loses its
  end token, and the pooling (`argmax(input_ids)` with the config's `eos_token_id: 2`) then reads the
  BOS state — every such caption gets the same text embedding, as in torchmetrics (noted per sample);
- value = max(100 · cos, 0), what torchmetrics' functional `clip_score` returns for one pair; the
  unclamped 100 · cos (what `CLIPScore.update` accumulates) is a detail. torchmetrics' `compute()` over
  a set is max(mean of the unclamped values, 0), which differs from the mean of per-pair values when
  some cosines are negative.

Parity: `tests/test_clipscore.py` against both official codes' outputs on synthetic weights
(`../shared/fixtures/clipscore`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from paintbench.metrics import backbones
from paintbench.metrics import weights as wts
from paintbench.metrics.base import Device, DType, Metadata, PathArg, Prompts, Provider, Scores, WeightsArg
from paintbench.metrics.images import ImageBatch
from paintbench.metrics.preprocess import openai_clip_pixels
from paintbench.metrics.remote_code import checked_folder

# What these metrics are and which files they read, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [
    {"name": "clipscore", "provider": "ClipScoreProvider", "tiny_writer": "write_tiny_weights",
     "version": "clipscore-hessel/1", "higher_is_better": True, "nominal_range": (0.0, 1.0),
     "summary": "CLIPScore (Hessel et al.): OpenAI CLIP ViT-B/32, 'A photo depicts ' prefix, 2.5 x max(cos, 0)",
     "weights": ("clip-vit-b-32",), "needs_prompt": True, "display": (1.0, 4), "hard_range": (0.0, 2.5)},
    {"name": "clipscore-torchmetrics", "provider": "TorchmetricsClipScoreProvider", "tiny_writer": "write_tiny_weights",
     "version": "clipscore-torchmetrics/1", "higher_is_better": True, "nominal_range": (15.0, 35.0),
     "summary": "torchmetrics CLIPScore: HF CLIP ViT-L/14, max(100 x cos, 0) per pair",
     "weights": ("clip-vit-large-patch14",), "needs_prompt": True, "display": (1.0, 2),
     "hard_range": (0.0, 100.0), "set_value": ("score_unclamped", "clamp_min_0")},
]
WEIGHTS = [
    {"name": "clip-vit-b-32", "filename": "ViT-B-32.pt", "description": "OpenAI CLIP ViT-B/32 (CLIPScore, Hessel et al.)",
     "url": "https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
     "sha256": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"},
    {"name": "clip-vit-large-patch14", "filename": "clip-vit-large-patch14",
     "description": "transformers CLIP ViT-L/14 folder (torchmetrics' CLIPScore default)",
     "hf_repo": "openai/clip-vit-large-patch14",
     "files": ("config.json", "model.safetensors", "vocab.json", "merges.txt", "preprocessor_config.json")},
]

HESSEL_WEIGHT = "clip-vit-b-32"
TORCHMETRICS_WEIGHT = "clip-vit-large-patch14"
HESSEL_PREFIX = "A photo depicts "
HESSEL_WEIGHT_W = 2.5      # clipscore.py: get_clip_score(..., w=2.5)
CONTEXT = 77


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(sum(x**2)) per row in float32 (clipscore.py's numpy branch; no zero-norm guard there)."""
    x = x.float()
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True))


class ClipScoreProvider(Provider):
    """CLIPScore of Hessel et al. for each (image, caption) pair. PIL images and paths take the official
    PIL transform (bit-identical pixels); [B,3,H,W] tensors (RL rewards) the torch one on their device."""

    name = "clipscore"

    def __init__(self, *, device: Device = "cpu", dtype: DType = torch.float32, batch_size: int = 64,
                 weights: WeightsArg = None, weights_dir: PathArg = None) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        self.clip_path = wts.pick(HESSEL_WEIGHT, weights, weights_dir, primary=HESSEL_WEIGHT)
        self.clip = backbones.openai_clip(self.clip_path, self.device, self.dtype)
        size = self.clip.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["weights"] = {HESSEL_WEIGHT: {"path": str(self.clip_path), "sha256": wts.fingerprint(self.clip_path)}}
        out["convention"] = f"Hessel et al.: prefix {HESSEL_PREFIX!r}, {HESSEL_WEIGHT_W} * max(cos, 0)"
        return out

    def tokens(self, captions: Sequence[str]) -> torch.Tensor:
        from open_clip.tokenizer import tokenize  # OpenAI's tokenizer; truncation forces the end token last

        return tokenize([HESSEL_PREFIX + c for c in captions], context_length=CONTEXT)

    def pixels(self, images: ImageBatch) -> torch.Tensor:
        return openai_clip_pixels(images, self.image_size, self.device, self.dtype)

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        assert prompts is not None
        image = unit_rows(self.clip.encode_image(self.pixels(images)))
        text = unit_rows(self.clip.encode_text(self.tokens(prompts).to(self.device)))
        cos = (image * text).sum(-1)
        values = HESSEL_WEIGHT_W * cos.clamp_min(0.0)
        return Scores(metric=self.name, values=values,
                      details=[{"cos": float(c)} for c in cos.cpu().tolist()])


class TorchmetricsClipScoreProvider(Provider):
    """torchmetrics' CLIPScore for each (image, caption) pair (see the module docstring)."""

    name = "clipscore-torchmetrics"

    def __init__(self, *, device: Device = "cpu", dtype: DType = torch.float32, batch_size: int = 64,
                 weights: WeightsArg = None, weights_dir: PathArg = None) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        from transformers import AutoTokenizer, CLIPModel

        from paintbench.metrics.pickscore import pil_image_processor

        self.folder = wts.pick(TORCHMETRICS_WEIGHT, weights, weights_dir, primary=TORCHMETRICS_WEIGHT)
        self.tokenizer = AutoTokenizer.from_pretrained(str(checked_folder(self.folder)), local_files_only=True,
                                                       trust_remote_code=False)
        self.image_processor = pil_image_processor(self.folder)
        self.model = CLIPModel.from_pretrained(str(self.folder), local_files_only=True, trust_remote_code=False)
        self.model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        crop = self.image_processor.crop_size
        self.image_size = int(crop["height"] if isinstance(crop, dict) else getattr(crop, "height", crop))

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["weights"] = {TORCHMETRICS_WEIGHT: {"path": str(self.folder), "sha256": wts.fingerprint(self.folder)}}
        out["convention"] = "torchmetrics: max(100 * cos, 0) per pair; text padded, sliced to 77 (no truncation)"
        return out

    def text_ids(self, captions: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """torchmetrics' text handling: padded, untruncated, then sliced to 77 (the end token of a longer
        caption is lost). Returns the model inputs and, per caption, whether its end token was kept."""
        enc = self.tokenizer(list(captions), padding=True, return_tensors="pt")
        lengths = enc["attention_mask"].sum(-1)
        ids = {k: enc[k][:, :CONTEXT].to(self.device) for k in ("input_ids", "attention_mask")}
        return ids, [int(n) <= CONTEXT for n in lengths]

    def pixels(self, images: ImageBatch) -> torch.Tensor:
        from paintbench.metrics.pickscore import processor_pixels

        return processor_pixels(images, self.image_processor, self.image_size, self.device, self.dtype)

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        from paintbench.metrics.pickscore import features

        assert prompts is not None
        ids, eos_kept = self.text_ids(prompts)
        image = features(self.model.get_image_features(pixel_values=self.pixels(images))).float()
        text = features(self.model.get_text_features(**ids)).float()
        image = image / image.norm(p=2, dim=-1, keepdim=True)
        text = text / text.norm(p=2, dim=-1, keepdim=True)
        raw = 100 * (image * text).sum(-1)
        details = [{"score_unclamped": float(r), "caption_end_token_kept": k}
                   for r, k in zip(raw.cpu().tolist(), eos_kept, strict=True)]
        return Scores(metric=self.name, values=raw.clamp_min(0.0), details=details)


# -- tiny checkpoints in the official formats -------------------------------------------------------
TINY_OPENAI_B32 = {"embed_dim": 64, "image_resolution": 224, "vision_layers": 1, "vision_width": 64,
                   "vision_patch_size": 32, "context_length": 77, "vocab_size": 49408, "transformer_width": 64,
                   "transformer_layers": 1}


def write_tiny_weights(directory: str | Path, *, seed: int = 0, metric: str = "clipscore") -> list[Path]:
    """`clipscore`: a tiny OpenAI-layout ViT-B/32-shaped `ViT-B-32.pt` (fp16 state dict);
    `clipscore-torchmetrics`: a tiny `clip-vit-large-patch14/` transformers folder with the real CLIP BPE."""
    directory = Path(directory)
    if metric == "clipscore":
        from paintbench.metrics.aesthetic import random_openai_clip_state_dict

        target = directory / wts.catalog()[HESSEL_WEIGHT].filename
        torch.save(random_openai_clip_state_dict(TINY_OPENAI_B32, seed), target)
        return [target]
    from transformers import CLIPConfig, CLIPModel

    from paintbench.metrics.pickscore import TINY_CLIP, write_clip_processor

    folder = directory / wts.catalog()[TORCHMETRICS_WEIGHT].filename
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(**TINY_CLIP)).save_pretrained(str(folder), safe_serialization=True)
    write_clip_processor(folder)
    return [folder]
