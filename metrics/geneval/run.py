"""The GenEval evaluation loop over a folder in the official layout: incremental, resumable, loud.

`evaluate_folder(DIR, OUT, provider)`:

- scans DIR (`metrics.geneval.layout.scan`) and reports every file it will not score;
- reads OUT if it exists and skips the images already in it (keyed by `filename`), so an interrupted
  run continues where it stopped; a torn last line (a process killed mid-write) is dropped and that
  image is done again; a sidecar `OUT.meta.json` records the provider's provenance, and a resume with
  different weights or options is refused instead of mixing results;
- decodes images on a small thread pool while the device works, scores them in batches, and appends
  one line per image (GenEval's `results.jsonl` fields plus reward, detections and colours) after each
  batch, flushed and fsynced;
- an image that cannot be decoded or scored gets a line with `error` (and no `correct`); it is retried
  on the next resume and listed in the summary, never silently dropped;
- returns the official summary (`metrics.geneval.summarize` over the latest line of every image).
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metrics.geneval.aggregate import format_summary, summarize
from metrics.geneval.layout import ImageItem, Layout, Problem, load, scan
from metrics.geneval.provider import official_record

PREFETCH = 2


@dataclass
class RunResult:
    out_file: Path
    layout: Layout
    scored: int = 0  # images scored by this call
    skipped: int = 0  # images found finished in OUT and not redone
    errors: list[dict[str, str]] = field(default_factory=list)  # {"filename", "error"} of this call and earlier
    summary: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every image found was scored and no file was skipped (warnings allowed)."""
        return not self.errors and not self.layout.unscored


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results file; a torn or unparsable last line is ignored (it is redone). A bad
    line elsewhere is an error naming the line: the file is not ours or was edited."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if n >= len(lines) - 1:  # the last line, without its newline: torn by an interruption
                continue
            raise ValueError(f"{path}:{n}: not a JSON line ({e}); is this a GenEval results file?") from e
        if not isinstance(rec, dict) or "filename" not in rec:
            raise ValueError(f"{path}:{n}: no 'filename' field; is this a GenEval results file?")
        records.append(rec)
    return records


def latest_by_filename(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        out[rec["filename"]] = rec
    return out


def _repair_tail(path: Path) -> None:
    """Cut a torn last line so the next append starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(cut)


# provenance fields that do not change a results line (the line holds both verdict and reward)
_NOT_COMPARED = ("value",)


def _check_meta(meta_file: Path, provenance: dict[str, Any], resume: bool) -> None:
    comparable = {k: v for k, v in provenance.items() if k not in _NOT_COMPARED}
    if resume and meta_file.exists():
        old = json.loads(meta_file.read_text(encoding="utf-8"))
        old_cmp = {k: v for k, v in old.items() if k not in _NOT_COMPARED}
        if old_cmp != comparable:
            diff = sorted(k for k in set(old_cmp) | set(comparable) if old_cmp.get(k) != comparable.get(k))
            raise ValueError(
                f"{meta_file}: the existing results were produced with different settings ({', '.join(diff)}); "
                "resume with the same weights and options, or write to a new --out (or pass --overwrite)"
            )
    meta_file.write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def evaluate_folder(
    image_dir: str | Path,
    out_file: str | Path,
    provider: Any,
    *,
    batch_size: int | None = None,
    resume: bool = True,
    progress: bool = False,
    limit: int | None = None,
    workers: int = 4,
    log: Callable[[str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> RunResult:
    """Score every image of the official layout in `image_dir` into `out_file` (see the module doc).

    `limit` stops after that many newly scored images (a deliberate interruption); `on_batch(n_done)`
    is called after each batch is written.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_file = Path(out_file)
    layout = scan(image_dir)
    for p in layout.problems:
        log(str(p))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if not resume and out_file.exists():
        out_file.unlink()
    _check_meta(out_file.with_name(out_file.name + ".meta.json"), provider.provenance(), resume)
    _repair_tail(out_file)
    previous = latest_by_filename(read_results(out_file))
    # finished = scored before with the same metadata (an edited metadata.jsonl makes the image due again)
    todo = [it for it in layout.items
            if not ("correct" in previous.get(it.filename, {})
                    and previous[it.filename].get("metadata") == json.dumps(it.metadata))]
    result = RunResult(out_file=out_file, layout=layout, skipped=len(layout.items) - len(todo))
    if result.skipped:
        log(f"resuming: {result.skipped} image(s) already in {out_file}, {len(todo)} to go")
    if limit is not None:
        todo = todo[:limit]
    bs = batch_size or getattr(provider, "batch_size", 16)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="img", disable=not progress, file=sys.stderr)
    batches = [todo[i : i + bs] for i in range(0, len(todo), bs)]
    with open(out_file, "a", encoding="utf-8") as fh, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # decode up to `PREFETCH` batches ahead of the device, one image per task
        pending: deque[list[Future[Any]]] = deque()
        for b in batches[:PREFETCH]:
            pending.append([pool.submit(_decode, it) for it in b])
        for n, batch in enumerate(batches):
            decoded = [f.result() for f in pending.popleft()]
            if n + PREFETCH < len(batches):
                pending.append([pool.submit(_decode, it) for it in batches[n + PREFETCH]])
            lines = _score_batch(provider, batch, decoded)
            for rec in lines:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                if "error" in rec:
                    log(f"error: {rec['error']}")
            fh.flush()
            os.fsync(fh.fileno())
            result.scored += sum("correct" in rec for rec in lines)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(result.scored)
    bar.close()
    latest = latest_by_filename(read_results(out_file))
    known = {it.filename for it in layout.items}
    result.records = [rec for fn, rec in latest.items() if fn in known]
    result.errors = [{"filename": r["filename"], "error": r["error"]} for r in result.records if "error" in r]
    rows = [r for r in result.records if "correct" in r]
    result.summary = summarize(rows) if rows else None
    return result


def _decode(item: ImageItem) -> Any:
    """The item's PIL image, or the exception that decoding it raised (reported per file)."""
    try:
        return load(item)
    except Exception as e:
        return e


def _score_batch(provider: Any, batch: list[ImageItem], decoded: list[Any]) -> list[dict[str, Any]]:
    records: list[dict[str, Any] | None] = [None] * len(batch)
    good = []
    for i, (item, img) in enumerate(zip(batch, decoded, strict=True)):
        if isinstance(img, Exception):
            records[i] = _error(item, str(img))
        else:
            good.append(i)
    if good:
        results = provider.score_each([decoded[i] for i in good], [batch[i].metadata.get("prompt", "") for i in good],
                                      [batch[i].metadata for i in good])
        for i, (_, det, err) in zip(good, results, strict=True):
            records[i] = _error(batch[i], err) if err else official_record(batch[i].filename, batch[i].metadata, det)
    return [r for r in records if r is not None]


def _error(item: ImageItem, message: str) -> dict[str, Any]:
    msg = message if str(item.path) in message else f"{item.path}: {message}"
    return {"filename": item.filename, "tag": item.metadata.get("tag"), "metadata": json.dumps(item.metadata),
            "error": msg}


def report(result: RunResult) -> str:
    """The official summary text, followed by what was not scored (if anything)."""
    parts = []
    if result.summary is not None:
        parts.append(format_summary(result.summary))
    else:
        parts.append("No images were scored.\n")
    problems: list[Problem] = result.layout.problems
    if problems or result.errors:
        lines = ["Not scored / warnings", "====================="]
        lines += [str(p) for p in problems]
        lines += [f"error: {e['error']}" for e in result.errors]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
