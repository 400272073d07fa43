"""Rollout samplers, the importance-ratio estimator and the tiny policy (htgrpo.md (e) tests 1-2)."""

from __future__ import annotations

import math

import pytest
import torch

from paintbench.trainer import policies
from paintbench.trainer.estimator import EstimatorBatch, gather_logps, token_logps, unique_prompts
from paintbench.trainer.generate import generate_images
from paintbench.trainer.policies.tiny import TinyPolicy
from paintbench.trainer.policy import MASK
from paintbench.trainer.sampling import (
    Rollout,
    SamplerOptions,
    committed_by,
    compound_temperatures,
    inverse_cdf,
    keep_masked,
    make_generators,
    rollout,
)
from paintbench.trainer.strategies import CONTEXTS, ContextInput

PROMPTS = ["a photo of a red circle", "a photo of two squares", "a photo of a star left of a cross"]


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return TinyPolicy(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_text_len=12, init_seed=3).eval()


def _roll(policy, prompts, seeds, **kw):
    return rollout(policy, policy.encode_prompts(prompts), make_generators(seeds), SamplerOptions(**kw))


@pytest.mark.parametrize("steps", [1, 4, 8, 12])
def test_maskgit_schedule_commits_cosine_counts_and_everything_by_the_end(policy, steps):
    r = _roll(policy, PROMPTS, [1, 2, 3], steps=steps)
    n = policy.num_image_tokens
    assert (r.commit_step >= 0).all() and (r.commit_step <= steps - 1).all()
    assert ((r.codes >= 0) & (r.codes < policy.codebook_size)).all()
    if steps > 1:   # after step 0, floor(N cos(pi/2 / T)) tokens are still masked
        assert committed_by(0, steps, n) == n - math.floor(n * math.cos(math.pi / 2 / steps))
    assert committed_by(steps - 1, steps, n) == n
    for step in range(steps):
        assert ((r.commit_step <= step).sum(dim=1) == committed_by(step, steps, n)).all()
    assert keep_masked(steps - 1, steps, n, 5) == 0
    assert (r.commit_entropy >= 0).all() and (r.commit_entropy <= math.log(policy.codebook_size) + 1e-5).all()


def test_entropy_recorded_is_that_of_the_commit_step_distribution(policy):
    r = _roll(policy, PROMPTS[:1], [5], steps=1)          # one step: every token committed at step 0
    logits = policy.image_logits(policy.encode_prompts(PROMPTS[:1]), torch.full((1, 64), MASK))
    p = torch.softmax(logits.float(), dim=-1)
    h = -(p * torch.log(p)).sum(dim=-1)
    assert torch.allclose(r.commit_entropy, h, atol=1e-5)
    assert (r.commit_step == 0).all()


def test_same_seed_same_rollout_whatever_the_batch(policy):
    a = _roll(policy, PROMPTS, [11, 12, 13], steps=6, cfg_scale=1.5)
    b = _roll(policy, PROMPTS, [11, 12, 13], steps=6, cfg_scale=1.5)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.commit_step, b.commit_step)
    alone = _roll(policy, PROMPTS[1:2], [12], steps=6, cfg_scale=1.5)
    assert torch.equal(alone.codes[0], a.codes[1]) and torch.equal(alone.commit_step[0], a.commit_step[1])
    other = _roll(policy, PROMPTS, [11, 99, 13], steps=6, cfg_scale=1.5)
    assert not torch.equal(other.codes[1], a.codes[1])


def test_emerge_sampler_commits_everything_and_constant_mode_zero_temperature_is_greedy(policy):
    r = _roll(policy, PROMPTS, [1, 2, 3], steps=6, sampler="emerge")
    assert (r.codes >= 0).all() and (r.commit_step >= 0).all() and (r.commit_step <= 5).all()
    greedy = _roll(policy, PROMPTS[:1], [1], steps=1, temperature=0.0, temperature_mode="constant")
    logits = policy.image_logits(policy.encode_prompts(PROMPTS[:1]), torch.full((1, 64), MASK))
    assert torch.equal(greedy.codes, logits.argmax(dim=-1))


def test_compound_temperature_follows_mmada():
    taus = compound_temperatures(1.0, 4)
    assert taus == pytest.approx([0.75, 0.75 * 0.5, 0.75 * 0.5 * 0.25, 0.0])


def test_inverse_cdf_never_draws_zero_probability_codes():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]]).expand(1000, 4)
    draws = inverse_cdf(probs, torch.rand(1000, generator=torch.Generator().manual_seed(0)))
    assert set(draws.tolist()) <= {1, 3} and 400 < (draws == 1).sum() < 600
    assert inverse_cdf(torch.tensor([[0.0, 1.0]]), torch.tensor([0.0])).tolist() == [1]


def test_cfg_is_one_plus_s_cond_minus_s_uncond(policy):
    pb = policy.encode_prompts(PROMPTS[:2])
    canvas = torch.full((2, 64), MASK)
    canvas[:, :5] = 3
    cond = policy.image_logits(pb, canvas)
    uncond = policy.image_logits(policy.encode_prompts(["", ""]), canvas)
    guided = policy.image_logits(pb, canvas, cfg_scale=2.0)
    assert torch.allclose(guided, 3 * cond - 2 * uncond, atol=1e-5)


# -- estimator --------------------------------------------------------------------------------------------


def test_full_mask_logps_are_the_masked_state_softmax_gathered_one_forward_per_prompt(policy):
    g = 4
    r = _roll(policy, PROMPTS[:2] * 1, [1, 2], steps=4)
    codes = torch.cat([r.codes[:1].expand(g, -1), r.codes[1:].expand(g - 1, -1), r.codes[:1]])  # 2 prompts × 4
    row_prompt = torch.tensor([0] * g + [1] * g)
    batch = EstimatorBatch(policy.encode_prompts(PROMPTS[:2]), row_prompt, codes)
    seen = []
    hook = policy.register_forward_hook(lambda m, args, out: seen.append(args[1].shape[0]))
    try:
        lp = token_logps(policy, batch)
    finally:
        hook.remove()
    assert seen == [2]                                   # one forward, one row per unique prompt
    full = torch.log_softmax(policy.image_logits(batch.prompts, torch.full((2, 64), MASK)), dim=-1)
    expected = torch.stack([full[row_prompt[i]].gather(-1, codes[i, :, None]).squeeze(-1) for i in range(2 * g)])
    assert torch.allclose(lp, expected, atol=1e-6)
    assert torch.equal(lp[0], lp[1])                     # identical codes in a group: identical log-probs
    assert torch.equal(lp[g], lp[g + 1]) and not torch.equal(lp[0], lp[g])
    # depends on the codes only through the gather: the last row of group 1 has group 0's codes
    assert torch.allclose(lp[2 * g - 1], full[1].gather(-1, codes[0, :, None]).squeeze(-1), atol=1e-6)


def test_reveal_unsampled_masks_exactly_the_subset_and_sketch_visible_reveals_structure(policy):
    codes = torch.randint(0, 61, (2, 64), generator=torch.Generator().manual_seed(0))
    subset = torch.rand(2, 64, generator=torch.Generator().manual_seed(1)) < 0.3
    struct = torch.rand(2, 64, generator=torch.Generator().manual_seed(2)) < 0.3
    roll = Rollout(codes, torch.zeros_like(codes), torch.zeros(2, 64), 8)

    def canvas_for(context, stage):
        (view,) = CONTEXTS[context](ContextInput(roll, subset, struct, stage, None))
        assert view.positions is None
        return view.canvas

    c = canvas_for("reveal_unsampled", "global")
    assert torch.equal(c == MASK, subset) and torch.equal(c[~subset], codes[~subset])
    assert canvas_for("full_mask", "refine") is None
    assert canvas_for("sketch_visible", "struct") is None
    s = canvas_for("sketch_visible", "refine")
    assert torch.equal(s == MASK, ~struct) and torch.equal(s[struct], codes[struct])
    batch = EstimatorBatch(policy.encode_prompts(PROMPTS[:2]), torch.tensor([0, 1]), codes)
    lp = token_logps(policy, batch, c)
    direct = torch.log_softmax(policy.image_logits(batch.prompts, c), dim=-1).gather(-1, codes[..., None]).squeeze(-1)
    assert torch.allclose(lp, direct, atol=1e-6)


def test_unique_prompts_and_gather():
    uniq, inv = unique_prompts([3, 3, 1, 1, 3])
    assert uniq.tolist() == [3, 1] and inv.tolist() == [0, 0, 1, 1, 0]
    logits = torch.randn(2, 3, 5)
    codes = torch.tensor([[0, 1, 2], [4, 4, 4], [1, 1, 1]])
    out = gather_logps(logits, codes, torch.tensor([0, 1, 0]))
    ref = torch.log_softmax(logits, -1)
    assert torch.allclose(out[1], ref[1, torch.arange(3), codes[1]])
    assert torch.allclose(out[2], ref[0, torch.arange(3), codes[2]])


# -- generation and persistence ---------------------------------------------------------------------------


def test_generate_images_and_load_round_trip(policy, tmp_path):
    imgs = generate_images(policy, PROMPTS, [7, 8, 9], steps=4)
    assert imgs.dtype == torch.uint8 and imgs.shape == (3, 3, 128, 128)
    one = generate_images(policy, PROMPTS[1:2], [8], steps=4)
    assert torch.equal(one[0], imgs[1])
    policy.save(tmp_path / "p", sampler={"steps": 4, "cfg_scale": 0.5})
    loaded = policies.load(tmp_path / "p")
    assert loaded.default_sampler()["cfg_scale"] == 0.5 and loaded.default_sampler()["steps"] == 4
    for a, b in zip(policy.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    again = generate_images(loaded, PROMPTS, [7, 8, 9], steps=4, cfg_scale=1.0)   # the tiny default
    assert torch.equal(again, imgs)
    with pytest.raises(TypeError):
        generate_images(loaded, PROMPTS, [1, 2, 3], stepz=4)


def _vendored(path: str, name: str):
    import importlib.util

    from tests.shared_data import SHARED, require

    f = require(SHARED / "vendor" / path)
    spec = importlib.util.spec_from_file_location(name, f)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cosine_schedule_is_the_models_own_in_float32():
    """In float64 one step kept one token too many masked whenever T was a multiple of 3 (72 % identical
    ids at T = 15 against MMaDA), including MMaDA's default 12 and the README's 15."""
    import torch

    from paintbench.trainer.sampling import masked_after

    mmada = _vendored("mmada/models/sampling.py", "mmada_sampling")
    for num_steps in range(1, 41):
        for n in (16, 64, 256, 1024, 4096):
            for step in range(num_steps):
                ratio = 1.0 * (step + 1) / num_steps  # MMaDA's t2i_generate: cosine_schedule(torch.tensor(ratio))
                theirs = int((n * mmada.cosine_schedule(torch.tensor(ratio))).floor())
                # Lumina-DiMOO's generate_image: (vq_len.float() * cos(0.5 * pi * t)).floor(), same numbers
                dimoo = int((torch.tensor([float(n)]) * torch.cos(0.5 * math.pi * torch.tensor([ratio]))).floor())
                assert masked_after(step, num_steps, n) == theirs == dimoo, (num_steps, n, step)


def test_the_emerge_sampler_reads_temperature_like_the_maskgit_sampler(policy):
    """Emerge treated temperature 0 as 1 and applied τ whatever temperature_mode said."""
    greedy = [_roll(policy, PROMPTS[:1], [s], steps=6, sampler="emerge", temperature=0.0,
                    temperature_mode="constant") for s in (1, 2)]
    for r in greedy:  # every code is the argmax of the logits at the step it was committed
        canvas = torch.full_like(r.codes, MASK)
        for step in range(6):
            logits = policy.image_logits(policy.encode_prompts(PROMPTS[:1]), canvas)
            now = r.commit_step == step
            assert torch.equal(r.codes[now], logits.argmax(-1)[now])
            canvas = torch.where(r.commit_step <= step, r.codes, canvas)
    # compound mode: the draw has no temperature, so τ changes nothing in emerge (as in MMaDA's draw)
    a = _roll(policy, PROMPTS[:1], [5], steps=6, sampler="emerge", temperature=0.3, temperature_mode="compound")
    b = _roll(policy, PROMPTS[:1], [5], steps=6, sampler="emerge", temperature=1.0, temperature_mode="compound")
    assert torch.equal(a.codes, b.codes)
