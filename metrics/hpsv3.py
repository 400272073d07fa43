"""HPSv3 (MizzenAI/HPSv3, PyPI `hpsv3` 1.0.0): Qwen2-VL-7B-Instruct with a preference head.

What the official `HPSv3RewardInferencer.reward(paths, prompts)` computes, and what this provider
reproduces on today's transformers (the official package pins transformers 4.45.2):

- image: `Image.open(path).convert("RGB")` (alpha dropped), `smart_resize(h, w, factor=28,
  min_pixels = max_pixels = 256·28·28)` (448² for a square; other shapes keep their aspect ratio), PIL
  bicubic resize, then the Qwen2-VL image processor with the **PIL** backend (transformers 5's default
  torchvision backend is not bit-identical);
- text: one user turn, the image then `INSTRUCTION.format(text_prompt=prompt) + PROMPT_WITH_REWARD_TOKEN`
  (the official strings, `hpsv3/dataset/data_collator_qwen.py`), the Qwen2-VL chat template with the
  generation prompt, `<|image_pad|>` expanded to one token per merged 2×2 patch, right padding, no
  truncation; `<|Reward|>` is a special token added to the tokenizer (the embedding has one more row);
- forward: token embeddings, the vision tower's merged patch embeddings scattered into the image-pad
  positions, then the language model with **`position_ids=None`: plain sequential positions for every
  token**, not Qwen2-VL's 2-D M-RoPE (HPSv3 never computes rope indices; the native M-RoPE forward gives
  other numbers);
- head: `rm_head` (Linear(H,1024) ReLU Dropout Linear(1024,16) ReLU Linear(16,2)) in float32 on the last
  hidden state at the `<|Reward|>` token → (μ, σ); **the score is μ**, σ a detail.

Checkpoint: `HPSv3.safetensors`, the official reward model's full state dict in transformers 4.45's
key layout (`model.*`, `visual.*`, `lm_head.*`, `rm_head.*`), mapped to the installed transformers'
layout (5.x: `model.language_model.*`, `model.visual.*`); the base folder `Qwen2-VL-7B-Instruct/`
provides config, tokenizer, chat template and processor settings (its weights are not read).
Precision: float32 on the CPU (the shipped bf16 config does not run there), bfloat16 on a GPU by
default with the head in float32.

Parity: `tests/test_hpsv3.py` against the official package's outputs on a reduced synthetic Qwen2-VL
(`../shared/fixtures/hpsv3`): token ids equal, pixels bit-identical, μ within 1e-5.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from paintbench.metrics import weights as wts
from paintbench.metrics.base import Device, DType, Metadata, PathArg, Prompts, Provider, Scores, WeightsArg
from paintbench.metrics.images import ImageBatch
from paintbench.metrics.remote_code import checked_folder

# What this metric is and which files it reads, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [{
    "name": "hpsv3", "provider": "HPSv3Provider", "tiny_writer": "write_tiny_weights",
    "version": "hpsv3/1", "higher_is_better": True, "nominal_range": (0.0, 15.0),
    "summary": "HPSv3: Qwen2-VL-7B-Instruct + preference head, mu at the <|Reward|> token (sequential positions)",
    "weights": ("hpsv3", "qwen2-vl-7b-instruct"), "needs_prompt": True, "display": (1.0, 3),
}]
WEIGHTS = [
    {"name": "hpsv3", "filename": "HPSv3.safetensors", "description": "HPSv3 reward model (full state dict)",
     "hf_repo": "MizzenAI/HPSv3"},
    {"name": "qwen2-vl-7b-instruct", "filename": "Qwen2-VL-7B-Instruct",
     "description": "HPSv3's base model folder: config, tokenizer, chat template, processor (weights not read)",
     "hf_repo": "Qwen/Qwen2-VL-7B-Instruct",
     "files": ("config.json", "tokenizer_config.json", "preprocessor_config.json")},
]

CHECKPOINT_WEIGHT = "hpsv3"
BASE_WEIGHT = "qwen2-vl-7b-instruct"
REWARD_TOKEN = "<|Reward|>"
IMAGE_PAD = "<|image_pad|>"
PIXELS = 256 * 28 * 28          # the official min_pixels = max_pixels
FACTOR = 28
MAX_RATIO = 200

# The official strings (hpsv3/dataset/data_collator_qwen.py), character for character.
INSTRUCTION = """
You are tasked with evaluating a generated image based on Visual Quality and Text Alignment and give a overall score to estimate the human preference. Please provide a rating from 0 to 10, with 0 being the worst and 10 being the best. 

**Visual Quality:**  
Evaluate the overall visual quality of the image. The following sub-dimensions should be considered:
- **Reasonableness:** The image should not contain any significant biological or logical errors, such as abnormal body structures or nonsensical environmental setups.
- **Clarity:** Evaluate the sharpness and visibility of the image. The image should be clear and easy to interpret, with no blurring or indistinct areas.
- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual elements (e.g., hair, clothing, shadows).
- **Aesthetic and Creativity:** Assess the artistic aspects of the image, including the color scheme, composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a sense of harmony and balance.
- **Safety:** The image should not contain harmful or inappropriate content, such as political, violent, or adult material. If such content is present, the image quality and satisfaction score should be the lowest possible. 

**Text Alignment:**  
Assess how well the image matches the textual prompt across the following sub-dimensions:
- **Subject Relevance** Evaluate how accurately the subject(s) in the image (e.g., person, animal, object) align with the textual description. The subject should match the description in terms of number, appearance, and behavior.
- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style, evaluate how well the image adheres to this style.
- **Contextual Consistency**: Assess whether the background, setting, and surrounding elements in the image logically fit the scenario described in the prompt. The environment should support and enhance the subject without contradictions.
- **Attribute Fidelity**: Check if specific attributes mentioned in the prompt (e.g., colors, clothing, accessories, expressions, actions) are faithfully represented in the image. Minor deviations may be acceptable, but critical attributes should be preserved.
- **Semantic Coherence**: Evaluate whether the overall meaning and intent of the prompt are captured in the image. The generated content should not introduce elements that conflict with or distort the original description.
Textual prompt - {text_prompt}


"""  # noqa: W291 - the official text has trailing spaces
PROMPT_WITH_REWARD_TOKEN = """
Please provide the overall ratings of this image: <|Reward|>

END
"""


# -- pure rules ---------------------------------------------------------------------------------------
def smart_resize(height: int, width: int, factor: int = FACTOR, min_pixels: int = PIXELS,
                 max_pixels: int = PIXELS) -> tuple[int, int]:
    """HPSv3's (qwen-vl-utils') `smart_resize`: both sides multiples of `factor`, the area within
    [min_pixels, max_pixels], the aspect ratio kept as closely as possible. Returns (height, width)."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {max(height, width) / min(height, width)}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def prepare_image(image: Image.Image) -> Image.Image:
    """`convert("RGB")` then the official resize to the fixed pixel budget (PIL bicubic)."""
    image = image.convert("RGB")
    height, width = smart_resize(image.height, image.width)
    return image.resize((width, height), Image.BICUBIC)


def user_message(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "image"},
        {"type": "text", "text": INSTRUCTION.format(text_prompt=prompt) + PROMPT_WITH_REWARD_TOKEN},
    ]}]


def map_checkpoint_keys(state: Mapping[str, torch.Tensor], model_keys: set[str]) -> OrderedDict[str, torch.Tensor]:
    """The official (transformers 4.45) keys → the installed `Qwen2VLForConditionalGeneration`'s: 5.x moved
    `model.*` to `model.language_model.*` and `visual.*` to `model.visual.*`. `rm_head.*` is left out."""
    nested = any(k.startswith("model.language_model.") for k in model_keys)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if key.startswith("rm_head."):
            continue
        if nested and key.startswith("model."):
            key = "model.language_model." + key[len("model."):]
        elif nested and key.startswith("visual."):
            key = "model." + key
        out[key] = value
    return out


def reward_head(state: Mapping[str, torch.Tensor]) -> nn.Sequential:
    """The official ranknet head from its tensors: Linear ReLU Dropout Linear ReLU Linear (rm_head.0/.3/.5)."""
    def linear(i: int) -> nn.Linear:
        w = state[f"rm_head.{i}.weight"]
        layer = nn.Linear(w.shape[1], w.shape[0], bias=f"rm_head.{i}.bias" in state)
        layer.weight.data.copy_(w.float())
        if layer.bias is not None:
            layer.bias.data.copy_(state[f"rm_head.{i}.bias"].float())
        return layer

    missing = [k for k in ("rm_head.0.weight", "rm_head.3.weight", "rm_head.5.weight") if k not in state]
    if missing:
        raise ValueError(f"not an HPSv3 checkpoint: {', '.join(missing)} missing")
    return nn.Sequential(linear(0), nn.ReLU(), nn.Dropout(0.05), linear(3), nn.ReLU(), linear(5)).float().eval()


def default_dtype(device: Device) -> str:
    """bfloat16 on a GPU (the official setting), float32 elsewhere (the shipped bf16 does not run on CPU)."""
    return "bfloat16" if torch.device(device).type == "cuda" else "float32"


class HPSv3Provider(Provider):
    """HPSv3 μ of each (image, prompt) pair. PIL images and paths take the official path; a [B,3,H,W]
    tensor is quantised to uint8 and takes the same path (the resize and patching are PIL's)."""

    name = "hpsv3"

    def __init__(self, *, device: Device = "cpu", dtype: DType | None = None, batch_size: int = 8,
                 weights: WeightsArg = None, weights_dir: PathArg = None) -> None:
        super().__init__(device=device, dtype=dtype or default_dtype(device), batch_size=batch_size)
        from safetensors.torch import load_file

        self.checkpoint = wts.pick(CHECKPOINT_WEIGHT, weights, weights_dir, primary=CHECKPOINT_WEIGHT)
        self.base = wts.pick(BASE_WEIGHT, weights, weights_dir, primary=CHECKPOINT_WEIGHT)
        from paintbench.metrics.memory import require_fits

        require_fits("hpsv3", [self.checkpoint], self.device, self.dtype)
        self.tokenizer, self.chat_template = load_tokenizer(self.base)
        self.reward_id = self.tokenizer.convert_tokens_to_ids(REWARD_TOKEN)
        self.image_pad_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.image_processor = pil_image_processor(self.base)
        state = load_file(str(self.checkpoint))
        self.head = reward_head(state).to(self.device)
        self.model = build_model(self.base, state, len(self.tokenizer), self.checkpoint, self.dtype)
        self.model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.language_model, self.visual = model_parts(self.model)

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["weights"] = {CHECKPOINT_WEIGHT: {"path": str(self.checkpoint), "sha256": wts.fingerprint(self.checkpoint)},
                          BASE_WEIGHT: {"path": str(self.base), "sha256": wts.fingerprint(self.base)}}
        out["positions"] = "sequential (official: position_ids=None), not M-RoPE"
        return out

    def inputs(self, images: ImageBatch, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The official processor outputs: input_ids, attention_mask, pixel_values, image_grid_thw."""
        pil = [prepare_image(im) for im in images.pil_images()]
        vision = self.image_processor(images=pil, return_tensors="pt")
        grids = vision["image_grid_thw"]
        merge = int(getattr(self.image_processor, "merge_size", 2)) ** 2
        texts = []
        for prompt, grid in zip(prompts, grids, strict=True):
            text = self.tokenizer.apply_chat_template(user_message(prompt), tokenize=False, add_generation_prompt=True,
                                                      chat_template=self.chat_template)
            texts.append(text.replace(IMAGE_PAD, IMAGE_PAD * (int(grid.prod()) // merge)))
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device),
                "pixel_values": vision["pixel_values"].to(self.device), "image_grid_thw": grids.to(self.device)}

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        assert prompts is not None
        batch = self.inputs(images, prompts)
        ids = batch["input_ids"]
        at_reward = ids == self.reward_id
        counts = at_reward.sum(-1)
        if not bool((counts == 1).all()):
            bad = [prompts[i] for i in range(len(prompts)) if int(counts[i]) != 1]
            raise ValueError(f"hpsv3: a prompt must not contain {REWARD_TOKEN!r} itself: {bad[0][:80]!r}")
        embeds = self.model.get_input_embeddings()(ids)
        image = _tensor(self.visual(batch["pixel_values"].to(self.dtype), grid_thw=batch["image_grid_thw"]))
        mask = (ids == self.image_pad_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, image.to(embeds.dtype))
        hidden = self.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                     position_ids=None).last_hidden_state
        out = self.head(hidden[at_reward].float())                 # [B, 2] = (mu, sigma)
        return Scores(metric=self.name, values=out[:, 0],
                      details=[{"mu": float(m), "sigma": float(s)} for m, s in out.cpu().tolist()])


def _tensor(output: Any) -> torch.Tensor:
    return output.pooler_output if hasattr(output, "pooler_output") else output



def load_tokenizer(base: Path) -> tuple[Any, str | None]:
    """The base tokenizer (right padding) with HPSv3's added `<|Reward|>`, and the chat template of
    `chat_template.json` when the folder has one (else the tokenizer's own)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checked_folder(base)), local_files_only=True,
                                              trust_remote_code=False, padding_side="right")
    tokenizer.add_special_tokens({"additional_special_tokens": [REWARD_TOKEN]})
    template_file = base / "chat_template.json"
    template = json.loads(template_file.read_text(encoding="utf-8"))["chat_template"] if template_file.is_file() else None
    return tokenizer, template


def pil_image_processor(base: Path) -> Any:
    """Qwen2-VL's image processor with the PIL backend (transformers 5: `Qwen2VLImageProcessorPil`;
    4.x's `Qwen2VLImageProcessor` is PIL/numpy-based already)."""
    import transformers

    cls = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    return cls.from_pretrained(str(base), local_files_only=True, trust_remote_code=False)


def build_model(base: Path, state: Mapping[str, torch.Tensor], vocab: int, checkpoint: Path,
                dtype: torch.dtype = torch.float32) -> nn.Module:
    """`Qwen2VLForConditionalGeneration` from the base config with the resized vocabulary, every weight
    from the HPSv3 checkpoint (transformers builds it without random initialisation, which for the 7B
    model would take minutes and 33 GB; a tensor the file lacks or has extra is an error naming it)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig.from_pretrained(str(checked_folder(base)), local_files_only=True, trust_remote_code=False)
    getattr(config, "text_config", config).vocab_size = vocab
    config.vocab_size = vocab
    with torch.device("meta"):
        keys = set(Qwen2VLForConditionalGeneration(config).state_dict())
    model, info = Qwen2VLForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=map_checkpoint_keys(state, keys), output_loading_info=True, trust_remote_code=False,
        **{"dtype" if _transformers_major() >= 5 else "torch_dtype": dtype})
    problems = {k: sorted(v)[:3] for k, v in info.items() if v and k != "error_msgs"}
    if problems or info.get("error_msgs"):
        raise ValueError(f"{checkpoint}: does not load into Qwen2-VL ({problems or info['error_msgs']})")
    return model


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def model_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(language model, vision tower) in either transformers layout."""
    inner = model.model
    if hasattr(inner, "language_model"):
        return inner.language_model, inner.visual
    return inner, model.visual


# -- tiny checkpoints in the official formats -------------------------------------------------------
QWEN2_VL_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                     "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                     "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
# Qwen2-VL-Instruct's published chat template
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == "
    "'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")


def write_tiny_weights(directory: str | Path, *, seed: int = 0, metric: str = "hpsv3") -> list[Path]:
    """A tiny `Qwen2-VL-7B-Instruct/` base folder (the 4.x flat config layout of the real repo, a byte-level
    BPE tokenizer with no merges and the Qwen2-VL special tokens, the chat template, processor settings)
    and a matching `HPSv3.safetensors` in the official 4.45 key layout, so the real loaders run at toy size."""
    from safetensors.torch import save_file

    directory = Path(directory)
    base = directory / wts.catalog()[BASE_WEIGHT].filename
    base.mkdir(parents=True, exist_ok=True)
    from paintbench.metrics.tiny_tokenizers import write_qwen2_tokenizer

    ids = write_qwen2_tokenizer(base, QWEN2_VL_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>",
                                chat_template=QWEN2_VL_CHAT_TEMPLATE)
    (base / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_VL_CHAT_TEMPLATE}), encoding="utf-8")
    (base / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"}), encoding="utf-8")
    vocab = max(ids.values()) + 1
    (base / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"], "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"], "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 128, "max_position_embeddings": 32768, "max_window_layers": 1, "num_attention_heads": 4,
        "num_hidden_layers": 1, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "sliding_window": 32768, "tie_word_embeddings": False, "use_cache": True, "use_sliding_window": False,
        "vision_config": {"depth": 1, "embed_dim": 32, "mlp_ratio": 4, "num_heads": 2, "in_chans": 3, "hidden_size": 64,
                          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "vocab_size": vocab}), encoding="utf-8")
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig.from_pretrained(str(checked_folder(base)), local_files_only=True, trust_remote_code=False)
    getattr(config, "text_config", config).vocab_size = vocab + 1      # + HPSv3's <|Reward|>
    config.vocab_size = vocab + 1
    torch.manual_seed(seed)
    state = OrderedDict((_official_key(k), v.contiguous()) for k, v in Qwen2VLForConditionalGeneration(config).state_dict().items())
    for name, layer in zip(("0", "3", "5"), (nn.Linear(64, 1024), nn.Linear(1024, 16), nn.Linear(16, 2)), strict=True):
        state[f"rm_head.{name}.weight"], state[f"rm_head.{name}.bias"] = layer.weight.data, layer.bias.data
    checkpoint = directory / wts.catalog()[CHECKPOINT_WEIGHT].filename
    save_file(state, str(checkpoint), metadata={"format": "pt"})
    return [checkpoint, base]


def _official_key(key: str) -> str:
    """transformers 5.x → the official 4.45 layout (the inverse of `map_checkpoint_keys`)."""
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    if key.startswith("model.visual."):
        return key[len("model."):]
    return key
