"""`MPlugVQA`: answering questions about images in fast (tile encoded once, questions batched) or reference
(the official op order) mode."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from paintbench.metrics.dpg.mplug.configuration import MODES, HeadTying, Mode, MPlugLoadError, MPlugSettings
from paintbench.metrics.dpg.mplug.conversion import LoadReport, load_mplug
from paintbench.metrics.dpg.mplug.generation import Hypothesis, StepFn, beam_search
from paintbench.metrics.dpg.mplug.modeling import MPlugForVQA
from paintbench.metrics.dpg.mplug.processing import QuestionTokenizer, preprocess


# ------------------------------------------------------------------------------------------- inference
@dataclass(frozen=True)
class VQAResult:
    """One answer: the decoded string, the best hypothesis and every hypothesis ranked."""

    answer: str
    ids: tuple[int, ...]
    score: float
    beams: tuple[Hypothesis, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "ids": list(self.ids), "score": self.score,
                "beams": [{"ids": list(h.ids), "score": h.score} for h in self.beams]}


class MPlugVQA:
    """mPLUG VQA on tiles: `answer(images, questions)` for parallel lists, `answer_tile` per tile."""

    name = "mplug"

    def __init__(
        self,
        model: MPlugForVQA,
        settings: MPlugSettings,
        tokenizer: QuestionTokenizer,
        *,
        mode: Mode = "fast",
        report: LoadReport | None = None,
        folder: Path | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mPLUG mode must be one of {MODES}, got {mode!r}")
        if mode == "reference" and model.dtype != torch.float32:
            raise ValueError("mPLUG reference mode is fp32 (the official precision); use mode='fast' for fp16/bf16")
        if tokenizer.vocab_size != settings.bert.vocab_size:
            raise MPlugLoadError(
                f"vocab.txt has {tokenizer.vocab_size} tokens but config_bert.json says vocab_size "
                f"{settings.bert.vocab_size}"
            )
        self.model, self.settings, self.tokenizer = model, settings, tokenizer
        self.mode: Mode = mode
        self.report = report
        self.folder = folder
        self.tile_batch = 4  # tiles per ViT batch in fast mode (one DPG grid)

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        mode: Mode = "fast",
        trust_pickle: bool = False,
        head_tying: HeadTying = "strict",
    ) -> MPlugVQA:
        model, settings, report = load_mplug(
            folder, device=device, dtype=dtype, trust_pickle=trust_pickle, head_tying=head_tying
        )
        return cls(model, settings, QuestionTokenizer(folder), mode=mode, report=report, folder=Path(folder))

    @property
    def device(self) -> torch.device:
        return self.model.visual_encoder.visual.conv1.weight.device

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "mode": self.mode, "dtype": str(self.model.dtype).removeprefix("torch."),
                "folder": str(self.folder) if self.folder else None,
                "settings": {k: v for k, v in self.settings.to_dict().items() if k != "bert"},
                "load": self.report.to_dict() if self.report else None}

    # -- steps -------------------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return preprocess(image, self.settings.image_res)

    @torch.inference_mode()
    def encode_tiles(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self.model.encode_image(pixels)

    def _search(self, step: StepFn, batch: int) -> list[list[Hypothesis]]:
        s = self.settings
        return beam_search(step, batch, beam_size=s.beam_size, min_length=s.min_length,
                           max_length=s.max_length, device=self.device)

    def _result(self, hyps: list[Hypothesis]) -> VQAResult:
        best = hyps[0]
        return VQAResult(self.tokenizer.decode(best.ids), best.ids, best.score, tuple(hyps))

    @torch.inference_mode()
    def answer_reference(self, image_states: torch.Tensor, question: str) -> VQAResult:
        """One question on one encoded tile ([1,N,D]), batch 1, the official computation."""
        m = self.model
        ids, mask = self.tokenizer([question])
        ids, mask = ids.to(self.device), mask.to(self.device)
        text = m.encode_text(ids, mask)
        image, text = m.fuse_reference(image_states, text, mask)
        memory = torch.cat([image, text], 1)
        image_atts = torch.ones(image.shape[:-1], dtype=torch.long, device=self.device)
        memory_atts = torch.cat([image_atts, mask], 1)

        def step(seq: torch.Tensor, row_items: torch.Tensor) -> torch.Tensor:
            return m.decoder_logits_reference(
                seq, memory.index_select(0, row_items), memory_atts.index_select(0, row_items)
            )

        return self._result(self._search(step, 1)[0])

    @torch.inference_mode()
    def answer_fast(self, image_states: torch.Tensor, questions: Sequence[str]) -> list[VQAResult]:
        """All questions on one encoded tile ([1,N,D]) in one batch, shared image projections."""
        if not questions:
            return []
        m = self.model
        ids, mask = self.tokenizer(questions)
        ids, mask = ids.to(self.device), mask.to(self.device)
        text = m.encode_text(ids, mask)
        image, text = m.fuse_fast(image_states, text, mask)
        caches, qmask = m.decoder_caches(image, text, mask)
        beam = self.settings.beam_size

        def step(seq: torch.Tensor, row_items: torch.Tensor) -> torch.Tensor:
            items = row_items.view(-1, beam)[:, 0]
            return m.decoder_logits_fast(seq, items, caches, qmask, beam).float()

        return [self._result(h) for h in self._search(step, len(questions))]

    @torch.inference_mode()
    def answer_tile(self, image: Image.Image, questions: Sequence[str], *, reencode_image: bool = False):
        """Every question on one tile → VQAResults, in question order. `reencode_image` runs the ViT
        again for every question, as the official pipeline does (reference mode only; benchmarks)."""
        if self.mode == "fast":
            return self.answer_fast(self.encode_tiles([image]), questions)
        states = None if reencode_image else self.encode_tiles([image])
        out = []
        for q in questions:
            out.append(self.answer_reference(self.encode_tiles([image]) if reencode_image else states, q))
        return out

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        """Backend interface: `images[i]` answers `questions[i]`. Entries with the same image object are
        grouped, so a tile is encoded once and its questions batched (fast mode)."""
        return [r.answer for r in self.answer_details(images, questions)]

    def answer_details(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[VQAResult]:
        """`answer` with the full results. In fast mode the distinct tiles go through the ViT together
        (`tile_batch` at a time), then each tile's questions are decoded as one batch."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        groups: dict[int, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(id(im), []).append(i)
        out: list[VQAResult | None] = [None] * len(questions)
        order = list(groups.values())
        for start in range(0, len(order), self.tile_batch if self.mode == "fast" else 1):
            chunk = order[start : start + (self.tile_batch if self.mode == "fast" else 1)]
            if self.mode == "fast":
                states = self.encode_tiles([images[idx[0]] for idx in chunk])
                per_tile = [self.answer_fast(states[g : g + 1], [questions[i] for i in idx])
                            for g, idx in enumerate(chunk)]
            else:
                per_tile = [self.answer_tile(images[idx[0]], [questions[i] for i in idx]) for idx in chunk]
            for idx, results in zip(chunk, per_tile, strict=True):
                for i, r in zip(idx, results, strict=True):
                    out[i] = r
        return [r for r in out if r is not None]
