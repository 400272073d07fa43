"""DPG-Bench on a folder of grids: grids → answers.json (incremental, resumable) → scores.

`evaluate_folder` is what `paintbench dpg eval` runs:

1. read the question CSV (official reader in official mode, strict reader in fixed mode);
2. match the folder's files to the table items (`metrics.dpg.grid.scan_folder`): missing images,
   duplicates, wrong-size grids and extra files are listed, never dropped silently;
3. ask every question on the first `pic_num` tiles of every usable grid, saving `answers.json` (the
   fixture format, `{item: [tile → {question: answer}]}`) after every item, with
   `answers.meta.json` recording the backend and settings. A rerun with the same `--out` answers
   only what is missing; a rerun with another backend or other settings is refused, so answers
   from different VQA models or tile layouts never mix;
4. score with the pure rules (`score_item`, `summarize`): every item of the question table is either
   scored or listed in `failed` with its reason. `paintbench dpg rescore` on the saved answers gives
   the same numbers without the VQA model.

Outputs in `--out` (default: `<images>-dpg` beside the image folder): answers.json,
answers.meta.json, summary.json (numbers, failures, per-item results, provenance) and results.txt.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metrics.base import resolve_dtype
from metrics.dpg.answers import format_summary, load_answers, save_answers
from metrics.dpg.grid import DEFAULT_PIC_NUM, check_pic_num, scan_folder, split_grid
from metrics.dpg.provider import ask_tiles
from metrics.dpg.questions import DPGError, QuestionTables, load_questions
from metrics.dpg.scoring import MODES, ItemScore, score_item, summarize
from metrics.dpg.vqa import DEFAULT_BACKEND, VQABackend, label, make_backend
from metrics.images import BadImageError, load_image

ANSWERS = "answers.json"
META = "answers.meta.json"
SUMMARY = "summary.json"
RESULTS = "results.txt"
RUN_FILES = (ANSWERS, META, SUMMARY, RESULTS)
META_FORMAT = "paintbench-dpg-answers/1"
# settings that must be equal for saved answers to be reused
RESUME_KEYS = ("backend", "vqa_mode", "resolution", "pic_num", "dtype")


def default_out(images: str | os.PathLike[str]) -> Path:
    p = Path(images).expanduser().resolve()
    return p.with_name(p.name + "-dpg")


def _dtype_name(dtype: torch.dtype | str) -> str:
    from metrics.base import resolve_dtype

    return str(resolve_dtype(dtype)).removeprefix("torch.")


def _check_meta(saved: dict[str, Any], wanted: dict[str, Any], path: Path) -> None:
    diffs = [f"{k}: saved {saved.get(k)!r}, now {wanted.get(k)!r}" for k in RESUME_KEYS if saved.get(k) != wanted.get(k)]
    if diffs:
        raise DPGError(
            f"{path} holds answers made with other settings ({'; '.join(diffs)}); answers from different"
            " VQA backends or tile layouts must not be mixed. Use another --out folder or delete it."
        )


def _missing_pairs(saved: list[dict[str, str]] | None, questions: list[str], pic_num: int) -> list[list[str]]:
    """Per tile, the questions not answered yet."""
    out = []
    for t in range(pic_num):
        done = saved[t] if saved is not None and t < len(saved) else {}
        out.append([q for q in questions if q not in done])
    return out


def evaluate_folder(
    questions: str | os.PathLike[str],
    images: str | os.PathLike[str],
    resolution: int | None,
    *,
    out: str | os.PathLike[str] | None = None,
    pic_num: int = DEFAULT_PIC_NUM,
    mode: str = "official",
    official_quirks: bool | None = None,
    backend: str = DEFAULT_BACKEND,
    vqa: VQABackend | None = None,
    vqa_mode: str = "fast",
    weights: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    trust_pickle: bool = False,
    head_tying: str = "strict",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run DPG-Bench on a folder of grids and write the outputs (see the module docstring).

    Returns the summary (also written to summary.json): `summarize()`'s numbers plus `label`,
    `backend`, `vqa_mode`, `images` (the folder scan), `answers`, `out`, `provenance`, `items`."""
    if mode not in MODES:
        raise DPGError(f"mode must be one of {MODES}, got {mode!r}")
    pic_num = check_pic_num(pic_num)
    say = log or (lambda msg: print(msg, file=sys.stderr))
    quirks = (mode == "official") if official_quirks is None else official_quirks
    tables = load_questions(questions, official_quirks=quirks)
    images_dir = Path(images).expanduser()
    out_dir = Path(out).expanduser() if out is not None else default_out(images_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    same_dir = out_dir.resolve() == images_dir.resolve()

    unscorable: dict[str, DPGError] = {}
    if isinstance(tables, QuestionTables):
        for item in tables:
            err = tables.lookup_error(item)
            if err is not None:
                unscorable[item] = err
    scan = scan_folder(images_dir, [i for i in tables if i not in unscorable], resolution=resolution,
                       official_keys=quirks, skip_names=RUN_FILES if same_dir else ())
    failures: dict[str, Any] = dict(unscorable)
    failures.update(scan.failures())

    backend_name = vqa.name if vqa is not None else backend
    if vqa is not None:  # a ready backend decides its own execution mode
        vqa_mode = getattr(getattr(vqa, "vqa", None), "mode", vqa_mode)
    wanted = {"backend": backend_name, "vqa_mode": vqa_mode if backend_name == "mplug" else None,
              "resolution": resolution, "pic_num": pic_num, "dtype": _dtype_name(dtype)}
    answers_path, meta_path = out_dir / ANSWERS, out_dir / META
    answers: dict[str, list[dict[str, str]]] = {}
    meta: dict[str, Any] = {"format": META_FORMAT, "label": label(backend_name), **wanted}
    if answers_path.is_file():
        saved_meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        if not saved_meta:
            raise DPGError(f"{answers_path} exists without {META}; its settings are unknown. Use another --out.")
        _check_meta(saved_meta, wanted, answers_path)
        answers = load_answers(answers_path)
        meta = {**saved_meta, **meta}
        say(f"resuming from {answers_path} ({len(answers)} items answered)")

    todo = []
    for item, path in scan.matched.items():
        qs = list(dict.fromkeys(q.question for q in tables[item]))
        if any(_missing_pairs(answers.get(item), qs, pic_num)):
            todo.append((item, path, qs))

    started = time.perf_counter()
    asked = 0
    if todo:
        if vqa is None:
            vqa = make_backend(backend, weights=weights, weights_dir=weights_dir, device=device,
                               dtype=resolve_dtype(dtype), vqa_mode=vqa_mode, trust_pickle=trust_pickle,
                               head_tying=head_tying)  # type: ignore[arg-type]
        described = vqa.describe()
        if meta.get("vqa") and _weights_id(meta["vqa"]) != _weights_id(described):
            raise DPGError(f"{answers_path} was answered with other weights ({_weights_id(meta['vqa'])});"
                           " use another --out folder")
        meta["vqa"] = described
        _write_json(meta_path, meta)
        from tqdm import tqdm

        for item, path, qs in tqdm(todo, unit="grid", disable=not progress, file=sys.stderr):
            try:
                grid = load_image(path, name=path.name)
                tiles = split_grid(grid, resolution, pic_num, name=path.name)
            except (BadImageError, DPGError) as e:
                failures[item] = str(e)
                continue
            saved = answers.get(item) or []
            tiles_answers = [dict(saved[t]) if t < len(saved) else {} for t in range(pic_num)]
            missing = _missing_pairs(saved, qs, pic_num)
            # one backend call per item: tiles whose questions are all answered are skipped
            need = [t for t in range(pic_num) if missing[t]]
            ask = [q for q in qs if any(q in missing[t] for t in need)]  # table order, as a fresh run asks
            new = ask_tiles(vqa, [tiles[t] for t in need], ask)
            for t, got in zip(need, new, strict=True):
                for q in missing[t]:
                    tiles_answers[t][q] = got[q]
                asked += len(missing[t])
            answers[item] = tiles_answers
            save_answers(answers_path, answers)
    elif not answers_path.is_file():
        _write_json(meta_path, meta)
        save_answers(answers_path, answers)
    elapsed = time.perf_counter() - started

    results: dict[str, ItemScore | DPGError | str] = {}
    for item in tables:
        if item in failures:
            results[item] = failures[item]
            continue
        try:
            results[item] = score_item(tables[item], answers[item][:pic_num], mode)  # type: ignore[arg-type]
        except DPGError as e:
            results[item] = e
    summary = summarize(results, mode)  # type: ignore[arg-type]
    stale = sorted(set(answers) - set(scan.matched))
    summary.update(
        label=label(backend_name), backend=backend_name, vqa_mode=wanted["vqa_mode"], pic_num=pic_num,
        resolution=resolution, official_quirks=quirks, questions_csv=str(questions), images=scan.to_dict(),
        answers=str(answers_path), out=str(out_dir), notes=list(getattr(tables, "notes", [])),
        stale_answers=stale, questions_asked=asked, vqa_seconds=round(elapsed, 3),
        provenance=meta.get("vqa"),
        items={k: v.to_dict() for k, v in results.items() if isinstance(v, ItemScore)},
    )
    _write_json(out_dir / SUMMARY, summary)
    text = "\n".join([f"{summary['label']}  (VQA backend: {backend_name}" +
                      (f", {wanted['vqa_mode']} mode" if wanted["vqa_mode"] else "") + ")",
                      format_summary(summary), *scan.report()])
    (out_dir / RESULTS).write_text(text + "\n", encoding="utf-8")
    return summary


def _weights_id(described: dict[str, Any]) -> Any:
    return described.get("checkpoint_sha256") or described.get("folder")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
