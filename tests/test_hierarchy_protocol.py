"""The fair hierarchy protocol's parts (issue #25): the validation split, the guard metrics in the
loop, objects per image, the exact and t tests beside the bootstrap, and the bench's rate choice."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from paintbench.harness import worlds
from paintbench.harness.shapes.prompts import TAGS, in_split, is_heldout, is_validation, make_prompts
from paintbench.harness.stats import paired_permutation_test, paired_t_test
from paintbench.trainer import guard
from paintbench.trainer.estimator import view_logps
from paintbench.trainer.loop import Trainer
from paintbench.trainer.strategies import View, trace_views
from tests.test_trainer_loop import small

REPO = Path(__file__).resolve().parents[1]


def combos(record):
    """The combinations a record uses (what the splits hold out whole)."""
    tag, inc = record["tag"], record["include"]
    if tag == "single_object":
        return {("shape", inc[0]["class"])}
    if tag in ("two_object", "position"):
        return {("pair", frozenset(c["class"] for c in inc))}
    if tag == "counting":
        return {("count", inc[0]["class"], inc[0]["count"])}
    return {("colour", c["class"], c["color"]) for c in inc}


def test_fit_validation_and_heldout_are_disjoint_by_combination_and_train_is_fit_plus_validation():
    every = make_prompts(0, 10**6)
    sides = {s: make_prompts(0, 10**6, split=s) for s in ("fit", "validation", "heldout", "train")}
    texts = {s: {r["prompt"] for r in rs} for s, rs in sides.items()}
    assert texts["train"] == texts["fit"] | texts["validation"] and not texts["fit"] & texts["validation"]
    assert len(sides["fit"]) + len(sides["validation"]) + len(sides["heldout"]) == len(every)
    for tag in TAGS:                              # every tag is on every side
        for s in ("fit", "validation", "heldout"):
            assert any(r["tag"] == tag for r in sides[s]), (tag, s)
    # whole combinations: a validation prompt's pair / count / shape is never trained on; for colour
    # prompts, a validation record uses at least one (shape, colour) no fit record uses
    fit_combos = set().union(*(combos(r) for r in sides["fit"]))
    for r in sides["validation"]:
        c = combos(r)
        assert (c & fit_combos) != c if r["tag"] in ("colors", "color_attr") else not c & fit_combos, r["prompt"]
    assert not any(is_validation(r) for r in sides["heldout"]) and all(is_heldout(r) for r in sides["heldout"])
    assert all(in_split(r, "validation") for r in sides["validation"])
    with pytest.raises(ValueError, match="split"):
        in_split(every[0], "test")


@pytest.mark.parametrize("world", ["blocks", "shapes"])
def test_objects_per_image_count_what_the_oracle_drew(world):
    w = worlds.get(world)
    records = [r for r in make_prompts(0, 3) if r["tag"] in ("single_object", "two_object", "counting")]
    rng = np.random.default_rng(0)
    codes = torch.stack([w.oracle(r, rng).reshape(-1) for r in records])
    asked = torch.tensor([guard.asked_objects(r) for r in records])
    assert torch.equal(w.objects(codes), asked)
    empty = torch.zeros_like(codes[:1]) if world == "shapes" else codes[:1].clone().fill_(0)
    assert int(w.objects(empty)[0]) == 0
    stats = guard.object_metrics(torch.tensor([0, 2, 5]), torch.tensor([1, 2, 3]))
    assert stats["objects/over_asked_frac"] == pytest.approx(1 / 3)
    assert stats["objects/under_asked_frac"] == pytest.approx(1 / 3)
    assert stats["objects/per_image"] == pytest.approx(7 / 3)


def test_guard_sums_by_hand():
    before = torch.log(torch.tensor([[0.5, 0.2], [0.1, 0.4]]))
    after = torch.log(torch.tensor([[0.5, 0.3], [0.05, 0.4]]))
    ref = torch.log(torch.tensor([[0.25, 0.2], [0.1, 0.4]]))
    m = guard.guard_metrics(guard.sampling_context_sums(before, after, ref, clip_eps=0.2))
    ratios = [1.0, 1.5, 0.5, 1.0]
    assert m["guard/ratio_mean"] == pytest.approx(sum(ratios) / 4)
    assert m["guard/ratio_max"] == pytest.approx(1.5) and m["guard/ratio_min"] == pytest.approx(0.5)
    assert m["guard/out_of_clip_frac"] == pytest.approx(0.5)
    assert m["guard/kl_update"] == pytest.approx(sum(r - 1 - math.log(r) for r in ratios) / 4)
    assert m["guard/kl_ref"] == pytest.approx((0.5 - 1 - math.log(0.5)) / 4)


def test_guard_metrics_read_the_update_on_the_canvases_the_tokens_were_sampled_from(tmp_path):
    """Round 1 logs the guard; its ratios equal an independent computation on the trace views (the full-
    mask views the estimator uses would give other numbers); rounds off the schedule log none."""
    tr = Trainer(small(steps=3, guard_every=3, lr=3e-3), tmp_path / "run")
    tr.setup()
    start = copy.deepcopy(tr.policy).eval()
    batch = tr.collect(1)
    upd = tr.learn(batch)
    got = upd["guard"]
    views = trace_views(batch.roll.codes, batch.roll.commit_step, batch.roll.num_steps)
    with torch.no_grad():
        before = view_logps(start, batch.estimator, views)
        after = view_logps(tr.policy.eval(), batch.estimator, views)
        full_before = view_logps(start, batch.estimator, [View()])
        full_after = view_logps(tr.policy, batch.estimator, [View()])
    r = torch.exp(after - before).double()
    assert got["guard/ratio_mean"] == pytest.approx(float(r.mean()), rel=1e-6)
    assert got["guard/ratio_max"] == pytest.approx(float(r.max()), rel=1e-6)
    assert got["guard/out_of_clip_frac"] == pytest.approx(float(((r - 1).abs() > 0.2).double().mean()))
    assert got["guard/kl_update"] > 0 and got["guard/kl_ref"] == pytest.approx(0.0, abs=1e-12)  # ref = start
    assert float(torch.exp(full_after - full_before).double().mean()) != pytest.approx(got["guard/ratio_mean"], rel=1e-6)
    assert tr.guard_due(1) and not tr.guard_due(2) and tr.guard_due(3)
    metrics = tr.metrics(batch, upd, times=(0.0, 0.0, 0.0, 1.0))
    assert metrics["guard/ratio_mean"] == got["guard/ratio_mean"] and "objects/per_image" in metrics
    assert "guard" not in tr.learn(tr.collect(2))


def test_the_paired_t_and_exact_sign_flip_tests_by_hand():
    # the audit's 10 per-seed differences (MaskGRPO - HT-GRPO, blocks, lr 1e-3): p = 0.072 exactly
    d = [1.02, 0.33, 0.46, 0.63, 0.23, -0.25, 0.64, -0.42, 0.10, 0.07]
    a, b = dict.fromkeys(range(10), 0.0), dict(enumerate(d))
    observed = abs(sum(d))
    extreme = sum(abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed - 1e-12
                  for signs in itertools.product((-1, 1), repeat=10))
    assert paired_permutation_test(a, b).p_value == extreme / 1024 == pytest.approx(0.0723, abs=1e-4)
    n, mean = len(d), sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = paired_t_test(a, b)
    assert t.difference == pytest.approx(mean) and t.se == pytest.approx(sd / math.sqrt(n))
    from scipy import stats as sps

    assert t.p_value == pytest.approx(float(sps.ttest_rel(np.array(d), np.zeros(n)).pvalue), rel=1e-12)
    half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    assert (t.low, t.high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert paired_t_test(a, a).p_value == 1.0 and paired_t_test(a, dict.fromkeys(range(10), 0.5)).p_value == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        paired_t_test({0: 1.0}, {0: 2.0})


def _bench():
    spec = importlib.util.spec_from_file_location("bench_hierarchy", REPO / "benchmarks" / "bench_hierarchy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_bench_chooses_the_best_mean_validation_rate_only_when_every_seed_finished():
    bench = _bench()
    cells = {"0.0001": {"per_seed": {1: 0.5, 2: 0.7}, "mean": 0.6}, "0.001": {"per_seed": {1: 0.9, 2: 0.1}, "mean": 0.5},
             "0.0003": {"per_seed": {1: 0.6, 2: 0.6}, "mean": 0.6}}
    assert bench.choose_lr(cells, 2) == 1e-4                   # a tie goes to the smaller rate
    cells["0.001"]["per_seed"].pop(2)
    assert bench.choose_lr(cells, 2) is None
    assert bench.method_names(["htgrpo", "maskgrpo"]) == ["HT-GRPO", "MaskGRPO"]
    with pytest.raises(SystemExit, match="unknown method"):
        bench.method_names(["ppo"])

