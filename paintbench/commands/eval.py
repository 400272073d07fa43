"""`paintbench eval SUITE --generator KIND[:ARG] --out RUN`: generate, score, aggregate (resumable).

Exit status: 0 when every image was generated and scored; 3 when some were not (listed in the
results); 2 for a usage or setup error.

Every flag is also a key of a YAML file given with `--config` (same names, underscores); flags win.
Under `torchrun --nproc-per-node N -m paintbench eval ...` the prompts are sharded across ranks.
"""

from __future__ import annotations

import argparse

from paintbench.config import add_dataclass_arguments, build, load_yaml, parse_overrides
from paintbench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from paintbench.harness.config import EvalConfig

    p.add_argument("suite", nargs="?", help="suite name (see `paintbench suites`) or a suite YAML file")
    p.add_argument("--config", help="YAML file with any of the settings below")
    p.add_argument("--gen-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="generator option, e.g. steps=30 guidance=4.5 (repeatable)")
    p.add_argument("--metric-opt", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="metric provider option, e.g. geneval.mode=reward (repeatable)")
    p.add_argument("--rescore", action="append", metavar="METRIC",
                   help="recompute this metric on the run's existing images (repeatable)")
    add_dataclass_arguments(p, EvalConfig)


def config_from_args(args: argparse.Namespace):
    from paintbench.harness.config import EvalConfig

    base = load_yaml(args.config) if args.config else {}
    if args.rescore:  # start from the run's own settings; flags given now (device, batch size...) win
        from paintbench.harness.rundir import RunDir

        if not args.out:
            raise UserError("--rescore needs --out RUN (an existing run directory)")
        base = {**RunDir(args.out).read_config().get("eval", {}), **base}
    flags = {k: v for k, v in vars(args).items()
             if k in EvalConfig.__dataclass_fields__ and v is not None}
    if args.suite:
        flags["suite"] = args.suite
    gen_opts = {**(base.get("generator_options") or {}), **parse_overrides(args.gen_opt)}
    metric_opts: dict = {k: dict(v) for k, v in (base.get("metric_options") or {}).items()}
    for key, value in parse_overrides(args.metric_opt).items():
        if "." not in key:
            raise UserError(f"--metric-opt {key}=...: expected METRIC.KEY=VALUE")
        metric, _, opt = key.rpartition(".")  # metric names may contain dots (hps-v2.1.KEY)
        metric_opts.setdefault(metric, {})[opt] = value
    cfg = build(EvalConfig, base, flags, {"generator_options": gen_opts, "metric_options": metric_opts},
                sources=[args.config or "config", "the command line", "the command line"])
    if not cfg.generator and not args.rescore:
        raise UserError("eval needs --generator (e.g. shapes-oracle, folder:DIR, diffusers:PATH)")
    return cfg


def run(args: argparse.Namespace) -> int:
    from paintbench.harness.evaluate import run_eval
    from paintbench.harness.report import format_results

    cfg = config_from_args(args)
    results = run_eval(cfg, rescore=args.rescore)
    if results is None:  # a rank other than 0
        return 0
    print(format_results(results))
    print(f"\nrun directory: {cfg.out}")
    failed = results["generation_failures"] or any(m.get("n_failed") for m in results["metrics"].values())
    return 3 if failed else 0
