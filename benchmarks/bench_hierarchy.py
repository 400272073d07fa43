"""Does Sketch-Then-Paint's hierarchy help where its premise holds, and not where it is reversed?

The paired experiment of issue #12, on the blocks world (`harness.blocks`): objects of 2×2 tokens whose
anchor token is the layout and whose three fills are the detail. World `blocks` is spelled so a
masked-token policy commits layout first (the premise), `blocks-control` so it commits details first
(the dependency reversed). Same prompts, same rewards, same policy size in both.

Protocol (fixed before any result was seen; nothing here was tuned toward a method):
- for each world: one supervised warm start (`--warmstart` steps, seed `--warmstart-seed`), saved and
  shared by every seed and method, so all runs start from the same policy, which is also the
  reference; the seeds vary the RL phase (rollouts, prompt order, token subsets), not the start (a
  warm start per seed costs 2.5 CPU minutes each: `--warmstart-per-seed` does it);
- each method then trains `--steps` rounds of B prompts × G rollouts (T steps each) and K optimizer
  steps per round: equal rollouts and optimizer steps (the estimators differ in forward passes; the CPU
  seconds are recorded). Rollouts are keyed by (seed, round, row), so every method's first round sees
  the same rollouts;
- reward = `blocks-layout` (GenEval partial credit on classes, counts, positions) + `blocks-detail`
  (objects whose fills agree with their anchor and the asked colour), summed then group-normalised;
- training prompts are the `train` side of the shapes prompts' split; every evaluation uses the
  held-out side (disjoint by construction) with fixed sampling seeds, at round 0 and every
  `--eval-every` rounds: layout, detail, total (layout + detail) and GenEval accuracy;
- methods: HT-GRPO; uniform-credit GRPO with HT-GRPO's ρ_min (d1 estimator); MaskGRPO (re-masking
  estimator); TraceGRPO (trajectory estimator); two ablations of HT-GRPO: credit only (every iteration
  global, hierarchical credit) and stages only (λ_s = 0, stages kept);
- statistics: per method and outcome, the paired difference to HT-GRPO over seeds (method − HT-GRPO)
  with a 95 % paired-bootstrap CI and two-sided p-value (`harness.stats.paired_bootstrap`, prompts =
  seeds, 10,000 resamples).
The premise is measured on every round's rollouts (`premise/*` in each run's metrics.jsonl) and
summarised after the warm start.

    python benchmarks/bench_hierarchy.py run --world blocks --seeds 0 1 2 3 4 5 6 7 8 9 --out bench-out/hier
    python benchmarks/bench_hierarchy.py run --world blocks-control --seeds 0 1 2 3 4 5 6 7 8 9 --out bench-out/hier
    python benchmarks/bench_hierarchy.py report bench-out/hier --json benchmarks/results/hierarchy.json
    paintbench leaderboard --experiment benchmarks/results/hierarchy.json --out site/
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from paintbench import metrics  # noqa: E402
from paintbench.harness.shapes.prompts import make_prompts  # noqa: E402
from paintbench.harness.stats import paired_bootstrap  # noqa: E402
from paintbench.trainer.config import load_config  # noqa: E402
from paintbench.trainer.generate import generate_images  # noqa: E402
from paintbench.trainer.logs import read_metrics  # noqa: E402
from paintbench.trainer.loop import Trainer  # noqa: E402

WORLDS = ("blocks", "blocks-control")
METHODS: dict[str, dict[str, Any]] = {
    "HT-GRPO": {"preset": "htgrpo"},
    "GRPO (uniform, matched rho_min)": {"preset": "d1grpo", "rho_min": 0.5},
    "MaskGRPO": {"preset": "maskgrpo"},
    "TraceGRPO": {"preset": "tracegrpo"},
    "credit only (no stages)": {"preset": "htgrpo", "n_global": 6, "n_struct": 0},
    "stages only (lambda_s = 0)": {"preset": "htgrpo", "lambda_s": 0.0},
}
OUTCOMES = ("total", "layout", "detail", "geneval")
BASELINE = "HT-GRPO"


def config(args: argparse.Namespace, world: str, seed: int, **extra: Any):
    base = {"world": world, "seed": seed, "steps": args.steps, "warmstart_steps": args.warmstart,
            "save_every": 0, "sample_every": 0, "tensorboard": False, "device": args.device,
            "eval_every": 0}
    return load_config("blocks-tiny", {**base, **extra})


class HeldOut:
    """The held-out evaluation: fixed prompts (the `heldout` side of the split) and sampling seeds."""

    def __init__(self, n_per_tag: int, samples: int) -> None:
        records = make_prompts(0, n_per_tag, split="heldout")
        self.records = [r for r in records for _ in range(samples)]
        self.prompts = [r["prompt"] for r in self.records]
        self.seeds = list(range(len(self.records)))
        self.providers = {n: metrics.get(f"blocks-{n}") for n in ("layout", "detail")}
        self.correct = metrics.get("blocks-geneval", mode="correct")

    def __call__(self, policy, cfg) -> dict[str, float]:
        images = generate_images(policy, self.prompts, self.seeds, self.records, **cfg.sampler_options())
        out = {n: float(p.score(images, self.prompts, self.records).values.mean()) for n, p in self.providers.items()}
        out["total"] = out["layout"] + out["detail"]
        out["geneval"] = float(self.correct.score(images, self.prompts, self.records).values.mean())
        return out


def warm_policy(args: argparse.Namespace, world: str, seed: int, out: Path) -> Path:
    """The starting policy of `world` (of `seed` with --warmstart-per-seed), trained once, kept under `out`."""
    ws_seed = seed if args.warmstart_per_seed else args.warmstart_seed
    folder = out / world / f"warmstart-seed{ws_seed}"
    if not (folder / "policy.json").is_file():
        t = time.process_time()
        tr = Trainer(config(args, world, ws_seed), out / world / f"_warm-seed{ws_seed}")
        tr.setup()
        tr.policy.save(folder, sampler=tr.cfg.sampler_options())
        (folder / "cpu_seconds.txt").write_text(f"{time.process_time() - t:.1f}\n")
    return folder


def run_world(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    out = Path(args.out)
    held = HeldOut(args.eval_per_tag, args.eval_samples)
    for seed in args.seeds:
        start = warm_policy(args, args.world, seed, out)
        for method, overrides in METHODS.items():
            done = out / args.world / f"seed{seed}" / slug(method) / "result.json"
            if done.is_file():
                continue
            cfg = config(args, args.world, seed, policy_path=str(start), warmstart_steps=0, **overrides)
            shutil.rmtree(done.parent / "run", ignore_errors=True)   # an interrupted run starts over
            tr = Trainer(cfg, done.parent / "run")
            tr.setup()
            curve = [{"round": 0, **held(tr.policy, cfg)}]
            cpu = time.process_time()
            for step in range(1, cfg.steps + 1):
                tr.step = step
                tr.round(step)
                if step % args.eval_every == 0 or step == cfg.steps:
                    curve.append({"round": step, **held(tr.policy, cfg)})
            cpu = time.process_time() - cpu
            logs = [m for m in read_metrics(done.parent / "run") if "reward/mean" in m]
            premise = {k: statistics.fmean(vals) for k in (logs[0] if logs else {}) if k.startswith("premise/")
                       if (vals := [m[k] for m in logs if _number(m.get(k))])}
            first_premise = {k: v for k, v in logs[0].items() if k.startswith("premise/")} if logs else {}
            result = {"world": args.world, "seed": seed, "method": method, "overrides": overrides, "curve": curve,
                      "warmstart": start.name,
                      "final": curve[-1], "cpu_seconds": cpu, "premise_mean": premise, "premise_round1": first_premise,
                      "train_reward": [m["reward/mean"] for m in logs]}
            done.write_text(json.dumps(result, indent=1))
            f = curve[-1]
            print(f"{args.world} seed {seed} {method:<32} total {f['total']:.3f} layout {f['layout']:.3f} "
                  f"detail {f['detail']:.3f} geneval {f['geneval']:.3f} ({cpu:.0f} CPU s)", flush=True)


def _number(v: Any) -> bool:
    """A logged value that is a finite number (metrics.jsonl writes NaN as null)."""
    return isinstance(v, (int, float)) and math.isfinite(v)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def report(args: argparse.Namespace) -> dict[str, Any]:
    """Collect every result.json under the folder: means, seeds, paired comparisons, premise, CPU time."""
    results = [json.loads(p.read_text()) for p in sorted(Path(args.folder).glob("*/seed*/*/result.json"))]
    if not results:
        raise SystemExit(f"no results under {args.folder}")
    summary: dict[str, Any] = {"protocol": __doc__.split("Protocol")[1].split("    python")[0].strip(),
                               "methods": METHODS, "worlds": {}}
    for world in WORLDS:
        mine = [r for r in results if r["world"] == world]
        if not mine:
            continue
        by = {(r["method"], r["seed"]): r for r in mine}
        seeds = sorted({r["seed"] for r in mine if all((m, r["seed"]) in by for m in METHODS)})
        w: dict[str, Any] = {"seeds": seeds, "methods": {}}
        for method in METHODS:
            rows = [by[(method, s)] for s in seeds]
            entry: dict[str, Any] = {"cpu_seconds": sum(r["cpu_seconds"] for r in rows)}
            for o in OUTCOMES:
                vals = [r["final"][o] for r in rows]
                entry[o] = {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                            "per_seed": vals}
                if method != BASELINE and len(seeds) >= 2:
                    base = {s: by[(BASELINE, s)]["final"][o] for s in seeds}
                    this = {s: by[(method, s)]["final"][o] for s in seeds}
                    entry[o]["vs_htgrpo"] = paired_bootstrap(base, this, seed=0).to_dict()
            rounds = [c["round"] for c in rows[0]["curve"]]
            entry["curve"] = {o: [[rounds[i], statistics.fmean(r["curve"][i][o] for r in rows),
                                   statistics.stdev([r["curve"][i][o] for r in rows]) if len(rows) > 1 else 0.0]
                                  for i in range(len(rounds))] for o in OUTCOMES}
            entry["start"] = {o: statistics.fmean(r["curve"][0][o] for r in rows) for o in OUTCOMES}
            w["methods"][method] = entry
        ht = [by[(BASELINE, s)] for s in seeds]
        w["premise_round1"] = {k: statistics.fmean(v) for k in ht[0]["premise_round1"]
                               if (v := [r["premise_round1"][k] for r in ht if _number(r["premise_round1"].get(k))])}
        w["premise_mean"] = {k: statistics.fmean(v) for k in ht[0]["premise_mean"]
                             if (v := [r["premise_mean"][k] for r in ht if _number(r["premise_mean"].get(k))])}
        warm = sorted((Path(args.folder) / world).glob("warmstart-seed*/cpu_seconds.txt"))
        w["warmstart_cpu_seconds"] = sum(float(p.read_text()) for p in warm)
        w["warmstarts"] = len(warm)
        summary["worlds"][world] = w
    summary["cpu_seconds_total"] = sum(r["cpu_seconds"] for r in results) + sum(
        w["warmstart_cpu_seconds"] for w in summary["worlds"].values())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(markdown(summary))
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for world, w in summary["worlds"].items():
        p = w["premise_round1"]
        lines.append(f"**{world}** ({len(w['seeds'])} seeds; premise after the warm start: layout share of the "
                     f"structure set {p['premise/layout_share_in_structure']:.2f} (share of all tokens "
                     f"{p['premise/layout_share_of_tokens']:.2f}); mean commit step layout "
                     f"{p['premise/layout_commit_step']:.2f} vs detail {p['premise/detail_commit_step']:.2f})\n")
        lines.append("| method | total | layout | detail | GenEval | Δ total vs HT-GRPO [95% CI], p | CPU s |")
        lines.append("|---|---|---|---|---|---|---|")
        start = next(iter(w["methods"].values()))["start"]
        lines.append(f"| starting policy | {start['total']:.3f} | {start['layout']:.3f} | {start['detail']:.3f} | "
                     f"{start['geneval']:.3f} | | |")
        for method, e in w["methods"].items():
            cells = [f"{e[o]['mean']:.3f} ± {e[o]['sd']:.3f}" for o in OUTCOMES]
            c = e["total"].get("vs_htgrpo")
            delta = f"{c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], p = {c['p_value']:.3f}" if c else "—"
            lines.append(f"| {method} | {' | '.join(cells)} | {delta} | {e['cpu_seconds']:.0f} |")
        lines.append("")
    lines.append(f"CPU time of the whole experiment: {summary['cpu_seconds_total'] / 60:.1f} CPU minutes.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train every method for the given seeds of one world (resumable)")
    r.add_argument("--world", choices=WORLDS, required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    r.add_argument("--out", default="bench-out/hierarchy")
    r.add_argument("--warmstart", type=int, default=600)
    r.add_argument("--warmstart-seed", type=int, default=0)
    r.add_argument("--warmstart-per-seed", action="store_true", help="one warm start per seed instead of one per world")
    r.add_argument("--steps", type=int, default=30)
    r.add_argument("--eval-every", type=int, default=10)
    r.add_argument("--eval-per-tag", type=int, default=8)
    r.add_argument("--eval-samples", type=int, default=2)
    r.add_argument("--device", default="cpu")
    rep = sub.add_parser("report", help="the table, paired statistics and curves from a run folder")
    rep.add_argument("folder")
    rep.add_argument("--json", default="")
    args = ap.parse_args()
    if args.cmd == "run":
        run_world(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
