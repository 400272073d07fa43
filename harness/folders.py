"""A user's folder of images as a suite, so every entry point runs through the one run engine.

`paintbench geneval DIR`, `paintbench dpg eval` and `paintbench score` do not have scoring loops of their
own: each reads its input here into a `FolderInput` (an in-memory `Suite` whose items list their own
files, plus the problems found while reading), and `run_folder` runs it with `harness.evaluate.run_eval`
and the `folder` generator (`layout: listed`), into an ordinary run directory. So they resume, refuse a
run directory made with other settings, retry failures and list every sample that was not scored exactly
as `paintbench eval` does; what is particular to each (GenEval's `results.jsonl` and summary, DPG's
answers and per-category lines, `score`'s table) is a report of the finished run (`harness.official`).

Reading is strict: a file that will not be scored is named in `problems` (and `failures` for the items
it leaves unscored), never dropped silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paintbench.errors import InputError, MissingFileError
from paintbench.harness.config import EvalConfig
from paintbench.harness.rundir import read_text
from paintbench.harness.suite import PromptItem, Suite, SuiteMetric


@dataclass
class FolderInput:
    """What a front end hands the run engine: the suite, the folder it came from, and what was not usable.

    `problems`: one line per file or folder not scored as it is (errors, skipped files, warnings).
    `failures`: item id -> why that item cannot be scored at all (it is not in the suite).
    `metric_options`: metric -> provider options; kept out of the suite's identity, so that a run asked
    again with other options is refused by the run engine naming the option (not as "another suite").
    `info`: what a report of the run needs besides the run directory (e.g. DPG's folder scan)."""

    suite: Suite
    source: Path
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def generator(self) -> str:
        return f"folder:{self.source}"


def _suite(name: str, source: Path, fmt: str, items: list[PromptItem], metric: SuiteMetric | list[SuiteMetric],
           **kwargs: Any) -> Suite:
    from paintbench.harness.suite import load_suite, suite_files

    layout = load_suite(name).leaderboard if name in suite_files() else None  # the shipped suite's table
    suite = Suite(name=name, version=1, description=f"{name} on the images of {source}",
                  prompts={"format": fmt, "source": str(source)},
                  metrics=metric if isinstance(metric, list) else [metric], leaderboard=layout, **kwargs)
    suite.__dict__["items"] = items  # the cached property, filled: the items come from the folder itself
    return suite


def run_folder(fi: FolderInput, cfg: EvalConfig, providers: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Run (or resume) `fi` into `cfg.out` with the run engine; results.json's content on rank 0.
    `providers`: metric name -> an already built provider (see `run_eval`)."""
    from paintbench.harness.evaluate import run_eval

    cfg.suite = fi.suite.name
    cfg.generator = fi.generator
    cfg.generator_options = {"layout": "listed"}
    cfg.metrics = [m.name for m in fi.suite.metrics]
    cfg.metric_options = fi.metric_options
    return run_eval(cfg, suite=fi.suite, providers=providers)


# -- GenEval's generation layout ------------------------------------------------------------------------
def read_geneval_folder(root: str | os.PathLike[str], options: dict[str, Any]) -> FolderInput:
    """`DIR/00000/metadata.jsonl` + `DIR/00000/samples/0000k.png` (GenEval's layout, read strictly by
    `metrics.geneval.layout.scan`): one item per prompt folder with its PNGs, scored by the `geneval`
    metric with `options` (0/1 correctness unless asked otherwise), macro-averaged over GenEval's tasks."""
    from paintbench.metrics.geneval.layout import scan
    from paintbench.metrics.geneval.rules import TAGS

    src = Path(root).expanduser().resolve()
    if not src.is_dir():
        raise MissingFileError(f"{root}: no such folder")
    layout = scan(Path(root).expanduser())  # filenames as GenEval's results spell them: DIR as given
    by_folder: dict[str, list[Any]] = {}
    for it in layout.items:
        by_folder.setdefault(it.prompt_folder, []).append(it)
    items = []
    for folder, images in by_folder.items():
        meta = images[0].metadata
        items.append(PromptItem(id=folder, prompt=meta.get("prompt", ""), category=meta.get("tag"), metadata=meta,
                                files=tuple(str(i.path.resolve()) for i in sorted(images, key=lambda i: i.sample_index))))
    metric = SuiteMetric(name="geneval", aggregation="macro", primary=True)
    suite = _suite("geneval", src, "geneval-folder", items, metric, images_per_prompt=4,
                   categories=[t for t in TAGS if any(it.category == t for it in items)] or list(TAGS))
    return FolderInput(suite=suite, source=src, problems=[str(p) for p in layout.problems],
                       metric_options={"geneval": {"mode": "correct", **options}},
                       info={"unscored": [str(p) for p in layout.unscored],
                             "filenames": {(folder, k): it.filename for folder, images in by_folder.items()
                                           for k, it in enumerate(sorted(images, key=lambda i: i.sample_index))}})


# -- DPG-Bench: a folder of 2x2 grids named by item id ---------------------------------------------------
def read_dpg_folder(questions: str | os.PathLike[str], images: str | os.PathLike[str], resolution: int | None,
                    options: dict[str, Any], *, skip_names: tuple[str, ...] = ()) -> FolderInput:
    """One grid per item of the question CSV (`metrics.dpg.grid.scan_folder`: missing, duplicate and
    wrong-size grids and extra files are listed), scored by the `dpg` metric with `options` (mode,
    backend, pic_num ...). Items whose table the reader cannot use are failures with the reason."""
    from paintbench.metrics.dpg.grid import scan_folder
    from paintbench.metrics.dpg.questions import QuestionTables, load_questions

    mode = options.get("mode", "official")
    quirks = options.get("official_quirks")
    quirks = (mode == "official") if quirks is None else bool(quirks)
    tables = load_questions(questions, official_quirks=quirks)
    src = Path(images).expanduser().resolve()
    failures: dict[str, str] = {}
    if isinstance(tables, QuestionTables):
        for item in tables:
            err = tables.lookup_error(item)
            if err is not None:
                failures[item] = str(err)
    scan = scan_folder(src, [i for i in tables if i not in failures], resolution=resolution,
                       official_keys=quirks, skip_names=skip_names)
    failures.update(scan.failures())
    items = [PromptItem(id=item, prompt=None, metadata={"item_id": item}, files=(str(path),))
             for item, path in scan.matched.items()]
    metric = SuiteMetric(name="dpg", primary=True)
    dpg_options = {**options, "questions": str(Path(questions).resolve()), "official_quirks": quirks,
                   "resolution": resolution}
    suite = _suite("dpg", src, "dpg-folder", items, metric, image_size=resolution or 512,
                   grid={"rows": 2, "cols": 2})
    return FolderInput(suite=suite, source=src, problems=scan.report()[1:], failures=failures,
                       metric_options={"dpg": dpg_options},
                       info={"tables": tables, "scan": scan, "questions": str(questions), "official_quirks": quirks})


# -- paintbench score: a folder of images, or a JSONL of {image, prompt} --------------------------------
def read_image_inputs(images: str | os.PathLike[str], prompts: str | os.PathLike[str] | None,
                      metrics: list[str], metric_options: dict[str, dict[str, Any]] | None = None) -> FolderInput:
    """One item per image, in a stable order, with its prompt (see `paintbench score --help` for where
    prompts come from). A JSONL line that cannot be read is a failure naming the line."""
    from paintbench.metrics.images import IMAGE_SUFFIXES, list_image_files

    src = Path(images).expanduser()
    if not src.exists():
        raise MissingFileError(f"{src}: no such file or folder")
    failures: dict[str, str] = {}
    order: list[str] = []
    if not src.is_dir() and not src.is_file():
        raise InputError(f"{src}: --images must be a folder or a .jsonl file (this is neither: a device, FIFO or "
                         "socket)")
    if src.is_file():
        if src.suffix.lower() != ".jsonl":
            raise InputError(f"{src}: --images must be a folder or a .jsonl file")
        if prompts:
            raise InputError("--prompts is only for folders; a JSONL carries its own prompts")
        items = _items_from_jsonl(src, failures, order)
    else:
        files = list_image_files(src)
        if not files:
            raise InputError(f"{src}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        table = _read_prompt_file(Path(prompts), [f.name for f in files]) if prompts else None
        items = []
        for f in files:
            if table is not None:
                text = table.get(f.name)
            else:
                side = f.with_suffix(".txt")
                text = read_text(side).strip() if side.is_file() else None
            items.append(PromptItem(id=f.name, prompt=text, files=(str(f.resolve()),)))
            order.append(f.name)
    chosen = [SuiteMetric(name=m, primary=i == 0) for i, m in enumerate(metrics)]
    suite = _suite("images", src.resolve(), "image-folder", items, chosen)
    return FolderInput(suite=suite, source=src.resolve(), failures=failures,
                       metric_options={m: dict(o) for m, o in (metric_options or {}).items()},
                       problems=[f"error: {why}" for why in failures.values()],
                       info={"order": order})


def _items_from_jsonl(path: Path, failures: dict[str, str], order: list[str]) -> list[PromptItem]:
    items: list[PromptItem] = []
    seen: set[str] = set()
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        sid = f"{path.name}:{lineno}"
        order.append(sid)
        try:
            rec = json.loads(line)
            image = rec["image"]
            if not isinstance(image, str):
                raise TypeError(f"image is {type(image).__name__}, not a path")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            failures[sid] = f"{sid}: malformed line ({type(e).__name__}: {e})"
            continue
        prompt = rec.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            failures[sid] = f"{sid}: prompt is {type(prompt).__name__}, not a string"
            continue
        item_id = str(rec.get("id", sid))
        if item_id in seen:
            raise InputError(f"{sid}: duplicate id {item_id!r}")
        seen.add(item_id)
        order[-1] = item_id
        metadata = rec.get("metadata")
        items.append(PromptItem(id=item_id, prompt=prompt, metadata=metadata if isinstance(metadata, dict) else None,
                                files=(str((path.parent / image).resolve()),)))
    if not items and not failures:
        raise InputError(f"{path}: no samples")
    return items


def _read_prompt_file(path: Path, names: list[str]) -> dict[str, str]:
    if path.is_dir():
        raise InputError(f"--prompts {path}: a folder; give a file (.jsonl of {{image, prompt}}, .json or .txt)")
    if not path.is_file():
        raise MissingFileError(f"{path}: no such prompts file")
    suffix = path.suffix.lower()
    text = read_text(path)
    if suffix == ".jsonl":
        table = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    table[Path(rec["image"]).name] = str(rec["prompt"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise InputError(f"{path}:{lineno}: expected {{\"image\": ..., \"prompt\": ...}} ({e})") from e
        return table
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object {{image name: prompt}}")
        return {Path(k).name: str(v) for k, v in data.items()}
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1:
        return dict.fromkeys(names, lines[0])
    if len(lines) != len(names):
        raise InputError(f"{path}: {len(lines)} prompts for {len(names)} images (one per line, in sorted file order)")
    return dict(zip(names, lines, strict=True))
