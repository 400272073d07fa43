"""Report formats of a finished folder run (`harness.folders`), read from its run directory.

- GenEval: `results.jsonl` with the official fields of `evaluate_images.py` (plus reward, detections,
  colours) and the text of `summary_scores.py`, followed by what was not scored;
- DPG-Bench: `answers.json` (+ `answers.meta.json`, so `paintbench dpg rescore` works on it),
  `summary.json` and `results.txt` with the per-category lines;
- `paintbench score`: `scores.jsonl` (one line per input, in input order, every metric) and `summary.json`.

Each returns whether the run is complete (every input scored): the front ends exit 3 when it is not.
Nothing here computes a score: the numbers come from the run's records (DPG's prompt scores are
recomputed from the recorded answers by the same pure rules, exactly as `dpg rescore` does).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from paintbench.harness.badges import headline_tags
from paintbench.harness.folders import FolderInput
from paintbench.harness.records import read_scores
from paintbench.harness.rundir import RunDir, write_json, write_jsonl
from paintbench.metrics.registry import format_value
from paintbench.text import printable


def _records(rd: RunDir, metric: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(str(r["prompt_id"]), int(r["sample_index"])): r for r in read_scores(rd.scores_path(metric), metric)[0]}


def _generation_failures(rd: RunDir) -> dict[tuple[str, int], str]:
    return {(str(f["prompt_id"]), int(f["sample_index"])): str(f["error"]) for f in rd.generation_failures()}


# -- GenEval -------------------------------------------------------------------------------------------
@dataclass
class GenEvalReport:
    text: str  # the official summary, then every file not scored and every warning
    summary: dict[str, Any] | None  # the summary's numbers (None when no image was scored)
    not_scored: list[str]  # layout problems and per-image errors, each naming its file
    complete: bool


def geneval_report(rd: RunDir, fi: FolderInput) -> GenEvalReport:
    """GenEval's report of a finished folder run; writes RUN/results.jsonl in the official fields."""
    from paintbench.metrics.geneval.aggregate import format_summary, summarize
    from paintbench.metrics.geneval.provider import official_record

    scores, failed_gen = _records(rd, "geneval"), _generation_failures(rd)
    lines, errors = [], []
    for it in fi.suite.items:
        for k in range(len(it.files)):
            filename = fi.info["filenames"][(it.id, k)]
            rec = scores.get((it.id, k))
            why = failed_gen.get((it.id, k)) or (rec.get("error") if rec else "not scored")
            if rec is not None and not rec.get("error") and rec.get("value") is not None:
                lines.append(official_record(filename, it.metadata or {}, rec["details"]))
            else:
                lines.append({"filename": filename, "tag": (it.metadata or {}).get("tag"),
                              "metadata": json.dumps(it.metadata), "error": why})
                errors.append(why)
    write_jsonl(rd.root / "results.jsonl", lines)
    rows = [r for r in lines if "correct" in r]
    summary = summarize(rows) if rows else None
    prov_path = rd.root / "scores" / "geneval.provenance.json"
    prov = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else {}
    tags = headline_tags("geneval", None, prov)
    parts = [(f"GenEval{tags}\n" if tags else "") + (format_summary(summary) if summary is not None
                                                     else "No images were scored.\n")]
    if fi.problems or errors:
        section = ["Not scored / warnings", "====================="]
        section += fi.problems + [f"error: {e}" for e in errors]
        parts.append("\n".join(section) + "\n")
    return GenEvalReport(text="\n".join(parts), summary=summary, not_scored=fi.problems + errors,
                         complete=not errors and not fi.info["unscored"])


# -- DPG-Bench -----------------------------------------------------------------------------------------
ANSWERS, META, SUMMARY, RESULTS = "answers.json", "answers.meta.json", "summary.json", "results.txt"
META_FORMAT = "paintbench-dpg-answers/1"


def dpg_report(rd: RunDir, fi: FolderInput) -> dict[str, Any]:
    """DPG's summary of the run (also RUN/summary.json, RUN/results.txt); RUN/answers.json holds every
    recorded answer. Every item of the question table is scored or listed in `failed` with its reason."""
    from paintbench.metrics.dpg.answers import format_summary, save_answers
    from paintbench.metrics.dpg.questions import DPGError
    from paintbench.metrics.dpg.scoring import ItemScore, score_item, summarize

    scores, failed_gen = _records(rd, "dpg"), _generation_failures(rd)
    provenance = json.loads((rd.root / "scores" / "dpg.provenance.json").read_text(encoding="utf-8")) \
        if (rd.root / "scores" / "dpg.provenance.json").is_file() else {}
    options = fi.metric_options["dpg"]
    mode, pic_num = options.get("mode", "official"), int(options.get("pic_num", 4))
    tables, scan = fi.info["tables"], fi.info["scan"]
    answers: dict[str, list[dict[str, str]]] = {}
    results: dict[str, ItemScore | DPGError | str] = {}
    for item in tables:
        if item in fi.failures:
            results[item] = fi.failures[item]
            continue
        rec = scores.get((item, 0))
        tile_answers = (rec or {}).get("details", {}).get("answers")
        if tile_answers is not None:
            answers[item] = tile_answers
        if (item, 0) in failed_gen:
            results[item] = failed_gen[(item, 0)]
        elif tile_answers is None:
            results[item] = (rec or {}).get("error") or "not scored"
        else:
            try:
                results[item] = score_item(tables[item], tile_answers[:pic_num], mode)
            except DPGError as e:
                results[item] = e
    save_answers(rd.root / ANSWERS, answers)
    backend = provenance.get("backend", options.get("backend", "mplug"))
    label = provenance.get("label", "dpg")
    write_json(rd.root / META, {"format": META_FORMAT, "label": label, "backend": backend,
                                "vqa_mode": provenance.get("vqa_mode"), "resolution": options.get("resolution"),
                                "pic_num": pic_num, "dtype": provenance.get("dtype"), "vqa": provenance.get("vqa")})
    summary = summarize(results, mode)  # type: ignore[arg-type]
    summary.update(
        label=label, backend=backend, vqa_mode=provenance.get("vqa_mode"), pic_num=pic_num,
        resolution=options.get("resolution"), official_quirks=fi.info["official_quirks"],
        questions_csv=fi.info["questions"], images=scan.to_dict(), answers=str(rd.root / ANSWERS),
        out=str(rd.root), notes=list(getattr(tables, "notes", [])),
        questions_answered=sum(len(t) for a in answers.values() for t in a), provenance=provenance.get("vqa"),
        items={k: v.to_dict() for k, v in results.items() if isinstance(v, ItemScore)},
    )
    write_json(rd.root / SUMMARY, summary)
    head = f"{label}  (VQA backend: {backend}" + (f", {summary['vqa_mode']} mode" if summary["vqa_mode"] else "") + ")" \
        + headline_tags("dpg", None if summary.get("dpg") is None else summary["dpg"] / 100, provenance)
    (rd.root / RESULTS).write_text("\n".join([head, format_summary(summary), *scan.report()]) + "\n", encoding="utf-8")
    return summary


# -- paintbench score ----------------------------------------------------------------------------------
def score_report(rd: RunDir, fi: FolderInput, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """OUT/scores.jsonl (one line per input, in input order) and OUT/summary.json; returns the summary."""
    import paintbench.metrics as M

    metrics = [m.name for m in fi.suite.metrics]
    scores = {m: _records(rd, m) for m in metrics}
    failed_gen = _generation_failures(rd)
    by_id = {it.id: it for it in fi.suite.items}
    rows = []
    for sid in fi.info["order"]:
        if sid in fi.failures:
            rows.append({"id": sid, "image": "", "prompt": None, "scores": {}, "details": {},
                         "errors": {"input": fi.failures[sid]}})
            continue
        it = by_id[sid]
        row: dict[str, Any] = {"id": sid, "image": it.files[0], "prompt": it.prompt, "scores": {}, "details": {}}
        errors: dict[str, str] = {}
        if (sid, 0) in failed_gen:
            errors["image"] = failed_gen[(sid, 0)]
        else:
            for m in metrics:
                rec = scores[m].get((sid, 0))
                if rec is None:
                    errors[m] = "not scored"
                elif rec.get("error") or rec.get("value") is None:
                    errors[m] = rec.get("error") or "no value"
                else:
                    row["scores"][m] = rec["value"]
                    row["details"][m] = rec.get("details")
        if errors:
            row["errors"] = errors
        rows.append(row)
    write_jsonl(rd.root / "scores.jsonl", rows)
    per_metric = {}
    for m in metrics:
        xs = [r["scores"][m] for r in rows if m in r["scores"]]
        n = len(xs)
        mean = math.fsum(xs) / n if n else None
        std = (math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0) if n else None
        set_value = M.spec(m).set_value
        extra_m: dict[str, Any] = {}
        if set_value is not None and n:   # the official set value (torchmetrics' compute()), not the pair mean
            from paintbench.harness.aggregate import SET_TRANSFORMS

            detail, name = set_value
            raw = [float(r["details"][m][detail]) for r in rows if m in r["scores"]
                   and isinstance(r["details"].get(m), dict) and detail in r["details"][m]]
            if len(raw) == n:
                extra_m = {"mean_of_pairs": mean, "set_value": f"{name}(mean of {detail})"}
                mean = SET_TRANSFORMS[name](math.fsum(raw) / n)
        prov = rd.root / "scores" / f"{m}.provenance.json"
        per_metric[m] = {"mean": mean, "std": std, "n": n, "n_failed": len(rows) - n, **extra_m,
                         "higher_is_better": M.spec(m).higher_is_better,
                         "provenance": json.loads(prov.read_text(encoding="utf-8")) if prov.is_file() else None}
    summary = {"n_samples": len(rows), "metrics": per_metric, "std": "sample (ddof=1)",
               "failed": [{"id": r["id"], "image": r["image"], "errors": r["errors"]} for r in rows if "errors" in r],
               **(extra or {})}
    write_json(rd.root / "summary.json", summary)
    return summary


def format_score_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':<16} {'mean':>12} {'std':>12} {'n':>7} {'failed':>7}"]
    for name, m in summary["metrics"].items():
        mean = format_value(name, m["mean"])   # the metric's one display rule (as `results` and the site)
        std = format_value(name, m["std"])
        lines.append(f"{printable(name, 40):<16} {mean:>12} {std:>12} {m['n']:>7} {m['n_failed']:>7}"
                     + headline_tags(name, m["mean"], m.get("provenance")))
    if summary["failed"]:
        lines.append(f"\n{len(summary['failed'])} sample(s) with errors:")
        for f in summary["failed"][:20]:
            for where, msg in f["errors"].items():
                lines.append(f"  [{printable(where, 60)}] {printable(msg, 300)}")
        if len(summary["failed"]) > 20:
            lines.append(f"  ... and {len(summary['failed']) - 20} more (see summary.json)")
    return "\n".join(lines)
