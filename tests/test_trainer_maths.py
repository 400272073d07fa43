"""The trainer's pure functions against the properties of htgrpo.md section (e): advantages, partition,
credit weights, the Sketch-Then-Paint schedule and the clipped k3-KL loss."""

from __future__ import annotations

import math

import pytest
import torch

from paintbench.trainer import advantages as A
from paintbench.trainer import credit as C
from paintbench.trainer import loss as L
from paintbench.trainer import partition as P
from paintbench.trainer import schedule as S

# -- advantages -----------------------------------------------------------------------------------------


def test_group_advantages_have_zero_mean_and_unit_unbiased_std():
    r = torch.tensor([1.0, 2.0, 4.0, 7.0, 0.0, 0.5, 0.25, 3.0])
    a = A.group_advantages(r, 4, eps=0.0).view(2, 4)
    assert torch.allclose(a.mean(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(a.std(dim=1), torch.ones(2), atol=1e-6)  # torch.std is unbiased, as MaskGRPO
    g = r[:4]
    assert torch.allclose(a[0], (g - g.mean()) / g.std(), atol=1e-6)


def test_zero_variance_group_gives_exactly_zero_under_every_option():
    r = torch.tensor([0.5, 0.5, 0.5, 1.0, 0.0, 2.0])
    for scale in ("group", "batch", "none"):
        for loo in (False, True):
            a = A.group_advantages(r, 3, scale=scale, leave_one_out=loo)
            assert torch.equal(a[:3], torch.zeros(3)), (scale, loo)
            assert a[3:].abs().sum() > 0
    assert A.zero_std_fraction(r, 3) == 0.5
    assert A.zero_std_fraction(torch.tensor([1.0, 1.0, 2.0, 2.0]), 2) == 1.0
    assert A.zero_std_fraction(torch.tensor([1.0, 1.5, 2.0, 2.0]), 2) == 0.5


def test_no_std_and_leave_one_out_match_closed_forms():
    r = torch.tensor([3.0, 1.0, 2.0, 6.0])
    assert torch.allclose(A.group_advantages(r, 4, scale="none"), r - r.mean())
    loo = A.group_advantages(r, 4, scale="none", leave_one_out=True)
    expected = torch.stack([r[i] - torch.cat([r[:i], r[i + 1:]]).mean() for i in range(4)])
    assert torch.allclose(loo, expected, atol=1e-6)
    batch = A.group_advantages(torch.tensor([0.0, 1.0, 5.0, 9.0]), 2, scale="batch", eps=0.0)
    centred = torch.tensor([-0.5, 0.5, -2.0, 2.0])
    assert torch.allclose(batch, centred / torch.tensor([0.0, 1.0, 5.0, 9.0]).std(), atol=1e-6)


def test_group_advantages_rejects_ragged_groups():
    with pytest.raises(ValueError):
        A.group_advantages(torch.zeros(7), 4)


def test_multi_reward_aggregations():
    a_comp = torch.tensor([0.0, 1.0, 0.0, 1.0])
    b_comp = torch.tensor([10.0, 30.0, 20.0, 20.0])
    w = {"a": 1.0, "b": 0.5}
    adv, total = A.multi_reward_advantages({"a": a_comp, "b": b_comp}, w, 2, aggregation="sum_then_normalize")
    assert torch.allclose(total, a_comp + 0.5 * b_comp)
    assert torch.allclose(adv, A.group_advantages(total, 2))
    adv2, _ = A.multi_reward_advantages({"a": a_comp, "b": b_comp}, w, 2, aggregation="normalize_then_sum")
    per = A.group_advantages(a_comp, 2) + 0.5 * A.group_advantages(b_comp, 2)
    assert torch.allclose(adv2, (per - per.mean()) / (per.std() + 1e-5), atol=1e-5)
    # The second group: b is constant, so only a's signal is left there; the scales differ from the sum.
    assert not torch.allclose(adv, adv2)
    with pytest.raises(ValueError):
        A.combine_rewards({"c": a_comp}, w)


# -- partition ------------------------------------------------------------------------------------------


def _commit_data(b=3, n=40, t=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    steps = torch.randint(0, t, (b, n), generator=g)
    ent = torch.rand(b, n, generator=g) * 3
    return steps, ent


@pytest.mark.parametrize("rho", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_p1_respects_rho_and_takes_the_earliest_tokens(rho):
    steps, ent = _commit_data()
    m = P.by_commit_order(steps, ent, rho)
    k = math.ceil(round(rho * 40, 9))
    assert (m.sum(dim=1) == k).all()
    for row in range(3):
        if 0 < k < 40:
            # every structure token was committed no later than every refinement token
            assert steps[row][m[row]].max() <= steps[row][~m[row]].min()
            # within the boundary step, structure tokens have the higher entropies
            boundary = steps[row][m[row]].max()
            inside = (steps[row] == boundary)
            s_h = ent[row][m[row] & inside]
            r_h = ent[row][~m[row] & inside]
            if len(s_h) and len(r_h):
                assert s_h.min() >= r_h.max()


def test_num_structure_does_not_ceil_float_noise():
    assert P.num_structure(10, 0.3) == 3       # 0.3*10 = 3.0000000000000004
    assert P.num_structure(64, 0.3) == 20      # ceil(19.2)
    assert P.num_structure(1024, 0.3) == 308


def test_p2_is_top_entropy_and_partitions_cover_all_tokens():
    steps, ent = _commit_data()
    m = P.by_entropy(ent, 0.25)
    assert (m.sum(dim=1) == 10).all()
    for row in range(3):
        assert ent[row][m[row]].min() >= ent[row][~m[row]].max()
    struct = P.structure_mask(steps, ent, rule="entropy", rho_s=0.25)
    ref = ~struct
    assert not (struct & ref).any() and (struct | ref).all()


def test_p3_entropy_boundary():
    # step means: 2.0, 1.8, 0.9 (< 0.5*2.0), 0.2 -> n* = 2: tokens of steps 0 and 1 are structural
    steps = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3]])
    ent = torch.tensor([[2.0, 2.0, 1.9, 1.7, 0.9, 0.9, 0.2, 0.2]])
    assert P.entropy_boundary_step(steps, ent, 0.5, 4).tolist() == [2]
    m = P.structure_mask(steps, ent, rule="boundary", eta=0.5, num_steps=4)
    assert m.tolist() == [[True] * 4 + [False] * 4]
    # never below the threshold: every token is structural; empty steps are skipped
    flat = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    gappy = torch.tensor([[0, 0, 2, 2]])
    assert P.structure_mask(gappy, flat, rule="boundary", eta=0.5, num_steps=4).all()


# -- credit ---------------------------------------------------------------------------------------------


def test_credit_weights_have_mean_one_and_favour_structure():
    steps, ent = _commit_data(b=4, n=64)
    struct = P.by_commit_order(steps, ent, 0.3)
    for kw in ({"lambda_s": 1.0}, {"lambda_s": 2.0, "lambda_h": 0.5}, {"lambda_s": 0.0, "lambda_h": 1.0},
               {"lambda_s": 1.0, "form": "graded_step", "power": 2.0, "num_steps": 8}):
        w = C.credit_weights(struct, ent, steps, **kw)
        assert torch.allclose(w.mean(dim=1), torch.ones(4), atol=1e-6), kw
        assert (w > 0).all()
    w = C.credit_weights(struct, ent, steps, lambda_s=1.0)
    for row in range(4):
        assert w[row][struct[row]].min() > w[row][~struct[row]].max()
        # structure tokens get exactly twice the weight of refinement tokens (1 + lambda_s before renorm)
        assert torch.allclose(w[row][struct[row]], 2 * w[row][~struct[row]][0])
    graded = C.credit_weights(struct, ent, steps, lambda_s=1.0, form="graded_step", num_steps=8)
    early, late = steps == 0, steps == 7
    assert graded[early].min() > graded[late].max()


def test_zero_lambdas_give_exactly_uniform_credit():
    steps, ent = _commit_data()
    struct = P.by_commit_order(steps, ent, 0.3)
    w = C.credit_weights(struct, ent, steps, lambda_s=0.0, lambda_h=0.0)
    assert torch.equal(w, torch.ones_like(w))
    adv = torch.tensor([0.5, -1.0, 2.0])
    assert torch.equal(C.token_advantages(adv, w), adv[:, None].expand(3, 40))


def test_negative_advantages_can_take_uniform_weights():
    steps, ent = _commit_data(b=2)
    w = C.credit_weights(P.by_commit_order(steps, ent, 0.3), ent, steps, lambda_s=1.0)
    adv = torch.tensor([1.0, -1.0])
    tok = C.token_advantages(adv, w, negative="uniform")
    assert torch.equal(tok[0], w[0]) and torch.equal(tok[1], -torch.ones(40))
    assert torch.equal(C.token_advantages(adv, w)[1], -w[1])


# -- schedule -------------------------------------------------------------------------------------------


def test_stage_of_maps_iterations_and_edge_cases():
    assert [S.stage_of(k, 2, 2, 6) for k in range(1, 7)] == ["global"] * 2 + ["struct"] * 2 + ["refine"] * 2
    assert [S.stage_of(k, 2, 0, 4) for k in range(1, 5)] == ["global", "global", "refine", "refine"]
    assert [S.stage_of(k, 3, 0, 3) for k in range(1, 4)] == ["global"] * 3
    assert [S.stage_of(k, 0, 3, 3) for k in range(1, 4)] == ["struct"] * 3
    with pytest.raises(ValueError):
        S.stage_of(0, 1, 1, 3)
    with pytest.raises(ValueError):
        S.stage_of(1, 3, 2, 4)


def test_subsets_lie_in_their_candidates_and_are_never_empty():
    steps, ent = _commit_data(b=6, n=30)
    struct = P.by_commit_order(steps, ent, 0.3)
    g = torch.Generator().manual_seed(3)
    for stage in S.STAGES:
        cands = S.candidates(stage, struct)
        u, rho = S.subset_noise(6, 30, g, rho_min=0.5)
        sub = S.token_subset(cands, u, rho)
        assert not (sub & ~cands).any()
        assert sub.any(dim=1).all()
        # fallback: even a threshold of 0 keeps one candidate per row, the lowest-u one
        one = S.select(cands, u, torch.zeros(6))
        assert (one.sum(dim=1) == 1).all() and not (one & ~cands).any()
    assert torch.equal(S.candidates("global", struct), torch.ones_like(struct))
    assert torch.equal(S.candidates("refine", struct), ~struct)
    u, rho = S.subset_noise(4, 30, g, rho_min=1.0)
    assert torch.equal(rho, torch.ones(4))
    assert S.token_subset(torch.ones(4, 30, dtype=torch.bool), u, rho).all()   # rho_min=1: every token


def test_maskgrpo_rate_rises_to_its_cap():
    rates = [S.maskgrpo_ratio(k, 6, 0.6) for k in range(1, 7)]
    assert rates[0] == pytest.approx(0.6 + 0.4 / 6) and rates[-1] == 0.999
    assert rates == sorted(rates)


# -- loss -----------------------------------------------------------------------------------------------


def _loss_inputs(seed=0, b=3, n=10):
    g = torch.Generator().manual_seed(seed)
    lp_old = -torch.rand(b, n, generator=g) * 3
    lp_ref = -torch.rand(b, n, generator=g) * 3
    adv = torch.randn(b, n, generator=g)
    sel = torch.rand(b, n, generator=g) < 0.6
    return lp_old, lp_ref, adv, sel


def test_equal_logprobs_give_zero_kl_and_minus_mean_advantage():
    lp_old, _, adv, sel = _loss_inputs()
    lp = lp_old.clone().requires_grad_(True)
    loss, st = L.clipped_kl_loss(lp, lp_old, adv, sel, lp_ref=lp_old, beta=0.04)
    assert st.kl_sum == 0.0
    assert float(loss.detach()) == pytest.approx(-float(adv[sel].mean()), abs=1e-6)
    assert torch.equal(L.k3_kl(lp_old, lp_old), torch.zeros_like(lp_old))
    assert (L.k3_kl(lp_old, lp_old + 0.3) > 0).all()


def test_gradient_equals_the_analytic_policy_gradient():
    lp_old, _, adv, sel = _loss_inputs(1)
    lp = (lp_old + 0.05 * torch.randn_like(lp_old).clamp(-1, 1)).requires_grad_(True)   # |log r| <= 0.05 < clip
    for norm in ("token", "sequence"):
        loss, _ = L.clipped_kl_loss(lp, lp_old, adv, sel, clip_eps=0.2, beta=0.0, norm=norm)
        (grad,) = torch.autograd.grad(loss, lp)
        r = torch.exp(lp.detach() - lp_old)
        if norm == "token":
            expected = -adv * r * sel / sel.sum()
        else:
            per_row = sel.sum(dim=1, keepdim=True).clamp_min(1)
            expected = -adv * r * sel / per_row / sel.any(dim=1).sum()
        assert torch.allclose(grad, expected, atol=1e-7), norm


def test_kl_gradient_matches_k3_derivative():
    lp_old, lp_ref, adv, sel = _loss_inputs(2)
    lp = lp_old.clone().requires_grad_(True)
    loss, _ = L.clipped_kl_loss(lp, lp_old, torch.zeros_like(adv), sel, lp_ref=lp_ref, beta=0.5)
    (grad,) = torch.autograd.grad(loss, lp)
    # d/dlp [beta * (e^{ref-lp} - (ref-lp) - 1)] = beta * (1 - e^{ref-lp}); loss adds it with a plus sign
    expected = 0.5 * (1 - torch.exp(lp_ref - lp_old)) * sel / sel.sum()
    assert torch.allclose(grad, expected, atol=1e-7)


def test_clip_zeroes_the_gradient_exactly_where_it_should():
    lp_old = torch.zeros(1, 4)
    log_r = torch.tensor([[0.5, 0.5, -0.5, -0.5]])      # r = 1.65, 1.65, 0.61, 0.61 with eps 0.2
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    lp = (lp_old + log_r).requires_grad_(True)
    sel = torch.ones(1, 4, dtype=torch.bool)
    loss, st = L.clipped_kl_loss(lp, lp_old, adv, sel, clip_eps=0.2, beta=0.0)
    (grad,) = torch.autograd.grad(loss, lp)
    r = torch.exp(log_r)
    assert grad[0, 0] == 0.0          # r > 1+eps and A > 0: clipped
    assert grad[0, 3] == 0.0          # r < 1-eps and A < 0: clipped
    assert grad[0, 1] == pytest.approx(float(-adv[0, 1] * r[0, 1] / 4))   # pessimistic branch keeps the gradient
    assert grad[0, 2] == pytest.approx(float(-adv[0, 2] * r[0, 2] / 4))
    assert st.clipped == 2 and st.tokens == 4


def test_unselected_tokens_get_no_gradient_and_global_normaliser_splits_exactly():
    lp_old, lp_ref, adv, sel = _loss_inputs(4, b=4)
    lp = (lp_old + 0.01).requires_grad_(True)
    loss, _ = L.clipped_kl_loss(lp, lp_old, adv, sel, lp_ref=lp_ref)
    (grad,) = torch.autograd.grad(loss, lp)
    assert torch.equal(grad[~sel], torch.zeros_like(grad[~sel]))
    for norm in ("token", "sequence"):
        whole, _ = L.clipped_kl_loss(lp, lp_old, adv, sel, lp_ref=lp_ref, norm=norm)
        z = L.normalizer_of(sel, norm)
        halves = sum(L.clipped_kl_loss(lp[i:i + 2], lp_old[i:i + 2], adv[i:i + 2], sel[i:i + 2], lp_ref=lp_ref[i:i + 2],
                                       norm=norm, normalizer=z)[0] for i in (0, 2))
        assert float(halves.detach()) == pytest.approx(float(whole.detach()), abs=1e-6)
