"""What the two 8B adapters (MMaDA, Lumina-DiMOO) share: LoRA through peft, the adapter-disabled
reference, gradient checkpointing, saving only what training changed, and VQ decoding to uint8.

An adapter is built from *modules* (the language model, its tokenizer, the VQ decoder) plus a token
layout, so tests can hand it small stand-in modules that honour the same forward signature; the
`from_options` classmethods do the real loading from local paths with the published model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from paintbench.trainer.policy import MaskedImagePolicy, PromptBatch, load_weights


def apply_lora(model: nn.Module, *, rank: int, alpha: float, dropout: float, targets: Sequence[str]) -> nn.Module:
    """Wrap `model` with LoRA adapters on the named modules (peft). Only adapter weights stay trainable."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs peft: pip install 'paintbench[train]'") from e
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing or not targets:  # never adapt fewer modules than asked (and recorded) without a word
        from paintbench.errors import InputError

        raise InputError(f"LoRA targets {missing or list(targets)} are not modules of this model (its module "
                         f"names include {sorted(n for n in present if n)[:16]})")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    return get_peft_model(model, config)


def lora_state(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter's weights under peft's names; from `state` (the model's whole state dict) when given."""
    from peft import get_peft_model_state_dict

    return {k: v.detach() for k, v in get_peft_model_state_dict(model, state_dict=state).items()}


def load_lora_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"LoRA checkpoint has keys this model lacks: {unexpected[:5]}")


def enable_gradient_checkpointing(model: nn.Module) -> str:
    """Switch on gradient checkpointing through the API the model exposes (transformers'
    `gradient_checkpointing_enable`, or LLaDA's `set_activation_checkpointing("whole_layer")`, which MMaDA
    and Lumina-DiMOO have one level down, on `model.model`); returns which one. Asked for and not
    available is an error: training would silently need far more memory than planned."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    candidates = [base, getattr(base, "model", None)]
    tried = []
    for target in (c for c in candidates if isinstance(c, nn.Module)):
        for name, args in (("set_activation_checkpointing", ("whole_layer",)), ("gradient_checkpointing_enable", ())):
            fn = getattr(target, name, None)
            if not callable(fn):
                continue
            try:
                fn(*args)
            except (TypeError, ValueError, NotImplementedError) as e:  # e.g. "does not support gradient checkpointing"
                tried.append(f"{type(target).__name__}.{name}: {e}")
                continue
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()
            return f"{type(target).__name__}.{name}"
    from paintbench.errors import InputError

    raise InputError(f"gradient_checkpointing: {type(base).__name__} exposes no gradient-checkpointing switch "
                     f"({'; '.join(tried) or 'neither gradient_checkpointing_enable nor set_activation_checkpointing'}); "
                     "set gradient_checkpointing=false")


class AdapterDisabledReference(nn.Module):
    """π_ref for a LoRA policy: the same base model with the adapter switched off (no weight copy)."""

    def __init__(self, policy: BackbonePolicy) -> None:
        super().__init__()
        self._policy = [policy]          # a list, so the policy's parameters are not registered twice

    def image_logits(self, prompts: PromptBatch, canvas: torch.Tensor, *, cfg_scale: float = 0.0) -> torch.Tensor:
        policy = self._policy[0]
        with torch.no_grad(), policy.model.disable_adapter():
            return policy.image_logits(prompts, canvas, cfg_scale=cfg_scale)

    @property
    def device(self) -> torch.device:
        return self._policy[0].device


class BackbonePolicy(MaskedImagePolicy):
    """Base of the 8B adapters: `model` (the language model, maybe LoRA-wrapped), `tokenizer`, `vq`."""

    kind: ClassVar[str] = "backbone"

    def __init__(self, model: nn.Module, tokenizer: Any, vq: nn.Module | None, *, options: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.vq = vq
        if vq is not None:
            vq.requires_grad_(False)
        self.options = dict(options)
        self.lora = int(options.get("lora_rank", 0)) > 0

    # LoRA ---------------------------------------------------------------------------------------------
    # Llama's module names (the config's, as MaskGRPO gives them) -> this backbone's; LLaDA-based models
    # call o/gate/down `attn_out`/`ff_proj`/`ff_out`
    LORA_NAMES: ClassVar[dict[str, str]] = {}

    def lora_targets(self, targets: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(self.LORA_NAMES.get(t, t) for t in targets))

    def add_lora(self, *, rank: int, alpha: float, dropout: float, targets: Sequence[str]) -> None:
        targets = self.lora_targets(targets)  # recorded as what actually gets adapters
        self.model = apply_lora(self.model, rank=rank, alpha=alpha, dropout=dropout, targets=targets)
        self.lora = True
        self.options.update(lora_rank=rank, lora_alpha=alpha, lora_dropout=dropout, lora_targets=list(targets))

    @property
    def reference_is_copy(self) -> bool:  # type: ignore[override]
        return not self.lora

    def make_reference(self) -> MaskedImagePolicy:
        if self.lora:
            return AdapterDisabledReference(self)  # type: ignore[return-value]
        return super().make_reference()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def shard_root(self) -> nn.Module:
        return self.model   # `image_logits` calls `self.model(...)`; the VQ decoder stays whole on every rank

    def policy_state(self, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        model_state = None if state is None else {k[6:]: v for k, v in state.items() if k.startswith("model.")}
        if self.lora:
            return {f"lora.{k}": v.contiguous() for k, v in lora_state(self.model, model_state).items()}
        if model_state is None:
            model_state = self.model.state_dict()
        return {f"model.{k}": v.detach().contiguous() for k, v in model_state.items()}

    def load_policy_state(self, state: dict[str, torch.Tensor]) -> None:
        if any(k.startswith("lora.") for k in state):
            if not self.lora:
                raise ValueError(f"{self.kind}: checkpoint holds a LoRA adapter but the policy has none")
            load_lora_state(self.model, {k[5:]: v for k, v in state.items() if k.startswith("lora.")})
            return
        model_state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
        _, unexpected = self.model.load_state_dict(model_state, strict=False)
        if unexpected:
            raise ValueError(f"{self.kind}: checkpoint keys not in the model: {unexpected[:5]}")

    def export(self, directory: Any) -> Any:
        """The language model as `save_pretrained` writes it (LoRA merged into the weights: no peft needed
        to load it), with its tokenizer: the model's own `from_pretrained` reads it, and so does this
        adapter with `policy_path=DIR` (the VQ decoder is unchanged by training: keep using its folder)."""
        from pathlib import Path

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        model = self.model.merge_and_unload() if self.lora else self.model
        model.save_pretrained(str(d), safe_serialization=True)
        if hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(str(d))
        return d

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self.options["gradient_checkpointing"] = enable_gradient_checkpointing(self.model)

    def config(self) -> dict[str, Any]:
        return dict(self.options)

    @classmethod
    def from_saved(cls, config: dict[str, Any], folder: Any, *, device: Any = "cpu", dtype: Any = "bfloat16"):
        policy = cls.from_options(device=device, dtype=dtype, **config)
        policy.load_policy_state(load_weights(folder))
        return policy

    @classmethod
    def from_options(cls, *, device: Any = "cpu", dtype: Any = "bfloat16", **options: Any):  # pragma: no cover
        raise NotImplementedError


def to_uint8(images: torch.Tensor, *, low: float, rounding: str = "round") -> torch.Tensor:
    """Decoder output in [low, 1] (MAGVIT-v2: [-1, 1]; diffusers VQModel: [0, 1]) → uint8 [B, 3, H, W].
    `rounding`: "round" to the nearest level, or "truncate" as MMaDA's decoding does (`x * 255` then
    numpy's `astype(np.uint8)`); the two differ by one level on about half the pixels."""
    x = images.float()
    if low < 0:
        x = (x + 1.0) / 2.0
    x = x.clamp(0, 1) * 255
    if rounding == "round":
        return x.round().to(torch.uint8)
    if rounding == "truncate":
        return x.to(torch.uint8)  # toward zero, as numpy's cast of non-negative floats
    raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")
