"""The blocks world: exact rendering and reading, the oracle, the layout and detail terms, the premise
statistics, and the held-out prompt split that both synthetic worlds train and evaluate on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paintbench import metrics
from paintbench.harness.blocks import codebook as cb
from paintbench.harness.blocks.layouts import ORDERS, oracle_tokens
from paintbench.harness.blocks.objects import (
    DEFAULT_COLOUR,
    detail_score,
    geneval_scores,
    layout_score,
    premise_stats,
    read_objects,
    token_roles,
)
from paintbench.harness.shapes.prompts import TAGS, is_heldout, make_prompts
from paintbench.trainer.data import load_records

RECORDS = make_prompts(0, 12)


def test_every_token_has_its_own_patch_and_images_read_back_exactly():
    assert len({p.tobytes() for p in cb.patches()}) == cb.NUM_TOKENS
    tokens = torch.randint(0, cb.NUM_TOKENS, (5, 8, 8), generator=torch.Generator().manual_seed(0))
    images = cb.render(tokens)
    assert images.shape == (5, 3, 128, 128) and images.dtype == torch.uint8
    assert np.array_equal(cb.read_tokens(images.numpy()), tokens.numpy())
    edited = images.numpy().copy()
    edited[1, :, 20, 20] = 7                                   # one pixel of cell (1, 1) of image 1
    back = cb.read_tokens(edited)
    assert back[1, 1, 1] == -1 and (back != -1).sum() == 5 * 64 - 1


@pytest.mark.parametrize("order", ORDERS)
def test_the_oracle_satisfies_every_record_and_spells_per_order(order):
    kinds = cb.token_table()[0]
    anchors, fills = set(), set()
    for i, rec in enumerate(RECORDS):
        grid = oracle_tokens(rec, i, order=order)
        objects = read_objects(grid.numpy())
        correct, reason, partial = geneval_scores(rec, objects)
        assert correct and partial == 1.0, (rec["prompt"], reason)
        assert layout_score(rec, objects) == 1.0 and detail_score(rec, objects) == 1.0
        flat = grid.reshape(-1).numpy()
        anchor_pos = cb.anchor_positions()
        anchors |= {cb.info(t).variant for t in flat[anchor_pos]}
        fills |= {cb.info(t).variant for t in flat[~anchor_pos] if kinds[t] != 1}
    free, fixed = (fills, anchors) if order == "layout_first" else (anchors, fills)
    assert fixed == {0} and len(free) == cb.VARIANTS          # which role carries the free spellings


def _object_grid():
    """Two objects: a red circle in slot 0 and a blue square in slot 5."""
    grid = torch.full((64,), cb.blank(), dtype=torch.long)
    for slot, shape, colour in ((0, "circle", "red"), (5, "square", "blue")):
        first, *rest = cb.slot_tokens(slot)
        grid[first] = cb.anchor(shape)
        for p in rest:
            grid[p] = cb.fill(shape, colour, cb.VARIANTS - 1)
    return grid


def test_layout_and_detail_terms_separate_what_they_should():
    rec = {"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "red"},
                                            {"class": "square", "count": 1, "color": "blue"}],
           "prompt": "a photo of a red circle and a blue square"}
    grid = _object_grid()
    objs = read_objects(grid.numpy())
    assert geneval_scores(rec, objs)[0] and layout_score(rec, objs) == 1 and detail_score(rec, objs) == 1
    wrong_fill = grid.clone()
    wrong_fill[cb.slot_tokens(5)[1]] = cb.fill("square", "green")      # one fill of the square disagrees
    objs = read_objects(wrong_fill.numpy())
    assert layout_score(rec, objs) == 1.0 and detail_score(rec, objs) == 0.5
    assert not geneval_scores(rec, objs)[0]                            # its colour reads "mixed"
    other_shape = grid.clone()
    other_shape[cb.slot_tokens(0)[2]] = cb.fill("star", "red")          # a fill of another shape
    assert detail_score(rec, read_objects(other_shape.numpy())) == 0.5
    no_anchor = grid.clone()
    no_anchor[cb.slot_tokens(0)[0]] = cb.blank(cb.VARIANTS - 1)                       # the circle loses its anchor
    objs = read_objects(no_anchor.numpy())
    assert layout_score(rec, objs) < 1.0                                # the circle is gone from the layout
    assert detail_score(rec, objs) == 0.5                               # and its fills are stray details
    wrong_colour_ok_shape = grid.clone()
    for p in cb.slot_tokens(0)[1:]:
        wrong_colour_ok_shape[p] = cb.fill("circle", "yellow")          # consistent, but not the asked colour
    objs = read_objects(wrong_colour_ok_shape.numpy())
    assert layout_score(rec, objs) == 1.0 and detail_score(rec, objs) == 0.5
    plain = {**rec, "include": [{"class": c["class"], "count": 1} for c in rec["include"]]}   # no colours asked
    assert detail_score(plain, read_objects(grid.numpy())) == 0.5      # red circle ok, blue square not orange
    assert DEFAULT_COLOUR["circle"] == "red" and DEFAULT_COLOUR["square"] == "orange"


def test_providers_score_images_as_the_pure_functions_do():
    grids = torch.stack([oracle_tokens(r, i) for i, r in enumerate(RECORDS[:6])])
    grids[0, 1, 1] = cb.fill("star", "red")                             # break one object's detail
    images = cb.render(grids)
    prompts = [r["prompt"] for r in RECORDS[:6]]
    values = {n: metrics.get(n).score(images, prompts, RECORDS[:6]).values
              for n in ("blocks-layout", "blocks-detail", "blocks-geneval")}
    objs = [read_objects(g.numpy()) for g in grids]
    assert values["blocks-layout"].tolist() == [layout_score(r, o) for r, o in zip(RECORDS, objs, strict=False)]
    assert values["blocks-detail"].tolist() == [detail_score(r, o) for r, o in zip(RECORDS, objs, strict=False)]
    assert values["blocks-detail"][0] < 1 and (values["blocks-detail"][1:] == 1).all()
    correct = metrics.get("blocks-geneval", mode="correct").score(images, prompts, RECORDS[:6])
    assert correct.details[0]["unreadable_cells"] == 0 and "objects" in correct.details[0]


def test_token_roles_and_premise_statistics_by_hand():
    codes = _object_grid()[None]
    layout, detail = token_roles(codes)
    assert int(layout.sum()) == 16 and layout[0, 0] and layout[0, 2] and not layout[0, 1]
    assert int(detail.sum()) == 6 and all(detail[0, p] for p in cb.slot_tokens(5)[1:])
    steps = torch.full((1, 64), 3)
    steps[layout] = 1                                  # anchors at step 1, every other token at step 3
    steps[0, cb.slot_tokens(0)[0]] = 0                 # the circle's anchor first
    struct = torch.zeros(1, 64, dtype=torch.bool)
    struct[0, :4] = True                               # tokens 0..3: two anchors (0, 2), two fills
    stats = premise_stats(codes, steps, struct)
    assert stats["premise/layout_share_in_structure"] == 0.5
    assert stats["premise/layout_commit_step"] == pytest.approx(15 / 16)
    assert stats["premise/object_anchor_commit_step"] == 0.5
    assert stats["premise/detail_commit_step"] == 3.0


def test_held_out_prompts_are_disjoint_from_training_prompts_by_construction():
    train = make_prompts(1, 10**6, split="train")
    held = make_prompts(0, 10**6, split="heldout")
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert len(train) + len(held) == len(make_prompts(0, 10**6))
    for tag in TAGS:                                    # every tag has both sides
        assert any(r["tag"] == tag for r in train) and any(r["tag"] == tag for r in held)
    assert all(not is_heldout(r) for r in load_records("shapes", seed=1, per_tag=200))   # the trainer's default
    assert {r["prompt"] for r in load_records("shapes", split="heldout")} <= {r["prompt"] for r in held}
    # held out means whole combinations: no training prompt pairs two held-out-pair shapes
    pairs = {frozenset(c["class"] for c in r["include"]) for r in held if r["tag"] in ("two_object", "position")}
    assert all(frozenset(c["class"] for c in r["include"]) not in pairs
               for r in train if r["tag"] in ("two_object", "position"))


def test_the_blocks_suite_runs_through_the_harness_with_the_oracle_at_the_ceiling(tmp_path):
    import json

    from paintbench.harness.evaluate import EvalConfig, run_eval

    for world in ("blocks", "blocks-control"):
        out = tmp_path / world
        run_eval(EvalConfig(suite="blocks-heldout", generator="blocks-oracle", generator_options={"world": world},
                            out=str(out), limit=12, images_per_prompt=1, progress=False, n_resamples=200))
        results = json.loads((out / "results.json").read_text())
        values = {m: r["value"] for m, r in results["metrics"].items()}
        assert values == {"blocks-geneval": 1.0, "blocks-layout": 1.0, "blocks-detail": 1.0}, values


@pytest.mark.slow
@pytest.mark.parametrize("world", ["blocks", "blocks-control"])
def test_the_premise_holds_after_the_warm_start_and_is_reversed_in_the_control(tmp_path, world):
    """After a short warm start, MaskGIT rollouts commit layout tokens (anchors) clearly before detail
    tokens (object fills) in `blocks`, and the reverse in `blocks-control`; logged by every round."""
    from paintbench.trainer.config import load_config
    from paintbench.trainer.loop import Trainer

    torch.set_num_threads(1)
    cfg = load_config("blocks-tiny", {"world": world, "warmstart_steps": 300, "steps": 1, "save_every": 0,
                                      "sample_every": 0, "tensorboard": False, "inner_iters": 1, "n_global": 1,
                                      "n_struct": 0})
    tr = Trainer(cfg, tmp_path)
    tr.setup()
    m = tr.round(1)
    share, base = m["premise/layout_share_in_structure"], m["premise/layout_share_of_tokens"]
    lay, det = m["premise/layout_commit_step"], m["premise/detail_commit_step"]
    if world == "blocks":
        assert share > 2 * base and lay + 2 < det, m
    else:
        assert share < base / 2 and lay > det, m
