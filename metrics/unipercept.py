"""UniPercept (thunderbolt215/UniPercept, PyPI `unipercept-reward` 1.0.3): three perceptual scores of an
image from one InternVL3-8B model — aesthetics (`unipercept-iaa`), quality (`unipercept-iqa`) and
structure and texture richness (`unipercept-ista`), each in 0..100.

What the official `UniPerceptRewardInferencer.reward(paths)` computes (`InternVLChatModel.score`), and
what these providers reproduce on today's transformers:

- image: `convert("RGB")` (alpha dropped), torchvision `Resize((448, 448), BICUBIC)` on the PIL image
  (the aspect ratio is not kept and nothing is tiled, whatever the config says), `ToTensor`, ImageNet
  mean/std;
- vision: InternViT (class token + patches, pre-norm blocks with layer scale), the class token dropped,
  pixel shuffle (v2, ratio 0.5), the `mlp1` projector → 256 image embeddings;
- text: the official question for the dimension in the `internvl2_5` template (system message from the
  config, else InternVL's default), `<image>` → `<img>` + 256 × `<IMG_CONTEXT>` + `</img>`, whose
  embeddings are replaced by the image embeddings; the Qwen2 language model (plain positions);
- score: softmax over the logits of the 101 two-letter level tokens (`aa`..`az`, `ca`..`cy`, `da`..`dy`,
  `ea`..`ey` for 0..100) at the last position, · [0, 1, ..., 100].

The official code runs the whole model three times per image, one image per call. Here images are
batched (every query has the same length, so no padding), the model is loaded once per process and
device and shared by the three metrics, and the image embeddings of the last batch are reused when
another dimension scores the same pixels: the vision tower runs once per image, not three times, with
identical numbers.

Weights: the released `UniPercept/` folder in InternVL's remote-code layout (`vision_model.*`, `mlp1.*`,
`language_model.model.*`, `language_model.lm_head.*`; safetensors, sharded or not). InternViT and the
projector are implemented here (`InternViT`, small and exact); the language model is transformers' own
`Qwen2ForCausalLM`. Parity: `tests/test_unipercept.py` against the official package's outputs on a
reduced synthetic model (`../shared/fixtures/unipercept`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from paintbench.metrics import weights as wts
from paintbench.metrics.base import Device, DType, Metadata, PathArg, Prompts, Provider, Scores, WeightsArg
from paintbench.metrics.images import ImageBatch
from paintbench.metrics.remote_code import checked_folder

# What these metrics are and which files they read, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [
    {"name": "unipercept-iaa", "provider": "UniPerceptIAAProvider", "tiny_writer": "write_tiny_weights",
     "version": "unipercept/1", "higher_is_better": True, "nominal_range": (0.0, 100.0), "hard_range": (0.0, 100.0),
     "summary": "UniPercept aesthetics (InternVL3-8B, expected level over 101 level tokens)",
     "weights": ("unipercept",), "needs_prompt": False, "display": (1.0, 2)},
    {"name": "unipercept-iqa", "provider": "UniPerceptIQAProvider", "tiny_writer": "write_tiny_weights",
     "version": "unipercept/1", "higher_is_better": True, "nominal_range": (0.0, 100.0), "hard_range": (0.0, 100.0),
     "summary": "UniPercept quality (InternVL3-8B, expected level over 101 level tokens)",
     "weights": ("unipercept",), "needs_prompt": False, "display": (1.0, 2)},
    {"name": "unipercept-ista", "provider": "UniPerceptISTAProvider", "tiny_writer": "write_tiny_weights",
     "version": "unipercept/1", "higher_is_better": True, "nominal_range": (0.0, 100.0), "hard_range": (0.0, 100.0),
     "summary": "UniPercept structure and texture richness (InternVL3-8B, expected level over 101 level tokens)",
     "weights": ("unipercept",), "needs_prompt": False, "display": (1.0, 2)},
]
WEIGHTS = [
    {"name": "unipercept", "filename": "UniPercept", "description": "UniPercept model folder (InternVL remote-code layout)",
     "hf_repo": "Thunderbolt215215/UniPercept", "files": ("config.json", "tokenizer_config.json")},
]

WEIGHT = "unipercept"
DIMENSIONS: dict[str, str] = {"iaa": "aesthetics", "iqa": "quality", "ista": "structure and texture richness"}
IMAGE_SIZE = 448
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SYSTEM_MESSAGE = ("你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言"
                          "模型。")   # InternVL's `internvl2_5` template default


def question(desc: str) -> str:
    """The official question (typos "73-ec, 74-ed" included)."""
    return (f"<image>Rate the {desc} score of the image in 0-100. In the output format, numbers are replaced by 2 "
            "corresponding letters, and the mapping relationship is: score 0 to 25: 0-aa, 1-ab, 2-ac, 3-ad, ... , "
            "25-az, \nscore 26 to 50: 26-ca, 27-cb, 28-cc, 29-cd, ..., 50-cy, \nscore 51 to 75: 51-da, 52-db, 53-dc, "
            "54-dd, ..., 75-dy, \nscore 76 to 100: 76-ea, 77-eb, 73-ec, 74-ed, ..., 100-ey. \nThe answer only "
            "outputs 2 corresponding letters.")


def level_token(n: int) -> str:
    """The official `score2aestoken`: 0..25 → aa..az, 26..50 → ca..cy, 51..75 → da..dy, 76..100 → ea..ey."""
    if not 0 <= n <= 100:
        raise ValueError(f"level must be in 0..100, got {n}")
    first, offset = ("a", n) if n <= 25 else ("c", n - 26) if n <= 50 else ("d", n - 51) if n <= 75 else ("e", n - 76)
    return first + chr(ord("a") + offset)


def query(desc: str, system_message: str, num_image_tokens: int) -> str:
    """The `internvl2_5` (MPT-style) prompt with the image placeholder expanded."""
    image = "<img>" + "<IMG_CONTEXT>" * num_image_tokens + "</img>"
    text = (f"<|im_start|>system\n{system_message}<|im_end|>\n<|im_start|>user\n{question(desc)}<|im_end|>\n"
            "<|im_start|>assistant\n")
    return text.replace("<image>", image, 1)


def pixel_shuffle(x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """InternVL's pixel shuffle, `ps_version` v2: [N, W, H, C] → [N, W·s, H·s, C/s²]."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3).contiguous()


def expected_level(level_logits: torch.Tensor) -> torch.Tensor:
    """softmax over the 101 level logits · [0..100], in the logits' dtype as the official code."""
    weights = torch.arange(101, device=level_logits.device).to(level_logits.dtype)
    return torch.softmax(level_logits, dim=-1) @ weights


# -- InternViT and the projector (the official module layout, so the released keys load as they are) ----
class _Embeddings(nn.Module):
    def __init__(self, width: int, image_size: int, patch: int) -> None:
        super().__init__()
        self.grid = image_size // patch
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, width))
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.position_embedding = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, width))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixels)
        b, _, h, w = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        # the official code always resamples the patch positions (bicubic; the identity at 448 px)
        pos = self.position_embedding[:, 1:, :].float().reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False).reshape(1, -1, h * w).permute(0, 2, 1)
        position = torch.cat([self.position_embedding[:, :1, :], pos.to(dtype)], dim=1)
        x = torch.cat([self.class_embedding.expand(b, 1, -1).to(dtype), patches], dim=1)
        return x + position.to(dtype)


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, act: str) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.fc1, self.fc2, self.act = nn.Linear(width, hidden), nn.Linear(hidden, width), ACT2FN[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        width = cfg["hidden_size"]
        self.attn = _Attention(width, cfg["num_attention_heads"], cfg.get("qkv_bias", True))
        self.mlp = _Mlp(width, cfg["intermediate_size"], cfg.get("hidden_act", "gelu"))
        self.norm1 = nn.LayerNorm(width, eps=cfg.get("layer_norm_eps", 1e-6))
        self.norm2 = nn.LayerNorm(width, eps=cfg.get("layer_norm_eps", 1e-6))
        self.ls1 = nn.Parameter(torch.ones(width))
        self.ls2 = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x).to(x.dtype)) * self.ls1
        return x + self.mlp(self.norm2(x).to(x.dtype)) * self.ls2


class _Encoder(nn.Module):
    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg["num_hidden_layers"]))


class InternViT(nn.Module):
    """InternVL's `InternVisionModel` forward at inference (layer-norm blocks, no qk normalisation, as
    InternViT-300M of InternVL3-8B): the last hidden state."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        if cfg.get("qk_normalization") or cfg.get("norm_type", "layer_norm") != "layer_norm":
            raise ValueError("unipercept: only InternViT with layer norm and no qk normalisation is implemented "
                             f"(config: norm_type={cfg.get('norm_type')!r}, qk_normalization={cfg.get('qk_normalization')})")
        self.embeddings = _Embeddings(cfg["hidden_size"], cfg["image_size"], cfg["patch_size"])
        self.encoder = _Encoder(cfg)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return x


class UniPerceptVision(nn.Module):
    """`vision_model` + `mlp1` under their official names: `extract_feature` of `InternVLChatModel`."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        vision, width = config["vision_config"], config["vision_config"]["hidden_size"]
        self.downsample = float(config.get("downsample_ratio", 0.5))
        if config.get("ps_version", "v2") != "v2" or config.get("select_layer", -1) != -1:
            raise ValueError("unipercept: only ps_version v2 with select_layer -1 is implemented")
        wide = width * int(1 / self.downsample) ** 2
        llm = config["llm_config"]["hidden_size"]
        self.vision_model = InternViT(vision)
        self.mlp1 = nn.Sequential(nn.LayerNorm(wide), nn.Linear(wide, llm), nn.GELU(), nn.Linear(llm, llm))
        grid = vision["image_size"] // vision["patch_size"]
        self.num_image_tokens = int(grid * grid * self.downsample ** 2)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.vision_model(pixels)[:, 1:, :]
        side = int(x.shape[1] ** 0.5)
        x = pixel_shuffle(x.reshape(x.shape[0], side, side, -1), self.downsample)
        return self.mlp1(x.reshape(x.shape[0], -1, x.shape[-1]))


# -- the shared model ------------------------------------------------------------------------------------
class UniPerceptModel:
    """Tokenizer, vision part and language model of one UniPercept folder, loaded once per process,
    device and dtype, with the image embeddings of the most recent batch kept for the other dimensions."""

    def __init__(self, folder: Path, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoTokenizer

        from paintbench import files as safe_files
        from paintbench.metrics.memory import require_config_matches_checkpoint, require_fits

        self.folder, self.device, self.dtype = folder, device, dtype
        files = wts.safetensors_files(folder, "UniPercept")
        require_fits("unipercept", files, device, dtype)
        self.config = json.loads(safe_files.read_text(folder / "config.json", "config"))
        require_config_matches_checkpoint(self.config, files, folder / "config.json")
        self.tokenizer = AutoTokenizer.from_pretrained(str(checked_folder(folder)), local_files_only=True,
                                                       trust_remote_code=False)
        self.system_message = self.config.get("system_message", DEFAULT_SYSTEM_MESSAGE)
        state = read_folder_state(folder)
        with torch.device("meta"):
            vision = UniPerceptVision(self.config)
        vision_state = {k: v for k, v in state.items() if k.startswith(("vision_model.", "mlp1."))}
        vision.load_state_dict(vision_state, strict=True, assign=True)
        self.vision = vision.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.language_model = build_language_model(self.config, state, folder, dtype).to(device).eval()
        self.language_model.requires_grad_(False)
        self.level_ids = [self._single_id(level_token(n)) for n in range(101)]
        self.image_context_id = self._single_id("<IMG_CONTEXT>")
        self._last: tuple[str, torch.Tensor] | None = None

    def _single_id(self, token: str) -> int:
        ids = self.tokenizer.convert_tokens_to_ids(token)
        if not isinstance(ids, int) or ids == self.tokenizer.unk_token_id:
            raise ValueError(f"{self.folder}: the tokenizer has no single token {token!r} (UniPercept needs it)")
        return ids

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """The projector output for a batch, computed once per distinct pixel batch."""
        key = hashlib.sha256(pixels.detach().cpu().contiguous().numpy().tobytes()).hexdigest() + str(tuple(pixels.shape))
        if self._last is None or self._last[0] != key:
            self._last = (key, self.vision(pixels.to(device=self.device, dtype=self.dtype)))
        return self._last[1]

    def level_logits(self, pixels: torch.Tensor, dimension: str) -> torch.Tensor:
        """[B, 101] logits of the level tokens at the last position, for one dimension."""
        embeds_image = self.image_embeddings(pixels)
        ids = self.tokenizer(query(DIMENSIONS[dimension], self.system_message, embeds_image.shape[1]),
                             return_tensors="pt")["input_ids"].to(self.device).expand(pixels.shape[0], -1)
        embeds = self.language_model.get_input_embeddings()(ids)
        mask = (ids == self.image_context_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, embeds_image.to(embeds.dtype))
        logits = self.language_model(inputs_embeds=embeds, attention_mask=torch.ones_like(ids)).logits
        return logits[:, -1, self.level_ids]


_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, torch.dtype], UniPerceptModel] = {}


def shared_model(folder: Path, device: torch.device, dtype: torch.dtype) -> UniPerceptModel:
    key = (str(folder.resolve()), str(device), dtype)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = UniPerceptModel(folder, device, dtype)
        return _MODELS[key]



def read_folder_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder's safetensors file(s)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in wts.safetensors_files(folder, "UniPercept"):
        state.update(load_file(str(f)))
    return state


def build_language_model(config: Mapping[str, Any], state: Mapping[str, torch.Tensor], folder: Path,
                         dtype: torch.dtype) -> nn.Module:
    """transformers' `Qwen2ForCausalLM` from `llm_config`, with `language_model.*` weights (no random init)."""
    import transformers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    llm = {k: v for k, v in config["llm_config"].items() if not k.startswith("_")}
    qwen_config = Qwen2Config(**llm)
    qwen_config._attn_implementation = "eager"       # the official path (flash-attn absent)
    mapped = OrderedDict((k[len("language_model."):], v) for k, v in state.items() if k.startswith("language_model."))
    major = int(transformers.__version__.split(".")[0])
    model, info = Qwen2ForCausalLM.from_pretrained(None, config=qwen_config, state_dict=mapped, output_loading_info=True,
                                                   trust_remote_code=False,
                                                   **{"dtype" if major >= 5 else "torch_dtype": dtype})
    problems = {k: sorted(v)[:3] for k, v in info.items() if v and k != "error_msgs"}
    if problems:
        raise ValueError(f"{folder}: the language model does not load ({problems})")
    return model


class UniPerceptProvider(Provider):
    """One UniPercept dimension per provider; the three share one loaded model."""

    needs_prompt = False
    dimension: ClassVar[str]

    def __init__(self, *, device: Device = "cpu", dtype: DType | None = None, batch_size: int = 8,
                 weights: WeightsArg = None, weights_dir: PathArg = None) -> None:
        if dtype is None:   # the official default is bfloat16 on a GPU; float32 elsewhere
            dtype = "bfloat16" if torch.device(device).type == "cuda" else "float32"
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        self.folder = wts.pick(WEIGHT, weights, weights_dir, primary=WEIGHT)
        self.shared = shared_model(self.folder, self.device, self.dtype)

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["weights"] = {WEIGHT: {"path": str(self.folder), "sha256": wts.fingerprint(self.folder)}}
        out["dimension"] = DIMENSIONS[self.dimension]
        return out

    def pixels(self, images: ImageBatch) -> torch.Tensor:
        """The official transform (PIL bicubic to 448², ImageNet mean/std); tensors are quantised to uint8 first."""
        from torchvision import transforms as T

        tf = T.Compose([T.Resize((IMAGE_SIZE, IMAGE_SIZE), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                        T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        pil = images.pil_images()
        return torch.stack([tf(im.convert("RGB")) for im in pil])

    def _score_batch(self, images: ImageBatch, prompts: Prompts, metadata: Metadata) -> Scores:
        logits = self.shared.level_logits(self.pixels(images), self.dimension)
        values = expected_level(logits)
        return Scores(metric=self.name, values=values.float(),
                      details=[{"score": float(v)} for v in values.float().cpu().tolist()])



class UniPerceptIAAProvider(UniPerceptProvider):
    name = "unipercept-iaa"
    dimension = "iaa"


class UniPerceptIQAProvider(UniPerceptProvider):
    name = "unipercept-iqa"
    dimension = "iqa"


class UniPerceptISTAProvider(UniPerceptProvider):
    name = "unipercept-ista"
    dimension = "ista"


# -- tiny checkpoints in the official formats -------------------------------------------------------
def write_tiny_weights(directory: str | Path, *, seed: int = 0, metric: str = "unipercept-iaa") -> list[Path]:
    """A tiny `UniPercept/` folder in the released layout: an InternVL-format `config.json`, a byte-level
    BPE tokenizer in which the 101 level strings are single tokens, and a seeded `model.safetensors`
    with InternVL's key names, so the real loaders run at toy size (one folder serves all three metrics)."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from paintbench.metrics.tiny_tokenizers import write_qwen2_tokenizer

    folder = Path(directory) / wts.catalog()[WEIGHT].filename
    levels = [level_token(n) for n in range(101)]
    ids = write_qwen2_tokenizer(folder, ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"),
                                merges=[(t[0], t[1]) for t in levels], eos="<|im_end|>", pad="<|endoftext|>")
    llm = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
           "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": max(ids.values()) + 1,
           "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768, "tie_word_embeddings": False,
           "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]}
    config = {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "downsample_ratio": 0.5,
              "force_image_size": IMAGE_SIZE, "ps_version": "v2", "select_layer": -1, "template": "internvl2_5",
              "vision_config": {"hidden_size": 32, "image_size": IMAGE_SIZE, "patch_size": 14, "num_attention_heads": 2,
                                "intermediate_size": 64, "num_hidden_layers": 1, "qkv_bias": True, "layer_norm_eps": 1e-6,
                                "norm_type": "layer_norm", "qk_normalization": False, "hidden_act": "gelu"},
              "llm_config": llm}
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    torch.manual_seed(seed)
    vision = UniPerceptVision(config)
    with torch.no_grad():
        for p in vision.parameters():
            p.normal_(1.0 if p.dim() == 1 else 0.0, 0.05 if p.dim() == 1 else 0.5)
    language = Qwen2ForCausalLM(Qwen2Config(**llm))
    state = {**vision.state_dict(), **{f"language_model.{k}": v for k, v in language.state_dict().items()}}
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return [folder]
