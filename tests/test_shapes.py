"""The shapes world: codebook, renderer, exact detector, prompt suite, layouts, generators, provider.

Everything here is pure CPU and needs no weights. The detector is checked against what was placed in
the token grid (not against its own output), and the oracle/random generators are scored with
GenEval's own rules from `metrics.geneval`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from paintbench.harness.shapes.codebook import (
    BACKGROUND_RGB,
    COLOURS,
    NUM_TOKENS,
    PALETTE,
    SHAPES,
    codebook,
    glyph_masks,
    glyph_of,
    margin_for,
    token_of,
)
from paintbench.harness.shapes.detector import (
    DEFAULT_TOLERANCE,
    ShapeDetection,
    colour_of,
    detect,
    detect_batch,
    detect_tokens,
)
from paintbench.harness.shapes.generators import GENERATORS, OracleGenerator, RandomGenerator
from paintbench.harness.shapes.layouts import oracle_tokens, random_tokens, relation_table
from paintbench.harness.shapes.prompts import (
    TAGS,
    all_records,
    make_prompts,
    read_metadata_jsonl,
    write_metadata_jsonl,
)
from paintbench.harness.shapes.provider import SPEC, ShapesGenEvalProvider
from paintbench.harness.shapes.render import render
from paintbench.metrics.geneval import Detection, judge, reward, summarize
from paintbench.metrics.registry import ProviderSpec


# -- helpers --------------------------------------------------------------------------------------------
def placed_objects(tokens: torch.Tensor, patch: int) -> list[tuple[str, str, tuple[float, ...]]]:
    """What a grid holds, derived from the grid alone: (shape, colour, box) per non-background cell."""
    m = margin_for(patch)
    out = []
    for r in range(tokens.shape[0]):
        for c in range(tokens.shape[1]):
            g = glyph_of(int(tokens[r, c]))
            if g is not None:
                box = (c * patch + m, r * patch + m, (c + 1) * patch - m, (r + 1) * patch - m)
                out.append((g[0], g[1], tuple(float(v) for v in box)))
    return sorted(out)


def found_objects(dets: dict[str, list[Detection]]) -> list[tuple[str, str, tuple[float, ...]]]:
    return sorted((name, d.colour, tuple(d.box)) for name, items in dets.items() for d in items)


def random_grids(n: int, seed: int, grid: int = 8) -> torch.Tensor:
    """Grids from empty to completely full, uniform glyphs: what an untrained policy might emit."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, NUM_TOKENS, (n, grid, grid), generator=g)
    density = torch.linspace(0, 1, n)[:, None, None]
    keep = torch.rand(n, grid, grid, generator=g) < density
    return torch.where(keep, tokens, torch.zeros_like(tokens))


# -- codebook and renderer ----------------------------------------------------------------------------
def test_codebook_is_small_and_tokens_round_trip():
    assert NUM_TOKENS == 1 + len(SHAPES) * len(COLOURS) <= 64
    assert COLOURS == ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
    seen = set()
    for shape in SHAPES:
        for colour in COLOURS:
            t = token_of(shape, colour)
            assert glyph_of(t) == (shape, colour)
            seen.add(t)
    assert seen == set(range(1, NUM_TOKENS))
    assert glyph_of(0) is None
    with pytest.raises(ValueError):
        token_of("hexagon", "red")
    with pytest.raises(ValueError):
        glyph_of(NUM_TOKENS)


def test_palette_is_far_from_background_and_distinct():
    bg = np.array(BACKGROUND_RGB)
    rgb = np.array([PALETTE[c] for c in COLOURS])
    assert (np.abs(rgb - bg).max(axis=1) > DEFAULT_TOLERANCE + 20).all()
    d = np.linalg.norm(rgb[:, None] - rgb[None], axis=2) + np.eye(len(rgb)) * 1e9
    assert d.min() > 60


@pytest.mark.parametrize("patch", [8, 12, 16, 32])
def test_glyphs_are_distinct_and_keep_a_margin(patch):
    cb = codebook(patch)
    m = margin_for(patch)
    assert cb.patches.shape == (NUM_TOKENS, 3, patch, patch)
    border = np.ones((patch, patch), dtype=bool)
    border[m:patch - m, m:patch - m] = False
    assert not cb.masks[:, border].any()  # the margin stays background, so cells never touch
    assert (cb.patches[0] == np.array(BACKGROUND_RGB)[:, None, None]).all()
    assert len({mask.tobytes() for mask in cb.masks}) == len(SHAPES)
    inner = glyph_masks(patch - 2 * m)
    for mask in inner:  # each glyph spans its whole inner box: same box for every shape
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()


def test_render_places_codebook_patches_batched_and_in_both_dtypes():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, NUM_TOKENS, (2, 3, 8, 8), generator=g)
    img = render(tokens)
    assert img.shape == (2, 3, 3, 128, 128) and img.dtype == torch.uint8
    patches = torch.from_numpy(codebook(16).patches.copy())
    for r in range(8):
        for c in range(8):
            cell = img[1, 2, :, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16]
            assert torch.equal(cell, patches[tokens[1, 2, r, c]])
    single = render(tokens[0, 1])
    assert torch.equal(single, img[0, 1])
    as_float = render(tokens, dtype=torch.float32)
    assert as_float.dtype == torch.float32 and float(as_float.max()) <= 1.0
    assert torch.equal((as_float * 255).round().to(torch.uint8), img)
    non_square = render(torch.zeros(3, 5, dtype=torch.long), patch=8)
    assert non_square.shape == (3, 24, 40)
    assert torch.equal(render(tokens.numpy()), img)


def test_render_rejects_bad_tokens():
    with pytest.raises(ValueError):
        render(torch.full((8, 8), NUM_TOKENS))
    with pytest.raises(ValueError):
        render(torch.full((8, 8), -1))
    with pytest.raises(TypeError):
        render(torch.zeros(8, 8))


# -- detector -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("patch", [16, 8])
def test_render_detect_round_trip_is_exact(patch):
    tokens = random_grids(400, seed=patch)
    dets = detect_batch(render(tokens, patch=patch))
    assert len(dets) == len(tokens)
    n_objects = 0
    for grid, d in zip(tokens, dets, strict=True):
        expected = placed_objects(grid, patch)
        assert found_objects(d) == expected
        n_objects += len(expected)
        for items in d.values():
            assert all(det.score == 1.0 and isinstance(det, ShapeDetection) for det in items)
    assert n_objects > 10_000  # the sweep really covered crowded grids, up to 64 objects each


def test_token_shortcut_matches_pixel_detector_exactly():
    tokens = random_grids(200, seed=3)
    from_pixels = detect_batch(render(tokens))
    from_tokens = detect_tokens(tokens)
    for a, b in zip(from_pixels, from_tokens, strict=True):
        assert list(a) == list(b)  # same classes in the same order
        for name in a:
            assert [(d.box, d.score, d.colour) for d in a[name]] == [(d.box, d.score, d.colour) for d in b[name]]


def test_detect_masks_and_colour_oracle():
    tokens = torch.zeros(8, 8, dtype=torch.long)
    tokens[2, 3] = token_of("star", "pink")
    tokens[2, 4] = token_of("star", "pink")  # same colour, adjacent: must stay two objects
    tokens[7, 0] = token_of("cross", "black")
    dets = detect(render(tokens))
    assert sorted(dets) == ["cross", "star"]
    stars = dets["star"]
    assert [d.box for d in stars] == [(49.0, 33.0, 63.0, 47.0), (65.0, 33.0, 79.0, 47.0)]
    assert [colour_of("star", d) for d in stars] == ["pink", "pink"]
    expected_mask = np.zeros((128, 128), dtype=bool)
    expected_mask[32:48, 48:64] = codebook(16).masks[SHAPES.index("star")]
    assert stars[0].mask.dtype == bool and np.array_equal(stars[0].mask, expected_mask)
    with pytest.raises(TypeError):
        colour_of("star", Detection(box=(0, 0, 1, 1), score=1.0))


def test_detector_accepts_float_pil_numpy_and_paths(tmp_path):
    tokens = random_tokens(np.random.default_rng(5), min_objects=5, max_objects=5)
    img = render(tokens)
    want = placed_objects(tokens, 16)
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    path = tmp_path / "x.png"
    pil.save(path)
    inputs = [img, render(tokens, dtype=torch.float64), pil, np.asarray(pil), str(path),
              np.asarray(pil).astype(np.float32) / 255]
    for item in inputs:
        assert found_objects(detect(item)) == want
    assert [found_objects(d) for d in detect_batch([pil, str(path)])] == [want, want]


def test_detector_off_world_inputs():
    tokens = random_tokens(np.random.default_rng(7), min_objects=6, max_objects=6)
    img = render(tokens)
    want = [(s, c) for s, c, _ in placed_objects(tokens, 16)]
    # Integer upscaling is recognised exactly (score 1.0) through the fallback.
    big = F.interpolate(img[None].float(), scale_factor=3, mode="nearest")[0].to(torch.uint8)
    dets = detect(big, masks=False)
    assert sorted((s, d.colour) for s, items in dets.items() for d in items) == sorted(want)
    assert all(d.score == 1.0 for items in dets.values() for d in items)
    # Smooth upscaling is still recognised, with honest sub-1 scores.
    smooth = F.interpolate(img[None].float(), scale_factor=2, mode="bilinear")[0].round().to(torch.uint8)
    dets = detect(smooth, masks=False)
    assert sorted((s, d.colour) for s, items in dets.items() for d in items) == sorted(want)
    assert all(0.8 < d.score <= 1.0 for items in dets.values() for d in items)
    # One wrong pixel inside a glyph is no longer an exact match: same answer, score below 1.
    one = torch.zeros(8, 8, dtype=torch.long)
    one[3, 3] = token_of("square", "green")
    flipped = render(one)
    flipped[:, 3 * 16 + 7, 3 * 16 + 7] = torch.tensor(BACKGROUND_RGB, dtype=torch.uint8)
    (det,) = detect(flipped)["square"]
    assert det.colour == "green" and 0.99 < det.score < 1.0
    # Specks, bars and an empty canvas are not objects.
    canvas = torch.tensor(BACKGROUND_RGB, dtype=torch.uint8)[:, None, None].repeat(1, 64, 64)
    assert detect(canvas) == {}
    canvas[:, 5, 5] = 255
    canvas[:, 20:23, 10:40] = 0
    assert detect(canvas) == {}


def test_box_paths_agree_and_noise_is_not_objects():
    from scipy import ndimage

    from paintbench.harness.shapes.detector import _boxes_by_occupancy, _boxes_by_sort, foreground

    arr = render(random_grids(40, seed=9)).numpy()
    labels, n = ndimage.label(foreground(arr)[30], structure=np.ones((3, 3)))
    y, x = np.nonzero(labels)
    lab = labels[y, x].astype(np.int64) - 1
    a = _boxes_by_occupancy(lab, y, x, n, 128, 128)
    b = _boxes_by_sort(lab, y, x, n, 128, 128)
    assert n > 20 and all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    # 5% black specks on 1024² canvases: ~10^5 components per chunk takes the sort path; none is an object.
    rng = np.random.default_rng(0)
    noise = np.broadcast_to(np.array(BACKGROUND_RGB, dtype=np.uint8), (2, 1024, 1024, 3)).copy()
    noise[rng.random((2, 1024, 1024)) < 0.05] = 0
    assert detect_batch(noise) == [{}, {}]


def test_the_batched_detector_finds_every_object_of_a_thousand_images():
    """(Its speed is measured by benchmarks/bench_stats.py, not asserted here.)"""
    tokens = torch.stack([random_tokens(np.random.default_rng(i)) for i in range(1000)])
    dets = detect_batch(render(tokens))
    assert sum(len(v) for d in dets for v in d.values()) == int((tokens > 0).sum())


# -- prompts ----------------------------------------------------------------------------------------
def test_prompts_are_deterministic_distinct_and_in_geneval_format(tmp_path):
    a = make_prompts(seed=1, n_per_tag=40)
    assert a == make_prompts(seed=1, n_per_tag=40)
    assert a != make_prompts(seed=2, n_per_tag=40)
    texts = [json.dumps(r, sort_keys=True) for r in a]
    assert len(set(texts)) == len(texts)
    assert len({r["prompt"] for r in a}) == len(a)
    counts = {t: sum(r["tag"] == t for r in a) for t in TAGS}
    assert counts == {"single_object": 6, "two_object": 30, "counting": 18,
                      "colors": 40, "position": 40, "color_attr": 40}
    assert [r["tag"] for r in a] == sorted((r["tag"] for r in a), key=TAGS.index)
    for r in a:
        assert list(r)[:2] == ["tag", "include"] and list(r)[-1] == "prompt"
        for clause in r["include"]:
            assert clause["class"] in SHAPES and clause.get("color", "red") in COLOURS
        if r["tag"] == "counting":
            (inc,), (exc,) = r["include"], r["exclude"]
            assert 2 <= inc["count"] <= 4 and exc == {"class": inc["class"], "count": inc["count"] + 1}
        else:
            assert "exclude" not in r
        if r["tag"] == "position":
            b, obj = r["include"]
            rel, k = obj["position"]
            assert k == 0 and rel in ("left of", "right of", "above", "below") and b["class"] != obj["class"]
            assert r["prompt"] == f"a photo of a {obj['class']} {rel} a {b['class']}"
        if r["tag"] == "color_attr":
            x, y = r["include"]
            assert x["class"] != y["class"] and x["color"] != y["color"]
    # A tag's draw does not depend on the other tags' sizes.
    b = make_prompts(seed=1, n_per_tag={"colors": 5, "position": 40})
    assert [r for r in b if r["tag"] == "position"] == [r for r in a if r["tag"] == "position"]
    path = write_metadata_jsonl(tmp_path / "meta" / "evaluation_metadata.jsonl", a)
    assert read_metadata_jsonl(path) == a


def test_prompt_phrasing_follows_geneval():
    prompts = {r["prompt"] for tag in TAGS for r in all_records(tag)}
    for text in ("a photo of a circle", "a photo of a star and a cross", "a photo of two crosses",
                 "a photo of four squares", "a photo of an orange diamond", "a photo of a triangle below a star",
                 "a photo of a white circle and an orange square"):
        assert text in prompts
    assert len(all_records("color_attr")) == 6 * 5 * 10 * 9


# -- layouts, generators, GenEval scores ------------------------------------------------------------
def test_relation_table_agrees_with_hand_geometry():
    table = relation_table()
    left, right, above, below = table

    def cell(r, c):
        return r * 8 + c

    assert left[cell(3, 2), cell(3, 3)] and not (above | below)[cell(3, 2), cell(3, 3)]
    assert right[cell(3, 7), cell(3, 0)] and below[cell(5, 4), cell(1, 4)]
    assert left[cell(2, 2), cell(3, 3)] and above[cell(2, 2), cell(3, 3)]  # diagonal: both
    assert not left[cell(5, 2), cell(3, 3)]  # one column left but two rows down: too steep
    assert left[cell(6, 1), cell(3, 5)]  # 4 left, 3 down: still "left of"
    assert not table[:, cell(4, 4), cell(4, 4)].any()


def test_oracle_scores_perfectly_under_geneval_rules():
    records = make_prompts(seed=0, n_per_tag=60)
    meta = [r for r in records for _ in range(3)]
    gens = [np.random.default_rng(i) if i % 2 else torch.Generator().manual_seed(i) for i in range(len(meta))]
    tokens = torch.stack([oracle_tokens(r, g) for r, g in zip(meta, gens, strict=True)])
    # Exactly what was asked, nothing more.
    for rec, grid in zip(meta, tokens, strict=True):
        assert int((grid > 0).sum()) == sum(c["count"] for c in rec["include"])
    dets = detect_batch(render(tokens))
    rows, rewards = [], []
    for rec, d in zip(meta, dets, strict=True):
        verdict = judge(rec, d, colour_of)
        rows.append({"tag": rec["tag"], "metadata": rec, "correct": verdict.correct})
        rewards.append(reward(rec, d, colour_of).score)
        assert verdict.correct, (rec["prompt"], verdict.reason)
    summary = summarize(rows)
    assert summary["overall"] == 1.0 and set(summary["per_tag"]) == set(TAGS)
    assert min(rewards) == 1.0


def test_layouts_are_seeded_by_the_callers_generator():
    rec = make_prompts(seed=0, n_per_tag=5, tags=["position"])[0]
    a = oracle_tokens(rec, np.random.default_rng(11))
    assert torch.equal(a, oracle_tokens(rec, np.random.default_rng(11)))
    assert torch.equal(oracle_tokens(rec, torch.Generator().manual_seed(3)),
                       oracle_tokens(rec, torch.Generator().manual_seed(3)))
    draws = {oracle_tokens(rec, np.random.default_rng(s)).numpy().tobytes() for s in range(20)}
    assert len(draws) > 10
    r = random_tokens(np.random.default_rng(4), min_objects=3, max_objects=3)
    assert int((r > 0).sum()) == 3
    with pytest.raises(ValueError):
        oracle_tokens({"tag": "single_object", "include": [{"class": "dog", "count": 1}]}, 0)


def test_random_generator_scores_near_chance():
    records = make_prompts(seed=0, n_per_tag=60)
    meta = [r for r in records for _ in range(4)]
    seeds = list(range(len(meta)))
    provider = ShapesGenEvalProvider(mode="correct")
    images = RandomGenerator().generate(None, meta, seeds)
    scores = provider.score(images, [r["prompt"] for r in meta], meta)
    summary = summarize({"tag": r["tag"], "metadata": r, "correct": d["correct"]}
                        for r, d in zip(meta, scores.details, strict=True))
    per_tag = {k: round(v, 3) for k, v in summary["per_tag"].items()}
    print(f"\nshapes-random GenEval overall {summary['overall']:.3f}; per tag {per_tag}")
    assert 0.02 < summary["overall"] < 0.3
    assert summary["per_tag"]["color_attr"] < 0.05 and summary["per_tag"]["single_object"] > 0.2
    oracle = OracleGenerator().generate(None, meta, seeds)
    assert provider.score(oracle, [r["prompt"] for r in meta], meta).values.min() == 1.0


def test_generators_are_registered_by_name_and_seed_per_image():
    assert set(GENERATORS) == {"shapes-oracle", "shapes-random"}
    meta = make_prompts(seed=0, n_per_tag=2)
    gen = GENERATORS["shapes-oracle"]()
    full = gen.tokens(meta, list(range(len(meta))))
    part = gen.tokens(meta[3:5], [3, 4])
    assert torch.equal(full[3:5], part)  # an image depends on its own seed only
    assert gen.generate([r["prompt"] for r in meta], meta, list(range(len(meta)))).shape == (len(meta), 3, 128, 128)


# -- provider ---------------------------------------------------------------------------------------
def test_provider_spec():
    assert isinstance(SPEC, ProviderSpec)
    assert SPEC.name == "shapes-geneval" and SPEC.target == "paintbench.harness.shapes.provider:ShapesGenEvalProvider"
    p = ShapesGenEvalProvider()
    assert p.version == "shapes-geneval/1" and p.higher_is_better and p.provenance()["mode"] == "reward"
    with pytest.raises(ValueError):
        ShapesGenEvalProvider(mode="strict")
    from paintbench.harness.plugins import SPECS  # the entry point's copy must not drift from the module's

    (registered,) = [s for s in SPECS if s.name == SPEC.name]
    assert registered == SPEC


def test_provider_values_and_details_follow_input_order():
    def rec(tag, include, prompt, exclude=None):
        r = {"tag": tag, "include": include, "prompt": prompt}
        if exclude:
            r["exclude"] = exclude
        return r

    two_red = rec("counting", [{"class": "circle", "count": 2}], "a photo of two circles",
                  [{"class": "circle", "count": 3}])
    blue_star = rec("colors", [{"class": "star", "count": 1, "color": "blue"}], "a photo of a blue star")
    grids = torch.zeros(4, 8, 8, dtype=torch.long)
    grids[0, 0, 0] = grids[0, 5, 5] = token_of("circle", "red")           # two circles: right
    grids[1, 0, 0] = grids[1, 1, 1] = grids[1, 2, 2] = token_of("circle", "red")  # three: wrong
    grids[2, 4, 4] = token_of("star", "blue")                             # right
    grids[3, 4, 4] = token_of("star", "green")                            # wrong colour
    meta = [two_red, two_red, blue_star, blue_star]
    prompts = [m["prompt"] for m in meta]
    images = render(grids)

    correct = ShapesGenEvalProvider(mode="correct", batch_size=3).score(images, prompts, meta)
    assert correct.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert [d["correct"] for d in correct.details] == [True, False, True, False]
    assert correct.details[1]["reason"] == "expected circle<3, found 3"
    assert correct.details[3]["detections"] == {"star": [{"box": [65.0, 65.0, 79.0, 79.0], "score": 1.0,
                                                          "colour": "green"}]}
    partial = ShapesGenEvalProvider().score(images, prompts, meta)
    assert partial.tolist() == pytest.approx([1.0, 0.5, 1.0, 0.5])  # Flow-GRPO: 1-|2-3|/2; colour term 0
    assert [d["reward"] for d in partial.details] == partial.tolist()
    json.dumps(partial.details)

    # Same answers from PIL images, float tensors, and straight from the tokens.
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    assert ShapesGenEvalProvider().score(pil, prompts, meta).tolist() == partial.tolist()
    floats = render(grids, dtype=torch.float32)
    assert ShapesGenEvalProvider().score(floats, prompts, meta).tolist() == partial.tolist()
    via_tokens = ShapesGenEvalProvider().score_tokens(grids, meta)
    assert via_tokens.tolist() == partial.tolist() and via_tokens.details == partial.details

    with pytest.raises(ValueError):
        ShapesGenEvalProvider().score(images, prompts, None)
    with pytest.raises(ValueError):
        ShapesGenEvalProvider().score(images, prompts, meta[:2])
    with pytest.raises(ValueError, match="record 1"):
        ShapesGenEvalProvider().score(images, prompts, [meta[0], {}, meta[2], meta[3]])
