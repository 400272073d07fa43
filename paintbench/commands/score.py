"""`paintbench score`: score a folder of images, or a JSONL of {image, prompt}, with several metrics.

OUT is a run directory of the one run engine (`harness.folders`): the images are read where they are
(their sha256 recorded), each metric's scores go to `OUT/scores/<metric>.jsonl` as they are computed, so
an interrupted call resumes where it stopped, and a call with other inputs, metrics or settings on the
same OUT is refused. When the run is finished the familiar reports are written: `OUT/scores.jsonl` (one
line per input, in input order, every metric) and `OUT/summary.json` (mean, std, n per metric, the
failed samples, provenance), plus the engine's `OUT/results.json` (with bootstrap CIs). A sample that
cannot be read, or that a metric cannot score, is reported with its reason in both files and the others
are scored; the exit status is then 3.

Prompts for a folder come from `--prompts FILE`:
- `.jsonl`: lines of {"image": NAME, "prompt": TEXT} (NAME relative to the folder);
- `.json`: an object {NAME: TEXT};
- `.txt`: one prompt per line, matched to the images in sorted file-name order (a single line is
  used for every image);
or, without `--prompts`, from a sidecar `NAME.txt` next to each image when present.
"""

from __future__ import annotations

import argparse

from paintbench.errors import UserError

EXIT_SOME_FAILED = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", action="append", required=True, help="metric name; repeat for several")
    p.add_argument("--images", required=True, help="a folder of images or a JSONL of {image, prompt}")
    p.add_argument("--prompts", help="prompts for a folder: .jsonl {image, prompt}, .json {name: prompt} or .txt")
    p.add_argument("--weights-dir", help="weights directory (default: $PAINTBENCH_WEIGHTS or ~/.cache/paintbench/weights)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--dtype", default="float32", help="float32 (default, parity), bfloat16 or float16")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", required=True, help="run directory: scores, scores.jsonl and summary.json (resumed if it exists)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--server", help="URL of a `paintbench serve`: score there instead of in this process")
    p.add_argument("--token-file", help="file holding the server's token (when it is not on loopback)")


def run(args: argparse.Namespace) -> int:
    from paintbench import metrics
    from paintbench.harness.config import EvalConfig
    from paintbench.harness.folder_reports import format_score_summary, score_report
    from paintbench.harness.folders import read_image_inputs, run_folder
    from paintbench.harness.rundir import RunDir

    names = list(dict.fromkeys(metrics.spec(m).name for m in args.metric))  # unknown names fail before any work
    fi = read_image_inputs(args.images, args.prompts, names)
    needing = [n for n in names if metrics.spec(n).needs_prompt]
    if needing and fi.suite.items and all(it.prompt is None for it in fi.suite.items):
        raise UserError(f"{', '.join(needing)} score(s) an image against its prompt, and {args.images} gives "
                        "none: pass --prompts FILE (or put a NAME.txt beside each image)")
    cfg = EvalConfig(out=str(args.out), weights_dir=args.weights_dir, device=args.device, dtype=args.dtype,
                     batch_size=args.batch_size, progress=not args.no_progress, score_server=args.server,
                     score_token_file=args.token_file)
    run_folder(fi, cfg)
    summary = score_report(RunDir(args.out), fi, extra={"device": args.device or "auto", "dtype": args.dtype,
                                                        "images": str(args.images)})
    print(format_score_summary(summary))
    return EXIT_SOME_FAILED if summary["failed"] else 0
