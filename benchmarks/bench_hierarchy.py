"""Does Sketch-Then-Paint's hierarchy help where its premise holds, and not where it is reversed?

The paired experiment on the blocks world (`harness.blocks`): objects of 2×2 tokens whose anchor token is
the layout and whose three fills are the detail. World `blocks` is spelled so a masked-token policy
commits layout first (the premise), `blocks-control` so it commits details first (the dependency
reversed). Same prompts, same rewards, same policy size in both.

Protocol (fixed before any result of it was seen; issue #25, after the audit in shared/reference/
hierarchy_audit.md showed the earlier single learning rate, 1e-3, destabilised every full-mask method):
- prompts: three disjoint sides of the shapes prompts, by combination (`harness.shapes.prompts`): every
  run trains on `fit`; tuning is judged on `validation`; the reported results on `heldout` only;
- per method and world, the learning rate is tuned on the validation split: grid --lrs (3e-5, 1e-4,
  3e-4, 1e-3) × --tune-seeds (3 seeds), every cell the same budget (--rounds rounds of B prompts × G
  rollouts and K optimizer steps, linear lr warm-up over --warmup-steps optimizer steps = 2 rounds);
  the chosen rate is the one with the highest mean final validation total (layout + detail) over the
  tuning seeds (ties: the smaller rate);
- then --seeds (10) fresh seeds per method at its chosen rate, each with its own supervised warm start
  (--warmstart steps, seeded by the run seed; the tuning seeds are disjoint from these), which is also
  that seed's reference policy and shared by the methods of that seed (paired design);
- reward = `blocks-layout` + `blocks-detail`, summed then group-normalised; rollouts are keyed by
  (seed, round, row), so every method's first round of a seed sees the same rollouts;
- evaluation: round 0 and every --eval-every rounds, fixed prompts and sampling seeds: layout, detail,
  total and GenEval accuracy; final = the last round;
- methods: HT-GRPO, uniform-credit GRPO with HT-GRPO's ρ_min (d1 estimator), MaskGRPO (re-masking
  estimator) first; TraceGRPO and two ablations of HT-GRPO (credit only, stages only) as the budget allows;
- statistics, per method and outcome, on the paired differences to HT-GRPO over the test seeds (method −
  HT-GRPO): the exact sign-flip permutation test (2^10 sign patterns), the paired t-test, and a 95 %
  paired-bootstrap CI (`harness.stats`); the per-seed values are kept;
- guard metrics in every run (trainer.guard, every --guard-every rounds): the update's ratio, share out of
  the clip band and KL in the *sampling* contexts, the KL to the reference there, and objects drawn per
  image against the number asked.

    python benchmarks/bench_hierarchy.py protocol --world blocks --out bench-out/hier      # tune, then test
    python benchmarks/bench_hierarchy.py protocol --world blocks-control --out bench-out/hier
    python benchmarks/bench_hierarchy.py report bench-out/hier --json benchmarks/results/hierarchy.json
    paintbench leaderboard --experiment benchmarks/results/hierarchy.json --out site/

`tune` and `test` run one phase; every phase is resumable (finished runs are kept, an interrupted run
starts over) and a folder made with other settings is refused.
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
from paintbench.harness.stats import paired_bootstrap, paired_permutation_test, paired_t_test  # noqa: E402
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
SHORT = {"htgrpo": "HT-GRPO", "grpo": "GRPO (uniform, matched rho_min)", "maskgrpo": "MaskGRPO",
         "tracegrpo": "TraceGRPO", "credit-only": "credit only (no stages)", "stages-only": "stages only (lambda_s = 0)"}
CORE = ("htgrpo", "grpo", "maskgrpo")
OUTCOMES = ("total", "layout", "detail", "geneval")
BASELINE = "HT-GRPO"
LR_GRID = (3e-5, 1e-4, 3e-4, 1e-3)
GUARD_KEYS = ("guard/out_of_clip_frac", "guard/ratio_max", "guard/kl_update", "guard/kl_ref", "objects/per_image",
              "objects/over_asked_frac")
# settings that change what a run computes: a folder made with other values is refused
PROTOCOL_KEYS = ("rounds", "warmup_steps", "warmstart", "eval_every", "eval_per_tag", "eval_samples", "guard_every")


def method_names(keys: list[str]) -> list[str]:
    unknown = [k for k in keys if k not in SHORT]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; methods are {', '.join(SHORT)}")
    return [SHORT[k] for k in keys]


def config(args: argparse.Namespace, world: str, seed: int, **extra: Any):
    base = {"world": world, "seed": seed, "steps": args.rounds, "warmstart_steps": args.warmstart,
            "warmup_steps": args.warmup_steps, "prompt_split": "fit", "guard_every": args.guard_every,
            "save_every": 0, "sample_every": 0, "tensorboard": False, "device": args.device, "eval_every": 0}
    return load_config("blocks-tiny", {**base, **extra})


class Evaluation:
    """Fixed prompts of one side of the split (`validation` or `heldout`) and fixed sampling seeds."""

    def __init__(self, split: str, n_per_tag: int, samples: int) -> None:
        records = make_prompts(0, n_per_tag, split=split)
        self.split = split
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


def check_protocol(args: argparse.Namespace) -> None:
    """Write the protocol's settings into the world's folder, or refuse a folder made with others."""
    folder = Path(args.out) / args.world
    folder.mkdir(parents=True, exist_ok=True)
    mine = {k: getattr(args, k) for k in PROTOCOL_KEYS}
    path = folder / "protocol.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if diff:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise SystemExit(f"{folder} was made with other settings ({shown}); use another --out")
    else:
        path.write_text(json.dumps(mine, indent=1) + "\n")


def warm_policy(args: argparse.Namespace, seed: int) -> Path:
    """The starting policy (and reference) of `seed`: a supervised warm start on the fit prompts."""
    root = Path(args.out) / args.world
    folder = root / f"warmstart-seed{seed}"
    if not (folder / "policy.json").is_file():
        t = time.process_time()
        scratch = root / f"_warm-seed{seed}"
        shutil.rmtree(scratch, ignore_errors=True)
        tr = Trainer(config(args, args.world, seed), scratch)
        tr.setup()
        tr.policy.save(folder, sampler=tr.cfg.sampler_options())
        (folder / "cpu_seconds.txt").write_text(f"{time.process_time() - t:.1f}\n")
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def train_one(args: argparse.Namespace, done: Path, seed: int, method: str, lr: float, evaluation: Evaluation) -> None:
    """One run: fresh optimizer from the seed's warm start, `rounds` rounds, evaluated every
    `eval_every`; writes `done` (result.json) last, so a folder with it is finished."""
    if done.is_file():
        return
    start = warm_policy(args, seed)
    overrides = METHODS[method]
    cfg = config(args, args.world, seed, policy_path=str(start), warmstart_steps=0, lr=lr, **overrides)
    shutil.rmtree(done.parent / "run", ignore_errors=True)   # an interrupted run starts over
    tr = Trainer(cfg, done.parent / "run")
    tr.setup()
    curve = [{"round": 0, **evaluation(tr.policy, cfg)}]
    cpu = time.process_time()
    for step in range(1, cfg.steps + 1):
        tr.step = step
        tr.round(step)
        if step % args.eval_every == 0 or step == cfg.steps:
            curve.append({"round": step, **evaluation(tr.policy, cfg)})
    cpu = time.process_time() - cpu
    logs = [m for m in read_metrics(done.parent / "run") if "reward/mean" in m]
    premise = {k: statistics.fmean(vals) for k in (logs[0] if logs else {}) if k.startswith("premise/")
               if (vals := [m[k] for m in logs if _number(m.get(k))])}
    guard = {k: [[m["step"], m[k]] for m in logs if _number(m.get(k))] for k in GUARD_KEYS}
    result = {"world": args.world, "seed": seed, "method": method, "lr": lr, "overrides": overrides,
              "split": evaluation.split, "curve": curve, "final": curve[-1], "warmstart": start.name,
              "cpu_seconds": cpu, "premise_mean": premise,
              "premise_round1": {k: v for k, v in logs[0].items() if k.startswith("premise/")} if logs else {},
              "train_reward": [m["reward/mean"] for m in logs], "guard": guard}
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result, indent=1))
    shutil.rmtree(done.parent / "run" / "checkpoints", ignore_errors=True)   # the final weights are not needed
    f = curve[-1]
    print(f"{args.world} {evaluation.split} seed {seed} lr {lr:g} {method:<30} total {f['total']:.3f} "
          f"(layout {f['layout']:.3f} detail {f['detail']:.3f}; {cpu:.0f} CPU s)", flush=True)


def _number(v: Any) -> bool:
    """A logged value that is a finite number (metrics.jsonl writes NaN as null)."""
    return isinstance(v, (int, float)) and math.isfinite(v)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def lr_dir(lr: float) -> str:
    return f"lr{lr:g}"


def tune(args: argparse.Namespace) -> None:
    """Every method × learning rate × tuning seed, judged on the validation prompts."""
    torch.set_num_threads(1)
    check_protocol(args)
    evaluation = Evaluation("validation", args.eval_per_tag, args.eval_samples)
    root = Path(args.out) / args.world / "tune"
    for seed in args.tune_seeds:
        for lr in args.lrs:
            for method in method_names(args.methods):
                train_one(args, root / lr_dir(lr) / f"seed{seed}" / slug(method) / "result.json", seed, method, lr, evaluation)


def tuning_table(folder: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {lr: {mean, sd, per_seed}}} of the final validation totals under `folder`/tune."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for p in sorted(folder.glob("tune/lr*/seed*/*/result.json")):
        r = json.loads(p.read_text())
        out.setdefault(r["method"], {}).setdefault(f"{r['lr']:g}", {"per_seed": {}})["per_seed"][r["seed"]] = r["final"]["total"]
    for cells in out.values():
        for cell in cells.values():
            vals = list(cell["per_seed"].values())
            cell["mean"] = statistics.fmean(vals)
            cell["sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def choose_lr(cells: dict[str, dict[str, Any]], seeds: int) -> float | None:
    """The rate with the highest mean final validation total, over rates every tuning seed finished
    (ties: the smaller rate); None while some rate is unfinished."""
    if any(len(c["per_seed"]) < seeds for c in cells.values()) or not cells:
        return None
    return min((-c["mean"], float(lr)) for lr, c in cells.items())[1]


def chosen_rates(args: argparse.Namespace, methods: list[str]) -> dict[str, float]:
    given = dict(_parse_lr(x) for x in args.lr)
    table = tuning_table(Path(args.out) / args.world)
    out = {}
    for m in methods:
        if m in given:
            out[m] = given[m]
            continue
        cells = table.get(m, {})
        lr = choose_lr(cells, len(args.tune_seeds)) if len(cells) == len(args.lrs) else None
        if lr is None:
            raise SystemExit(f"{args.world}: the tuning of {m!r} is not finished (run `tune` first, or give --lr KEY=LR)")
        out[m] = lr
    return out


def _parse_lr(text: str) -> tuple[str, float]:
    key, _, value = text.partition("=")
    return method_names([key])[0], float(value)


def test(args: argparse.Namespace) -> None:
    """Every method at its chosen rate, on fresh seeds with fresh warm starts, judged on held-out prompts."""
    torch.set_num_threads(1)
    check_protocol(args)
    methods = method_names(args.methods)
    rates = chosen_rates(args, methods)
    root = Path(args.out) / args.world
    (root / "chosen.json").write_text(json.dumps(rates, indent=1) + "\n")
    evaluation = Evaluation("heldout", args.eval_per_tag, args.eval_samples)
    for seed in args.seeds:
        for method in methods:
            train_one(args, root / "test" / f"seed{seed}" / slug(method) / "result.json", seed, method, rates[method],
                      evaluation)


def comparisons(base: dict[int, float], this: dict[int, float]) -> dict[str, Any]:
    """method − HT-GRPO over seeds: bootstrap CI, exact sign-flip p, paired t p."""
    boot = paired_bootstrap(base, this, seed=0).to_dict()
    boot["p_permutation"] = paired_permutation_test(base, this).p_value
    t = paired_t_test(base, this)
    boot.update(p_t=t.p_value, t_low=t.low, t_high=t.high)
    return boot


def report(args: argparse.Namespace) -> dict[str, Any]:
    """The tuning grid, the chosen rates and the test table with its statistics, per world."""
    folder = Path(args.folder)
    summary: dict[str, Any] = {"protocol": __doc__.split("Protocol")[1].split("    python")[0].strip(),
                               "methods": METHODS, "worlds": {}}
    for world in WORLDS:
        wf = folder / world
        results = [json.loads(p.read_text()) for p in sorted(wf.glob("test/seed*/*/result.json"))]
        if not results:
            continue
        if (wf / "protocol.json").is_file():
            summary.setdefault("settings", {})[world] = json.loads((wf / "protocol.json").read_text())
        by = {(r["method"], r["seed"]): r for r in results}
        methods = [m for m in METHODS if any(r["method"] == m for r in results)]
        seeds = sorted({r["seed"] for r in results if all((m, r["seed"]) in by for m in methods)})
        if not seeds:
            continue
        w: dict[str, Any] = {"seeds": seeds, "methods": {}, "split": "heldout",
                             "tuning": tuning_table(wf), "chosen_lr": {}}
        for method in methods:
            rows = [by[(method, s)] for s in seeds]
            entry: dict[str, Any] = {"cpu_seconds": sum(r["cpu_seconds"] for r in rows), "lr": rows[0]["lr"]}
            w["chosen_lr"][method] = rows[0]["lr"]
            for o in OUTCOMES:
                vals = [r["final"][o] for r in rows]
                entry[o] = {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                            "per_seed": vals}
                if method != BASELINE and BASELINE in methods and len(seeds) >= 2:
                    entry[o]["vs_htgrpo"] = comparisons({s: by[(BASELINE, s)]["final"][o] for s in seeds},
                                                        {s: by[(method, s)]["final"][o] for s in seeds})
            rounds = [c["round"] for c in rows[0]["curve"]]
            entry["curve"] = {o: [[rounds[i], statistics.fmean(r["curve"][i][o] for r in rows),
                                   statistics.stdev([r["curve"][i][o] for r in rows]) if len(rows) > 1 else 0.0]
                                  for i in range(len(rounds))] for o in OUTCOMES}
            entry["start"] = {o: statistics.fmean(r["curve"][0][o] for r in rows) for o in OUTCOMES}
            entry["guard"] = {k: _mean_curve([r.get("guard", {}).get(k, []) for r in rows]) for k in GUARD_KEYS}
            w["methods"][method] = entry
        ht = [by[(methods[0], s)] for s in seeds]
        w["premise_round1"] = {k: statistics.fmean(v) for k in ht[0]["premise_round1"]
                               if (v := [r["premise_round1"][k] for r in ht if _number(r["premise_round1"].get(k))])}
        w["premise_mean"] = {k: statistics.fmean(v) for k in ht[0]["premise_mean"]
                             if (v := [r["premise_mean"][k] for r in ht if _number(r["premise_mean"].get(k))])}
        warm = sorted(wf.glob("warmstart-seed*/cpu_seconds.txt"))
        w["warmstart_cpu_seconds"] = sum(float(p.read_text()) for p in warm)
        w["warmstarts"] = len(warm)
        w["tuning_cpu_seconds"] = sum(json.loads(p.read_text())["cpu_seconds"] for p in wf.glob("tune/lr*/seed*/*/result.json"))
        summary["worlds"][world] = w
    if not summary["worlds"]:
        raise SystemExit(f"no test results under {folder}")
    summary["cpu_seconds_total"] = sum(
        w["warmstart_cpu_seconds"] + w["tuning_cpu_seconds"] + sum(e["cpu_seconds"] for e in w["methods"].values())
        for w in summary["worlds"].values())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(markdown(summary))
    return summary


def _mean_curve(curves: list[list[list[float]]]) -> list[list[float]]:
    """Mean over seeds at each round every seed logged: [[round, mean, sd], ...]."""
    common = set.intersection(*(set(int(x) for x, _ in c) for c in curves)) if curves and all(curves) else set()
    out = []
    for x in sorted(common):
        vals = [v for c in curves for r, v in c if int(r) == x]
        out.append([x, statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0])
    return out


def _p(v: float) -> str:
    return "< 0.001" if v < 1e-3 else f"{v:.3f}"


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for world, w in summary["worlds"].items():
        p = w["premise_round1"]
        lines.append(f"**{world}** ({len(w['seeds'])} seeds, held-out prompts; premise after the warm starts: layout "
                     f"share of the structure set {p.get('premise/layout_share_in_structure', float('nan')):.2f}; mean "
                     f"commit step layout {p.get('premise/layout_commit_step', float('nan')):.2f} vs detail "
                     f"{p.get('premise/detail_commit_step', float('nan')):.2f})\n")
        lines.append("| method | lr (tuned) | total | layout | detail | GenEval | Δ total vs HT-GRPO [95% CI] | "
                     "p exact | p t | p boot |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        start = next(iter(w["methods"].values()))["start"]
        lines.append(f"| starting policy | | {start['total']:.3f} | {start['layout']:.3f} | {start['detail']:.3f} | "
                     f"{start['geneval']:.3f} | | | | |")
        for method, e in w["methods"].items():
            cells = [f"{e[o]['mean']:.3f} ± {e[o]['sd']:.3f}" for o in OUTCOMES]
            c = e["total"].get("vs_htgrpo")
            stats = (f"{c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {_p(c['p_permutation'])} | "
                     f"{_p(c['p_t'])} | {_p(c['p_value'])}") if c else "— | | |"
            lines.append(f"| {method} | {e['lr']:g} | {' | '.join(cells)} | {stats} |")
        lines.append("")
        lines.append("Tuning (mean final validation total over the tuning seeds; chosen rate in bold):\n")
        rates = sorted({lr for cells in w["tuning"].values() for lr in cells}, key=float)
        lines.append("| method | " + " | ".join(rates) + " |")
        lines.append("|---|" + "---|" * len(rates))
        for method, cells in w["tuning"].items():
            chosen = w["chosen_lr"].get(method)
            row = []
            for lr in rates:
                c = cells.get(lr)
                txt = f"{c['mean']:.3f} ± {c['sd']:.3f}" if c else "—"
                row.append(f"**{txt}**" if chosen is not None and float(lr) == chosen else txt)
            lines.append(f"| {method} | " + " | ".join(row) + " |")
        lines.append("")
    lines.append(f"CPU time of the whole experiment (warm starts, tuning, test): "
                 f"{summary['cpu_seconds_total'] / 3600:.2f} CPU hours.")
    return "\n".join(lines)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--world", choices=WORLDS, required=True)
    p.add_argument("--out", default="bench-out/hierarchy")
    p.add_argument("--methods", nargs="+", default=list(CORE), help=f"method keys: {', '.join(SHORT)}")
    p.add_argument("--lrs", type=float, nargs="+", default=list(LR_GRID), help="the tuning grid")
    p.add_argument("--tune-seeds", type=int, nargs="+", default=[100, 101, 102])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="the test seeds")
    p.add_argument("--lr", action="append", default=[], metavar="KEY=LR",
                   help="a method's rate for `test` without tuning it (e.g. htgrpo=3e-4); repeatable")
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--warmup-steps", type=int, default=12, help="linear lr warm-up, optimizer steps (K=6: 2 rounds)")
    p.add_argument("--warmstart", type=int, default=600, help="supervised warm-start steps per seed")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-per-tag", type=int, default=8)
    p.add_argument("--eval-samples", type=int, default=2)
    p.add_argument("--guard-every", type=int, default=5)
    p.add_argument("--device", default="cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (("tune", "the learning-rate grid on the validation prompts (resumable)"),
                       ("test", "the chosen rates on fresh seeds, held-out prompts (resumable)"),
                       ("protocol", "tune, then test (resumable)")):
        _common(sub.add_parser(name, help=text))
    rep = sub.add_parser("report", help="the tables, statistics and curves from a run folder")
    rep.add_argument("folder")
    rep.add_argument("--json", default="")
    args = ap.parse_args()
    if args.cmd == "report":
        report(args)
        return
    if args.cmd in ("tune", "protocol"):
        tune(args)
    if args.cmd in ("test", "protocol"):
        test(args)


if __name__ == "__main__":
    main()
