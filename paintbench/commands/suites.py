"""`paintbench suites`: the benchmark suites paintbench knows (shipped and --include-path)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include-path", action="append", help="extra folder of suite YAML files (repeatable)")


def run(args: argparse.Namespace) -> int:
    from paintbench import metrics
    from paintbench.harness.suite import load_suite, suite_files

    for name, path in sorted(suite_files(args.include_path).items()):
        s = load_suite(str(path))
        names = []
        for m in s.metrics:
            try:
                metrics.spec(m.name)
                names.append(m.name + ("*" if m.primary else ""))
            except KeyError:
                names.append(f"{m.name} (unavailable)")
        print(f"{name:<10} v{s.version}  {s.images_per_prompt} img/prompt  {s.image_size}px  "
              f"metrics: {', '.join(names)}")
        print(f"{'':<10} {s.description}  [{path}]")
    print("\n* primary metric")
    return 0
