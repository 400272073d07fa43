"""`paintbench geneval DIR`: GenEval on a folder in the official layout, like `evaluate_images.py` +
`summary_scores.py` in one step.

DIR holds `00000/metadata.jsonl` and `00000/samples/0000k.png` per prompt (GenEval's generation
layout), or is a paintbench run directory (`paintbench eval ... --out DIR`), whose images are then
scored into its `scores/geneval.jsonl` (resumably) and summarised the same way; the flags that only
make sense for a folder (`--out`, thresholds, weight files ...) are refused there rather than ignored.

A folder is read as a suite (`harness.folders.read_geneval_folder`) and scored by the one run engine
into the run directory `--out` (default: `DIR-geneval` beside DIR): `--out/results.jsonl` holds one JSON
line per image with GenEval's fields (filename, tag, prompt, correct, reason, metadata, details) plus
reward, strict, detections and colours; `--out/results.json` the engine's results with bootstrap CIs.
Rerunning the same command continues an interrupted run without redoing finished images; other
settings on the same `--out` are refused (`--overwrite` starts over). The summary is printed in the
official format.

Exit status: 0 when every image was scored and nothing in DIR was skipped; 3 when some files were not
scored (each is named on stderr and in the report); 2 for a usage or setup error (e.g. missing weights).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from paintbench.errors import UserError

EXIT_SOME_FAILED = 3
FOLDER_SUITE_FORMATS = ("geneval-folder", "dpg-folder", "image-folder")  # harness.folders

# Flags that only apply to a folder in GenEval's layout, with their defaults. On a paintbench run
# directory the scores go into the run itself, with the run's (official) GenEval settings, so these
# would be silently ignored there; `run_on_harness_run` refuses them instead.
FOLDER_ONLY_DEFAULTS: dict[str, object] = {
    "out": None,
    "overwrite": False,
    "summary_json": None,
    "detector_weights": None,
    "clip_weights": None,
    "threshold": 0.3,
    "counting_threshold": 0.9,
    "max_objects": 16,
    "max_overlap": 1.0,
    "position_threshold": 0.1,
}


def _scale(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LONG,SHORT (e.g. 1333,800), got {text!r}") from None
    return a, b


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="image folder in GenEval's layout (00000/metadata.jsonl, 00000/samples/*.png)")
    p.add_argument("--out", help="run directory (default: DIR-geneval beside DIR); resumed if it exists")
    p.add_argument("--overwrite", action="store_true", help="delete the run directory --out and start over")
    p.add_argument("--weights-dir", help="weights directory (default: $PAINTBENCH_WEIGHTS or ~/.cache/paintbench/weights)")
    p.add_argument("--detector-weights", help="detector checkpoint: GenEval's .pth (mmdet 2.x/3.x) or an HF folder")
    p.add_argument("--clip-weights", help="OpenAI CLIP ViT-L-14.pt for the colour classifier")
    p.add_argument("--detector", choices=("official", "hf", "mmdet"), default="official",
                   help="official: GenEval's checkpoint on transformers (default); hf: the HF hub checkpoint "
                   "(a different training run); mmdet: GenEval's checkpoint through mmdet itself (needs mmcv)")
    p.add_argument("--mmdet-config", help="mmdet config for --detector mmdet (default: GenEval's, from mmdet)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--dtype", default="float32", help="float32 (default, parity), bfloat16 or float16")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threshold", type=float, default=FOLDER_ONLY_DEFAULTS["threshold"],
                   help="detection score threshold (official 0.3)")
    p.add_argument("--counting-threshold", type=float, default=FOLDER_ONLY_DEFAULTS["counting_threshold"],
                   help="threshold for counting prompts (0.9)")
    p.add_argument("--max-objects", type=int, default=FOLDER_ONLY_DEFAULTS["max_objects"],
                   help="detections kept per class (16)")
    p.add_argument("--max-overlap", type=float, default=FOLDER_ONLY_DEFAULTS["max_overlap"],
                   help="NMS IoU threshold; 1.0 = no NMS (official)")
    p.add_argument("--position-threshold", type=float, default=FOLDER_ONLY_DEFAULTS["position_threshold"],
                   help="position rule shrink (0.1)")
    p.add_argument("--scale", type=_scale, default=None, help="detector resize target LONG,SHORT (official 1333,800)")
    p.add_argument("--summary-json", help="also write the summary numbers to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def metric_options(args: argparse.Namespace) -> dict[str, object]:
    """The `geneval` provider options the flags ask for (recorded with the run's scores)."""
    from paintbench.metrics.geneval.provider import CLIP_WEIGHT, DETECTOR_WEIGHT, HF_DETECTOR_WEIGHT

    weights = {}
    if args.detector_weights:
        weights[HF_DETECTOR_WEIGHT if args.detector == "hf" else DETECTOR_WEIGHT] = str(Path(args.detector_weights).resolve())
    if args.clip_weights:
        weights[CLIP_WEIGHT] = str(Path(args.clip_weights).resolve())
    options: dict[str, object] = {
        "mode": "correct", "detector": args.detector,
        "options": {"threshold": args.threshold, "counting_threshold": args.counting_threshold,
                    "max_objects": args.max_objects, "nms_threshold": args.max_overlap,
                    "position_threshold": args.position_threshold},
    }
    if weights:
        options["weights"] = weights
    if args.scale:
        options["detector_scale"] = list(args.scale)
    if args.mmdet_config:
        options["mmdet_config"] = args.mmdet_config
    return options


def run(args: argparse.Namespace) -> int:
    from paintbench.harness.config import EvalConfig
    from paintbench.harness.folder_reports import geneval_report
    from paintbench.harness.folders import read_geneval_folder, run_folder
    from paintbench.harness.rundir import RunDir, write_json

    root = Path(args.dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if (root / "config.yaml").is_file() and (root / "samples.jsonl").is_file():
        return run_on_harness_run(root, args)
    out = Path(args.out) if args.out else root.resolve().with_name(root.resolve().name + "-geneval")
    if out.suffix == ".jsonl" or out.is_file():
        raise UserError(f"--out {out}: give a run directory; GenEval's results.jsonl is written inside it")
    if args.overwrite and (out / "config.yaml").is_file():
        shutil.rmtree(out)
    fi = read_geneval_folder(root, metric_options(args))
    cfg = EvalConfig(out=str(out), weights_dir=args.weights_dir, device=args.device, dtype=args.dtype,
                     batch_size=args.batch_size, progress=not args.no_progress)
    run_folder(fi, cfg)
    report = geneval_report(RunDir(out), fi)
    print(report.text, end="")
    print(f"results: {out / 'results.jsonl'}", file=sys.stderr)
    if args.summary_json and report.summary is not None:
        provenance = out / "scores" / "geneval.provenance.json"
        write_json(Path(args.summary_json), {
            **report.summary, "not_scored": report.not_scored,
            "provenance": json.loads(provenance.read_text(encoding="utf-8")) if provenance.is_file() else None})
    return 0 if report.complete else EXIT_SOME_FAILED


def run_on_harness_run(root: Path, args: argparse.Namespace) -> int:
    """Score a paintbench run directory's images with GenEval (0/1 correctness) and print the official
    summary. Only missing scores are computed: an interrupted call continues where it stopped."""
    from paintbench.config import build
    from paintbench.harness.evaluate import EvalConfig, run_eval
    from paintbench.harness.rundir import RunDir, read_jsonl
    from paintbench.metrics.geneval import format_summary, summarize

    refuse_folder_only_flags(root, args)
    rd = RunDir(root)
    doc = rd.read_config()
    prompts = (doc.get("suite") or {}).get("prompts") or {}
    if prompts.get("format") in FOLDER_SUITE_FORMATS:
        raise UserError(f"{root} is the output of scoring the folder {prompts.get('source')}; rerun that command "
                        f"(`paintbench geneval {prompts.get('source')} --out {root}`) to resume it")
    old = doc.get("eval", {})
    names = list(dict.fromkeys([m["name"] for m in doc.get("metrics", [])] + ["geneval"]))  # keep the run's metrics
    options = {"mode": "correct", "detector": args.detector}
    if args.scale:
        options["detector_scale"] = list(args.scale)
    if args.mmdet_config:
        options["mmdet_config"] = args.mmdet_config
    cfg = build(EvalConfig, old, {"metrics": names, "metric_options": {**old.get("metric_options", {}), "geneval": options},
                                  "weights_dir": args.weights_dir, "device": args.device, "dtype": args.dtype,
                                  "batch_size": args.batch_size, "progress": not args.no_progress, "out": str(root)},
                source=str(rd.config_path))
    run_eval(cfg)
    samples = {(s["prompt_id"], s["sample_index"]): s for s in read_jsonl(rd.samples_path)[0]}
    records = read_jsonl(rd.scores_path("geneval"))[0]
    rows = [{"tag": samples[(r["prompt_id"], r["sample_index"])]["category"], "prompt_index": r["prompt_id"],
             "correct": _is_correct(r)} for r in records if r.get("value") is not None]
    if not rows:
        raise UserError(f"{root}: no image could be scored with GenEval")
    from paintbench.harness.badges import headline_tags

    prov_path = rd.root / "scores" / "geneval.provenance.json"
    tags = headline_tags("geneval", None, json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else {})
    if tags:
        print(f"GenEval{tags}")
    print(format_summary(summarize(rows)), end="")
    failed = [r for r in records if r.get("value") is None]
    for r in failed:
        print(f"not scored: {r.get('error')}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed or len(records) < len(samples) else 0


def _is_correct(record: dict) -> bool:
    """GenEval's 0/1 verdict of a score record: `details.correct` (also present when the run scored
    in reward mode, where `value` is a partial credit), else `value == 1.0`."""
    details = record.get("details")
    if isinstance(details, dict) and "correct" in details:
        return bool(details["correct"])
    return record["value"] == 1.0


def refuse_folder_only_flags(root: Path, args: argparse.Namespace) -> None:
    """A run directory is scored with the run's own settings into the run itself; a folder-only flag
    given with it would be silently ignored, so it is an error that says what to use instead."""
    given = [
        "--" + key.replace("_", "-")
        for key, default in FOLDER_ONLY_DEFAULTS.items()
        if getattr(args, key, default) != default
    ]
    if given:
        raise UserError(
            f"{root} is a paintbench run directory: {', '.join(given)} only apply to a folder in GenEval's "
            "layout (scores go to RUN/scores/geneval.jsonl and RUN/results.json; weights come from "
            "--weights-dir); to re-score the run with other settings use `paintbench eval --rescore geneval "
            "--out RUN --metric-opt geneval.KEY=VALUE`"
        )
