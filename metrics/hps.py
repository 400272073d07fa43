"""Human Preference Score v2.0 and v2.1 (tgxs002/HPSv2), identical to the official scorer.

The official `hpsv2.score` builds OpenCLIP ViT-H-14 with the LAION `laion2B-s32B-b79K` pretrained tag
(a 3.9 GB download), then overwrites every weight with a strict `load_state_dict` of the HPS
checkpoint. The LAION weights never influence a score, so this module builds the architecture with no
pretrained weights at all and loads `HPS_v2_compressed.pt` / `HPS_v2.1_compressed.pt` directly: the
checkpoint is the only file needed (HPSv2 issue #16 asks for exactly that).

What is reproduced, step by step (official code: `hpsv2/img_score.py` and the vendored open_clip):

- preprocessing `preprocess_val` with `light_augmentation=True`: `convert("RGB")` → ToTensor →
  `ResizeMaxSize(224)` (longest side to 224 with a *tensor* bicubic, antialiased resize on unclamped
  floats, then zero padding, centred) → Normalize with OpenAI CLIP mean/std. Because the official
  resize already is a tensor op, the same function serves PIL inputs (on the CPU, as the official
  dataloader does) and device tensors (RL rewards, no PIL round trip); both are exact.
- tokenizer: open_clip `get_tokenizer("ViT-H-14")`, CLIP BPE, 77 tokens, truncation keeps EOT last.
- model: open_clip `CLIP` with the ViT-H-14 config, exact GELU (no QuickGELU), LayerNorm eps 1e-5, text
  pooled at the EOT token.
- score: cosine of the L2-normalised image and text features, `diag(img @ txt.T)`, one per pair. The
  HPD v2 benchmark tables (and `hpsv2.evaluate`) multiply this by 100; the scorer API and this
  provider do not.

Deliberate differences, only where the official code cannot run at all:

- RGBA images: the official transform keeps the alpha channel, and the 3-channel patch embedding then
  fails. Here alpha is dropped (`convert("RGB")`, no compositing), so the pixels equal the first three
  channels the official transform produces.
- images whose longest side is already 224 but are not square: the official `ResizeMaxSize` returns
  them unpadded (it pads only when it resizes) and the ViT rejects the non-224² input. Here every image
  is padded to 224².
- an image so thin that a side would round to 0 pixels keeps 1 pixel.
- on CUDA the official scorer runs under fp16 autocast; this provider computes in its `dtype`
  (float32 by default), the precision of the official CPU numbers the parity fixtures hold.

v2.0 and v2.1 share code but never weights: each provider resolves only its own official file name,
and its provenance records the version and that file's sha256.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as torch_f
from torch import nn

from paintbench.metrics.backbones import fp32_norms
from paintbench.metrics.base import Device, DType, Metadata, PathArg, Prompts, Provider, Scores, WeightsArg
from paintbench.metrics.images import ImageBatch, as_image_batch, pil_to_tensor
from paintbench.metrics.preprocess import normalize
from paintbench.metrics.weights import catalog, fingerprint, load_state_dict, pick

IMAGE_SIZE = 224
CONTEXT_LENGTH = 77
TOKENIZER_NAME = "ViT-H-14"  # hard-coded in hpsv2.score, whatever the architecture
DEFAULT_ARCH = "ViT-H-14"
# What this metric is and which files it reads, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [
    {"name": "hps-v2", "provider": "HPSv2Provider", "tiny_writer": "write_tiny_weights", "version": "hps-v2.0/1",
     "higher_is_better": True, "nominal_range": (0.0, 0.4), "display": (100.0, 2), "weights": ("hps-v2",),
     "hard_range": (-1.0, 1.0),  # a cosine
     "summary": "Human Preference Score v2.0 (OpenCLIP ViT-H-14 fine-tuned), cosine similarity",
     "aliases": ("hpsv2", "hps-v2.0")},
    {"name": "hps-v2.1", "provider": "HPSv21Provider", "tiny_writer": "write_tiny_weights", "version": "hps-v2.1/1",
     "higher_is_better": True, "nominal_range": (0.0, 0.4), "display": (100.0, 2), "weights": ("hps-v2.1",),
     "hard_range": (-1.0, 1.0),  # a cosine
     "summary": "Human Preference Score v2.1 (OpenCLIP ViT-H-14 fine-tuned), cosine similarity",
     "aliases": ("hpsv2.1", "hpsv21")},
]
WEIGHTS = [
    {"name": "hps-v2", "filename": "HPS_v2_compressed.pt", "description": "HPS v2.0 (fine-tuned OpenCLIP ViT-H-14, fp16)",
     "hf_repo": "xswu/HPSv2"},
    {"name": "hps-v2.1", "filename": "HPS_v2.1_compressed.pt",
     "description": "HPS v2.1 (fine-tuned OpenCLIP ViT-H-14, fp16)", "hf_repo": "xswu/HPSv2", "size_bytes": 1_972_484_501},
]

TINY_ARCH = "paintbench-hps-tiny"

# open_clip model configs (the vendored hpsv2 JSON files; open_clip 3.3.0 ships the same values). Kept
# here so a change of open_clip's bundled configs can never change which model a checkpoint builds.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # The official HPS v2 / v2.1 architecture.
    "ViT-H-14": {
        "embed_dim": 1024,
        "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
    },
    # The reduced parity fixture (same code path, smaller towers).
    "ViT-B-32": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
    },
    # Tests and CPU demos: the real tokenizer and preprocessing, toy towers (about 3.5 M parameters).
    TINY_ARCH: {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
}

# Registry name -> (weight catalog name, official version label).
VERSIONS: dict[str, tuple[str, str]] = {
    "hps-v2": ("hps-v2", "v2.0"),
    "hps-v2.1": ("hps-v2.1", "v2.1"),
}


# -- preprocessing: pure tensor maths ----------------------------------------------------------------
def resized_size(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """Output (h, w) of the official `ResizeMaxSize`: the longest side scaled to `size`.

    `scale = size / float(max(h, w))`; when it is exactly 1 nothing is resized. Otherwise each side is
    `round(side * scale)` with Python's round-half-to-even (333x448 WxH → 166x224). A side that would
    round to 0 keeps 1 pixel (the official code crashes there).
    """
    scale = size / float(max(height, width))
    if scale == 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def pad_amounts(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) zero padding that centres an h x w image in size x size, as
    `ResizeMaxSize` does: `pad//2` on the left/top, the rest on the right/bottom."""
    pad_h, pad_w = size - height, size - width
    return pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2


def resize_max_pad(x01: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """`ResizeMaxSize(size)` for a float [3,H,W] or [B,3,H,W] tensor in [0,1], on its own device.

    torchvision's tensor `resize` (bicubic, antialias=True) on float values, not clamped, then zero
    padding to size². Batched and per-image calls give identical values.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tv_f

    h, w = x01.shape[-2:]
    new_h, new_w = resized_size(h, w, size)
    if (new_h, new_w) != (h, w):
        x01 = tv_f.resize(x01, [new_h, new_w], interpolation=InterpolationMode.BICUBIC, antialias=True)
    left, top, right, bottom = pad_amounts(new_h, new_w, size)
    if left or top or right or bottom:
        x01 = torch_f.pad(x01, (left, right, top, bottom), mode="constant", value=0.0)
    return x01


def preprocess_tensor(x01: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """The full HPS eval transform of a float [B,3,H,W] batch in [0,1]: resize, pad, normalise."""
    return normalize(resize_max_pad(x01, size))


def preprocess_pil(images: Sequence[Any], size: int = IMAGE_SIZE) -> torch.Tensor:
    """The HPS eval transform of PIL images of any sizes: float32 [B,3,size,size] on the CPU.

    Each image goes `convert("RGB")` → uint8 → float/255 (exactly `ToTensor`) → `resize_max_pad`, then
    the batch is stacked and normalised.
    """
    resized = [resize_max_pad(pil_to_tensor(im).to(torch.float32).div(255), size) for im in images]
    return normalize(torch.stack(resized))


# -- tokenizer --------------------------------------------------------------------------------------
@cache
def clip_tokenizer():
    """open_clip's `get_tokenizer("ViT-H-14")`: CLIP BPE, context 77 (loaded once per process)."""
    import open_clip

    return open_clip.get_tokenizer(TOKENIZER_NAME)


def tokenize(prompts: Sequence[str]) -> torch.Tensor:
    """int64 [N,77] token ids, truncated to 77 with EOT forced into the last slot, zero padded."""
    return clip_tokenizer()(list(prompts))


# -- architecture: detection from shapes --------------------------------------------------------------
def _new_clip(arch: str) -> nn.Module:
    from open_clip.model import CLIP

    cfg = ARCHITECTURES[arch]
    # cast_dtype=None and quick_gelu=False: what the official create_model(precision='amp') builds.
    return CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=dict(cfg["vision_cfg"]),
        text_cfg=dict(cfg["text_cfg"]),
        quick_gelu=False,
        cast_dtype=None,
        output_dict=True,
    )


@cache
def _arch_layout(arch: str) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[str, ...]]:
    """(state_dict key → shape, LayerNorm weight keys) of `arch`, read off a model on the meta device
    (no memory, milliseconds even for ViT-H-14)."""
    with torch.device("meta"):
        model = _new_clip(arch)
    shapes = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
    norms = tuple(f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.LayerNorm))
    return shapes, norms


def expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of `arch` (a key of `ARCHITECTURES`)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown HPS architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    return dict(_arch_layout(arch)[0])


def _count_blocks(keys: Iterable[str], prefix: str) -> int:
    return len({k[len(prefix):].split(".", 1)[0] for k in keys if k.startswith(prefix)})


def describe_shapes(sd: Mapping[str, Any]) -> str:
    """A short human description of what a CLIP state dict's shapes say (for error messages)."""

    def shape(key: str) -> tuple[int, ...] | None:
        v = sd.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    parts = []
    conv, pos = shape("visual.conv1.weight"), shape("visual.positional_embedding")
    if conv is not None and len(conv) == 4:
        grid = math.isqrt(pos[0] - 1) if pos else 0
        parts.append(
            f"vision width {conv[0]}, {_count_blocks(sd, 'visual.transformer.resblocks.')} layers, "
            f"patch {conv[-1]}, {grid * conv[-1]} px"
        )
    else:
        parts.append("no OpenCLIP ViT image tower (visual.conv1.weight missing)")
    tok, tpos = shape("token_embedding.weight"), shape("positional_embedding")
    if tok is not None and len(tok) == 2:
        ctx = tpos[0] if tpos else "?"
        parts.append(
            f"text width {tok[1]}, {_count_blocks(sd, 'transformer.resblocks.')} layers, context {ctx}, "
            f"vocab {tok[0]}"
        )
    else:
        parts.append("no OpenCLIP text tower (token_embedding.weight missing)")
    proj = shape("text_projection")
    if proj is not None and len(proj) == 2:
        parts.append(f"embed dim {proj[1]}")
    parts.append(f"{len(sd)} tensors")
    return "; ".join(parts)


def _mismatches(sd: Mapping[str, Any], arch: str) -> list[str]:
    want = expected_shapes(arch)
    out = [f"missing {k}" for k in want if k not in sd]
    out += [f"unexpected {k}" for k in sd if k not in want]
    out += [
        f"{k}: {tuple(sd[k].shape)} vs {arch} {want[k]}"
        for k in want
        if k in sd and tuple(sd[k].shape) != want[k]
    ]
    return out


def detect_arch(sd: Mapping[str, Any], path: str | os.PathLike[str], arch: str | None = None) -> str:
    """The architecture of a checkpoint: `arch` if given (checked), else the one supported config whose
    state-dict keys and shapes match exactly. Errors name the file and what its shapes say."""
    if arch is not None:
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown HPS architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
        bad = _mismatches(sd, arch)
        if bad:
            shown = "; ".join(bad[:4]) + (f"; ... ({len(bad)} differences)" if len(bad) > 4 else "")
            raise ValueError(
                f"{path}: checkpoint does not fit architecture {arch!r} ({shown}). "
                f"Its shapes say: {describe_shapes(sd)}."
            )
        return arch
    for name in ARCHITECTURES:
        if not _mismatches(sd, name):
            return name
    raise ValueError(
        f"{path}: not an HPS checkpoint of a supported architecture ({', '.join(ARCHITECTURES)}). "
        f"Its shapes say: {describe_shapes(sd)}."
    )


# -- loading -----------------------------------------------------------------------------------------
def unwrap_state_dict(obj: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: the official `{"state_dict": ...}` container, or a bare state
    dict (torch or safetensors). A uniform DDP `module.` prefix is dropped."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected {{'state_dict': {{key: tensor}}}} or a flat state dict of tensors")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def causal_mask(n: int) -> torch.Tensor:
    """The text tower's additive causal mask (float32 [n,n]: 0 on and below the diagonal, -inf above),
    as open_clip builds it; a non-persistent buffer, so not in checkpoints."""
    return torch.full((n, n), float("-inf"), dtype=torch.float32).triu_(1)


def build_model(
    sd: dict[str, torch.Tensor],
    arch: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    lazy_init: bool = True,
) -> nn.Module:
    """An eval-mode, frozen open_clip `CLIP` of `arch` holding exactly the tensors of `sd`.

    `lazy_init=True` builds the module on the meta device and assigns the checkpoint tensors (cast to
    `dtype`, moved to `device`) in place of parameters, so the 1B-parameter ViT-H-14 is never randomly
    initialised nor held twice; the causal mask, the only non-persistent buffer, is rebuilt. Casting
    the fp16 file straight to `dtype` gives the same values as the official fp16 → fp32 load followed
    by a cast, since fp32 holds every fp16 value exactly. `sd` is consumed (emptied) to free memory as
    it goes. `lazy_init=False` is the plain build-then-copy path (kept to test that both agree bitwise).
    """
    if not lazy_init:
        model = _new_clip(arch)
        model.load_state_dict(sd, strict=True)
        sd.clear()
        model = fp32_norms(model.to(device=device, dtype=dtype))
    else:
        with torch.device("meta"):
            model = _new_clip(arch)
        converted: dict[str, torch.Tensor] = {}
        for key in list(sd):
            t = sd.pop(key)
            converted[key] = t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
        model.load_state_dict(converted, strict=True, assign=True)
        del converted
        ctx = ARCHITECTURES[arch]["text_cfg"]["context_length"]
        model.attn_mask = causal_mask(ctx).to(device=device, dtype=dtype)
        fp32_norms(model)
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:  # a new open_clip version added state we do not know how to rebuild
            raise RuntimeError(f"HPS {arch}: tensors left uninitialised after loading: {left}")
    model.eval()
    model.requires_grad_(False)
    return model


def load_model(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    arch: str | None = None,
) -> tuple[nn.Module, str]:
    """Read an HPS checkpoint (weights-only) and build its model; returns (model, architecture)."""
    sd = unwrap_state_dict(load_state_dict(path), path)
    arch = detect_arch(sd, path, arch)
    return build_model(sd, arch, device=device, dtype=dtype), arch


# -- providers ---------------------------------------------------------------------------------------
class HPSProvider(Provider):
    """Shared code of the two HPS versions; subclasses only name their version and weight file.

    Score = cosine similarity of the normalised CLIP image and text features (about 0.2-0.35 with the
    real checkpoints). The HPD v2 benchmark reports 100 × this value.
    """

    weight_name: ClassVar[str]
    hps_version: ClassVar[str]

    def __init__(
        self,
        *,
        device: Device = "cpu", dtype: DType = torch.float32, batch_size: int = 32,
        weights: WeightsArg = None, weights_dir: PathArg = None,
        arch: str | None = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        self.weights_path = pick(self.weight_name, weights, weights_dir, primary=self.weight_name)
        self._refuse_other_version(self.weights_path)
        self.model, self.arch = load_model(self.weights_path, device=self.device, dtype=self.dtype, arch=arch)

    def _refuse_other_version(self, path: Path) -> None:
        """v2.0 and v2.1 scores are not comparable: a file carrying the other version's official name
        is refused rather than silently scored under this version's label."""
        for name, (weight, version) in VERSIONS.items():
            if weight != self.weight_name and path.name == catalog()[weight].filename:
                raise ValueError(
                    f"{self.name}: {path} is the HPS {version} checkpoint ({name}); this provider loads only "
                    f"{catalog()[self.weight_name].filename}"
                )

    def provenance(self) -> dict[str, Any]:
        return {
            **super().provenance(),
            "hps_version": self.hps_version,
            "architecture": self.arch,
            "weights": {
                self.weight_name: {"file": self.weights_path.name, "path": str(self.weights_path),
                                   "sha256": fingerprint(self.weights_path)}
            },
            "tokenizer": f"open_clip get_tokenizer('{TOKENIZER_NAME}'), {CONTEXT_LENGTH} tokens",
            "preprocess": "convert RGB, ToTensor, ResizeMaxSize(224) tensor bicubic antialias + zero pad, "
            "OpenAI CLIP normalize",
            "score": "cosine(image, text) (HPD v2 benchmark tables report x100)",
        }

    # -- internal helpers (also used by tests to score an N x M matrix from N + M encodings) ------------
    def pixel_values(self, images: ImageBatch) -> torch.Tensor:
        """Preprocessed [B,3,224,224] pixels on the device in the model dtype.

        PIL batches are resized on the CPU image by image (as the official dataloader does); tensor
        batches are resized on their device in float32, all at once.
        """
        if images.is_tensor:
            x = preprocess_tensor(images.float01(self.device, torch.float32))
        else:
            x = preprocess_pil(images.pil or [])
        return x.to(device=self.device, dtype=self.dtype)

    def encode_images(
        self, images: ImageBatch | Sequence[Any] | torch.Tensor, *, normalize: bool = True
    ) -> torch.Tensor:
        """Image features [B,D] (L2-normalised unless `normalize=False`), batched by `batch_size`."""
        batch = images if isinstance(images, ImageBatch) else as_image_batch(images)
        out = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                part = batch.slice(start, min(start + self.batch_size, len(batch)))
                out.append(self.model.encode_image(self.pixel_values(part), normalize=normalize))
        return torch.cat(out) if out else torch.empty(0, device=self.device)

    def encode_texts(self, prompts: Sequence[str], *, normalize: bool = True) -> torch.Tensor:
        """Text features [N,D] (L2-normalised unless `normalize=False`), batched by `batch_size`."""
        prompts = list(prompts)
        out = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                tokens = tokenize(prompts[start : start + self.batch_size]).to(self.device)
                out.append(self.model.encode_text(tokens, normalize=normalize))
        return torch.cat(out) if out else torch.empty(0, device=self.device)

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        assert prompts is not None  # `score` enforces one prompt per image
        image_features = self.encode_images(images)
        text_features = self.encode_texts(prompts)
        values = pair_cosines(image_features, text_features)
        details = [{"cosine": float(v)} for v in values.float().cpu()]
        return Scores(metric=self.name, values=values, details=details)


def pair_cosines(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of normalised features: `diag(img @ txt.T)` without the off-diagonal work."""
    return (image_features * text_features).sum(dim=-1)


class HPSv2Provider(HPSProvider):
    """HPS v2.0 (`HPS_v2_compressed.pt`); scores are not comparable with v2.1."""

    name = "hps-v2"
    weight_name = "hps-v2"
    hps_version = "v2.0"


class HPSv21Provider(HPSProvider):
    """HPS v2.1 (`HPS_v2.1_compressed.pt`), the version the HPSv2 authors recommend."""

    name = "hps-v2.1"
    weight_name = "hps-v2.1"
    hps_version = "v2.1"


# -- tiny checkpoints --------------------------------------------------------------------------------
_TINY_SEED_OFFSET = {"hps-v2": 0, "hps-v2.1": 1}  # different weights per version, so a mix-up shows


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float16 weights of the tiny architecture (LayerNorm weights around 1, logit_scale as
    CLIP initialises it), rounded to fp16 as in the released `*_compressed.pt` files."""
    from paintbench.metrics.synthetic import random_state_dict

    shapes, norms = _arch_layout(TINY_ARCH)
    sd = random_state_dict(dict(shapes), seed, norm_keys=norms)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return {k: v.to(torch.float16) for k, v in sd.items()}


def write_tiny_weights(directory: str | os.PathLike[str], *, seed: int = 0, metric: str = "hps-v2.1") -> list[Path]:
    """Write a tiny random checkpoint for `metric` ("hps-v2" or "hps-v2.1") in the official container
    (`torch.save({"state_dict": ...})`, fp16) under the official file name; returns `[path]`.

    The two versions get different random weights for the same `seed` (internal seed `2*seed` for
    v2.0, `2*seed + 1` for v2.1), so a provider that loaded the other version's file would show it.
    """
    from paintbench.metrics.registry import spec

    name = spec(metric).name
    if name not in VERSIONS:
        raise ValueError(f"write_tiny_weights: {metric!r} is not an HPS metric ({', '.join(VERSIONS)})")
    weight, _ = VERSIONS[name]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / catalog()[weight].filename
    torch.save({"state_dict": tiny_state_dict(seed * 2 + _TINY_SEED_OFFSET[name])}, path)
    return [path]
