"""HT-GRPO vs uniform-credit GRPO vs MaskGRPO-style re-masking on the shapes world, and the cost of the
two importance-ratio estimators.

Part 1, methods (`--part methods`): for each seed, one supervised warm start (the shared starting
policy), then each method (a preset of the same trainer: `htgrpo`, `d1grpo`, `maskgrpo`) trains for the
same number of rounds with the same rollouts per round (B prompts × G images, T steps) and the same K
optimizer steps per round — equal rollout and optimizer-step budgets. The final policy is scored on
held-out prompts (the held-out side of the shapes prompts' split; training uses the other side) with
fixed sampling seeds: mean Flow-GRPO partial-credit
reward and GenEval accuracy. Printed per method: mean ± std over seeds and the per-seed values, plus
wall-clock per round (the estimators differ in cost, so equal rounds is not equal seconds).

Part 2, estimator cost (`--part estimators`): from one starting policy and the same rollouts, the
learning phase of a round (old/reference log-probs + K updates) with the full-mask estimator (one
forward per prompt) and with per-rollout random re-masking (MaskGRPO: one forward per rollout and
iteration), timed interleaved in one process on the same batches; memory is reported twice: the bytes
autograd saves for the backward per optimizer step (activations, exact on any device) and the peak
memory increase of a fresh process per estimator (CUDA allocator peak; on CPU the coarse peak RSS).

    python benchmarks/bench_trainer.py                                # both parts, CPU defaults (~15 min)
    python benchmarks/bench_trainer.py --part methods --seeds 0 1 2 --steps 60 --json out.json
    python benchmarks/bench_trainer.py --part estimators --group-size 16
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from paintbench.config import load_yaml  # noqa: E402
from paintbench.harness.shapes.prompts import make_prompts  # noqa: E402
from paintbench.trainer.config import load_config, resolve_config_path  # noqa: E402
from paintbench.trainer.generate import generate_images  # noqa: E402
from paintbench.trainer.loop import Trainer  # noqa: E402
from paintbench.trainer.rewards import RewardModel  # noqa: E402

METHODS = ("htgrpo", "d1grpo", "maskgrpo")


def base_config(args: argparse.Namespace, **extra: Any):
    file = {**load_yaml(resolve_config_path("shapes-tiny")), "steps": args.steps, "lr": args.lr,
            "warmstart_steps": args.warmstart, "prompts_per_step": args.prompts, "group_size": args.group_size,
            "save_every": 0, "sample_every": 0, "tensorboard": False, "device": args.device}
    return load_config(file, extra)


def evaluate(policy, cfg, model: RewardModel, n_per_tag: int) -> tuple[float, float]:
    records = make_prompts(0, n_per_tag, split="heldout") * 2   # never in training (prompt_split "train")
    prompts = [r["prompt"] for r in records]
    images = generate_images(policy, prompts, list(range(len(prompts))), **cfg.sampler_options())
    res = model(images, prompts, records)
    return float(res.components["shapes-geneval"].mean()), float(res.extras["shapes-geneval/correct"].mean())


def run_methods(args: argparse.Namespace) -> dict[str, Any]:
    model = RewardModel({"shapes-geneval": 1.0}, options={"shapes-geneval": {"mode": "reward"}})
    results: dict[str, Any] = {m: {"reward": [], "accuracy": [], "sec_per_round": []} for m in METHODS}
    results["start"] = {"reward": [], "accuracy": []}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            warm = Trainer(base_config(args, seed=seed), Path(tmp) / "warm")
            warm.setup()                                   # the warm start: the shared starting policy
            start_state = copy.deepcopy(warm.policy.state_dict())
            r0, a0 = evaluate(warm.policy, warm.cfg, model, args.eval_per_tag)
            results["start"]["reward"].append(r0)
            results["start"]["accuracy"].append(a0)
            print(f"seed {seed}: start reward {r0:.3f} accuracy {a0:.3f}", flush=True)
            for method in METHODS:
                cfg = base_config(args, seed=seed, preset=method, warmstart_steps=0)
                tr = Trainer(cfg, Path(tmp) / method)
                tr.policy.load_state_dict(start_state)
                tr.setup()
                t = time.perf_counter()
                for step in range(1, cfg.steps + 1):
                    tr.step = step
                    tr.round(step)
                sec = (time.perf_counter() - t) / cfg.steps
                r, a = evaluate(tr.policy, cfg, model, args.eval_per_tag)
                results[method]["reward"].append(r)
                results[method]["accuracy"].append(a)
                results[method]["sec_per_round"].append(sec)
                print(f"seed {seed}: {method:<9} reward {r:.3f} accuracy {a:.3f} ({sec:.2f} s/round)", flush=True)
    return results


def _estimator_trainer(args: argparse.Namespace, context: str, tmp: str) -> Trainer:
    overrides = {"context": context, "subset": "maskgrpo" if context == "reveal_unsampled" else "random",
                 "warmstart_steps": 0, "seed": 0}
    tr = Trainer(base_config(args, **overrides), tmp)
    tr.setup()
    return tr


def saved_activation_bytes(tr: Trainer, batch: Any) -> int:
    """Bytes autograd saves for the backward passes of one learning phase, per optimizer step: the
    activation memory the estimator needs on top of the weights (deterministic, any device)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta" and t.numel():
            seen[(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())] = t.untyped_storage().nbytes()
        return t

    state = copy.deepcopy(tr.policy.state_dict())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        tr.learn(batch)
    tr.policy.load_state_dict(state)
    return sum(seen.values()) // tr.cfg.inner_iters


def _peak_worker(args_dict: dict[str, Any], context: str, batches_file: str, queue: Any) -> None:
    """A fresh process per estimator: the peak-memory increase of its learning phases (CUDA: allocator
    peak; CPU: peak RSS, coarse)."""
    args = argparse.Namespace(**args_dict)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tr = _estimator_trainer(args, context, tmp)
        batches = torch.load(batches_file, weights_only=False)
        cuda = tr.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for b in batches:
            tr.learn(b)
        peak = (torch.cuda.max_memory_allocated() - before) if cuda else \
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_rss) * 1024
    queue.put(int(peak))


def run_estimators(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Same rollouts, same starting policy; the two learning phases are timed interleaved (batch by
    batch, in one process) so machine load affects both alike."""
    contexts = ("full_mask", "reveal_unsampled")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        collector = Trainer(base_config(args, warmstart_steps=0, seed=0), Path(tmp) / "collect")
        collector.setup()
        batches = [collector.collect(step) for step in range(1, args.estimator_rounds + 1)]
        batches_file = str(Path(tmp) / "batches.pt")
        torch.save(batches, batches_file)
        trainers = {c: _estimator_trainer(args, c, str(Path(tmp) / c)) for c in contexts}
        start = {c: copy.deepcopy(t.policy.state_dict()) for c, t in trainers.items()}
        seconds = dict.fromkeys(contexts, 0.0)
        for b in batches:
            for c, t in trainers.items():
                b_copy = copy.deepcopy(b)
                if t.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                t.learn(b_copy)
                if t.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[c] += time.perf_counter() - t0
        out = []
        for c, t in trainers.items():
            t.policy.load_state_dict(start[c])
            act = saved_activation_bytes(t, copy.deepcopy(batches[0]))
            queue = ctx.Queue()
            proc = ctx.Process(target=_peak_worker, args=(vars(args), c, batches_file, queue))
            proc.start()
            peak = queue.get()
            proc.join()
            sec = seconds[c] / len(batches)
            out.append({"context": c, "sec_per_round": sec, "optimizer_steps_per_s": t.cfg.inner_iters / sec,
                        "activation_bytes_per_step": act, "peak_extra_bytes": peak})
            print(f"{c:<17} {sec:.3f} s/round ({t.cfg.inner_iters / sec:.2f} optimizer steps/s), saved activations "
                  f"{act / 2**20:.1f} MiB/step, peak extra memory {peak / 2**20:.1f} MiB", flush=True)
    return out


def summarize(results: dict[str, Any]) -> str:
    lines = ["| method | final reward (mean ± std) | GenEval accuracy (mean ± std) | s/round | per seed (reward) |",
             "|---|---|---|---|---|"]

    def ms(xs: list[float]) -> str:
        return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"

    for name in ("start", *METHODS):
        r = results[name]
        sec = f"{statistics.mean(r['sec_per_round']):.2f}" if r.get("sec_per_round") else "-"
        lines.append(f"| {name} | {ms(r['reward'])} | {ms(r['accuracy'])} | {sec} | "
                     f"{', '.join(f'{x:.3f}' for x in r['reward'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("all", "methods", "estimators"), default="all")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=40, help="RL rounds per method")
    p.add_argument("--warmstart", type=int, default=200, help="warm-start steps (the shared starting policy)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--prompts", type=int, default=8, help="B: prompts per round")
    p.add_argument("--group-size", type=int, default=8, help="G: images per prompt")
    p.add_argument("--eval-per-tag", type=int, default=16, help="held-out prompts per GenEval tag (x2 seeds)")
    p.add_argument("--estimator-rounds", type=int, default=3, help="rounds timed per estimator")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"args": vars(args), "torch": torch.__version__}
    if args.part in ("all", "estimators"):
        report["estimators"] = run_estimators(args)
    if args.part in ("all", "methods"):
        report["methods"] = run_methods(args)
        print(summarize(report["methods"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
