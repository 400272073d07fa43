"""`paintbench dpg eval|rescore`: DPG-Bench on a folder of 2×2 grids, and rescoring saved answers.

    paintbench dpg eval --questions dpg_bench.csv --images grids/ --resolution 512 [--pic-num 4]
        [--backend mplug] [--mode official|fixed] [--vqa-mode fast|reference] [--weights-dir DIR]
        [--out DIR]
    paintbench dpg rescore --questions dpg_bench.csv --answers DIR/answers.json --mode fixed [--out FILE]

`eval` asks the VQA model every question on every tile and saves the answers (resumable); `rescore`
recomputes the numbers from saved answers in either mode without any model. Exit status: 0 when
every item was scored, 3 when some items failed (they are listed), 2 on a usage or input error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from paintbench.errors import UserError

EXIT_SOME_FAILED = 3
MODES = ("official", "fixed")
BACKENDS = ("mplug", "blip-vqa", "qwen-vl")


def _reader(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv-reader", choices=("official", "strict"), default=None,
                   help="question CSV reader (default: official in official mode, strict in fixed mode)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    r = sub.add_parser("rescore", help="score saved VQA answers (answers.json) without running any model")
    r.add_argument("--questions", required=True, help="DPG question CSV (dpg_bench.csv format)")
    r.add_argument("--answers", required=True, help="answers.json: {item_id: [tile -> {question: answer}]}")
    r.add_argument("--mode", choices=MODES, default="official", help="scoring rules (default: official)")
    _reader(r)
    r.add_argument("--out", help="also write the full result (numbers, failures, per item) to this JSON file")
    r.add_argument("--json", action="store_true", help="print the result as JSON instead of text")

    e = sub.add_parser("eval", help="answer every question on every tile of a folder of grids, then score")
    e.add_argument("--questions", required=True, help="DPG question CSV (dpg_bench.csv format)")
    e.add_argument("--images", required=True, help="folder of 2x2 grids named <item_id>.<ext>")
    e.add_argument("--resolution", type=int, required=True, help="tile size R in pixels (grids are 2R x 2R)")
    e.add_argument("--pic-num", type=int, default=4, help="tiles used per grid, in order TL, TR, BL, BR (default 4)")
    e.add_argument("--backend", choices=BACKENDS, default="mplug",
                   help="VQA model (default mplug; others are labelled and not comparable with published DPG)")
    e.add_argument("--mode", choices=MODES, default="official", help="scoring rules (default: official)")
    _reader(e)
    e.add_argument("--vqa-mode", choices=("fast", "reference"), default="fast",
                   help="mPLUG execution: fast (tile encoded once, questions batched) or reference (official op order)")
    e.add_argument("--weights", help="the VQA model folder (mPLUG: the ModelScope folder); default: the weights dir")
    e.add_argument("--weights-dir", help="weights directory (default: $PAINTBENCH_WEIGHTS or ~/.cache/paintbench/weights)")
    e.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    e.add_argument("--dtype", default="float32", help="float32 (default; reference mode needs it), bfloat16, float16")
    e.add_argument("--trust-pickle", action="store_true",
                   help="allow a full (unsafe) unpickle of a checkpoint that is not a plain state dict")
    e.add_argument("--head-tying", choices=("strict", "transformers4", "untied"), default="strict",
                   help="mPLUG answer head vs word embeddings when they differ (default: refuse)")
    e.add_argument("--out", help="output folder (default: <images>-dpg); rerunning resumes it")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from paintbench.metrics.dpg import DPGError

    try:
        return _rescore(args) if args.action == "rescore" else _eval(args)
    except DPGError as e:
        raise UserError(str(e)) from e


def _quirks(args: argparse.Namespace) -> bool | None:
    return None if args.csv_reader is None else args.csv_reader == "official"


def _rescore(args: argparse.Namespace) -> int:
    from paintbench.metrics.dpg import format_summary, rescore

    for flag, path in (("--questions", args.questions), ("--answers", args.answers)):
        if not Path(path).is_file():
            raise UserError(f"{flag} {path}: no such file")
    summary = rescore(args.questions, args.answers, args.mode, official_quirks=_quirks(args))
    answers = Path(args.answers)
    meta_path = answers.with_name(answers.stem + ".meta.json")  # written beside it by `dpg eval`
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        summary.update(label=meta.get("label"), backend=meta.get("backend"), vqa_mode=meta.get("vqa_mode"),
                       pic_num=meta.get("pic_num"), resolution=meta.get("resolution"))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if args.json:
        json.dump(summary, sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        if summary.get("label"):
            print(f"{summary['label']}  (VQA backend: {summary.get('backend')})")
        print(format_summary(summary))
    return EXIT_SOME_FAILED if summary["failed"] else 0


def _eval(args: argparse.Namespace) -> int:
    """The folder of grids, read as a suite (`harness.folders.read_dpg_folder`), scored by the one run
    engine into the run directory `--out`; the DPG outputs are reports of the finished run."""
    from paintbench.harness.config import EvalConfig
    from paintbench.harness.folder_reports import RESULTS, dpg_report
    from paintbench.harness.folders import read_dpg_folder, run_folder
    from paintbench.harness.rundir import RunDir

    if not Path(args.questions).is_file():
        raise UserError(f"--questions {args.questions}: no such file")
    if not Path(args.images).is_dir():
        raise UserError(f"--images {args.images}: no such folder")
    images = Path(args.images).expanduser().resolve()
    out = Path(args.out).expanduser() if args.out else images.with_name(images.name + "-dpg")
    options: dict[str, object] = {"mode": args.mode, "backend": args.backend, "vqa_mode": args.vqa_mode,
                                  "pic_num": args.pic_num, "head_tying": args.head_tying}
    if args.csv_reader is not None:
        options["official_quirks"] = args.csv_reader == "official"
    if args.weights:
        options["weights"] = str(Path(args.weights).resolve())
    if args.trust_pickle:
        options["trust_pickle"] = True
    same_dir = out.resolve() == images
    fi = read_dpg_folder(args.questions, images, args.resolution, options,
                         skip_names=_RUN_NAMES if same_dir else ())
    cfg = EvalConfig(out=str(out), weights_dir=args.weights_dir, device=args.device, dtype=args.dtype,
                     batch_size=4, progress=not args.no_progress)
    run_folder(fi, cfg)
    summary = dpg_report(RunDir(out), fi)
    print((out / RESULTS).read_text(encoding="utf-8"), end="")
    print(f"outputs: {out}")
    return EXIT_SOME_FAILED if summary["failed"] else 0


# what a run directory holds, when --out is the image folder itself
_RUN_NAMES = ("config.yaml", "samples.jsonl", "results.json", "scores", "parts", "log.jsonl", "answers.json",
              "answers.meta.json", "summary.json", "results.txt", "images")
