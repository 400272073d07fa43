"""`paintbench leaderboard RUN_DIR... [--train-log DIR...] [--experiment FILE...] --out SITE_DIR`: a static
site of leaderboards, run reports with every image, side-by-side comparisons, training reports and
training experiments (see leaderboards.build)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="run directories of `paintbench eval` (or folders holding several)")
    p.add_argument("--train-log", action="append", default=[], metavar="DIR",
                   help="trainer log directory (metrics.jsonl, samples/); repeatable")
    p.add_argument("--experiment", action="append", default=[], metavar="FILE",
                   help="training experiment summary (benchmarks/bench_hierarchy.py report --json); repeatable")
    p.add_argument("--out", required=True, metavar="SITE_DIR", help="where the site is written (rebuilt in place)")
    p.add_argument("--title", default="paintbench leaderboard", help="site title")
    p.add_argument("--baseline", help="run name or directory that comparisons measure against (default: the run with the most prompts)")
    p.add_argument("--images", choices=("copy", "symlink", "none"), default="copy",
                   help="full-size images: copy (hard link when possible; default), symlink (local viewing "
                        "only), none (thumbnails only)")
    p.add_argument("--thumb-size", type=int, default=256, help="thumbnail size in pixels (default 256)")
    p.add_argument("--jobs", type=int, default=None, help="processes making thumbnails (default: all cores)")
    p.add_argument("--alpha", type=float, default=0.05, help="level of the tie test (default 0.05)")
    p.add_argument("--n-resamples", type=int, default=10_000, help="bootstrap resamples of the paired tests")
    p.add_argument("--seed", type=int, default=0, help="seed of the paired tests")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from paintbench.errors import UserError
    from paintbench.leaderboards.build import BuildOptions, build_site

    out = Path(args.out)
    if (out.exists() and not out.is_dir()) or (out.is_symlink() and not out.exists()):
        raise UserError(f"--out {out}: not a folder (a file, FIFO or dangling link is never written into)")
    opts = BuildOptions(title=args.title, baseline=args.baseline, images=args.images, thumb_size=args.thumb_size,
                        jobs=args.jobs, alpha=args.alpha, n_resamples=args.n_resamples, seed=args.seed)
    report = build_site(args.runs, args.train_log, args.out, opts,
                        log=lambda msg: print(msg, file=sys.stderr), experiments=args.experiment)
    for p in report.problems[:20]:
        print(f"warning: {p}", file=sys.stderr)
    if len(report.problems) > 20:
        print(f"warning: ... and {len(report.problems) - 20} more", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    print(f"{report.out / 'index.html'}")
    return 0
