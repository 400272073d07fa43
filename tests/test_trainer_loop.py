"""The training loop: reductions to the baselines, exact resume, logs, checkpoints and the CLI."""

from __future__ import annotations

import argparse
import copy
import json
from types import SimpleNamespace

import pytest
import torch

from paintbench.errors import UserError
from paintbench.trainer import policies
from paintbench.trainer.advantages import group_advantages
from paintbench.trainer.config import load_config
from paintbench.trainer.data import hash_seed
from paintbench.trainer.logs import read_metrics
from paintbench.trainer.loop import Trainer
from paintbench.trainer.loss import k3_kl
from paintbench.trainer.policy import MASK
from paintbench.trainer.schedule import maskgrpo_ratio
from tests.shared_data import SHARED, require

SMALL = {
    "steps": 2, "warmstart_steps": 0, "prompts_per_step": 2, "group_size": 4, "rollout_steps": 4,
    "inner_iters": 3, "n_global": 1, "n_struct": 1, "sample_every": 0, "save_every": 0, "tensorboard": False,
    "policy_options": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "max_text_len": 12},
    "prompts_per_tag": 20, "lr": 1e-3, "beta": 0.04, "eval_every": 0,
}


def small(**overrides):
    """shapes-tiny shrunk for tests: SMALL acts as the config file, so presets still apply over it."""
    from paintbench.config import load_yaml
    from paintbench.trainer.config import resolve_config_path

    return load_config({**load_yaml(resolve_config_path("shapes-tiny")), **SMALL}, overrides)


def params(policy):
    return [p.detach().clone() for p in policy.trainable_parameters()]


def max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def full_mask_logps(policy, batch):
    """log p(codes | prompt, all masked), written out directly (the d1 estimator)."""
    est = batch.estimator
    full = torch.full((len(est.prompts), est.codes.shape[1]), MASK)
    return log_prob(policy.image_logits(est.prompts, full)[est.row_prompt], est.codes)


def log_prob(logits, codes):
    """log softmax(logits)[codes], as logit - logsumexp (the same rounding as the trainer's gather)."""
    logits = logits.float()
    return logits.gather(-1, codes[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_mean_objective(lp, old, lref, a, sel, cfg):
    r = torch.exp(lp - old)
    obj = torch.minimum(r * a, torch.clamp(r, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * a) - cfg.beta * k3_kl(lp, lref)
    return -(obj * sel).sum() / sel.sum()


def reference_gradients(trainer, policy0, batch, lp_fn, snapshots, objective=token_mean_objective):
    """For each inner iteration k, the gradient of an independently written GRPO loss at the trainer's
    parameters before its k-th step: A = (R - mean)/(std + 1e-5) per group, uniform credit, clipped ratio
    + beta·k3 KL to the initial policy, token mean, then the same global-norm clip.
    `lp_fn(policy, k)` -> (log-probs [R, N], selected mask)."""
    cfg = trainer.cfg
    total = sum(cfg.reward_weights()[k] * v for k, v in batch.components.items())
    adv = group_advantages(total, cfg.group_size, eps=1e-5)
    old_pol = copy.deepcopy(policy0).eval()
    out = []
    for k, (before, _) in enumerate(snapshots, start=1):
        with torch.no_grad():
            old, sel = lp_fn(old_pol, k)
            lref, _ = lp_fn(old_pol, k)          # the reference policy is the initial policy
        pol = copy.deepcopy(policy0)
        with torch.no_grad():
            for p, v in zip(pol.trainable_parameters(), before, strict=True):
                p.copy_(v)
        lp, _ = lp_fn(pol, k)
        objective(lp, old, lref, adv[:, None].expand_as(lp), sel, cfg).backward()
        torch.nn.utils.clip_grad_norm_(pol.trainable_parameters(), cfg.max_grad_norm)
        out.append([p.grad for p in pol.trainable_parameters()])
    return out


def assert_same_gradients(trainer, policy0, batch, lp_fn, snapshots, objective=token_mean_objective):
    """Every inner iteration's gradient equals the reference formula's to float summation order (the
    trainer sums a prompt's G rows in a different order), and the run took K steps."""
    assert len(snapshots) == trainer.cfg.inner_iters
    expected = reference_gradients(trainer, policy0, batch, lp_fn, snapshots, objective)
    for (_, got), want in zip(snapshots, expected, strict=True):
        scale = max(float(g.abs().max()) for g in want)
        assert scale > 0
        assert max_diff(got, want) <= 1e-5 * scale


def one_round(cfg, tmp_path):
    """Set up a trainer, run one round; returns (trainer, initial policy, batch, per-step snapshots of
    (parameters before the step, gradients the step used))."""
    tr = Trainer(cfg, tmp_path)
    tr.setup()
    policy0 = copy.deepcopy(tr.policy)
    batch = tr.collect(1)
    snaps = []
    tr.optimizer.register_step_pre_hook(lambda opt, args, kw: snaps.append(
        (params(tr.policy), [p.grad.detach().clone() for p in tr.policy.trainable_parameters()])))
    tr.learn(batch)
    return tr, policy0, batch, snaps


def test_grpo_preset_is_uniform_credit_grpo_on_the_full_mask_estimator(tmp_path):
    tr, policy0, batch, snaps = one_round(small(preset="grpo"), tmp_path)
    assert tr.cfg.n_global == tr.cfg.inner_iters and tr.cfg.lambda_s == 0
    assert batch.struct is not None and all(item["subset"].all() for item in batch.plan)   # every token, every k

    def lp_fn(pol, k):
        return full_mask_logps(pol, batch), torch.ones_like(batch.estimator.codes, dtype=torch.float32)

    assert_same_gradients(tr, policy0, batch, lp_fn, snaps)
    assert max_diff(params(tr.policy), params(policy0)) > 1e-4          # and the update did something


def test_htgrpo_with_the_hierarchy_switched_off_is_exactly_the_grpo_preset(tmp_path):
    off = small(n_global=3, n_struct=0, lambda_s=0.0, rho_min=1.0)
    assert off.preset == "htgrpo"
    a, *_ = one_round(off, tmp_path / "a")
    b, *_ = one_round(small(preset="grpo"), tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(params(a.policy), params(b.policy), strict=True))
    on, *_ = one_round(small(), tmp_path / "c")
    assert max_diff(params(on.policy), params(a.policy)) > 1e-6         # the hierarchy does change the update


def test_maskgrpo_preset_is_per_rollout_random_remasking(tmp_path):
    tr, policy0, batch, snaps = one_round(small(preset="maskgrpo"), tmp_path)
    cfg = tr.cfg
    codes, rows = batch.estimator.codes, len(batch.estimator.codes)

    def lp_fn(pol, k):
        # MaskGRPO "uni": re-mask each image token with probability min(m0 + (1-m0)k/K, 0.999) from the
        # iteration's seed; the re-masked set is both the input mask and the loss mask.
        g = torch.Generator().manual_seed(hash_seed(cfg.seed, "subset", 1, k))
        u = torch.rand(rows, codes.shape[1], generator=g)
        remask = u < maskgrpo_ratio(k, cfg.inner_iters, cfg.remask_min_rate)
        canvas = torch.where(remask, torch.full_like(codes, MASK), codes)
        prompts = batch.estimator.prompts.select(batch.estimator.row_prompt)
        return log_prob(pol.image_logits(prompts, canvas), codes), remask.float()

    assert_same_gradients(tr, policy0, batch, lp_fn, snaps)


def sequence_mean_objective(lp, old, lref, a, sel, cfg):
    """dLLM-RL's loss: per-token clipped terms averaged per rollout, then over rollouts."""
    r = torch.exp(lp - old)
    obj = torch.minimum(r * a, torch.clamp(r, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * a) - cfg.beta * k3_kl(lp, lref)
    per_seq = (obj * sel).sum(1) / sel.sum(1)
    return -per_seq.sum() / (sel.sum(1) > 0).sum()


def sequence_ratio_objective(lp, old, lref, a, sel, cfg):
    """UniGRPO (MMaDA paper): log π'(o) = mean of the masked tokens' log-probs, one ratio per rollout."""
    n = sel.sum(1)
    r = torch.exp((lp * sel).sum(1) / n - (old * sel).sum(1) / n)
    adv = a[:, 0]
    obj = torch.minimum(r * adv, torch.clamp(r, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv)
    obj = obj - cfg.beta * (k3_kl(lp, lref) * sel).sum(1) / n
    return -obj.sum() / (n > 0).sum()


def test_tracegrpo_preset_reads_each_token_from_the_canvas_it_was_committed_on(tmp_path):
    tr, policy0, batch, snaps = one_round(small(preset="tracegrpo"), tmp_path)
    cfg = tr.cfg
    assert (cfg.context, cfg.credit, cfg.loss_norm, cfg.n_global) == ("trace", "uniform", "sequence", cfg.inner_iters)
    roll = batch.roll
    codes, steps = roll.codes, roll.commit_step
    prompts = batch.estimator.prompts.select(batch.estimator.row_prompt)

    def lp_fn(pol, k):
        # TraceRL: a token committed at step s is predicted from the canvas holding exactly the tokens
        # committed before s; written per rollout and per step
        out = torch.zeros(codes.shape)
        for r in range(len(codes)):
            for s in steps[r].unique().tolist():
                canvas = torch.where(steps[r] < s, codes[r], torch.full_like(codes[r], MASK))[None]
                lp = log_prob(pol.image_logits(prompts.select([r]), canvas), codes[r][None])[0]
                out[r] = torch.where(steps[r] == s, lp, out[r])
        return out, torch.ones_like(codes, dtype=torch.float32)

    assert_same_gradients(tr, policy0, batch, lp_fn, snaps, sequence_mean_objective)
    assert len(batch.plan[0]["views"]) == len(steps.unique())     # one view per commit step


def test_unigrpo_preset_is_a_random_mask_ratio_per_rollout_with_one_ratio_per_rollout(tmp_path):
    tr, policy0, batch, snaps = one_round(small(preset="unigrpo"), tmp_path)
    cfg = tr.cfg
    codes, rows = batch.estimator.codes, len(batch.estimator.codes)
    prompts = batch.estimator.prompts.select(batch.estimator.row_prompt)

    def lp_fn(pol, k):
        # per rollout a mask ratio p ~ U[0, 1] (uniforms u, then p, from the iteration's seed); a token is
        # masked iff u < p (an empty mask takes the lowest u); the rest of the image stays visible
        g = torch.Generator().manual_seed(hash_seed(cfg.seed, "subset", 1, k))
        u = torch.rand(rows, codes.shape[1], generator=g)
        p = torch.rand(rows, generator=g)
        masked = u < p[:, None]
        for r in range(rows):
            if not masked[r].any():
                masked[r, u[r].argmin()] = True
        canvas = torch.where(masked, torch.full_like(codes, MASK), codes)
        return log_prob(pol.image_logits(prompts, canvas), codes), masked.float()

    assert_same_gradients(tr, policy0, batch, lp_fn, snaps, sequence_ratio_objective)


def test_presets_are_bundles_of_registered_strategies_and_old_names_still_load():
    from paintbench.trainer.config import PRESETS
    from paintbench.trainer.strategies import CONTEXTS, CREDITS, SCHEDULES

    for name in PRESETS:
        cfg = load_config("shapes-tiny", {"preset": name})
        assert cfg.context in CONTEXTS and cfg.credit in CREDITS and cfg.stage_schedule in SCHEDULES
    assert load_config("shapes-tiny", {"preset": "grpo"}).context == load_config("shapes-tiny", {"preset": "d1grpo"}).context
    assert load_config("shapes-tiny", {"preset": "maskgrpo-emerge"}).sampler == "emerge"
    with pytest.raises(UserError, match="ratio_level=sequence"):
        load_config("shapes-tiny", {"ratio_level": "sequence"})


def test_progressive_schedule_trains_structure_first_then_refinement(tmp_path):
    cfg = small(stage_schedule="progressive", steps=4, inner_iters=4, n_global=1, n_struct=2)
    assert [cfg.stages(r) for r in (1, 2, 3, 4)] == [["global", "struct", "struct", "struct"]] * 2 + \
        [["global", "refine", "refine", "refine"]] * 2
    assert small(stage_schedule="progressive", steps=4, stage_switch_round=3).stages(3)[-1] == "struct"
    assert small(steps=4, n_global=1, n_struct=1).stages(4) == ["global", "struct", "refine"]  # every_round
    tr = Trainer(cfg, tmp_path)
    tr.setup()
    stages = []
    for r in (1, 2, 3):
        batch = tr.collect(r)
        tr.credit(batch)
        tr.plan(batch)
        stages.append([item["stage"] for item in batch.plan])
        refine = [item["subset"] for item in batch.plan if item["stage"] == "refine"]
        assert all(not (s & batch.struct).any() for s in refine)    # refinement never touches structure tokens
    assert stages == [cfg.stages(r) for r in (1, 2, 3)]


def test_full_mask_runs_one_forward_per_prompt_and_reference_stays_frozen(tmp_path):
    for context, per_call, calls in (("full_mask", 2, 3 + 1), ("reveal_unsampled", 8, 3 + 3)):
        # the estimator's own forwards (the guard metrics' extra passes are tested in test_hierarchy_protocol)
        tr = Trainer(small(context=context, guard_every=0), tmp_path / context)
        tr.setup()
        ref0 = [p.detach().clone() for p in tr.reference.parameters()]
        batch = tr.collect(1)
        seen = []
        hook = tr.policy.register_forward_hook(lambda m, args, out, seen=seen: seen.append(args[1].shape[0]))
        try:
            tr.learn(batch)
        finally:
            hook.remove()
        assert seen == [per_call] * calls, context          # old log-probs once per round, then K updates
        assert tr.scheduler.last_epoch == tr.cfg.inner_iters    # one optimizer step per inner iteration
        assert all(torch.equal(a, b) for a, b in zip(ref0, tr.reference.parameters(), strict=True))


@pytest.mark.slow
def test_exact_resume(tmp_path):
    cfg = small(steps=4, save_every=2, keep_checkpoints=0)
    straight = Trainer(cfg, tmp_path / "straight")
    straight.fit()
    interrupted = Trainer(cfg, tmp_path / "resumed")
    interrupted.setup()
    for step in (1, 2):
        interrupted.step = step
        interrupted.round(step)                               # saves step_000002, then the "crash"
    resumed = Trainer(cfg, tmp_path / "resumed")
    resumed.fit(resume=True)
    assert resumed.step == 4
    assert all(torch.equal(a, b) for a, b in zip(params(straight.policy), params(resumed.policy), strict=True))
    a = [r["reward/mean"] for r in read_metrics(tmp_path / "straight")]
    b = [r["reward/mean"] for r in read_metrics(tmp_path / "resumed")]
    assert a == b and len(a) == 4
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


def test_logs_samples_checkpoints_and_evaluation_hook(tmp_path):
    calls = []

    def evaluate(policy, step):
        calls.append(step)
        return {"probe": float(step)}

    cfg = small(steps=2, sample_every=2, save_every=1, keep_checkpoints=1, num_samples=3, eval_every=2)
    last = Trainer(cfg, tmp_path, evaluate_fn=evaluate).fit()
    rows = read_metrics(tmp_path)
    assert calls == [0, 2]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2]
    need = {"reward/mean", "reward/shapes-geneval/mean", "reward/shapes-geneval/correct", "kl", "clip_frac",
            "entropy", "reward/zero_std_frac", "structure_frac", "stage/global/tokens", "stage/struct/tokens",
            "stage/refine/tokens", "throughput/images_per_s", "lr"}
    assert need <= set(rows[1])
    assert rows[1]["structure_frac"] == pytest.approx(0.3125)          # ceil(0.3 * 64) / 64
    assert any(r.get("eval/probe") == 2.0 for r in rows) and last["eval/probe"] == 2.0
    samples = tmp_path / "samples" / "step_000002"
    lines = [json.loads(x) for x in (samples / "rewards.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all((samples / x["file"]).is_file() for x in lines)
    assert {"prompt", "reward", "reward/shapes-geneval"} <= set(lines[0])
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_000002"]
    loaded = policies.load(tmp_path)                                   # a run folder resolves to its latest
    assert loaded.default_sampler()["steps"] == cfg.rollout_steps


def test_config_presets_overrides_and_errors():
    cfg = load_config("shapes-tiny", {"preset": "maskgrpo", "inner_iters": 4})
    assert (cfg.subset, cfg.context, cfg.n_global, cfg.lambda_s) == ("maskgrpo", "reveal_unsampled", 4, 0.0)
    assert load_config("shapes-tiny", {"preset": "grpo", "lambda_s": 0.5}).lambda_s == 0.5    # key=value wins
    assert load_config("shapes-tiny").reward_weights() == {"shapes-geneval": 1.0}
    assert load_config("shapes-tiny", {"reward": ["a=0.5", "b"]}).reward_weights() == {"a": 0.5, "b": 1.0}
    with pytest.raises(UserError, match="unknown key"):
        load_config("shapes-tiny", {"lamda_s": 1})
    with pytest.raises(UserError):
        load_config("shapes-tiny", {"partition": "random"})
    with pytest.raises(UserError):
        load_config("no-such-config")


def test_cli_train_writes_a_run(tmp_path, capsys):
    from paintbench.commands import train as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args(["shapes-tiny", "steps=1", "warmstart_steps=2", "prompts_per_step=2", "group_size=2",
                              "rollout_steps=2", "inner_iters=2", "n_global=1", "n_struct=1", "tensorboard=false",
                              "--reward", "shapes-geneval=2.0", "--out", str(tmp_path)])
    assert cmd.run(args) == 0
    out = capsys.readouterr()
    everything = read_metrics(tmp_path)
    rows = [r for r in everything if "reward/mean" in r]
    assert f"final: reward {rows[0]['reward/mean']:.3f} -> {rows[-1]['reward/mean']:.3f} (round 1 -> 1)" in out.out
    held = [(r["step"], r["eval/shapes-heldout/shapes-geneval"]) for r in everything
            if "eval/shapes-heldout/shapes-geneval" in r]
    assert [s for s, _ in held] == [0, 1]            # shapes-tiny evaluates before the first round and after the last
    assert f"held-out shapes-heldout/shapes-geneval {held[0][1]:.3f} -> {held[1][1]:.3f} (round 0 -> 1)" in out.out
    assert "ETA" in out.err                                                   # progress lines say how long is left
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "done" and status["step"] == status["of"] == 1
    assert [json.loads(x)["step"] for x in (tmp_path / "warmstart.jsonl").read_text().splitlines()] == [1, 2]
    assert rows[-1]["step"] == 1 and rows[-1]["reward/mean"] == pytest.approx(2 * rows[-1]["reward/shapes-geneval/mean"])
    assert (tmp_path / "checkpoints" / "warmstart" / "policy" / "policy.json").is_file()
    assert (tmp_path / "config.yaml").read_text().count("shapes-geneval=2.0") == 1
    args = parser.parse_args(["shapes-tiny", "nonsense=1", "--dry-run"])
    with pytest.raises(UserError):
        cmd.run(args)


def test_rollout_chunks_and_async_rewards_do_not_change_a_round(tmp_path):
    plain = Trainer(small(), tmp_path / "a")
    plain.setup()
    chunked = Trainer(small(rollout_batch_size=3, reward_async=True), tmp_path / "b")
    chunked.setup()
    a, b = plain.collect(1), chunked.collect(1)
    assert torch.equal(a.roll.codes, b.roll.codes) and torch.equal(a.roll.commit_step, b.roll.commit_step)
    assert torch.equal(a.reward_total, b.reward_total) and torch.equal(a.advantages, b.advantages)


def test_non_finite_settings_are_refused():
    for key in ("lr", "beta", "clip_eps"):
        with pytest.raises(UserError, match=f"{key} = inf: not a finite number"):
            small(**{key: float("inf")})
    with pytest.raises(UserError, match=r"betas = .*nan.*not a finite number"):
        small(betas=[0.9, float("nan")])


def test_a_nan_loss_stops_before_the_update_and_saves_nothing(tmp_path, monkeypatch):
    from paintbench.trainer import loop
    from paintbench.trainer.loop import TrainingDiverged

    real = loop.clipped_kl_loss

    def nan_loss(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(loop, "clipped_kl_loss", nan_loss)
    tr = Trainer(small(save_every=1), tmp_path)
    with pytest.raises(TrainingDiverged, match=r"step 1 \(global stage\): the loss is nan.*no checkpoint was saved yet"):
        tr.fit()
    assert all(torch.isfinite(p).all() for p in tr.policy.trainable_parameters())  # the update was never applied
    assert not list((tmp_path / "checkpoints").glob("step_*"))


def test_a_kill_before_the_first_checkpoint_never_duplicates_metrics_lines(tmp_path, monkeypatch):
    from paintbench.trainer import loop

    cfg = small(steps=3, save_every=0)
    real_round = loop.Trainer.round

    def killed_in_round_2(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return real_round(self, step)

    with monkeypatch.context() as mp:
        mp.setattr(loop.Trainer, "round", killed_in_round_2)
        with pytest.raises(KeyboardInterrupt):
            Trainer(cfg, tmp_path).fit()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
    Trainer(cfg, tmp_path).fit(resume=True)  # no checkpoint to resume from: starts over, cleanly
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps == sorted(set(steps)) and steps[-1] == 3


def test_a_fresh_run_into_a_used_folder_is_refused(tmp_path):
    Trainer(small(steps=1), tmp_path).fit()
    with pytest.raises(UserError, match=r"already holds a training run.*--resume"):
        Trainer(small(steps=1), tmp_path).fit()


def test_disk_full_while_training_is_one_clear_line(tmp_path, monkeypatch, capsys):
    import errno

    from paintbench import cli
    from paintbench.trainer.logs import RunLogger

    def full(self, step, values):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "t" / "metrics.jsonl"))

    monkeypatch.setattr(RunLogger, "log", full)
    code = cli.main(["train", "shapes-tiny", "--out", str(tmp_path / "t"), *(f"{k}={json.dumps(v)}" for k, v in
                                                                            SMALL.items())])
    assert code == 2
    assert capsys.readouterr().err.strip() == (f"paintbench train: error: {tmp_path / 't' / 'metrics.jsonl'}: "
                                               "No space left on device")


def _small_overrides() -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in SMALL.items()] + ["steps=1"]


@pytest.mark.slow  # a real training run
@pytest.mark.hf  # writes GenEval's Mask2Former (transformers) tiny weights
def test_the_readmes_multi_reward_example_trains(tmp_path, capsys):
    """`paintbench train CONFIG --reward geneval=1.0 --reward hps-v2.1=0.5` failed: the file's
    reward_options for shapes-geneval clashed with the replaced reward list."""
    from paintbench import cli
    from paintbench.metrics.synthetic import write_tiny_weights

    weights = tmp_path / "w"
    for m in ("geneval", "hps-v2.1"):
        write_tiny_weights(m, weights)
    # the shapes world's classes are not COCO's: refused before any model is built, naming the class
    code = cli.main(["train", "shapes-tiny", "--reward", "geneval=1.0", "--reward", "hps-v2.1=0.5",
                     "--weights-dir", str(weights), "--out", str(tmp_path / "mix"), *_small_overrides()])
    assert code == 2 and "cannot be scored by geneval" in capsys.readouterr().err
    assert not (tmp_path / "mix" / "metrics.jsonl").exists()
    prompts = require(SHARED / "data" / "geneval" / "evaluation_metadata.jsonl")
    code = cli.main(["train", "shapes-tiny", "--reward", "geneval=1.0", "--reward", "hps-v2.1=0.5",
                     "--weights-dir", str(weights), "--out", str(tmp_path / "mix"), *_small_overrides(),
                     f"prompts={prompts}", "eval_every=0"])
    assert code == 0, capsys.readouterr().err
    row = read_metrics(tmp_path / "mix")[-1]
    assert "reward/geneval/mean" in row and "reward/hps-v2.1/mean" in row


def test_an_unknown_reward_is_refused_before_anything_runs(tmp_path, capsys):
    from paintbench import cli

    assert cli.main(["train", "shapes-tiny", "--reward", "hps-v3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'hps-v3'" in err and "hps-v2" in err
    assert cli.main(["train", "shapes-tiny", "--weights-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "--weights-dir" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.slow  # a real training run
def test_training_shows_progress_in_a_log_and_is_quiet_on_request(tmp_path):
    """`paintbench train shapes-tiny` printed nothing for minutes."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "paintbench", "train", "shapes-tiny", *_small_overrides(), "steps=2",
            "warmstart_steps=4"]
    out = subprocess.run([*args, "--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert any(ln.startswith("warm start 4/4  loss ") for ln in lines)
    assert any(ln.startswith("train 2/2  step 2  reward ") and " kl " in ln for ln in lines)
    assert "\r" not in out.stderr  # plain lines in a log, no bar redraws
    quiet = subprocess.run([*args, "--out", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and "train 2/2" not in quiet.stderr and "warm start" not in quiet.stderr


def test_resume_with_other_settings_is_refused_naming_the_keys(tmp_path):
    Trainer(small(steps=1, save_every=1), tmp_path).fit()
    with pytest.raises(UserError, match=r"trained with other settings \(lr: 0\.001 -> 0\.002\)"):
        Trainer(small(steps=2, save_every=1, lr=2e-3), tmp_path).fit(resume=True)
    Trainer(small(steps=2, save_every=1), tmp_path).fit(resume=True)  # more steps: a resume may change that


def test_a_preset_named_in_a_file_does_not_override_the_files_own_keys(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("preset: grpo\nlambda_s: 0.7\n")
    cfg = load_config(str(f))
    assert cfg.preset == "grpo" and cfg.lambda_s == 0.7  # the file's key wins over its own preset
    assert load_config("shapes-tiny", {"preset": "grpo"}).lambda_s == 0.0  # a CLI preset still sits above the file
    assert load_config(str(f), {"lambda_s": 0.2}).lambda_s == 0.2  # key=value wins over both


def test_policy_path_loads_a_saved_policy_of_any_kind(tmp_path, monkeypatch):
    """Only `tiny` loaded a saved policy; an MMaDA/DiMOO run folder was taken for a base-model folder."""
    from paintbench.trainer import policies

    Trainer(small(steps=1, save_every=1), tmp_path / "run").fit()  # a tiny run folder with checkpoints
    resumed = Trainer(small(steps=1, policy_path=str(tmp_path / "run")), tmp_path / "again")
    assert resumed.policy.kind == "tiny"
    saved = policies.saved_policy(tmp_path / "run")
    meta = json.loads((saved / "policy.json").read_text())
    meta["kind"] = "mmada"  # an 8B run's saved policy: rebuilt by policies.load, never as a base-model folder
    (saved / "policy.json").write_text(json.dumps(meta))
    seen = []
    monkeypatch.setattr(policies, "load", lambda path, **kw: seen.append(path) or SimpleNamespace(kind="mmada"))
    with pytest.raises(UserError, match="a saved 'mmada' policy, but policy='tiny'"):
        Trainer(small(steps=1, policy_path=str(tmp_path / "run")), tmp_path / "b")
    assert seen == [saved]
    assert policies.saved_policy(tmp_path / "nothing") is None


def test_the_ratio_is_one_at_the_first_inner_step_even_with_dropout(tmp_path):
    """With LoRA dropout the old log-probs (eval mode) and the new ones (train mode) differed, so r != 1
    before any update."""
    tr = Trainer(small(steps=1, inner_iters=1, n_global=1, n_struct=0, beta=0.0), tmp_path)
    tr.policy.drop = torch.nn.Dropout(0.5)  # a registered submodule: train()/eval() switch it
    inner = tr.policy.image_logits
    tr.policy.image_logits = lambda *a, **k: tr.policy.drop(inner(*a, **k))
    tr.setup()
    tr.step = 1
    metrics = tr.round(1)
    assert metrics["ratio"] == pytest.approx(1.0, abs=1e-6)


def test_the_run_folder_says_it_is_in_the_warm_start(tmp_path, monkeypatch):
    from paintbench.trainer import warmstart

    seen = []

    def fake_warm_start(policy, records, *, steps, on_step, **kw):
        for i in range(steps):
            on_step(1.0 / (i + 1))
            seen.append(json.loads((tmp_path / "run" / "status.json").read_text()))
        return [1.0 / (i + 1) for i in range(steps)]

    monkeypatch.setattr(warmstart, "warm_start", fake_warm_start)
    tr = Trainer(small(warmstart_steps=3), tmp_path / "run")
    tr.setup()
    assert [(s["phase"], s["step"], s["of"]) for s in seen] == [("warm start", i, 3) for i in (1, 2, 3)]
    assert [json.loads(x)["loss"] for x in (tmp_path / "run" / "warmstart.jsonl").read_text().splitlines()] == \
        pytest.approx([1.0, 0.5, 1 / 3])
