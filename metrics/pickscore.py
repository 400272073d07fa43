"""PickScore (yuvalkirstain/PickScore): a CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences.

What the official snippet (the repository's README) computes, and what this provider reproduces:

    image_embs = normalise(model.get_image_features(processor(images)))
    text_embs  = normalise(model.get_text_features(processor(text=prompt, padding, truncation, max_length=77)))
    score      = model.logit_scale.exp() * text_embs @ image_embs.T        # one value per (prompt, image)
    probs      = softmax(scores) over the images of one prompt

- `model` is transformers' own `CLIPModel` (`yuvalkirstain/PickScore_v1`), `processor` the CLIP processor
  of `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (real CLIP BPE, 77 tokens with BOS and EOS kept);
- images are converted with PIL's `.convert("RGB")` first: the official transformers (4.27) drops an
  alpha channel, while transformers 5's `convert_to_rgb` composites it onto white (scores moved by up
  to 15 on a transparent image of the fixtures); then the processor's **PIL** backend (resize the
  shortest edge to 224 bicubic, centre crop, OpenAI mean/std): transformers 5's default torchvision
  backend is not bit-identical (4.6e-3 on scores);
- the score is exp(logit_scale) · cosine, unscaled (Flow-GRPO-style rewards divide it by 26; not done
  here). The probabilities over the images that share a prompt in one `score` call are a detail.

Parity: `tests/test_pickscore.py` against the official snippet's outputs on a synthetic CLIPModel
(`../shared/fixtures/pickscore`): token ids equal, pixels bit-identical, scores within 1e-4.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from paintbench.metrics import weights as wts
from paintbench.metrics.base import Device, DType, Metadata, PathArg, Prompts, Provider, Scores, WeightsArg
from paintbench.metrics.images import ImageBatch
from paintbench.metrics.preprocess import clip_tensor
from paintbench.metrics.remote_code import checked_folder

# What this metric is and which files it reads, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [{
    "name": "pickscore", "provider": "PickScoreProvider", "tiny_writer": "write_tiny_weights",
    "version": "pickscore-v1/1", "higher_is_better": True, "nominal_range": (15.0, 25.0),
    "summary": "PickScore v1 (CLIP ViT-H/14 fine-tuned on Pick-a-Pic): exp(logit_scale) x cosine",
    "weights": ("pickscore-v1", "clip-vit-h-14-laion-processor"), "needs_prompt": True, "display": (1.0, 3),
}]
WEIGHTS = [
    {"name": "pickscore-v1", "filename": "PickScore_v1", "description": "PickScore v1 CLIPModel folder",
     "hf_repo": "yuvalkirstain/PickScore_v1", "files": ("config.json", "model.safetensors")},
    {"name": "clip-vit-h-14-laion-processor", "filename": "CLIP-ViT-H-14-laion2B-s32B-b79K",
     "description": "the CLIP processor files PickScore uses (tokenizer + image preprocessing)",
     "hf_repo": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
     "files": ("vocab.json", "merges.txt", "preprocessor_config.json", "tokenizer_config.json")},
]

MODEL_WEIGHT = "pickscore-v1"
PROCESSOR_WEIGHT = "clip-vit-h-14-laion-processor"
MAX_TOKENS = 77


def pil_image_processor(folder: Path) -> Any:
    """The CLIP image processor with the PIL backend (transformers 5: `CLIPImageProcessorPil`;
    transformers 4.x's `CLIPImageProcessor` is PIL-based already)."""
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls.from_pretrained(str(checked_folder(folder)), local_files_only=True, trust_remote_code=False)


def processor_pixels(images: ImageBatch, processor: Any, size: int, device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
    """CLIP input pixels: PIL images `convert("RGB")` (alpha dropped, as the official transformers did) then
    the PIL-backend `processor`; a tensor batch (RL rewards) by `clip_tensor` on its device."""
    if images.is_tensor:
        x = clip_tensor(images.float01(device, torch.float32), size)
    else:
        x = processor(images=[im.convert("RGB") for im in images.pil], return_tensors="pt")["pixel_values"]
    return x.to(device=device, dtype=dtype)


def features(output: Any) -> torch.Tensor:
    """`get_*_features` output as a tensor (transformers 5 wraps the projected embedding in
    `pooler_output`; 4.x returns it directly)."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def probabilities_by_prompt(values: torch.Tensor, prompts: Sequence[str]) -> list[float]:
    """softmax of the scores over the images that share a prompt (the official `probs`)."""
    out = torch.empty_like(values, dtype=torch.float32)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    for idx in groups.values():
        index = torch.tensor(idx, device=values.device)
        out[index] = torch.softmax(values.float().index_select(0, index), dim=0)
    return out.cpu().tolist()


class PickScoreProvider(Provider):
    """PickScore of each (image, prompt) pair.

    - PIL images or paths: `.convert("RGB")`, then the official processor (PIL backend): pixels are
      bit-identical to the official snippet's;
    - a [B,3,H,W] tensor (uint8 or float 0-1, RL rewards) is preprocessed on its device by
      `metrics.preprocess.clip_tensor` (float bicubic with antialias; the same geometry and mean/std),
      close to but not bit-identical with PIL's uint8 bicubic: use the PIL path for reported numbers.

    Text is tokenised as the official snippet does (padding, truncation at 77 tokens with BOS/EOS
    kept); the text tower runs once per distinct prompt of a batch.
    """

    name = "pickscore"

    def __init__(self, *, device: Device = "cpu", dtype: DType = torch.float32, batch_size: int = 32,
                 weights: WeightsArg = None, weights_dir: PathArg = None) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        from transformers import AutoTokenizer, CLIPModel

        self.model_path = wts.pick(MODEL_WEIGHT, weights, weights_dir, primary=MODEL_WEIGHT)
        self.processor_path = wts.pick(PROCESSOR_WEIGHT, weights, weights_dir, primary=MODEL_WEIGHT)
        self.tokenizer = AutoTokenizer.from_pretrained(str(checked_folder(self.processor_path)), local_files_only=True,
                                                       trust_remote_code=False)
        self.image_processor = pil_image_processor(self.processor_path)
        self.model = CLIPModel.from_pretrained(str(checked_folder(self.model_path)), local_files_only=True,
                                               trust_remote_code=False)
        self.model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        crop = self.image_processor.crop_size   # a dict (4.x), a SizeDict (5.x) or an int
        self.image_size = int(crop["height"] if isinstance(crop, dict) else getattr(crop, "height", crop))

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["weights"] = {
            MODEL_WEIGHT: {"path": str(self.model_path), "sha256": wts.fingerprint(self.model_path)},
            PROCESSOR_WEIGHT: {"path": str(self.processor_path), "sha256": wts.fingerprint(self.processor_path)},
        }
        out["preprocess"] = (f"PIL inputs: convert('RGB') + CLIP processor (PIL backend, {self.image_size}); "
                             "tensors: torch bicubic")
        return out

    # -- inference ---------------------------------------------------------------------------------
    def pixels(self, images: ImageBatch) -> torch.Tensor:
        return processor_pixels(images, self.image_processor, self.image_size, self.device, self.dtype)

    def text_ids(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        assert prompts is not None
        image = features(self.model.get_image_features(pixel_values=self.pixels(images))).float()
        unique = list(dict.fromkeys(prompts))
        text = features(self.model.get_text_features(**self.text_ids(unique))).float()
        text = text[torch.tensor([unique.index(p) for p in prompts], device=self.device)]
        image = image / torch.linalg.vector_norm(image, dim=-1, keepdim=True)
        text = text / torch.linalg.vector_norm(text, dim=-1, keepdim=True)
        values = self.model.logit_scale.float().exp() * (text * image).sum(-1)
        return Scores(metric=self.name, values=values, details=[{"score": float(v)} for v in values.cpu().tolist()])

    def score(self, images: Any, prompts: Sequence[str] | None = None,
              metadata: Sequence[dict[str, Any]] | None = None) -> Scores:
        """Scores, with `prob`: the softmax over the images of this call that share a prompt."""
        out = super().score(images, prompts, metadata)
        if prompts is not None and len(out):
            for d, p in zip(out.details, probabilities_by_prompt(out.values, list(prompts)), strict=True):
                d["prob"] = p
        return out


# -- tiny checkpoints in the official formats -------------------------------------------------------
TINY_CLIP = {"text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "max_position_embeddings": 77, "vocab_size": 49408,
                             "eos_token_id": 2},
             "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "image_size": 224, "patch_size": 14},
             "projection_dim": 32, "logit_scale_init_value": 4.5}


def write_tiny_weights(directory: str | Path, *, seed: int = 0, metric: str = "pickscore") -> list[Path]:
    """A tiny `CLIPModel` folder (`PickScore_v1/`, seeded) and a processor folder with the real CLIP BPE
    (from open_clip's `bpe_simple_vocab_16e6.txt.gz`, laid out as transformers' CLIP conversion does),
    so `metrics.get("pickscore", weights_dir=directory)` runs the real loaders at toy size."""
    from transformers import CLIPConfig, CLIPModel

    directory = Path(directory)
    model_dir = directory / wts.catalog()[MODEL_WEIGHT].filename
    processor_dir = directory / wts.catalog()[PROCESSOR_WEIGHT].filename
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(**TINY_CLIP)).save_pretrained(str(model_dir), safe_serialization=True)
    write_clip_processor(processor_dir)
    return [model_dir, processor_dir]


def write_clip_processor(folder: Path) -> None:
    """vocab.json + merges.txt from open_clip's BPE file, and the laion repository's processor settings."""
    import gzip

    import open_clip.tokenizer as oct

    with gzip.open(oct.default_bpe()) as f:           # as open_clip's SimpleTokenizer reads it
        merges = f.read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(oct.bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "model_max_length": MAX_TOKENS, "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer"}), encoding="utf-8")
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True, "resample": 3,
        "size": 224, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}), encoding="utf-8")
