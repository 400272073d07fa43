"""`lumina-dimoo`: Lumina-DiMOO (8B LLaDA-style discrete diffusion) with its diffusers VQ-VAE.

Token layout (htgrpo.md (c.2); Lumina-DiMOO `inference/inference_t2i.py`, `utils/image_utils.py`,
`generators/image_generation_generator.py`, `config.py`):

    [prompt template tokens] <BOA> <BOI> (code × W, <newline>) × H <EOI> <EOA>

- image code v (0..8191) is token id `code_offset + v` with code_offset = 126356; a masked cell is
  126336; every row of W cells ends with the newline token 126084 (512 px: 32 × 32 cells, so 1024 codes
  plus 32 newlines); BOI/EOI = 126349/126350, BOA/EOA = 126354/126355;
- the model is called as `model(input_ids, infer=True).logits`; the image logits are those at the
  non-newline positions of the image block, columns code_offset .. code_offset+V (newline and special
  tokens never reach the core);
- CFG: the unconditional input is the unconditional prompt's tokens followed by the same image block
  (`uncond = cat(uncon_ids, x[:, code_start-2:])` in DiMOO); (1+s)·cond − s·uncond;
- prompts of different token lengths cannot share a batch without padding the model was not trained
  with, so rows are forwarded in groups of equal prompt length (all G rollouts of a prompt share one).

The prompt template comes from DiMOO's own `utils.prompt_utils` (`create_prompt_templates`,
`generate_text_to_image_prompt`): when its repository is not importable that is an error with its cause,
never a silent switch to the raw prompt (`prompt_builder=raw_prompt` asks for the raw prompt explicitly,
and the policy's options record which template was used). Decoding uses the VQ-VAE as
DiMOO does: `vqvae.decode(codes, force_not_quantize=True, shape=(B, h, w, C)).sample.clip(0, 1)`.
Not run in this repository's tests (no weights); the layout is tested with small stand-in modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from paintbench.metrics.base import resolve_dtype
from paintbench.metrics.remote_code import checked_folder
from paintbench.trainer.policies.backbone import BackbonePolicy, to_uint8
from paintbench.trainer.policy import MASK, PromptBatch, cfg_combine


@dataclass
class DiMOOLayout:
    codebook_size: int = 8192
    grid: tuple[int, int] = (32, 32)
    image_size: tuple[int, int] = (512, 512)
    mask_id: int = 126336
    code_offset: int = 126356
    newline_id: int = 126084
    boi_id: int = 126349
    eoi_id: int = 126350
    boa_id: int = 126354
    eoa_id: int = 126355
    latent_channels: int = 0          # VQ-VAE latent channels for decode (0: read from vq.config)

    @property
    def num_image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def block_len(self) -> int:
        """BOA BOI (W + 1) × H EOI EOA."""
        return 4 + self.grid[0] * (self.grid[1] + 1)


def image_block(layout: DiMOOLayout, canvas: torch.Tensor) -> torch.Tensor:
    """[B, block_len]: BOA BOI, each row of codes (offset; MASK → mask id) followed by a newline, EOI EOA."""
    b = canvas.shape[0]
    h, w = layout.grid
    codes = torch.where(canvas == MASK, torch.full_like(canvas, layout.mask_id), canvas + layout.code_offset)
    rows = codes.view(b, h, w)
    newline = torch.full((b, h, 1), layout.newline_id, dtype=torch.long, device=canvas.device)
    body = torch.cat([rows, newline], dim=2).reshape(b, h * (w + 1))
    head = torch.tensor([layout.boa_id, layout.boi_id], device=canvas.device).expand(b, 2)
    tail = torch.tensor([layout.eoi_id, layout.eoa_id], device=canvas.device).expand(b, 2)
    return torch.cat([head, body, tail], dim=1)


def image_positions(layout: DiMOOLayout, prompt_len: int) -> torch.Tensor:
    """Sequence positions of the N image cells (row-major), newlines skipped."""
    h, w = layout.grid
    start = prompt_len + 2                                      # after BOA BOI: DiMOO's code_start
    rows = torch.arange(h).unsqueeze(1) * (w + 1)
    return (start + rows + torch.arange(w).unsqueeze(0)).reshape(-1)


class DiMOOPolicy(BackbonePolicy):
    kind: ClassVar[str] = "lumina-dimoo"
    LORA_NAMES: ClassVar[dict[str, str]] = {"o_proj": "attn_out", "gate_proj": "ff_proj", "down_proj": "ff_out"}
    # the sequence the memory plan (trainer.plan) sizes activations for: a 32x32 grid with a row-end token per row at 512 px; ~128 template and prompt tokens
    PLAN_IMAGE_TOKENS: ClassVar[int] = 1056
    PLAN_TEXT_TOKENS: ClassVar[int] = 128
    SAMPLER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "steps": 32, "cfg_scale": 4.0, "temperature": 1.0, "temperature_mode": "constant", "sampler": "maskgit",
    }

    def __init__(self, model: nn.Module, tokenizer: Any, vq: nn.Module | None, *, layout: DiMOOLayout | None = None,
                 prompt_builder: Callable[[str], tuple[str, str]] | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model, tokenizer, vq, options=dict(options or {}))
        self.layout = layout or DiMOOLayout()
        self.codebook_size = self.layout.codebook_size
        self.grid = tuple(self.layout.grid)  # type: ignore[assignment]
        self.image_size = tuple(self.layout.image_size)  # type: ignore[assignment]
        self.prompt_builder = prompt_builder or default_prompt_builder()
        self.options.setdefault("prompt_template", "raw" if self.prompt_builder is raw_prompt else
                                "dimoo" if prompt_builder is None else "custom")

    def config(self) -> dict[str, Any]:
        return {**self.options, "layout": asdict(self.layout)}

    # -- the contract -------------------------------------------------------------------------------
    def encode_prompts(self, texts: Sequence[str]) -> PromptBatch:
        pairs = [self.prompt_builder(t) for t in texts]
        cond = self.tokenizer([p[0] for p in pairs])["input_ids"]
        uncond = self.tokenizer([p[1] for p in pairs])["input_ids"]
        return PromptBatch(list(texts), {"cond": _pad(cond).to(self.device), "uncond": _pad(uncond).to(self.device)})

    def _forward(self, prompt_rows: list[list[int]], canvas: torch.Tensor) -> torch.Tensor:
        """Logits [B, N, V] for per-row prompt token lists, grouped by prompt length."""
        out = torch.empty(canvas.shape[0], canvas.shape[1], self.layout.codebook_size, device=canvas.device)
        block = image_block(self.layout, canvas)
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(prompt_rows):
            groups.setdefault(len(row), []).append(i)
        off, v = self.layout.code_offset, self.layout.codebook_size
        for length, idx in groups.items():
            index = torch.tensor(idx, device=canvas.device)
            prompt = torch.tensor([prompt_rows[i] for i in idx], dtype=torch.long, device=canvas.device).view(len(idx), length)
            ids = torch.cat([prompt, block.index_select(0, index)], dim=1)
            logits = self.model(ids, infer=True).logits
            pos = image_positions(self.layout, length).to(canvas.device)
            part = logits[:, pos, off:off + v]
            out = out.to(part.dtype)
            out[index] = part
        return out

    def image_logits(self, prompts: PromptBatch, canvas: torch.Tensor, *, cfg_scale: float = 0.0) -> torch.Tensor:
        cond = _unpad(prompts.tensors["cond"])
        if not cfg_scale:
            return self._forward(cond, canvas)
        uncond = _unpad(prompts.tensors["uncond"])
        both = self._forward(cond + uncond, torch.cat([canvas, canvas]))
        c, u = both.chunk(2)
        return cfg_combine(c, u, cfg_scale)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if self.vq is None:
            raise RuntimeError("lumina-dimoo: no VQ-VAE loaded (vq_path)")
        h, w = self.layout.grid
        channels = self.layout.latent_channels or int(self.vq.config.latent_channels)
        with torch.no_grad():
            images = self.vq.decode(codes.long().view(-1, h, w), force_not_quantize=True,
                                    shape=(codes.shape[0], h, w, channels)).sample
        return to_uint8(images, low=0.0)

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def from_options(cls, *, device: Any = "cuda", dtype: Any = "bfloat16", model_path: str = "", vq_path: str = "",
                     layout: dict[str, Any] | None = None, lora_rank: int = 0, lora_alpha: float = 64.0,
                     lora_dropout: float = 0.05, lora_targets: Sequence[str] = (),
                     **extra: Any) -> DiMOOPolicy:  # pragma: no cover - needs weights
        if not model_path:
            raise ValueError("lumina-dimoo: policy_path (the Lumina-DiMOO model folder) is required")
        from transformers import AutoTokenizer

        torch_dtype = resolve_dtype(dtype)
        model = _dimoo_import("model", "LLaDAForMultiModalGeneration").from_pretrained(
            str(checked_folder(model_path)), torch_dtype=torch_dtype, trust_remote_code=False)
        from diffusers import VQModel

        vq = VQModel.from_pretrained(vq_path or model_path, subfolder="vqvae")
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in (layout or {}).items()}
        lay = DiMOOLayout(**given)
        if "code_offset" not in given:  # as DiMOO's generate_image: text vocabulary = logits width - codebook
            lay = DiMOOLayout(**{**asdict(lay), "code_offset": code_offset_from_vocab(model, lay.codebook_size)})
        options = {"model_path": model_path, "vq_path": vq_path, **extra}
        policy = cls(model.to(device), tokenizer, vq.to(device), layout=lay, options=options)
        if lora_rank > 0:
            policy.add_lora(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, targets=lora_targets)
        return policy


def default_prompt_builder() -> Callable[[str], tuple[str, str]]:
    """DiMOO's published template (its repository's `utils.prompt_utils`, on PYTHONPATH)."""
    create = _dimoo_import("utils.prompt_utils", "create_prompt_templates")
    generate = _dimoo_import("utils.prompt_utils", "generate_text_to_image_prompt")
    templates = create()  # pragma: no cover - needs DiMOO's repository
    return lambda text: tuple(generate(text, templates))  # type: ignore[return-value]  # pragma: no cover


def code_offset_from_vocab(model: nn.Module, codebook_size: int) -> int:
    """Where image codes start: the model's vocabulary size minus the codebook, as Lumina-DiMOO's
    `generate_image` infers it (one forward of a single token, `logits.size(-1) - codebook_size`)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        vocab_total = model(torch.zeros(1, 1, dtype=torch.long, device=device), infer=True).logits.size(-1)
    return int(vocab_total) - codebook_size


def raw_prompt(text: str) -> tuple[str, str]:
    """The prompt as given and an empty unconditional prompt: not DiMOO's template (ask for it explicitly)."""
    return text, ""


def _dimoo_import(module: str, name: str) -> Any:
    """A name from Lumina-DiMOO's own code; its import failure is the error (with the cause and the fix)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        from paintbench.errors import UserError

        raise UserError(f"lumina-dimoo: {module}.{name} from Lumina-DiMOO's repository cannot be imported "
                        f"({type(e).__name__}: {e}). Put the repository on PYTHONPATH, in an environment with its "
                        "pins (transformers 4.46, diffusers 0.34); for the raw prompt instead of DiMOO's template, "
                        "pass prompt_builder=raw_prompt") from e


def _pad(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out


def _unpad(t: torch.Tensor) -> list[list[int]]:
    return [[int(x) for x in row if x >= 0] for row in t.cpu()]
