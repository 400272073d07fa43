"""The `dpg` provider: DPG-Bench's score of one 2×2 grid per prompt, on the provider contract.

Per image (one grid): the first `pic_num` tiles (TL, TR, BL, BR) are cut at the tile size
`resolution` (inferred from a square grid when None), every question of the item's table is asked
on every tile by the VQA backend, and `metrics.dpg.score_item` turns the answers into the prompt
score (0–1, the value) in the chosen mode. `details` carry the item id, tile scores, every answer,
the mode and the backend; an item that cannot be scored (no table, wrong grid size, a missing
dependency parent) gets NaN and its reason, never a silent zero.

Questions come from the DPG question CSV (`questions=`, or `$PAINTBENCH_DATA/dpg/dpg_bench.csv`)
looked up by `metadata[i]["item_id"]`, or directly from `metadata[i]["questions"]` (a list of
`Question`s or of dicts with `proposition_id`, `question`, `dependency`, `tuple`).

Tensor inputs ([B,3,2R,2R]) are quantised to uint8 and scored through the same PIL path: the VQA
model's official preprocessing is a PIL bicubic resize, so DPG has no separate device path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from paintbench.metrics.base import Provider, Scores
from paintbench.metrics.dpg.answers import load_answers, save_answers
from paintbench.metrics.dpg.grid import DEFAULT_PIC_NUM, check_pic_num, split_grid
from paintbench.metrics.dpg.questions import (
    DPGError,
    Question,
    QuestionTables,
    load_questions,
    parse_dependency,
)
from paintbench.metrics.dpg.scoring import MODES, ItemScore, score_item, summarize
from paintbench.metrics.dpg.vqa import DEFAULT_BACKEND, VQABackend, label, make_backend
from paintbench.metrics.images import ImageBatch

# What this metric is and which files it reads, as literals: the registry reads them without
# importing this module (`metrics.registry`).
METRICS = [{
    "name": "dpg", "provider": "DPGProvider", "tiny_writer": "write_tiny_weights", "version": "dpg-bench/1",
    "higher_is_better": True, "nominal_range": (0.0, 1.0), "display": (100.0, 2), "needs_prompt": False, "hard_range": (0.0, 1.0),
    "summary": "DPG-Bench (ELLA): mPLUG-large VQA on the 4 tiles of a 2x2 grid, dependency-aware yes rate "
               "per prompt (official or fixed rules)",
    "weights": ("mplug-vqa-large",),
}]
WEIGHTS = [
    {"name": "mplug-vqa-large", "filename": "mplug_visual-question-answering_coco_large_en",
     "description": "mPLUG-large VQA, DPG-Bench's answer model: an unmodified ModelScope model folder "
                    "(damo/mplug_visual-question-answering_coco_large_en, now iic/...). Download it on a machine "
                    "with network access: `modelscope download --model "
                    "damo/mplug_visual-question-answering_coco_large_en --local_dir DIR`",
     "files": ("pytorch_model.bin", "config.yaml", "config_bert.json", "vocab.txt"),
     "source_note": "ModelScope damo/mplug_visual-question-answering_coco_large_en: `modelscope download --model "
                    "damo/mplug_visual-question-answering_coco_large_en --local_dir "
                    "WEIGHTS_DIR/mplug_visual-question-answering_coco_large_en`"},
]

DEFAULT_CSV_NAME = "dpg/dpg_bench.csv"


def default_questions_csv() -> Path | None:
    """`$PAINTBENCH_DATA/dpg/dpg_bench.csv` (default data cache ~/.cache/paintbench/data) if present."""
    root = Path(os.environ.get("PAINTBENCH_DATA", "~/.cache/paintbench/data")).expanduser()
    p = root / DEFAULT_CSV_NAME
    return p if p.is_file() else None


def question_from_record(item_id: str, rec: Question | Mapping[str, Any]) -> Question:
    """A Question from a metadata record (dicts use the CSV's meaning of each field)."""
    if isinstance(rec, Question):
        return rec
    try:
        dep = rec.get("dependency", "0")
        deps = parse_dependency(dep) if isinstance(dep, str) else tuple(int(d) for d in dep)
        return Question(item_id=item_id, proposition_id=int(rec["proposition_id"]),
                        question=str(rec["question"]), dependency=deps, tuple=rec.get("tuple"))
    except (KeyError, TypeError, ValueError) as e:
        raise DPGError(f"item {item_id!r}: bad question record {dict(rec)!r} ({type(e).__name__}: {e})") from None


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """[3,H,W] uint8 or float 0–1 → RGB PIL image (floats rounded to the nearest 8-bit level)."""
    if t.dtype != torch.uint8:
        t = (t.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(t.permute(1, 2, 0).cpu().numpy()), mode="RGB")


def ask_tiles(vqa: VQABackend, tiles: Sequence[Image.Image], questions: Sequence[str]) -> list[dict[str, str]]:
    """Every distinct question on every tile in one backend call → per tile {question: answer}."""
    unique = list(dict.fromkeys(questions))
    images = [tile for tile in tiles for _ in unique]
    asked = [q for _ in tiles for q in unique]
    answers = vqa.answer(images, asked)
    if len(answers) != len(asked):
        raise RuntimeError(f"VQA backend returned {len(answers)} answers for {len(asked)} questions")
    n = len(unique)
    return [dict(zip(unique, answers[t * n : (t + 1) * n], strict=True)) for t in range(len(tiles))]


class DPGProvider(Provider):
    """DPG-Bench prompt score of each 2×2 grid (see the module docstring).

    Arguments beyond the common ones: `questions` (CSV path or loaded tables), `mode`
    (`official`|`fixed`), `official_quirks` (CSV reader; default follows the mode), `backend`
    (`mplug`|`blip-vqa`|`qwen-vl`) or a ready `vqa` backend, `vqa_mode` (`fast`|`reference`, mPLUG),
    `resolution` (tile size; None infers it from a square grid), `pic_num` (tiles used, default 4),
    `answers_path` (save every answer there, answers.json format, merged with what the file holds),
    `weights`/`weights_dir`, `trust_pickle`, `head_tying` (mPLUG loading)."""

    name = "dpg"
    needs_prompt = False

    def __init__(
        self,
        *,
        questions: str | os.PathLike[str] | Mapping[str, Sequence[Question]] | None = None,
        mode: str = "official",
        official_quirks: bool | None = None,
        backend: str = DEFAULT_BACKEND,
        vqa: VQABackend | None = None,
        vqa_mode: str = "fast",
        resolution: int | None = None,
        pic_num: int = DEFAULT_PIC_NUM,
        answers_path: str | os.PathLike[str] | None = None,
        weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        weights_dir: str | os.PathLike[str] | None = None,
        trust_pickle: bool = False,
        head_tying: str = "strict",
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 4,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        if mode not in MODES:
            raise ValueError(f"dpg: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.official_quirks = (mode == "official") if official_quirks is None else bool(official_quirks)
        self.pic_num = check_pic_num(pic_num)
        self.resolution = None if resolution is None else int(resolution)
        self.tables = self._load_tables(questions)
        # The questions asked are those of the *strict* reading of the CSV too, whatever the mode: official
        # mode drops rows (the first data row, replaced duplicates) that fixed mode scores, and saved answers
        # must rescore both ways. Scoring still uses only the mode's own table.
        self.ask_tables = self._strict_tables(questions)
        if isinstance(weights, Mapping):
            weights = weights.get("mplug-vqa-large")
        self.vqa = vqa if vqa is not None else make_backend(
            backend, weights=weights, weights_dir=weights_dir, device=self.device, dtype=self.dtype,
            vqa_mode=vqa_mode, trust_pickle=trust_pickle, head_tying=head_tying)  # type: ignore[arg-type]
        self.backend = self.vqa.name
        self.vqa_mode = getattr(getattr(self.vqa, "vqa", None), "mode", None)
        self.answers_path = Path(answers_path) if answers_path is not None else None
        self.answers: dict[str, list[dict[str, str]]] = {}
        if self.answers_path is not None and self.answers_path.is_file():
            self.answers = load_answers(self.answers_path)
        self.results: dict[str, ItemScore | DPGError] = {}

    def _load_tables(self, questions) -> QuestionTables | Mapping[str, Sequence[Question]] | None:
        if questions is None:
            questions = default_questions_csv()
            if questions is None:
                return None
        if isinstance(questions, Mapping):
            return questions
        return load_questions(questions, official_quirks=self.official_quirks)

    def _strict_tables(self, questions) -> Mapping[str, Sequence[Question]] | None:
        if not self.official_quirks or questions is None or isinstance(questions, Mapping):
            return None
        try:
            return load_questions(questions, official_quirks=False)
        except DPGError:  # a CSV only the official reader accepts: ask what the official table has
            return None

    def _asked(self, item: str, questions: list[Question]) -> list[str]:
        """The question texts to ask for `item`: its table's, plus those only the strict reading has."""
        asked = [q.question for q in questions]
        extra = self.ask_tables.get(item, []) if self.ask_tables is not None else []
        return list(dict.fromkeys([*asked, *(q.question for q in extra)]))

    @property
    def label(self) -> str:
        return label(self.backend)

    def provenance(self) -> dict[str, Any]:
        p = super().provenance()
        p.update(label=self.label, mode=self.mode, official_quirks=self.official_quirks, backend=self.backend,
                 vqa_mode=self.vqa_mode, pic_num=self.pic_num, resolution=self.resolution,
                 questions=getattr(self.tables, "source", None), vqa=self.vqa.describe())
        return p

    def score(self, images, prompts=None, metadata=None) -> Scores:
        if metadata is None:
            raise ValueError("dpg: every image needs metadata with its 'item_id' (or its 'questions')")
        out = super().score(images, prompts, metadata)
        return Scores(metric=self.label, values=out.values, details=out.details)

    def _questions(self, meta: Mapping[str, Any] | None, index: int) -> tuple[str, list[Question]]:
        meta = meta or {}
        item = meta.get("item_id", meta.get("id"))
        if "questions" in meta:
            item = str(item if item is not None else f"#{index}")
            return item, [question_from_record(item, q) for q in meta["questions"]]
        if item is None:
            raise DPGError(f"sample {index}: metadata has no 'item_id' (or 'questions')")
        item = str(item)
        if self.tables is None:
            raise DPGError(
                f"item {item!r}: no DPG question table loaded; pass questions=PATH/TO/dpg_bench.csv (or put it at"
                f" $PAINTBENCH_DATA/{DEFAULT_CSV_NAME})"
            )
        err = self.tables.lookup_error(item) if isinstance(self.tables, QuestionTables) else None
        if err is not None:
            raise err
        if item not in self.tables:
            raise DPGError(f"item {item!r} has no question table")
        return item, list(self.tables[item])

    def _score_batch(self, images: ImageBatch, prompts, metadata) -> Scores:
        values: list[float] = []
        details: list[dict[str, Any]] = []
        for i in range(len(images)):
            name = images.names[i]
            base: dict[str, Any] = {"mode": self.mode, "backend": self.backend, "label": self.label,
                                    "vqa_mode": self.vqa_mode, "pic_num": self.pic_num}
            meta = (metadata[i] if metadata is not None else None) or {}
            item = meta.get("item_id", meta.get("id"))
            item = None if item is None else str(item)
            try:
                item, questions = self._questions(meta, i)
                base["item_id"] = item
                grid = tensor_to_pil(images.tensor[i]) if images.tensor is not None else images.pil[i]  # type: ignore[index]
                tiles = split_grid(grid, self.resolution, self.pic_num, name=f"{name} (item {item!r})")
                tile_answers = ask_tiles(self.vqa, tiles, self._asked(item, questions))
                self.answers[item] = tile_answers
                base["answers"] = tile_answers  # kept even when the rules then fail the item: rescore needs them
                result = score_item(questions, tile_answers, self.mode)  # type: ignore[arg-type]
            except DPGError as e:
                if item is not None:
                    self.results[item] = e
                values.append(math.nan)
                details.append({**base, "error": str(e)})
                continue
            self.results[item] = result
            values.append(result.prompt_score)
            details.append({**base, "prompt_score": result.prompt_score, "tile_scores": list(result.tile_scores),
                            "values": [list(v) for v in result.values],
                            "category_contributions": [list(c) for c in result.category_contributions]})
        if self.answers_path is not None:
            self.save_answers()
        return Scores(metric=self.label, values=torch.tensor(values, dtype=torch.float32, device=self.device),
                      details=details)

    def save_answers(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write every answer collected so far (answers.json format, atomically)."""
        target = Path(path) if path is not None else self.answers_path
        if target is None:
            raise ValueError("dpg: no answers path given")
        return save_answers(target, self.answers)

    @staticmethod
    def summarize_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """DPG-Bench's category scores from a run's per-sample records (their details carry each item's
        category contributions): L2 = mean of its contributions, L1 = mean over all contributions of
        its L2 categories (weighted by question count, as the official script). Values are 0–1; the
        report multiplies by 100. In official mode the contributions are the last tile's raw answers
        (the official script's known quirk); in fixed mode, all tiles after dependency zeroing."""
        from paintbench.metrics.dpg.scoring import l1_category

        l2: dict[str, list[float]] = {}
        prompts: dict[str, set[str]] = {}
        for r in records:
            for cat, v in (r.get("details") or {}).get("category_contributions", []):
                l2.setdefault(cat, []).append(float(v))
                prompts.setdefault(cat, set()).add(str(r.get("prompt_id")))
        l1: dict[str, list[float]] = {}
        l1_prompts: dict[str, set[str]] = {}
        for cat, vs in l2.items():
            l1.setdefault(l1_category(cat), []).extend(vs)
            l1_prompts.setdefault(l1_category(cat), set()).update(prompts[cat])

        def row(vs: list[float], ps: set[str]) -> dict[str, Any]:
            return {"value": math.fsum(vs) / len(vs), "ci": [None, None], "n_prompts": len(ps), "n_samples": len(vs)}

        return {"categories": {c: row(vs, l1_prompts[c]) for c, vs in sorted(l1.items())},
                "l2": {c: row(vs, prompts[c]) for c, vs in sorted(l2.items())}}

    def summary(self) -> dict[str, Any]:
        """`summarize()` over every item scored by this provider so far, labelled with the backend."""
        s = summarize(self.results, self.mode)  # type: ignore[arg-type]
        s.update(label=self.label, backend=self.backend, vqa_mode=self.vqa_mode, pic_num=self.pic_num)
        return s


def write_tiny_weights(directory: str | os.PathLike[str], *, seed: int = 0, metric: str = "dpg") -> list[Path]:
    """A tiny random mPLUG in the unmodified ModelScope folder layout (`mplug.write_tiny_weights`)."""
    from paintbench.metrics.dpg.mplug import write_tiny_weights as write_tiny_mplug

    return write_tiny_mplug(directory, seed=seed, metric=metric)
