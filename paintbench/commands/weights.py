"""`paintbench weights list|path|fetch|make-tiny`: the weights directory layout and what is present."""

from __future__ import annotations

import argparse
import json

from paintbench import metrics
from paintbench.errors import UserError
from paintbench.metrics import weights as W


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("list", help="every known weight file, its official name, source and whether it is present")
    ls.add_argument("--weights-dir")
    ls.add_argument("--json", action="store_true")
    path = sub.add_parser("path", help="print where a weight file resolves (exit 2 if missing)")
    path.add_argument("name", help="weight name (see `paintbench weights list`)")
    path.add_argument("--weights-dir")
    fetch = sub.add_parser("fetch", help="download a weight file (needs network) and check its sha256")
    fetch.add_argument("name", nargs="+", help="weight names, or 'all'")
    fetch.add_argument("--weights-dir", "--dest", dest="dest",
                       help="weights directory to write into (default: $PAINTBENCH_WEIGHTS or ~/.cache/paintbench/weights)")
    tiny = sub.add_parser("make-tiny", help="write tiny random checkpoints in the official formats (demos, tests)")
    tiny.add_argument("dest", help="directory to write into (use it as --weights-dir)")
    tiny.add_argument("--metric", action="append", help="only these metrics (default: all that support it)")
    tiny.add_argument("--seed", type=int, default=0)


def used_by() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in metrics.available():
        for w in metrics.spec(name).weights:
            out.setdefault(w, []).append(name)
    return out


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list(args)
    if args.action == "path":
        if args.name not in W.catalog():
            raise UserError(f"unknown weight {args.name!r}; known: {', '.join(sorted(W.catalog()))}")
        print(W.resolve(args.name, weights_dir=args.weights_dir))
        return 0
    if args.action == "fetch":
        names = (sorted(n for n, w in W.catalog().items() if w.url or w.hf_repo) if args.name == ["all"]
                 else args.name)
        if args.name == ["all"]:
            for n, w in sorted(W.catalog().items()):
                if not (w.url or w.hf_repo):
                    print(f"{n}: no public download source; {w.description}")
        for n in names:
            if n not in W.catalog():
                raise UserError(f"unknown weight {n!r}; known: {', '.join(sorted(W.catalog()))}")
        for n in names:
            print(f"{n}: {W.fetch(n, args.dest)}")
        return 0
    if args.action == "make-tiny":
        from paintbench.metrics.synthetic import tiny_metrics, write_tiny_weights

        chosen = args.metric or tiny_metrics()
        for m in chosen:
            for path in write_tiny_weights(m, args.dest, seed=args.seed):
                print(f"{m}: {path}")
        print(f"\ntiny random weights (meaningless scores, real code paths): use --weights-dir {args.dest}")
        return 0
    raise AssertionError(args.action)


def _list(args: argparse.Namespace) -> int:
    users = used_by()
    rows = []
    for name, spec in sorted(W.catalog().items()):
        found = W.find(name, args.weights_dir)
        rows.append({
            "name": name,
            "file": spec.filename + ("/" if spec.is_dir else ""),
            "present": str(found) if found else None,
            "synthetic": bool(found) and W.is_synthetic(found),
            "optional": spec.optional,
            "source": spec.source,
            "sha256": spec.sha256,
            "used_by": users.get(name, []),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"weights directory: {args.weights_dir or W.default_weights_dir()} "
          f"(then the Hugging Face cache)\n")
    wn, wf = max(len(x["name"]) for x in rows), max(len(x["file"]) for x in rows)
    for r in rows:
        state = (f"{'SYNTHETIC (random, not the official file)' if r['synthetic'] else 'present'}: {r['present']}"
                 if r["present"] else ("missing (optional)" if r["optional"] else "MISSING"))
        print(f"{r['name']:<{wn}}  {r['file']:<{wf}}  {state}")
        print(f"{'':<{wn}}  used by {', '.join(r['used_by']) or '-'}; source {r['source']}")
    return 0
