"""The HT-GRPO training loop (htgrpo.md step 8), top to bottom.

    for round in 1..steps:
        prompts  = next B prompts, each repeated G times (prompt-major), this rank's share
        rollout  = iterative unmasking (codes, commit step, commit entropy per image token)
        rewards  = weighted metric providers on the decoded images        → gathered over ranks
        A        = group-relative advantages (global batch), this rank's slice
        struct   = partition(commit step, entropy);  Â = A · credit_weights(struct, ...)
        plan     = for k in 1..K: stage, candidate set, token subset S_k, estimator canvas
        lp_old, lp_ref = estimator under θ_old and π_ref (once per round for the full-mask context)
        guard    = every few rounds: each token's log-prob on the canvas it was sampled from, before ...
        for k in 1..K:  loss_k = clipped surrogate + β·k3 KL over S_k;  one optimizer step
        guard    = ... and after the K steps: the update's real ratio and KL (trainer.guard)
        log, sample images, evaluate, checkpoint

`Trainer.round` is exactly this list; each line is one method below it. The pure maths lives in
`advantages`, `partition`, `credit`, `schedule`, `estimator` and `loss`; this module only wires them.

Determinism: every random draw is keyed by (seed, round, global row) or (seed, round, iteration), so a
run resumed from a checkpoint, or split over several processes, computes the same updates.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from paintbench.config import to_dict
from paintbench.errors import UserError
from paintbench.harness.dist import Dist
from paintbench.trainer import advantages as adv_mod
from paintbench.trainer import checkpoint as ckpt
from paintbench.trainer import guard as guard_mod
from paintbench.trainer import parallel
from paintbench.trainer.config import HTGRPOConfig
from paintbench.trainer.credit import token_advantages
from paintbench.trainer.data import batch_indices, hash_seed, load_records
from paintbench.trainer.estimator import EstimatorBatch, unique_prompts, view_logps
from paintbench.trainer.logs import RunLogger
from paintbench.trainer.loss import LossStats, clipped_kl_loss, normalizer_of
from paintbench.trainer.partition import structure_mask
from paintbench.trainer.policy import MaskedImagePolicy
from paintbench.trainer.progress import Progress
from paintbench.trainer.reward_placement import check_reward_ranks, score_on_reward_ranks
from paintbench.trainer.rewards import AsyncScorer, RewardModel, RewardResult
from paintbench.trainer.sampling import Rollout, SamplerOptions, make_generators, rollout
from paintbench.trainer.schedule import candidates, subset_noise, token_subset
from paintbench.trainer.strategies import (
    CONTEXTS,
    CREDITS,
    ContextInput,
    View,
    forwards,
    only_full_mask,
    trace_views,
)

EvaluateFn = Callable[[MaskedImagePolicy, int], dict[str, float]]
WARMSTART_LOG = "warmstart.jsonl"
STATUS_FILE = "status.json"
"""The supervised warm start's loss per step ({"step", "loss"} lines), beside metrics.jsonl."""


@dataclass
class RoundBatch:
    """Everything one round knows about this rank's share of the global batch."""

    step: int
    records: list[dict[str, Any]]          # the B prompt records of the round (global)
    rows: range                            # this rank's global rows
    estimator: EstimatorBatch              # unique prompts, row → prompt, codes
    roll: Rollout | None = None
    rewards: RewardResult | None = None
    reward_total: torch.Tensor | None = None     # global [B·G]
    advantages: torch.Tensor | None = None       # local [R]
    struct: torch.Tensor | None = None           # local [R, N]
    token_adv: torch.Tensor | None = None        # local [R, N]
    plan: list[dict[str, Any]] = field(default_factory=list)
    images: torch.Tensor | None = None           # local decoded images (uint8, kept for samples)
    components: dict[str, torch.Tensor] = field(default_factory=dict)   # global reward components
    reward_seconds: float = 0.0


class Trainer:
    """Owns the policy, reference, optimizer, rewards and logs of one run directory."""

    def __init__(
        self,
        cfg: HTGRPOConfig,
        out_dir: str | Path,
        *,
        evaluate_fn: EvaluateFn | None = None,
        policy: MaskedImagePolicy | None = None,
        reward_model: RewardModel | None = None,
        dist: Dist | None = None,
        progress: bool = False,
    ) -> None:
        self.cfg = cfg
        self.progress = progress
        self.out = Path(out_dir)
        self.dist = dist or Dist.from_env(cfg.device)
        self.device = torch.device(self.dist.device(cfg.device))  # one check of --device for every command
        self.records = load_records(cfg.prompts, seed=cfg.prompt_seed, per_tag=cfg.prompts_per_tag,
                                    split=cfg.prompt_split)
        check_batch_fits(cfg, self.dist.world_size)
        self.placement = parallel.Placement(
            parallel=parallel.resolve(cfg.parallel, self.dist.world_size), param_dtype=cfg.fsdp_param_dtype,
            reduce_dtype=cfg.fsdp_reduce_dtype, reshard_after_forward=cfg.fsdp_reshard_after_forward,
            reference_offload=cfg.reference_offload)
        check_reward_ranks(cfg.reward_ranks, self.dist.world_size)
        self.policy = policy if policy is not None else self._build_policy()
        self.reward_weights = dict(reward_model.weights) if reward_model is not None else cfg.reward_weights()
        if reward_model is None:
            from paintbench.metrics.registry import require_valid_metadata

            for name in self.reward_weights:
                require_valid_metadata(name, self.records, f"prompts {cfg.prompts!r}")
        # one reward interface (a scorer: images, prompts, metadata -> RewardResult), placed per rank or on
        # `reward_ranks` only (trainer.reward_placement): the other ranks never load a reward model
        holds_rewards = not cfg.reward_ranks or self.dist.rank in cfg.reward_ranks
        self.reward_model: RewardModel | None = reward_model or (
            RewardModel(self.reward_weights, options=cfg.reward_options, weights_dir=cfg.weights_dir,
                        device=self.device, remote=remote_options(cfg)) if holds_rewards else None)
        self.evaluate_fn = evaluate_fn if evaluate_fn is not None else default_evaluate_fn(cfg)
        self.sampler = SamplerOptions.from_dict(cfg.sampler_options())
        self.logger = RunLogger(self.out, enabled=self.dist.is_main, tensorboard=cfg.tensorboard)
        self.step = 0
        self.reference: MaskedImagePolicy | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None

    # -- setup ---------------------------------------------------------------------------------------
    def _build_policy(self) -> MaskedImagePolicy:
        from paintbench.trainer import policies

        cfg = self.cfg
        saved = policies.saved_policy(cfg.policy_path) if cfg.policy_path else None
        if saved is not None:  # a policy paintbench saved (any kind; an 8B one rebuilds its base from its config)
            policy = policies.load(saved, device=self.device, dtype=cfg.dtype)
            if policy.kind != cfg.policy:
                raise UserError(f"policy_path {cfg.policy_path}: a saved {policy.kind!r} policy, but policy={cfg.policy!r}")
            saved_world = getattr(getattr(policy, "world", None), "name", cfg.world)
            if saved_world != cfg.world:
                raise UserError(f"policy_path {cfg.policy_path}: a policy of the {saved_world!r} world, but world={cfg.world!r}")
            return policy
        if cfg.policy_path and cfg.policy == "tiny":
            policies.resolve(cfg.policy_path)  # raises: no saved policy there
        options = dict(cfg.policy_options)
        if cfg.policy == "tiny":
            options.setdefault("world", cfg.world)
        else:
            options.setdefault("model_path", cfg.policy_path)
            options.update(lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           lora_targets=list(cfg.lora_targets))
        return policies.build(cfg.policy, device=self.device, dtype=cfg.dtype, **options)

    def setup(self, *, resume: bool = False) -> None:
        """Warm start (fresh runs), reference policy, optimizer and scheduler; or restore a checkpoint."""
        cfg = self.cfg
        self.policy.set_gradient_checkpointing(cfg.gradient_checkpointing)
        found = ckpt.latest_checkpoint(self.out) if resume else None
        if not resume and self.dist.is_main and _holds_training(self.out):
            raise UserError(f"{self.out} already holds a training run (metrics.jsonl or checkpoints): pass --resume "
                            "to continue it, or use a new --out (runs are never mixed in one folder)")
        if found is not None:
            self._check_same_settings()
        if found is None and self.dist.is_main:
            self.logger.truncate_after(-1)  # resuming with no checkpoint starts over: no line may repeat
        sharded = found is not None and ckpt.is_sharded(found)
        if found is not None and not sharded:
            from paintbench.trainer.policy import load_weights

            self.policy.load_policy_state(load_weights(found / "policy"))
            ref_state = ckpt.load_reference_state(found)
        elif sharded:
            ref_state = None   # the policy, reference and optimizer come from the sharded state below
        else:
            if cfg.warmstart_steps > 0:
                from paintbench.trainer.warmstart import warm_start

                bar = Progress(cfg.warmstart_steps, "warm start", enabled=self.progress and self.dist.is_main,
                               on_update=self._status("warm start"))
                from paintbench.harness.worlds import get as get_world

                losses = warm_start(self.policy, self.records, steps=cfg.warmstart_steps, batch_size=cfg.warmstart_batch,
                                    lr=cfg.warmstart_lr, drop_prompt=cfg.warmstart_drop_prompt, seed=cfg.seed,
                                    on_step=lambda loss: bar.update(loss=loss), oracle=get_world(cfg.world).oracle)
                bar.close()
                if self.dist.is_main:   # the supervised phase's curve, for the training report
                    from paintbench.files import write_atomic

                    self.out.mkdir(parents=True, exist_ok=True)
                    write_atomic(self.out / WARMSTART_LOG, "".join(json.dumps({"step": i, "loss": float(v)}) + "\n"
                                                                   for i, v in enumerate(losses, start=1)).encode())
            ref_state = None
        self.dist.broadcast_parameters(self.policy.trainable_parameters())
        if found is None and self.dist.is_main:   # the starting policy, whole, before any sharding
            self.out.mkdir(parents=True, exist_ok=True)
            if cfg.warmstart_steps > 0:
                self.policy.save(self.out / ckpt.CHECKPOINTS / "warmstart" / "policy", sampler=cfg.sampler_options())
        self.reference = self._make_reference(ref_state) if cfg.beta != 0 else None
        if self.placement.wrapped:   # torch's engine from here on: FSDP2 over the ranks (trainer.parallel)
            mesh = parallel.device_mesh(self.placement.parallel, self.dist.world_size, self.device)
            parallel.apply(self.policy, self.placement, mesh)
            if self.reference is not None and self.policy.reference_is_copy:
                parallel.apply(self.reference, self.placement, mesh, frozen=True)
        params = self.policy.trainable_parameters()
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        if found is not None:
            state = ckpt.load_trainer_state(found)
            if sharded:
                saved_world = int(state.get("world_size", self.dist.world_size))
                if saved_world != self.dist.world_size and self.dist.is_main:
                    import sys

                    print(f"resuming {found.name}, written by {saved_world} process(es), on {self.dist.world_size}: "
                          "torch.distributed.checkpoint re-splits the sharded state; the global batch is unchanged",
                          file=sys.stderr)
                ckpt.load_sharded(found, self.policy, self.optimizer,
                                  self.reference if self.policy.reference_is_copy else None)
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            ckpt.set_rng_state(state["rng"])
            self.step = int(state["step"])
            self.logger.truncate_after(self.step)
        if self.dist.is_main:
            from paintbench.files import dump_yaml, write_atomic

            write_atomic(self.out / "config.yaml", dump_yaml(to_dict(cfg)).encode("utf-8"))

    # settings a resume may change: how long to train, how often to log, save and evaluate, where weights are,
    # and the placement over processes (the loop's results do not depend on it; a sharded checkpoint is re-split)
    RESUMABLE_CHANGES = frozenset({"steps", "log_every", "save_every", "keep_checkpoints", "sample_every",
                                   "eval_every", "eval_max_prompts", "eval_seed", "tensorboard", "weights_dir",
                                   "parallel", "fsdp_reshard_after_forward", "reward_backend", "reward_url", "reward_timeout_s",
                                   "reward_retries", "reward_token_file",
                                   "reference_offload", "reward_ranks"})

    def _check_same_settings(self) -> None:
        """`--resume` with other settings would continue one run with another's maths: refused, naming
        the keys (the harness refuses a run directory made with other settings the same way)."""
        saved_path = self.out / "config.yaml"
        if not saved_path.is_file():
            return
        from paintbench import files

        saved = files.load_yaml(files.read_text(saved_path, "config"), saved_path) or {}
        now = json.loads(json.dumps(to_dict(self.cfg), default=str))
        saved = json.loads(json.dumps(saved, default=str))
        diff = sorted(k for k in set(now) | set(saved)
                      if k not in self.RESUMABLE_CHANGES and now.get(k) != saved.get(k))
        if diff:
            shown = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
            raise UserError(f"{self.out} was trained with other settings ({shown}{'; ...' if len(diff) > 6 else ''}); "
                            "resume with the same settings (only steps and logging may change), or use a new --out")

    def _make_reference(self, state: dict[str, torch.Tensor] | None) -> MaskedImagePolicy:
        ref = self.policy.make_reference()
        if state is not None:
            ref.load_state_dict(state)
        return ref

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Run rounds until `cfg.steps`; returns the last logged metrics."""
        self.setup(resume=resume)
        last: dict[str, Any] = {}
        if self.step == 0 and self.cfg.eval_every > 0:
            self.logger.log(0, self._evaluate(0))
        status = self._status("training")
        bar = Progress(self.cfg.steps - self.step, "train", enabled=self.progress and self.dist.is_main)
        while self.step < self.cfg.steps:
            self.step += 1
            last = self.round(self.step)
            bar.update(step=self.step, reward=last.get("reward/mean"), kl=last.get("kl"))
            if status is not None:
                status(self.step, self.cfg.steps)
        bar.close()
        self._checkpoint(force=True)
        self.logger.close()
        if status is not None:
            self._status("done")(self.step, self.cfg.steps)   # type: ignore[misc]
        return last

    def _status(self, phase: str) -> Callable[[int, int], None] | None:
        """A writer of `RUN/status.json` ({phase: warm start | training | done, step, of, time}), so a
        look at the run folder says where a long run is (main process only; about 100 writes a phase)."""
        if not self.dist.is_main:
            return None
        from paintbench.files import write_atomic

        def write(done: int, total: int) -> None:
            if done in (1, total) or done % max(1, total // 100) == 0 or phase == "done":
                self.out.mkdir(parents=True, exist_ok=True)
                write_atomic(self.out / STATUS_FILE, json.dumps({"phase": phase, "step": done, "of": total,
                                                                 "time": time.time()}).encode(), fsync=False)
        return write

    def round(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        batch = self.collect(step)
        t1 = time.perf_counter()
        update_stats = self.learn(batch)
        t2 = time.perf_counter()
        times = (t1 - t0 - batch.reward_seconds, batch.reward_seconds, t2 - t1, t2 - t0)
        metrics = self.metrics(batch, update_stats, times=times)
        if self.cfg.log_every and step % self.cfg.log_every == 0:
            self.logger.log(step, metrics)
        if self.cfg.sample_every and step % self.cfg.sample_every == 0:
            self.save_samples(batch)
        if self.cfg.eval_every and (step % self.cfg.eval_every == 0 or step == self.cfg.steps):   # and at the end
            ev = self._evaluate(step)
            metrics.update(ev)
            self.logger.log(step, ev)
        self._checkpoint()
        return metrics

    def collect(self, step: int) -> RoundBatch:
        """Prompts, rollouts, rewards and advantages of round `step` (no parameter changes)."""
        batch = self.prompts(step)
        batch.roll, batch.rewards, batch.reward_seconds = self.rollout_and_score(batch)
        self.advantages(batch)
        return batch

    def learn(self, batch: RoundBatch) -> dict[str, Any]:
        """Partition, credit, plan, old/reference log-probs and the K inner optimizer steps."""
        self.credit(batch)
        self.plan(batch)
        lp_old, lp_ref = self.old_and_reference_logps(batch)
        before = self.guard_before(batch)
        stats = self.update(batch, lp_old, lp_ref)
        if before is not None:
            stats["guard"] = self.guard_after(batch, *before)
        return stats

    # 1. prompts ----------------------------------------------------------------------------------------
    def prompts(self, step: int) -> RoundBatch:
        cfg = self.cfg
        b, g = cfg.prompts_per_step, cfg.group_size
        idx = batch_indices(len(self.records), cfg.seed, (step - 1) * b, b)
        records = [self.records[i] for i in idx]
        start, stop = self.dist.share(b * g)
        rows = range(start, stop)
        uniq, inverse = unique_prompts([r // g for r in rows])
        texts = [records[int(u)]["prompt"] for u in uniq]
        est = EstimatorBatch(self.policy.encode_prompts(texts), inverse.to(self.device),
                             torch.empty(0, dtype=torch.long, device=self.device))
        return RoundBatch(step=step, records=records, rows=rows, estimator=est)

    # 2. rollouts and rewards -----------------------------------------------------------------------------
    @torch.no_grad()
    def rollout_and_score(self, batch: RoundBatch) -> tuple[Rollout, RewardResult, float]:
        cfg = self.cfg
        g = cfg.group_size
        self.policy.eval()
        rows = list(batch.rows)
        per = cfg.rollout_batch_size or len(rows)
        placed = bool(cfg.reward_ranks) and self.dist.enabled
        scorer = None if placed else AsyncScorer(self.reward_model, cfg.reward_async)
        parts, images = [], []
        t_reward = 0.0
        for start in range(0, len(rows), per):
            chunk = rows[start:start + per]
            local = torch.arange(start, start + len(chunk))
            prompts = batch.estimator.prompts.select(batch.estimator.row_prompt[local].cpu())
            gens = make_generators([hash_seed(cfg.seed, "rollout", batch.step, r) for r in chunk], self.device)
            part = rollout(self.policy, prompts, gens, self.sampler)
            img = self.policy.decode(part.codes)
            recs = [batch.records[r // g] for r in chunk]
            t = time.perf_counter()
            if scorer is not None:
                scorer.submit(img, [r["prompt"] for r in recs], recs)
            t_reward += time.perf_counter() - t
            parts.append(part)
            images.append(img)
        t = time.perf_counter()
        if scorer is not None:
            rewards = scorer.results()
            scorer.close()
        else:
            everyone = [batch.records[r // g] for r in range(cfg.prompts_per_step * g)]
            rewards = score_on_reward_ranks(self.dist, self.reward_model, cfg.reward_ranks, list(self.reward_weights),
                                            torch.cat(images), batch.rows, [r["prompt"] for r in everyone], everyone)
        t_reward += time.perf_counter() - t
        roll = Rollout.cat(parts)
        batch.estimator.codes = roll.codes
        batch.images = torch.cat(images)
        return roll, rewards, t_reward

    # 3. advantages (global batch) ------------------------------------------------------------------------
    def advantages(self, batch: RoundBatch) -> None:
        cfg = self.cfg
        assert batch.rewards is not None
        comps = {k: self.dist.all_gather_cat(v.to(self.device)).cpu() for k, v in batch.rewards.components.items()}
        adv, total = adv_mod.multi_reward_advantages(
            comps, self.reward_weights, cfg.group_size, aggregation=cfg.reward_aggregation,
            scale=cfg.adv_scale, leave_one_out=cfg.adv_leave_one_out, eps=cfg.adv_eps)
        batch.components = comps
        batch.reward_total = total
        batch.advantages = adv[batch.rows.start:batch.rows.stop].to(self.device)

    # 4. partition and credit ----------------------------------------------------------------------------
    def credit(self, batch: RoundBatch) -> None:
        cfg, roll = self.cfg, batch.roll
        assert roll is not None and batch.advantages is not None
        batch.struct = structure_mask(roll.commit_step, roll.commit_entropy, rule=cfg.partition, rho_s=cfg.rho_s,
                                      eta=cfg.eta, num_steps=roll.num_steps)
        w = CREDITS[cfg.credit](roll, batch.struct, cfg)
        batch.token_adv = token_advantages(batch.advantages, w, negative=cfg.credit_negative)

    # 5. the inner-loop plan: stage, subset and estimator views per iteration -----------------------------
    def plan(self, batch: RoundBatch) -> None:
        cfg = self.cfg
        assert batch.struct is not None and batch.roll is not None
        total_rows = cfg.prompts_per_step * cfg.group_size
        n = batch.roll.codes.shape[1]
        batch.plan = []
        for k, stage in enumerate(cfg.stages(batch.step), start=1):
            gen = torch.Generator()
            gen.manual_seed(hash_seed(cfg.seed, "subset", batch.step, k))
            u, rho = subset_noise(total_rows, n, gen, rho_min=cfg.rho_min)
            sl = slice(batch.rows.start, batch.rows.stop)
            cands = candidates(stage, batch.struct)
            subset = token_subset(cands, u[sl].to(self.device), rho[sl].to(self.device), rule=cfg.subset, k=k,
                                  num_iters=cfg.inner_iters, min_rate=cfg.remask_min_rate)
            views = CONTEXTS[cfg.context](ContextInput(batch.roll, subset, batch.struct, stage, cfg))
            batch.plan.append({"k": k, "stage": stage, "subset": subset, "views": views})

    # 6. old and reference log-probs -------------------------------------------------------------------
    @torch.no_grad()
    def old_and_reference_logps(self, batch: RoundBatch) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Per iteration k: lp_old and lp_ref [R, N]. Iterations that read only the fully masked canvas
        share one computation (one forward per unique prompt for the whole round)."""
        self.policy.eval()
        shared: dict[str, torch.Tensor | None] = {}
        olds, refs = [], []
        for item in batch.plan:
            views = item["views"]
            is_shared = only_full_mask(views)
            if is_shared and "old" in shared:
                olds.append(shared["old"])  # type: ignore[arg-type]
                refs.append(shared["ref"])
                continue
            old = self._logps(self.policy, batch.estimator, views)
            ref = self._logps(self.reference, batch.estimator, views) if self.reference is not None else None
            if is_shared:
                shared["old"], shared["ref"] = old, ref
            olds.append(old)
            refs.append(ref)
        return olds, refs

    def _logps(self, policy: MaskedImagePolicy, est: EstimatorBatch, views: list[View]) -> torch.Tensor:
        out = []
        for idx in self._micro_batches(len(est.codes)):
            sub = est if idx is None else est.rows(idx)
            out.append(view_logps(policy, sub, [v.rows(idx) for v in views], cfg_scale=self.cfg.estimator_cfg).float())
        return torch.cat(out)

    def _micro_batches(self, rows: int) -> list[torch.Tensor | None]:
        per = self.cfg.micro_batch_size
        if per <= 0 or per >= rows:
            return [None]
        return [torch.arange(s, min(s + per, rows)) for s in range(0, rows, per)]

    # 6b. guard: the update measured where the images are sampled (trainer.guard) -------------------------
    def guard_due(self, step: int) -> bool:
        every = self.cfg.guard_every
        return every > 0 and (step == 1 or step % every == 0)

    @torch.no_grad()
    def guard_before(self, batch: RoundBatch) -> tuple[list[View], torch.Tensor, torch.Tensor | None] | None:
        """Each rollout token's log-prob on the canvas it was committed from, under the rollout policy
        (θ before this round's update) and the reference; None in rounds without guard metrics."""
        if not self.guard_due(batch.step):
            return None
        roll = batch.roll
        assert roll is not None
        views = trace_views(roll.codes, roll.commit_step, roll.num_steps, self.cfg.guard_shrink)
        self.policy.eval()
        before = self._logps(self.policy, batch.estimator, views)
        ref = self._logps(self.reference, batch.estimator, views) if self.reference is not None else None
        return views, before, ref

    @torch.no_grad()
    def guard_after(self, batch: RoundBatch, views: list[View], before: torch.Tensor,
                    ref: torch.Tensor | None) -> dict[str, float]:
        self.policy.eval()
        after = self._logps(self.policy, batch.estimator, views)
        sums = guard_mod.sampling_context_sums(before, after, ref, clip_eps=self.cfg.clip_eps)
        maxima = ("ratio_max", "inv_ratio_max")
        added = [k for k in sums if k not in maxima]
        sums.update(zip(added, self.dist.sum([sums[k] for k in added]), strict=True))
        top = self.dist.all_gather_cat(torch.tensor([[sums[k] for k in maxima]], dtype=torch.float64,
                                                     device=self.device)).amax(dim=0)
        sums.update(zip(maxima, top.tolist(), strict=True))
        return guard_mod.guard_metrics(sums)

    # 7. K inner iterations, one optimizer step each ---------------------------------------------------
    def update(self, batch: RoundBatch, lp_old: list[torch.Tensor], lp_ref: list[torch.Tensor | None]) -> dict[str, Any]:
        cfg = self.cfg
        assert self.optimizer is not None and batch.token_adv is not None
        params = self.policy.trainable_parameters()
        # Dropout (LoRA's included) stays off, as when the old log-probs were taken (TRL's `disable_dropout`):
        # otherwise the two are computed in different modes and the ratio is not 1 at the first inner step.
        self.policy.eval()
        per_stage: dict[str, LossStats] = {}
        losses, grad_norms = [], []
        for item, old, ref in zip(batch.plan, lp_old, lp_ref, strict=True):
            subset, views = item["subset"], item["views"]
            z = self.dist.sum([normalizer_of(subset, cfg.loss_norm)])[0]
            self.optimizer.zero_grad(set_to_none=True)
            stats, loss_total = LossStats(), 0.0
            micro = self._micro_batches(len(subset))
            for i, idx in enumerate(micro):
                if self.placement.wrapped:   # reduce once, after the last micro-batch
                    parallel.set_gradient_sync(self.policy, i == len(micro) - 1)
                sel = slice(None) if idx is None else idx
                est = batch.estimator if idx is None else batch.estimator.rows(idx)
                lp = view_logps(self.policy, est, [v.rows(idx) for v in views], cfg_scale=cfg.estimator_cfg).float()
                loss, st = clipped_kl_loss(lp, old[sel], batch.token_adv[sel], subset[sel],
                                           lp_ref=None if ref is None else ref[sel], clip_eps=cfg.clip_eps,
                                           beta=cfg.beta, norm=cfg.loss_norm, normalizer=z,
                                           ratio_level=cfg.ratio_level)
                loss.backward()
                stats = stats.add(st)
                loss_total += float(loss.detach())
            if not self.placement.wrapped:
                self.dist.all_reduce_grads(params)
            norm = clip_gradients(params, cfg.max_grad_norm)
            total = self.dist.sum([loss_total])[0]  # every rank sees the same numbers and stops together
            if not (math.isfinite(total) and math.isfinite(float(norm))):
                raise TrainingDiverged(self.step, item["stage"], total, float(norm), cfg.lr,
                                       ckpt.latest_checkpoint(self.out))
            self.optimizer.step()
            self.scheduler.step()
            losses.append(total)
            grad_norms.append(norm)
            per_stage[item["stage"]] = per_stage.get(item["stage"], LossStats()).add(stats)
        self.policy.eval()
        totals = {s: LossStats(*self.dist.sum(st.as_list())) for s, st in per_stage.items()}
        return {"losses": losses, "grad_norms": grad_norms, "per_stage": totals}

    # 8. logs, samples, evaluation, checkpoints -------------------------------------------------------------
    def metrics(self, batch: RoundBatch, upd: dict[str, Any], *, times: tuple[float, float, float, float]) -> dict[str, Any]:
        cfg = self.cfg
        assert batch.reward_total is not None and batch.roll is not None and batch.struct is not None
        total = batch.reward_total
        out: dict[str, Any] = {"reward/mean": float(total.mean()), "reward/std": float(total.std()) if len(total) > 1 else 0.0}
        for name, v in batch.components.items():
            out[f"reward/{name}/mean"] = float(v.mean())
            out[f"reward/{name}/std"] = float(v.std()) if len(v) > 1 else 0.0
        assert batch.rewards is not None
        for key, v in batch.rewards.extras.items():
            out[f"reward/{key}"] = float(self.dist.all_gather_cat(v.to(self.device)).float().mean())
        out["reward/zero_std_frac"] = adv_mod.zero_std_fraction(total, cfg.group_size)
        all_stats = LossStats()
        for s in upd["per_stage"].values():
            all_stats = all_stats.add(s)
        m = all_stats.means()
        out.update({"loss": float(sum(upd["losses"]) / len(upd["losses"])), "kl": m["kl"], "clip_frac": m["clip_frac"],
                    "ratio": m["ratio"], "adv/abs_mean": float(self.dist.sum([float(batch.advantages.abs().sum())])[0] / len(total)),
                    "adv_tok/abs_mean": m["adv_abs"]})
        ent, struct, cnt = self.dist.sum([float(batch.roll.commit_entropy.sum()), float(batch.struct.float().sum()),
                                          float(batch.struct.numel())])
        out["entropy"] = ent / max(cnt, 1.0)
        out["structure_frac"] = struct / max(cnt, 1.0)
        world = getattr(self.policy, "world", None)
        count = getattr(world, "objects", None)
        if count is not None:  # objects drawn vs asked: a policy that stops drawing (or overshoots) shows here
            g = cfg.group_size
            asked = torch.tensor([guard_mod.asked_objects(batch.records[r // g]) for r in batch.rows], device=self.device)
            drawn = self.dist.all_gather_cat(count(batch.roll.codes).to(self.device))
            out.update(guard_mod.object_metrics(drawn, self.dist.all_gather_cat(asked)))
        out.update(upd.get("guard", {}))
        premise = getattr(world, "premise", None)
        if premise is not None:  # the world's premise (blocks: layout tokens first?), on this rank's rollouts
            out.update(premise(batch.roll.codes, batch.roll.commit_step, batch.struct))
        for stage, st in upd["per_stage"].items():
            sm = st.means()
            out.update({f"stage/{stage}/tokens": sm["tokens"], f"stage/{stage}/clip_frac": sm["clip_frac"],
                        f"stage/{stage}/kl": sm["kl"], f"stage/{stage}/adv_abs": sm["adv_abs"]})
        out["lr"] = float(self.scheduler.get_last_lr()[0])
        out["grad_norm"] = float(sum(upd["grad_norms"]) / len(upd["grad_norms"]))
        t_roll, t_rew, t_upd, t_all = times
        seqs = forwards([item["views"] for item in batch.plan], len(batch.roll.codes), len(batch.estimator.prompts),
                        with_ref=self.reference is not None)
        out.update({"time/rollout_s": t_roll, "time/reward_s": t_rew, "time/update_s": t_upd, "time/step_s": t_all,
                    "throughput/images_per_s": len(total) / max(t_all, 1e-9),
                    "throughput/sequences_per_s": seqs / max(t_upd, 1e-9)})
        return out

    def save_samples(self, batch: RoundBatch) -> None:
        if not self.dist.is_main or batch.images is None or batch.rewards is None:
            return
        n = min(self.cfg.num_samples, len(batch.images))
        g = self.cfg.group_size
        prompts = [batch.records[r // g]["prompt"] for r in list(batch.rows)[:n]]
        total = batch.reward_total[batch.rows.start:batch.rows.start + n]  # type: ignore[index]
        comps = {k: v[:n] for k, v in batch.rewards.components.items()}
        self.logger.samples(batch.step, batch.images[:n], prompts, total, comps)

    def _evaluate(self, step: int) -> dict[str, float]:
        # under ddp/fsdp every forward is collective: every rank evaluates (only rank 0 logs)
        if self.evaluate_fn is None or not (self.dist.is_main or self.placement.wrapped):
            return {}
        res = self.evaluate_fn(self.policy, step)
        if not self.dist.is_main:
            return {}
        return {k if k.startswith("eval/") else f"eval/{k}": float(v) for k, v in res.items()}

    def _checkpoint(self, *, force: bool = False) -> Path | None:
        cfg = self.cfg
        due = force or (cfg.save_every > 0 and self.step % cfg.save_every == 0)
        if not due or self.step == 0 or not (self.dist.is_main or self.placement.wrapped):
            return None
        latest = ckpt.latest_checkpoint(self.out)
        if force and latest is not None and latest.name == f"step_{self.step:06d}":
            return latest
        assert self.optimizer is not None
        if self.placement.wrapped:   # every rank writes its shards (torch.distributed.checkpoint)
            return ckpt.save_sharded_checkpoint(
                self.out, self.step, dist=self.dist, policy=self.policy, optimizer=self.optimizer,
                scheduler=self.scheduler, data_position=self.step * cfg.prompts_per_step, config=to_dict(cfg),
                reference=self.reference if self.policy.reference_is_copy else None,
                sampler=cfg.sampler_options(), keep=cfg.keep_checkpoints, parallel=self.placement.parallel)
        ref_state = None
        if self.reference is not None and self.policy.reference_is_copy:
            ref_state = dict(self.reference.state_dict())
        return ckpt.save_checkpoint(
            self.out, self.step, policy=self.policy, optimizer=self.optimizer, scheduler=self.scheduler,
            data_position=self.step * cfg.prompts_per_step, config=to_dict(cfg), reference_state=ref_state,
            sampler=cfg.sampler_options(), keep=cfg.keep_checkpoints)


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm (0 = no clipping); returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if hasattr(grads[0], "full_tensor"):   # FSDP2's sharded gradients: torch's clip computes the global norm
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def lr_lambda(cfg: HTGRPOConfig) -> Callable[[int], float]:
    total = max(1, cfg.steps * cfg.inner_iters)
    warm = max(0, cfg.warmup_steps)

    def f(s: int) -> float:
        if warm and s < warm:
            return (s + 1) / warm
        if cfg.lr_schedule == "cosine":
            progress = min(1.0, (s - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return f


def remote_options(cfg: HTGRPOConfig) -> dict[str, Any] | None:
    """The remote reward backend's settings (None: rewards in process)."""
    if cfg.reward_backend != "remote":
        return None
    from paintbench.metrics.remote import read_token

    return {"url": cfg.reward_url, "token": read_token(cfg.reward_token_file or None),
            "timeout_s": cfg.reward_timeout_s, "retries": cfg.reward_retries}


def default_evaluate_fn(cfg: HTGRPOConfig) -> EvaluateFn | None:
    if cfg.eval_every <= 0:
        return None
    from paintbench.trainer.evaluate import SuiteEvaluator

    return SuiteEvaluator(cfg.eval_suite, images_per_prompt=cfg.eval_images_per_prompt,
                          max_prompts=cfg.eval_max_prompts, sampler=cfg.sampler_options(), seed=cfg.eval_seed)


ROLLOUT_BYTES_PER_TOKEN = 3 * 4 * 8192
"""Bound on the rollout's float32 working set per image token (conditional, unconditional and
probabilities over a vocabulary of up to 8,192 image codes); an estimate for refusing absurd batches
before anything is allocated, not a memory plan."""


def check_batch_fits(cfg: HTGRPOConfig, world_size: int) -> None:
    """Refuse a round whose rollout batch alone cannot fit in this machine's memory, naming the numbers
    (`prompts_per_step=100000 group_size=100000` allocated until MemoryError)."""
    rows = math.ceil(cfg.prompts_per_step * cfg.group_size / max(1, world_size))
    chunk = min(rows, cfg.rollout_batch_size) if cfg.rollout_batch_size > 0 else rows
    tokens = 4096  # the largest image grid the adapters use (64 x 64); the tiny policy uses 64
    need = chunk * tokens * ROLLOUT_BYTES_PER_TOKEN
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    if need > 64 * have:   # only the absurd: a real batch for a GPU stays far below
        raise UserError(f"prompts_per_step={cfg.prompts_per_step} x group_size={cfg.group_size} = "
                        f"{cfg.prompts_per_step * cfg.group_size:,} rollouts per round ({rows:,} per process, "
                        f"{chunk:,} per forward) would need about {need / 2**30:,.0f} GiB for the rollout alone, "
                        f"against {have / 2**30:,.0f} GiB here; lower them or set rollout_batch_size")


class TrainingDiverged(UserError):
    """The loss or the gradient norm is not finite: training stops before the update is applied, so no
    NaN weights are ever saved."""

    def __init__(self, step: int, stage: str, loss: float, grad_norm: float, lr: float, last: Path | None) -> None:
        where = f"the last checkpoint is {last}" if last is not None else "no checkpoint was saved yet"
        super().__init__(f"step {step} ({stage} stage): the loss is {loss} and the gradient norm {grad_norm}; "
                         f"training stopped before applying this update ({where}). Lower lr (now {lr:g}) or "
                         "max_grad_norm, then rerun with --resume")


def _holds_training(out: Path) -> bool:
    metrics = out / "metrics.jsonl"
    return (metrics.is_file() and metrics.stat().st_size > 0) or any((out / ckpt.CHECKPOINTS).glob("step_*"))


def train(cfg: HTGRPOConfig, out_dir: str | Path, *, resume: bool = False,
          evaluate_fn: EvaluateFn | None = None, progress: bool = False) -> dict[str, Any]:
    """Train per `cfg` into `out_dir` (resume from its latest checkpoint if asked); `progress` shows the
    warm start and the steps on stderr."""
    import contextlib

    from paintbench.harness.rundir import hold_folder

    trainer = Trainer(cfg, out_dir, evaluate_fn=evaluate_fn, progress=progress)
    try:
        # one training process group per folder: a second `train` into it stops here, naming the holder
        with hold_folder(Path(out_dir)) if trainer.dist.is_main else contextlib.nullcontext():
            return trainer.fit(resume=resume)
    finally:
        trainer.dist.close()
