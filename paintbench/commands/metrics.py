"""`paintbench metrics`: every provider with its protocol version, direction, range and weights."""

from __future__ import annotations

import argparse
import json

from paintbench import metrics
from paintbench.metrics import weights as W


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights-dir", help=f"weights directory (default: ${W.ENV_WEIGHTS_DIR} or ~/.cache/paintbench/weights)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def provider_rows(weights_dir: str | None) -> list[dict]:
    rows = []
    for name in metrics.available():
        s = metrics.spec(name)
        files = {}
        for w in s.weights:
            found = W.find(w, weights_dir)
            files[W.catalog()[w].filename] = str(found) if found else None
        required = [W.catalog()[w].filename for w in s.weights if not W.catalog()[w].optional]
        missing = [f for f in required if files[f] is None]
        rows.append({
            "name": name,
            "version": s.version,
            "higher_is_better": s.higher_is_better,
            "range": list(s.nominal_range),
            "needs_prompt": s.needs_prompt,
            "weights_present": not missing,
            "synthetic_weights": any(f is not None and W.is_synthetic(f) for f in files.values()),
            "missing": missing,
            "weights": files,
            "summary": s.summary,
        })
    return rows


def run(args: argparse.Namespace) -> int:
    rows = provider_rows(args.weights_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    # columns as wide as their widest entry (clipscore-torchmetrics broke a fixed 16-character column)
    wn = max([len("metric"), *(len(r["name"]) for r in rows)])
    wv = max([len("version"), *(len(r["version"]) for r in rows)])
    header = f"{'metric':<{wn}} {'version':<{wv}} {'better':<7} {'range':<14} {'weights':<9} summary"
    print(header)
    print("-" * len(header))
    for r in rows:
        lo, hi = r["range"]
        weights = ("synthetic" if r["synthetic_weights"] else "present") if r["weights_present"] else "missing"
        print(f"{r['name']:<{wn}} {r['version']:<{wv}} {'higher' if r['higher_is_better'] else 'lower':<7} "
              f"{f'{lo:g}..{hi:g}':<14} {weights:<9} {r['summary']}")
    missing = sorted({f for r in rows for f in r["missing"]})
    if missing:
        print(f"\nmissing weight files: {', '.join(missing)}\n"
              "see `paintbench weights list`; fetch with `paintbench weights fetch NAME`, "
              "or write toy weights with `paintbench weights make-tiny DIR`.")
    return 0
