"""The one interface the trainer core talks to: `MaskedImagePolicy`.

The core (sampler, estimator, loss) only ever sees image-token tensors: a canvas `LongTensor [B, N]`
of codebook ids in 0..V-1 with `MASK` (-1) for masked positions, and logits `[B, N, V]` over the
codebook. Everything backbone-specific lives in the adapter: tokenising prompts, the sequence template,
the real mask id, special and newline tokens, the text-vocabulary offset of image codes, classifier-free
guidance with the backbone's unconditional prompt, and the VQ decoder. So the same trainer runs the tiny
CPU policy, MMaDA and Lumina-DiMOO.

A policy saves itself as a folder (`save(dir)`): `policy.json` (kind, constructor config, sampler
defaults) plus its trainable weights (`weights.safetensors`: the whole model for the tiny policy, the
LoRA adapter for the 8B backbones). `trainer.policies.load(dir)` rebuilds it, which is what the
harness's `policy:CHECKPOINT` generator calls.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

MASK = -1
"""The core's mask sentinel in canvases; adapters translate it to their backbone's mask token id."""

POLICY_FILE = "policy.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass
class PromptBatch:
    """Tokenised prompts: `texts` plus backbone-specific tensors, all with leading dimension B.

    The core only selects rows (`select`), e.g. to expand prompts to their groups or to pick the unique
    prompts of a rank's share of the batch.
    """

    texts: list[str]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, index: Sequence[int] | torch.Tensor) -> PromptBatch:
        idx = torch.as_tensor(index, dtype=torch.long)
        return PromptBatch(
            texts=[self.texts[int(i)] for i in idx],
            tensors={k: v.index_select(0, idx.to(v.device)) for k, v in self.tensors.items()},
        )

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(self.texts, {k: v.to(device) for k, v in self.tensors.items()})


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance as MMaDA, MaskGRPO and Lumina-DiMOO write it: (1+s)*cond - s*uncond."""
    return (1.0 + scale) * cond - scale * uncond


class MaskedImagePolicy(nn.Module, ABC):
    """A masked-token image generator seen as a policy over codebook ids.

    Subclasses set `kind` and the attributes below and implement `encode_prompts`, `image_logits`,
    `decode` and `config`; they may override `trainable_parameters`, `make_reference`,
    `policy_state`/`load_policy_state` (LoRA saves only the adapter) and `default_sampler`.
    """

    kind: ClassVar[str]
    codebook_size: int
    grid: tuple[int, int]          # token grid (rows, columns); N = rows * columns image tokens
    image_size: tuple[int, int]    # decoded image (height, width) in pixels

    @property
    def num_image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- the contract -------------------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, texts: Sequence[str]) -> PromptBatch:
        """Tokenise prompts (on the policy's device)."""

    @abstractmethod
    def image_logits(self, prompts: PromptBatch, canvas: torch.Tensor, *, cfg_scale: float = 0.0) -> torch.Tensor:
        """Logits [B, N, V] over the codebook at every image position of `canvas` [B, N] (MASK = -1).

        `cfg_scale > 0` runs the conditional and the unconditional branch and returns
        `(1+s)*cond - s*uncond`. Positions that are not masked get logits too (the estimator's
        `reveal_unsampled` context ignores them).
        """

    @abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images uint8 [B, 3, H, W] (on the policy's device) from codes [B, N] in 0..V-1."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (written to policy.json)."""

    # -- defaults that adapters may override -------------------------------------------------------
    SAMPLER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "steps": 12, "cfg_scale": 0.0, "temperature": 1.0, "temperature_mode": "compound", "sampler": "maskgit",
    }

    def default_sampler(self) -> dict[str, Any]:
        """Sampler settings used when a caller gives none (e.g. the harness's policy generator): the
        class defaults, updated by the `sampler` block of the policy.json it was loaded from."""
        return {**self.SAMPLER_DEFAULTS, **getattr(self, "sampler_overrides", {})}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def make_reference(self) -> MaskedImagePolicy:
        """A frozen copy of the current policy: pi_ref of the KL term (the initial model). LoRA
        adapters override this to run the same base model with the adapter disabled."""
        ref = copy.deepcopy(self)
        ref.requires_grad_(False)
        ref.eval()
        return ref

    reference_is_copy: ClassVar[bool] = True
    """True when `make_reference()` is a separate copy whose weights a checkpoint must store; False for
    LoRA adapters, whose reference is the adapter-disabled base model reloaded from its path."""

    def policy_state(self, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The weights a checkpoint stores: everything, or only what training changes. `state` is this
        module's whole state dict when the caller already has it (gathered from FSDP2's shards)."""
        return {k: v.detach().contiguous() for k, v in (self.state_dict() if state is None else state).items()}

    def load_policy_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or (missing and len(missing) == len(self.state_dict())):
            raise ValueError(f"{self.kind}: checkpoint does not fit (missing {missing[:5]}, unexpected {unexpected[:5]})")

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Trade compute for memory in the training forward (no-op unless the backbone supports it)."""

    # -- persistence --------------------------------------------------------------------------------
    def shard_root(self) -> nn.Module:
        """The module whose `__call__` runs every forward of the policy: FSDP2's root unit (trainer.parallel).
        The tiny policy calls itself; the backbones override this with their language model."""
        return self

    def export(self, directory: str | Path) -> Path:
        """The trained policy in the model's own format (see `paintbench train export`). The tiny policy
        has no other format than its policy folder; the backbones override this with `save_pretrained`."""
        return self.save(directory)

    def save(self, directory: str | Path, *, sampler: dict[str, Any] | None = None,
             state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write policy.json and the weights into `directory` (created). `state`: as in `policy_state`."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "config": self.config(), "sampler": {**self.default_sampler(), **(sampler or {})}}
        (d / POLICY_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        weights = {k: v.detach().cpu().contiguous() for k, v in self.policy_state(state).items()}
        save_file(weights, str(d / WEIGHTS_FILE))
        return d


def load_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / WEIGHTS_FILE))
