"""`mmada`: MMaDA-8B (LLaDA-style discrete diffusion) with the MAGVIT-v2 image tokenizer.

Token layout (htgrpo.md (c.1); MMaDA `training/prompting_utils.py` `t2i_gen`, `models/modeling_mmada.py`):

    [pad]* <|t2i|> <bos> text <eos> | <|soi|> img × N | <|eoi|>
     \\__________ text_len __________/

- the text part is left-padded to `text_len` tokens (pads are masked out of attention), truncated with
  the <eos> kept last;
- image code v (0..8191) is token id `code_offset + v`, with code_offset = len(text tokenizer) = 126349
  (MaskGRPO slices `logits[..., 126349:134541]`); a masked cell is the mask id 126336;
- 512 px images are 32 × 32 = 1024 codes (16× down-sampling);
- the model is called as `model(input_ids, attention_bias=bias).logits` with
  bias = (mask[:, :, None] & mask[:, None, :]).unsqueeze(1), and the image logits are
  `logits[:, -(N+1):-1, code_offset:code_offset+V]`;
- CFG: the unconditional branch is the same layout with the empty prompt; (1+s)·cond − s·uncond.

When MMaDA's own `training.prompting_utils.UniversalPrompting` is importable it is not needed: this
module's `t2i_inputs` reproduces the layout so that it is testable without the 8B model; the special
ids are read from the tokenizer when it knows them. `text_len` is MMaDA's text length
(`UniversalPrompting.max_text_len` = the config's `max_seq_length` + 1 = 513, the task token counted):
with rotary positions the image tokens' positions depend on it, so a shorter one changes every logit.
Pads are MMaDA's reserved `[iPAD]` (126093), not the tokenizer's pad token.

Loading (`from_options`, GPU only): `models.MMadaModelLM` from MMaDA's repository on PYTHONPATH (its
model code; an import failure is reported with its cause, never replaced by another model class),
`models.MAGVITv2` for the VQ, both from local paths,
in bf16; LoRA through peft; gradient checkpointing if the model exposes it. Not run in this repository's
tests (no weights); the layout is tested with small stand-in modules of the same forward signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from paintbench.metrics.base import resolve_dtype
from paintbench.metrics.remote_code import checked_folder
from paintbench.trainer.policies.backbone import BackbonePolicy, to_uint8
from paintbench.trainer.policy import MASK, PromptBatch, cfg_combine


@dataclass
class MMaDALayout:
    codebook_size: int = 8192
    grid: tuple[int, int] = (32, 32)
    image_size: tuple[int, int] = (512, 512)
    mask_id: int = 126336
    code_offset: int = 126349
    text_len: int = 513
    t2i_id: int = 126088
    soi_id: int = 126084
    eoi_id: int = 126085
    bos_id: int = 126080
    eos_id: int = 126081
    pad_id: int = 126093  # MMaDA's reserved [iPAD]

    @property
    def num_image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


def text_part(layout: MMaDALayout, ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """(token ids, attention mask) of the text part: `[pad]* <|t2i|> <bos> ids <eos>`, length text_len."""
    ids = list(ids)  # as MMaDA's `t2i_gen_prompt`: <bos> added when missing, an <eos> the tokenizer added kept
    if not ids or ids[0] != layout.bos_id:
        ids = [layout.bos_id, *ids]
    seq = [layout.t2i_id, *ids, layout.eos_id]
    if len(seq) > layout.text_len:
        seq = [*seq[: layout.text_len - 1], layout.eos_id]
    pad = layout.text_len - len(seq)
    return [layout.pad_id] * pad + seq, [0] * pad + [1] * len(seq)


def t2i_inputs(layout: MMaDALayout, text_ids: Sequence[Sequence[int]], canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention mask [B, text_len + N + 2] for text ids and a core canvas (MASK = -1)."""
    if canvas.shape[1] != layout.num_image_tokens:
        raise ValueError(f"canvas has {canvas.shape[1]} tokens, layout expects {layout.num_image_tokens}")
    rows = [text_part(layout, ids) for ids in text_ids]
    text = torch.tensor([r[0] for r in rows], dtype=torch.long, device=canvas.device)
    text_mask = torch.tensor([r[1] for r in rows], dtype=torch.long, device=canvas.device)
    image = torch.where(canvas == MASK, torch.full_like(canvas, layout.mask_id), canvas + layout.code_offset)
    b = canvas.shape[0]
    soi = torch.full((b, 1), layout.soi_id, dtype=torch.long, device=canvas.device)
    eoi = torch.full((b, 1), layout.eoi_id, dtype=torch.long, device=canvas.device)
    ids = torch.cat([text, soi, image, eoi], dim=1)
    mask = torch.cat([text_mask, torch.ones(b, layout.num_image_tokens + 2, dtype=torch.long, device=canvas.device)], dim=1)
    return ids, mask


def image_slice(layout: MMaDALayout, logits: torch.Tensor) -> torch.Tensor:
    """The codebook logits at the image positions: logits[:, -(N+1):-1, off:off+V]."""
    n = layout.num_image_tokens
    return logits[:, -(n + 1):-1, layout.code_offset:layout.code_offset + layout.codebook_size]


class MMaDAPolicy(BackbonePolicy):
    kind: ClassVar[str] = "mmada"
    LORA_NAMES: ClassVar[dict[str, str]] = {"o_proj": "attn_out", "gate_proj": "ff_proj", "down_proj": "ff_out"}
    # the sequence the memory plan (trainer.plan) sizes activations for: 1,024 image tokens; text_len 513 plus <|soi|> <|eoi|>
    PLAN_IMAGE_TOKENS: ClassVar[int] = 1024
    PLAN_TEXT_TOKENS: ClassVar[int] = 515
    SAMPLER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "steps": 12, "cfg_scale": 3.5, "temperature": 1.0, "temperature_mode": "compound", "sampler": "maskgit",
    }

    def __init__(self, model: nn.Module, tokenizer: Any, vq: nn.Module | None, *, layout: MMaDALayout | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model, tokenizer, vq, options=dict(options or {}))
        self.layout = layout or MMaDALayout()
        self.codebook_size = self.layout.codebook_size
        self.grid = tuple(self.layout.grid)  # type: ignore[assignment]
        self.image_size = tuple(self.layout.image_size)  # type: ignore[assignment]

    def config(self) -> dict[str, Any]:
        return {**self.options, "layout": asdict(self.layout)}

    # -- the contract -------------------------------------------------------------------------------
    def encode_prompts(self, texts: Sequence[str]) -> PromptBatch:
        ids = [list(x) for x in self.tokenizer(list(texts))["input_ids"]]
        width = max([len(x) for x in ids] + [1])
        padded = torch.full((len(ids), width), -1, dtype=torch.long)
        for i, x in enumerate(ids):
            padded[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        return PromptBatch(list(texts), {"text_ids": padded.to(self.device)})

    def _text_ids(self, prompts: PromptBatch) -> list[list[int]]:
        return [[int(t) for t in row if t >= 0] for row in prompts.tensors["text_ids"].cpu()]

    def _forward(self, text_ids: list[list[int]], canvas: torch.Tensor) -> torch.Tensor:
        ids, mask = t2i_inputs(self.layout, text_ids, canvas)
        bias = (mask[:, :, None] & mask[:, None, :]).bool().unsqueeze(1)
        return image_slice(self.layout, self.model(ids, attention_bias=bias).logits)

    def image_logits(self, prompts: PromptBatch, canvas: torch.Tensor, *, cfg_scale: float = 0.0) -> torch.Tensor:
        text = self._text_ids(prompts)
        if not cfg_scale:
            return self._forward(text, canvas)
        both = self._forward(text + [[] for _ in text], torch.cat([canvas, canvas]))
        cond, uncond = both.chunk(2)
        return cfg_combine(cond, uncond, cfg_scale)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if self.vq is None:
            raise RuntimeError("mmada: no VQ decoder loaded (vq_path)")
        with torch.no_grad():
            images = self.vq.decode_code(codes.long())           # MAGVIT-v2: [-1, 1]
        return to_uint8(images, low=-1.0, rounding="truncate")  # as MMaDA's decoding: astype(np.uint8)

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def from_options(cls, *, device: Any = "cuda", dtype: Any = "bfloat16", model_path: str = "",
                     vq_path: str = "showlab/magvitv2", tokenizer_path: str = "", layout: dict[str, Any] | None = None,
                     lora_rank: int = 0, lora_alpha: float = 64.0, lora_dropout: float = 0.05,
                     lora_targets: Sequence[str] = (), **extra: Any) -> MMaDAPolicy:  # pragma: no cover - needs weights
        if not model_path:
            raise ValueError("mmada: policy_path (the MMaDA model folder) is required")
        from transformers import AutoTokenizer

        torch_dtype = resolve_dtype(dtype)
        MAGVITv2, MMadaModelLM = import_mmada()
        model = MMadaModelLM.from_pretrained(str(checked_folder(model_path)), trust_remote_code=False,
                                             torch_dtype=torch_dtype)
        vq = MAGVITv2.from_pretrained(vq_path)
        tokenizer = AutoTokenizer.from_pretrained(str(checked_folder(tokenizer_path or model_path)), padding_side="left",
                                                  trust_remote_code=False)
        lay = MMaDALayout(**{k: tuple(v) if isinstance(v, list) else v for k, v in (layout or {}).items()})
        lay = _ids_from_tokenizer(lay, tokenizer)
        options = {"model_path": model_path, "vq_path": vq_path, "tokenizer_path": tokenizer_path, **extra}
        policy = cls(model.to(device), tokenizer, vq.to(device) if vq is not None else None, layout=lay,
                     options=options)
        if lora_rank > 0:
            policy.add_lora(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, targets=lora_targets)
        return policy


def _ids_from_tokenizer(layout: MMaDALayout, tokenizer: Any) -> MMaDALayout:  # pragma: no cover - needs weights
    """Special ids as the tokenizer knows them (falling back to MMaDA's published values)."""
    def tid(token: str, default: int) -> int:
        got = tokenizer.convert_tokens_to_ids(token)
        return int(got) if isinstance(got, int) and got != getattr(tokenizer, "unk_token_id", None) else default

    return MMaDALayout(**{**asdict(layout),
                          "code_offset": len(tokenizer) if len(tokenizer) > layout.mask_id else layout.code_offset,
                          "t2i_id": tid("<|t2i|>", layout.t2i_id), "soi_id": tid("<|soi|>", layout.soi_id),
                          "eoi_id": tid("<|eoi|>", layout.eoi_id),
                          "bos_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else layout.bos_id,
                          "eos_id": tokenizer.eos_token_id if tokenizer.eos_token_id is not None else layout.eos_id})


def import_mmada() -> tuple[Any, Any]:
    """MMaDA's own model classes (`models` of its repository, on PYTHONPATH). Its failure is the error: a
    generic AutoModel would load another class and drop the VQ decoder, hiding what is actually wrong."""
    try:
        from models import MAGVITv2, MMadaModelLM  # MMaDA's repository on PYTHONPATH
    except ImportError as e:
        from paintbench.errors import UserError

        raise UserError(f"mmada: MMaDA's model code cannot be imported ({type(e).__name__}: {e}). Put MMaDA's "
                        "repository (its `models` package) on PYTHONPATH, in an environment with its pins "
                        "(transformers 4.46, diffusers 0.32)") from e
    return MAGVITv2, MMadaModelLM
