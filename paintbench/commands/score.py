"""`paintbench score`: score a folder of images, or a JSONL of {image, prompt}, with several metrics.

Writes `OUT/scores.jsonl` (one line per sample, in input order) and `OUT/summary.json` (mean, std,
n per metric, the failed samples, provenance). A sample that cannot be read, or that a metric cannot
score, is reported with its reason in both files and the others are scored; the exit status is then 3.

Prompts for a folder come from `--prompts FILE`:
- `.jsonl`: lines of {"image": NAME, "prompt": TEXT} (NAME relative to the folder);
- `.json`: an object {NAME: TEXT};
- `.txt`: one prompt per line, matched to the images in sorted file-name order (a single line is
  used for every image);
or, without `--prompts`, from a sidecar `NAME.txt` next to each image when present.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paintbench.errors import UserError

EXIT_SOME_FAILED = 3


@dataclass
class Sample:
    id: str
    image: str
    prompt: str | None = None
    metadata: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", action="append", required=True, help="metric name; repeat for several")
    p.add_argument("--images", required=True, help="a folder of images or a JSONL of {image, prompt}")
    p.add_argument("--prompts", help="prompts for a folder: .jsonl {image, prompt}, .json {name: prompt} or .txt")
    p.add_argument("--weights-dir", help="weights directory (default: $PAINTBENCH_WEIGHTS or ~/.cache/paintbench/weights)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--dtype", default="float32", help="float32 (default, parity), bfloat16 or float16")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", required=True, help="output folder for scores.jsonl and summary.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- inputs ------------------------------------------------------------------------------------------
def collect_samples(images: str | os.PathLike[str], prompts: str | os.PathLike[str] | None = None) -> list[Sample]:
    """The samples to score, in a stable order, with prompts attached. Pure file reading."""
    from metrics.images import IMAGE_SUFFIXES, list_image_files

    src = Path(images)
    if not src.exists():
        raise UserError(f"{src}: no such file or folder")
    if src.is_file():
        if src.suffix.lower() != ".jsonl":
            raise UserError(f"{src}: --images must be a folder or a .jsonl file")
        if prompts:
            raise UserError("--prompts is only for folders; a JSONL carries its own prompts")
        return _samples_from_jsonl(src)
    files = list_image_files(src)
    if not files:
        raise UserError(f"{src}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    samples = [Sample(id=f.name, image=str(f)) for f in files]
    if prompts:
        table = _read_prompt_file(Path(prompts), [f.name for f in files])
        for s in samples:
            s.prompt = table.get(s.id)
    else:
        for s, f in zip(samples, files, strict=True):
            side = f.with_suffix(".txt")
            if side.is_file():
                s.prompt = side.read_text(encoding="utf-8").strip()
    return samples


def _samples_from_jsonl(path: Path) -> list[Sample]:
    samples = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        sid = f"{path.name}:{lineno}"
        try:
            rec = json.loads(line)
            image = rec["image"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            samples.append(Sample(id=sid, image="", errors={"input": f"{sid}: malformed line ({e})"}))
            continue
        prompt = rec.get("prompt")
        s = Sample(id=str(rec.get("id", sid)), image=str(path.parent / image), metadata=rec.get("metadata"))
        if prompt is not None and not isinstance(prompt, str):
            s.errors["input"] = f"{sid}: prompt is {type(prompt).__name__}, not a string"
        else:
            s.prompt = prompt
        samples.append(s)
    if not samples:
        raise UserError(f"{path}: no samples")
    return samples


def _read_prompt_file(path: Path, names: list[str]) -> dict[str, str]:
    if not path.is_file():
        raise UserError(f"{path}: no such prompts file")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        table = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    table[Path(rec["image"]).name] = str(rec["prompt"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise UserError(f"{path}:{lineno}: expected {{\"image\": ..., \"prompt\": ...}} ({e})") from e
        return table
    if suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object {{image name: prompt}}")
        return {Path(k).name: str(v) for k, v in data.items()}
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1:
        return dict.fromkeys(names, lines[0])
    if len(lines) != len(names):
        raise UserError(f"{path}: {len(lines)} prompts for {len(names)} images (one per line, in sorted file order)")
    return dict(zip(names, lines, strict=True))


# -- scoring -----------------------------------------------------------------------------------------
def score_samples(samples: list[Sample], providers: dict[str, Any], *, batch_size: int,
                  progress: bool = True) -> dict[str, list[tuple[float, dict] | None]]:
    """Score every sample with every provider; bad samples get errors, never abort the run.

    Images are decoded once per batch and shared by all providers. A provider failing on a batch is
    retried sample by sample, so the failure is pinned on the sample that caused it.
    """
    from tqdm import tqdm

    from metrics.images import BadImageError, load_image

    results: dict[str, list[tuple[float, dict] | None]] = {m: [None] * len(samples) for m in providers}
    bar = tqdm(total=len(samples), unit="img", disable=not progress, file=sys.stderr)
    for start in range(0, len(samples), batch_size):
        chunk = list(range(start, min(start + batch_size, len(samples))))
        decoded: dict[int, Any] = {}
        for i in chunk:
            s = samples[i]
            if "input" in s.errors:
                continue
            try:
                decoded[i] = load_image(s.image, name=s.image)
            except BadImageError as e:
                s.errors["image"] = str(e)
        for name, provider in providers.items():
            usable = [i for i in decoded if samples[i].prompt is not None or not provider.needs_prompt]
            for i in decoded:
                if i not in usable:
                    samples[i].errors[name] = f"{samples[i].id}: no prompt (needed by {name})"
            _score_group(name, provider, samples, decoded, usable, results[name])
        bar.update(len(chunk))
    bar.close()
    return results


def _score_group(name, provider, samples, decoded, idx, out) -> None:
    if not idx:
        return
    prompts = [samples[i].prompt or "" for i in idx] if provider.needs_prompt else None
    meta = [samples[i].metadata or {} for i in idx] if any(samples[i].metadata for i in idx) else None
    for i, (v, d, err) in zip(idx, provider.score_each([decoded[i] for i in idx], prompts, meta), strict=True):
        if err is None:
            out[i] = (v, d)
        else:
            samples[i].errors[name] = f"{samples[i].id}: {err}"


def summarize(samples: list[Sample], results: dict[str, list], providers: dict[str, Any]) -> dict[str, Any]:
    per_metric = {}
    for name, vals in results.items():
        xs = [v[0] for v in vals if v is not None]
        n = len(xs)
        mean = sum(xs) / n if n else None
        std = (math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0) if n else None
        per_metric[name] = {
            "mean": mean, "std": std, "n": n, "n_failed": len(samples) - n,
            "higher_is_better": providers[name].higher_is_better,
            "provenance": providers[name].provenance(),
        }
    failed = [{"id": s.id, "image": s.image, "errors": s.errors} for s in samples if s.errors]
    return {"n_samples": len(samples), "metrics": per_metric, "failed": failed, "std": "sample (ddof=1)"}


def run(args: argparse.Namespace) -> int:
    import torch

    import metrics

    names = [metrics.spec(m).name for m in args.metric]  # unknown names fail before any work
    samples = collect_samples(args.images, args.prompts)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    providers = {}
    for name in dict.fromkeys(names):
        providers[name] = metrics.get(name, device=device, dtype=args.dtype,
                                           batch_size=args.batch_size, weights_dir=args.weights_dir)
    results = score_samples(samples, providers, batch_size=args.batch_size, progress=not args.no_progress)
    summary = summarize(samples, results, providers)
    summary.update({"device": device, "dtype": args.dtype, "images": str(args.images)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "scores.jsonl", _records(samples, results))
    _write_json(out / "summary.json", summary)
    print(format_summary(summary))
    return EXIT_SOME_FAILED if summary["failed"] else 0


def _records(samples, results):
    for i, s in enumerate(samples):
        rec: dict[str, Any] = {"id": s.id, "image": s.image, "prompt": s.prompt, "scores": {}, "details": {}}
        for name, vals in results.items():
            if vals[i] is not None:
                rec["scores"][name] = vals[i][0]
                rec["details"][name] = vals[i][1]
        if s.errors:
            rec["errors"] = s.errors
        yield rec


def _write_jsonl(path: Path, records) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':<16} {'mean':>12} {'std':>12} {'n':>7} {'failed':>7}"]
    for name, m in summary["metrics"].items():
        mean = "-" if m["mean"] is None else f"{m['mean']:.6f}"
        std = "-" if m["std"] is None else f"{m['std']:.6f}"
        lines.append(f"{name:<16} {mean:>12} {std:>12} {m['n']:>7} {m['n_failed']:>7}")
    if summary["failed"]:
        lines.append(f"\n{len(summary['failed'])} sample(s) with errors:")
        for f in summary["failed"][:20]:
            for where, msg in f["errors"].items():
                lines.append(f"  [{where}] {msg}")
        if len(summary["failed"]) > 20:
            lines.append(f"  ... and {len(summary['failed']) - 20} more (see summary.json)")
    return "\n".join(lines)
