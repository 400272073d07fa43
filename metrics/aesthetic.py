"""LAION improved aesthetic predictor v2 (christophschuhmann/improved-aesthetic-predictor).

What the official `simple_inference.py` computes, and what this provider reproduces:

    score = MLP(normalized(clip.encode_image(clip_preprocess(image))))

- `clip` is OpenAI CLIP ViT-L/14 (`ViT-L-14.pt`), here the shared `metrics.backbones.openai_clip`
  instance, so GenEval's colour classifier and this metric hold one copy of it;
- `clip_preprocess` is OpenAI's `clip._transform(224)` on the PIL image (`metrics.preprocess.clip_pil`,
  bit-identical pixels); device tensors use `metrics.preprocess.clip_tensor` instead (no PIL round trip,
  see `AestheticProvider` for how far that path may drift);
- `normalized` is an L2 normalisation done in numpy float32 in the official script, where a zero norm
  is replaced by 1 (so an all-zero embedding stays zero instead of becoming NaN);
- `MLP` is `Linear(D,1024), Dropout(.2), Linear(1024,128), Dropout(.2), Linear(128,64), Dropout(.1),
  Linear(64,16), Linear(16,1)` with **no activations**, evaluated in float32 (the script casts the
  normalised embedding to `FloatTensor` before the head, whatever precision CLIP ran in).

The score is the raw head output (an AVA-like 1-10 rating with the real weights); nothing is rescaled.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paintbench.metrics import backbones
from paintbench.metrics import weights as wts
from paintbench.metrics.base import Device, DType, Metadata, PathArg, Prompts, Provider, Scores, WeightsArg
from paintbench.metrics.heads import HEAD_LINEAR_INDICES, HEAD_WIDTHS, LinearMLPHead
from paintbench.metrics.images import ImageBatch, as_image_batch
from paintbench.metrics.preprocess import openai_clip_pixels

# What this metric is and which files it reads, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [{
    "name": "aesthetic", "provider": "AestheticProvider", "tiny_writer": "write_tiny_weights",
    "version": "laion-aesthetic-v2/1", "higher_is_better": True, "nominal_range": (1.0, 10.0),
    "summary": "LAION improved aesthetic predictor v2 (OpenAI CLIP ViT-L/14 + linear MLP head)",
    "weights": ("aesthetic-head", "clip-vit-l-14"), "needs_prompt": False, "display": (1.0, 3),
}]
WEIGHTS = [
    {"name": "aesthetic-head", "filename": "sac+logos+ava1-l14-linearMSE.pth",
     "description": "LAION improved aesthetic predictor v2 MLP head",
     "url": "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
            "sac+logos+ava1-l14-linearMSE.pth", "size_bytes": 3_714_759},
]

HEAD_WEIGHT = "aesthetic-head"
CLIP_WEIGHT = "clip-vit-l-14"

HEAD_KEYS = tuple(f"layers.{i}.{p}" for i in HEAD_LINEAR_INDICES for p in ("weight", "bias"))


class AestheticHead(LinearMLPHead):
    """The official `MLP(input_size)` of `simple_inference.py`, without its pytorch-lightning base
    (which only adds training hooks). Same module layout, so the official `.pth` loads strictly."""


def head_input_dim(state_dict: Mapping[str, torch.Tensor], path: Path | str) -> int:
    """The embedding size D the head expects, after checking that `state_dict` is the official MLP.

    The hidden sizes are part of the official architecture, so every shape is checked here and a wrong
    file fails with one message naming it rather than with a long `load_state_dict` traceback.
    """
    keys = set(state_dict)
    missing = [k for k in HEAD_KEYS if k not in keys]
    unexpected = sorted(keys - set(HEAD_KEYS))
    if missing or unexpected:
        raise ValueError(
            f"{path}: not an aesthetic predictor head (expected keys {', '.join(HEAD_KEYS)}; "
            f"missing {missing or 'none'}, unexpected {unexpected[:5] or 'none'})"
        )
    first = state_dict["layers.0.weight"]
    if first.dim() != 2:
        raise ValueError(f"{path}: layers.0.weight must be 2-D, got shape {tuple(first.shape)}")
    dim = int(first.shape[1])
    width_in = dim
    for index, width_out in zip(HEAD_LINEAR_INDICES, HEAD_WIDTHS, strict=True):
        w, b = state_dict[f"layers.{index}.weight"], state_dict[f"layers.{index}.bias"]
        if tuple(w.shape) != (width_out, width_in) or tuple(b.shape) != (width_out,):
            raise ValueError(
                f"{path}: layers.{index} has weight {tuple(w.shape)} / bias {tuple(b.shape)}, expected "
                f"({width_out}, {width_in}) / ({width_out},) for the official MLP({dim})"
            )
        width_in = width_out
    return dim


def load_head(path: Path, device: torch.device | str = "cpu") -> AestheticHead:
    """Read the head file without unpickling code and build the float32 MLP on `device` (eval mode)."""
    state_dict = wts.load_state_dict(path)
    if isinstance(state_dict, Mapping) and "state_dict" in state_dict and "layers.0.weight" not in state_dict:
        state_dict = state_dict["state_dict"]  # tolerate a lightning-style wrapper around the same keys
    head = AestheticHead(head_input_dim(state_dict, path))
    head.load_state_dict({k: v.float() for k, v in state_dict.items()})
    head = head.to(device=device, dtype=torch.float32).eval()
    head.requires_grad_(False)
    return head


def clip_embed_dim(clip: nn.Module) -> int:
    """Output size of an open_clip image tower (`visual.proj` is [width, embed_dim])."""
    proj = getattr(clip.visual, "proj", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    return int(clip.visual.output_dim)


def clip_image_size(clip: nn.Module) -> int:
    """The input resolution of the image tower (OpenAI's `visual.input_resolution`; 224 for ViT-L/14)."""
    size = clip.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation as the official numpy `normalized()`: a zero norm divides by 1."""
    norm = torch.linalg.vector_norm(x, ord=2, dim=-1, keepdim=True)
    return x / torch.where(norm == 0, torch.ones_like(norm), norm)


class AestheticProvider(Provider):
    """LAION aesthetic v2 score of each image; no prompt.

    Inputs:

    - PIL images or paths go through the official PIL transform (`clip_pil_batch`): pixels are
      bit-identical to `simple_inference.py`, and on CPU float32 the scores match the official script
      to about 1e-6 (checked against fixtures within 2e-5);
    - a [B,3,H,W] tensor (uint8 0-255 or float 0-1) is preprocessed on its device by `clip_tensor`
      (float bicubic with antialias instead of PIL's uint8 bicubic). Images already at the CLIP
      resolution are not resampled and agree with the PIL path to float rounding (uint8 input: exactly).
      Resampled images agree to within 1e-3 per component of the normalised embedding: measured on
      smooth test cards and the eight fixture images with the synthetic full-size ViT-L/14, at most
      2e-4 on the test cards and 7e-4 on the fixtures, which moved scores by at most 2.3e-3 on a score
      spread of 0.64. Use the PIL path for reported numbers and the tensor path for RL rewards.

    CLIP runs in the provider's `dtype` (float32 by default; the official script uses fp16 on CUDA);
    the normalisation and the head always run in float32, as the official script casts the embedding
    to `FloatTensor` before the head.
    """

    name = "aesthetic"
    needs_prompt = False

    def __init__(
        self,
        *,
        device: Device = "cpu", dtype: DType = torch.float32, batch_size: int = 32,
        weights: WeightsArg = None, weights_dir: PathArg = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        # The head first: it is the provider's primary weight and a missing one should be reported
        # before minutes are spent loading CLIP.
        self.head_path = wts.pick(HEAD_WEIGHT, weights, weights_dir, primary=HEAD_WEIGHT)
        self.clip_path = wts.pick(CLIP_WEIGHT, weights, weights_dir, primary=HEAD_WEIGHT)
        self.head = load_head(self.head_path, self.device)
        self.clip = backbones.openai_clip(self.clip_path, self.device, self.dtype)
        head_dim = self.head.layers[0].in_features
        clip_dim = clip_embed_dim(self.clip)
        if head_dim != clip_dim:
            raise ValueError(
                f"aesthetic: the head {self.head_path} expects {head_dim}-d CLIP embeddings, but the CLIP "
                f"{self.clip_path} produces {clip_dim}-d ones; use a head trained for that CLIP "
                f"(the official pair is ViT-L-14.pt with sac+logos+ava1-l14-linearMSE.pth, D=768)"
            )
        self.image_size = clip_image_size(self.clip)

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["weights"] = {
            HEAD_WEIGHT: {"path": str(self.head_path), "sha256": wts.fingerprint(self.head_path)},
            CLIP_WEIGHT: {"path": str(self.clip_path), "sha256": wts.fingerprint(self.clip_path)},
        }
        out["preprocess"] = f"openai-clip-{self.image_size} (PIL inputs: official PIL path; tensors: torch bicubic)"
        return out

    # -- inference ---------------------------------------------------------------------------------
    def pixels(self, images: ImageBatch) -> torch.Tensor:
        """CLIP input pixels of a batch, on the device in the CLIP dtype."""
        return openai_clip_pixels(images, self.image_size, self.device, self.dtype)

    def image_features(self, images: ImageBatch) -> torch.Tensor:
        """Unnormalised CLIP image embeddings [B, D] of one batch, in float32 (call under no_grad)."""
        return self.clip.encode_image(self.pixels(images)).float()

    def embed(self, images: ImageBatch | Sequence[Any] | torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP image embeddings [N, D] (float32, on the device): the head's input."""
        batch = images if isinstance(images, ImageBatch) else as_image_batch(images)
        n, parts = len(batch), []
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                parts.append(l2_normalize(self.image_features(batch.slice(start, min(start + self.batch_size, n)))))
        return torch.cat(parts) if parts else torch.empty(0, clip_embed_dim(self.clip), device=self.device)

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        features = self.image_features(images)
        norms = torch.linalg.vector_norm(features, ord=2, dim=-1)
        values = self.head(l2_normalize(features)).squeeze(-1)
        details = [
            {"score": float(v), "embedding_norm": float(n)}
            for v, n in zip(values.cpu().tolist(), norms.cpu().tolist(), strict=True)
        ]
        return Scores(metric=self.name, values=values, details=details)


# -- tiny checkpoints in the official formats -------------------------------------------------------
TINY_CLIP = {
    "embed_dim": 128,
    "image_resolution": 224,
    "vision_layers": 2,
    "vision_width": 64,
    "vision_patch_size": 14,
    "context_length": 77,
    "vocab_size": 49408,  # the real BPE vocabulary, so text towers built from it accept any token id
    "transformer_width": 64,
    "transformer_layers": 1,
}


def openai_clip_shapes(
    *,
    embed_dim: int,
    image_resolution: int,
    vision_layers: int,
    vision_width: int,
    vision_patch_size: int,
    context_length: int,
    vocab_size: int,
    transformer_width: int,
    transformer_layers: int,
    **_: Any,
) -> OrderedDict[str, tuple[int, ...]]:
    """Keys and shapes of OpenAI's `clip.model.CLIP` (ViT variant) state dict, in its order.

    Attention heads do not appear in shapes (OpenAI derives them as width // 64), hence no argument.
    """

    def blocks(prefix: str, width: int, layers: int) -> list[tuple[str, tuple[int, ...]]]:
        out = []
        for i in range(layers):
            p = f"{prefix}.resblocks.{i}"
            out += [
                (f"{p}.attn.in_proj_weight", (3 * width, width)),
                (f"{p}.attn.in_proj_bias", (3 * width,)),
                (f"{p}.attn.out_proj.weight", (width, width)),
                (f"{p}.attn.out_proj.bias", (width,)),
                (f"{p}.ln_1.weight", (width,)),
                (f"{p}.ln_1.bias", (width,)),
                (f"{p}.mlp.c_fc.weight", (4 * width, width)),
                (f"{p}.mlp.c_fc.bias", (4 * width,)),
                (f"{p}.mlp.c_proj.weight", (width, 4 * width)),
                (f"{p}.mlp.c_proj.bias", (width,)),
                (f"{p}.ln_2.weight", (width,)),
                (f"{p}.ln_2.bias", (width,)),
            ]
        return out

    if image_resolution % vision_patch_size:
        raise ValueError(f"image_resolution {image_resolution} is not a multiple of the patch {vision_patch_size}")
    if vision_width % 64 or transformer_width % 64:
        raise ValueError("OpenAI CLIP widths must be multiples of 64 (heads = width // 64)")
    grid = image_resolution // vision_patch_size
    vw, tw = vision_width, transformer_width
    items: list[tuple[str, tuple[int, ...]]] = [
        ("positional_embedding", (context_length, tw)),
        ("text_projection", (tw, embed_dim)),
        ("logit_scale", ()),
        ("visual.class_embedding", (vw,)),
        ("visual.positional_embedding", (grid * grid + 1, vw)),
        ("visual.proj", (vw, embed_dim)),
        ("visual.conv1.weight", (vw, 3, vision_patch_size, vision_patch_size)),
        ("visual.ln_pre.weight", (vw,)),
        ("visual.ln_pre.bias", (vw,)),
        *blocks("visual.transformer", vw, vision_layers),
        ("visual.ln_post.weight", (vw,)),
        ("visual.ln_post.bias", (vw,)),
        *blocks("transformer", tw, transformer_layers),
        ("token_embedding.weight", (vocab_size, tw)),
        ("ln_final.weight", (tw,)),
        ("ln_final.bias", (tw,)),
    ]
    return OrderedDict(items)


def clip_fill(key: str) -> dict[str, Any]:
    """The fixture rule for a CLIP tensor: LayerNorm weights around 1, logit_scale ln(1/0.07), else N(0, .02)."""
    if key == "logit_scale":
        return {"kind": "const", "value": 2.659260036932778}
    parts = key.split(".")
    if parts[-1] == "weight" and len(parts) >= 2 and parts[-2].startswith("ln_"):
        return {"kind": "normal", "mean": 1.0, "std": 0.02}
    return {"kind": "normal", "mean": 0.0, "std": 0.02}


def head_fill(key: str, in_features: int) -> dict[str, Any]:
    """The fixture rule for the head: layers.0.weight N(0,1) (its input has unit norm), later weights
    N(0, 1/sqrt(fan_in)) so the activation-free stack keeps its scale; biases N(0, .02)."""
    if key == "layers.0.weight":
        return {"kind": "normal", "mean": 0.0, "std": 1.0}
    if key.endswith(".weight"):
        return {"kind": "normal", "mean": 0.0, "std": in_features ** -0.5}
    return {"kind": "normal", "mean": 0.0, "std": 0.02}


def random_head_state_dict(input_dim: int, seed: int) -> OrderedDict[str, torch.Tensor]:
    """A float32 head state dict in the official layout, filled by the fixture rule."""
    from paintbench.metrics.synthetic import make_tensor

    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    width_in = input_dim
    for index, width_out in zip(HEAD_LINEAR_INDICES, HEAD_WIDTHS, strict=True):
        for part, shape in (("weight", (width_out, width_in)), ("bias", (width_out,))):
            key = f"layers.{index}.{part}"
            out[key] = make_tensor(key, shape, head_fill(key, width_in), "float32", seed)
        width_in = width_out
    return out


def random_openai_clip_state_dict(config: Mapping[str, int], seed: int) -> OrderedDict[str, torch.Tensor]:
    """An OpenAI-layout CLIP state dict with every float tensor stored float16, as OpenAI's files."""
    from paintbench.metrics.synthetic import make_tensor

    return OrderedDict(
        (k, make_tensor(k, s, clip_fill(k), "float16", seed)) for k, s in openai_clip_shapes(**config).items()
    )


def write_tiny_weights(directory: str | Path, *, seed: int = 0, metric: str = "aesthetic") -> list[Path]:
    """Write a tiny OpenAI-format CLIP (`ViT-L-14.pt`, plain fp16 state dict) and a matching head
    (`sac+logos+ava1-l14-linearMSE.pth`, float32) so `metrics.get("aesthetic", weights_dir=directory)`
    runs the real loaders at toy size. Scores are meaningless; they only exercise the code."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clip_file = directory / wts.catalog()[CLIP_WEIGHT].filename
    head_file = directory / wts.catalog()[HEAD_WEIGHT].filename
    torch.save(random_openai_clip_state_dict(TINY_CLIP, seed), clip_file)
    torch.save(random_head_state_dict(TINY_CLIP["embed_dim"], seed), head_file)
    return [clip_file, head_file]
