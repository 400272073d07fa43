"""The mPLUG VQA port (metrics.dpg.mplug) and the VQA backends (metrics.dpg.vqa).

Everything runs on CPU at toy size: `write_tiny_mplug` writes a ModelScope-format folder that goes
through the real loader. Independent references used here: torchvision's transforms (pixels),
transformers' BERT (text encoder and answer decoder), bert-base-uncased's known token ids, and
hand-computed beam-search scores. The parity tests against ModelScope's own outputs need
shared/fixtures/mplug and skip until it exists.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from paintbench.metrics.dpg.mplug import (
    END_ID,
    START_ID,
    MPlugLoadError,
    MPlugVQA,
    QuestionTokenizer,
    beam_search,
    decode,
    length_penalty,
    load_mplug,
    preprocess,
    save_safetensors,
    write_tiny_mplug,
)
from paintbench.metrics.dpg.vqa import (
    BACKENDS,
    VQAWeightsError,
    label,
    make_backend,
    resolve_hf_folder,
    yes_no,
)
from tests.shared_data import SHARED

pytestmark = pytest.mark.hf

MPLUG_FIXTURES = SHARED / "fixtures" / "mplug"
QUESTIONS = [
    "Is there a red cat?",
    "Is the dog sitting on the table?",
    "What color is the sky?",
    "Are there two people in the picture?",
    "Is there a tree behind the house?",
]


def _tiles(n: int, seed: int = 0, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Toy-size ops on a shared 2-core machine: one intra-op thread is ~100x faster than two
    (OpenMP threads spin while other jobs hold the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_mplug(tmp_path_factory.mktemp("mplug") / "tiny", seed=0)


@pytest.fixture(scope="module")
def ref(tiny_dir) -> MPlugVQA:
    return MPlugVQA.from_folder(tiny_dir, mode="reference")


@pytest.fixture(scope="module")
def fast(tiny_dir) -> MPlugVQA:
    return MPlugVQA.from_folder(tiny_dir, mode="fast")


def _copy(tiny_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_dir, dst)
    return dst


def _answers(vqa: MPlugVQA, tiles, questions=QUESTIONS):
    return [vqa.answer_tile(t, questions) for t in tiles]


# ------------------------------------------------------------------------- tiny model, loader
def test_tiny_model_through_the_real_loader_answers_deterministically(tiny_dir, ref):
    assert {p.name for p in tiny_dir.iterdir()} >= {"pytorch_model.bin", "config.yaml", "config_bert.json", "vocab.txt"}
    report = ref.report.to_dict()
    # the kinds of keys a real checkpoint carries that the VQA path does not use are recognised
    assert set(report["ignored"]) >= {"CLIP text tower", "momentum (distillation) copies", "position_ids buffers"}
    assert any("never run" in k for k in report["ignored"])
    assert report["unknown"] == []
    tiles = _tiles(4)
    first = _answers(ref, tiles)
    again = _answers(MPlugVQA.from_folder(tiny_dir, mode="reference"), tiles)
    for a, b in zip(first, again, strict=True):
        assert [(r.answer, r.ids, r.score) for r in a] == [(r.answer, r.ids, r.score) for r in b]
    answers = {r.answer for per_tile in first for r in per_tile}
    assert answers == {"yes", "no"}  # the toy head answers in one word, and the inputs change the answer
    for per_tile in first:
        for r in per_tile:
            assert r.ids[0] == START_ID and r.ids[-1] == END_ID
            scores = [h.score for h in r.beams]
            assert scores == sorted(scores, reverse=True) and r.score == scores[0]


def test_answers_depend_on_the_question_and_the_tile(ref):
    per_tile = [[r.answer for r in rs] for rs in _answers(ref, _tiles(6, seed=3))]
    assert len({tuple(a) for a in per_tile}) > 1  # tiles differ
    assert any(len(set(a)) > 1 for a in per_tile)  # questions differ on one tile


def test_fast_mode_gives_the_reference_answers(ref, fast):
    tiles = _tiles(6, seed=1)
    for r_tile, f_tile in zip(_answers(ref, tiles), _answers(fast, tiles), strict=True):
        for r, f in zip(r_tile, f_tile, strict=True):
            assert f.answer == r.answer and f.ids == r.ids
            assert f.score == pytest.approx(r.score, abs=1e-4)
            assert [h.ids for h in f.beams] == [h.ids for h in r.beams]


def test_reference_mode_reencoding_each_question_is_bitwise_the_same(ref):
    tile = _tiles(1, seed=2)[0]
    cached = ref.answer_tile(tile, QUESTIONS[:3])
    official_style = ref.answer_tile(tile, QUESTIONS[:3], reencode_image=True)
    assert [(r.ids, r.score) for r in cached] == [(r.ids, r.score) for r in official_style]


def test_backend_interface_groups_parallel_lists(fast):
    tiles = _tiles(2, seed=4)
    images = [tiles[0], tiles[1], tiles[0], tiles[1]]
    qs = [QUESTIONS[0], QUESTIONS[0], QUESTIONS[1], QUESTIONS[1]]
    got = fast.answer(images, qs)
    expect = [fast.answer_tile(im, [q])[0].answer for im, q in zip(images, qs, strict=True)]
    assert got == expect
    with pytest.raises(ValueError, match="2 images for 1 questions"):
        fast.answer(tiles, [QUESTIONS[0]])


def test_fusion_skip_connection_stride_counts_from_the_first_layer_that_runs(ref):
    """Tiny config: 3 fusion layers built, the last 2 run (n = 0, 1). stride 1 → layer n=1 does the
    joint [image; text] attention and updates the image; stride 2 → never (1 % 2 != 0), even though
    the absolute index of that layer is 2."""
    m = ref.model
    ids, mask = ref.tokenizer([QUESTIONS[0]])
    image = m.encode_image(torch.stack([ref.preprocess(_tiles(1)[0])]))
    text = m.encode_text(ids, mask)
    assert m.settings.bert.stride_layer == 1
    with torch.inference_mode():
        img1, txt1 = m.fuse_reference(image, text, mask)
        assert not torch.equal(img1, image)
        m.settings = _with_stride(m.settings, 2)
        try:
            img2, txt2 = m.fuse_reference(image, text, mask)
            f_img, f_txt = m.fuse_fast(image, text, mask)
        finally:
            m.settings = _with_stride(m.settings, 1)
    assert torch.equal(img2, image)
    assert not torch.allclose(txt1, txt2)
    torch.testing.assert_close(f_txt, txt2, rtol=1e-5, atol=1e-5)
    assert torch.equal(f_img, image)


def _with_stride(settings, stride):
    from dataclasses import replace

    return replace(settings, bert=replace(settings.bert, stride_layer=stride))


# ------------------------------------------------------------------------- independent references
def test_text_encoder_and_answer_decoder_match_transformers_bert(ref):
    from transformers import BertConfig, BertLMHeadModel, BertModel

    m, b = ref.model, ref.settings.bert
    cfg = dict(vocab_size=b.vocab_size, hidden_size=b.hidden_size, num_attention_heads=b.num_attention_heads,
               intermediate_size=b.intermediate_size, max_position_embeddings=b.max_position_embeddings,
               layer_norm_eps=b.layer_norm_eps, hidden_act="gelu", hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)
    sd = m.state_dict()

    enc = BertModel(BertConfig(**cfg, num_hidden_layers=b.text_encoder_layers), add_pooling_layer=False).eval()
    enc.load_state_dict({k.removeprefix("text_encoder."): v for k, v in sd.items()
                         if k.startswith("text_encoder.")}, strict=False)
    ids, mask = ref.tokenizer(QUESTIONS[:3])
    with torch.inference_mode():
        mine = m.encode_text(ids, mask)
        theirs = enc(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(mine[real], theirs[real], rtol=1e-5, atol=1e-5)

    dec = BertLMHeadModel(BertConfig(**cfg, num_hidden_layers=b.text_decode_layers, is_decoder=True,
                                     add_cross_attention=True)).eval()
    dsd = {k.removeprefix("text_decoder."): v for k, v in sd.items() if k.startswith("text_decoder.")}
    dsd["cls.predictions.decoder.bias"] = dsd["cls.predictions.bias"]
    dec.load_state_dict(dsd, strict=False)
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 9, b.hidden_size, generator=g)
    memory_atts = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    seq = torch.tensor([[START_ID, 110, 120], [START_ID, 130, 111]])
    with torch.inference_mode():
        mine = m.decoder_logits_reference(seq, memory, memory_atts)
        theirs = dec(input_ids=seq, encoder_hidden_states=memory, encoder_attention_mask=memory_atts).logits[:, -1]
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_vision_tower_matches_open_clip(ref):
    """The CLIP ViT (all tokens after ln_post, no projection) against open_clip's VisionTransformer
    loaded with the same weights."""
    transformer = pytest.importorskip("open_clip.transformer")
    s = ref.settings
    try:
        oc = transformer.VisionTransformer(
            image_size=s.image_res, patch_size=s.clip_vision_patch_size, width=s.clip_vision_width,
            layers=s.clip_vision_layers, heads=s.vision_heads, mlp_ratio=4.0, act_layer=transformer.QuickGELU,
            output_dim=16, output_tokens=True)
    except TypeError as e:  # pragma: no cover - another open_clip API
        pytest.skip(f"open_clip VisionTransformer signature differs: {e}")
    vis = ref.model.visual_encoder.visual
    assert oc.load_state_dict(vis.state_dict(), strict=False).missing_keys == ["proj"]
    oc.proj = None  # mPLUG reads the tokens before the projection
    oc.eval()
    x = torch.randn(2, 3, s.image_res, s.image_res, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pooled, tokens = oc(x)
        mine = vis(x)
    torch.testing.assert_close(mine[:, 1:], tokens, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mine[:, 0], pooled, rtol=1e-6, atol=1e-6)


def test_preprocessing_is_the_official_torchvision_transform(fast):
    from torchvision import transforms as T

    official = T.Compose([
        T.Resize((32, 32), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])
    rng = np.random.default_rng(7)
    wide = Image.fromarray(rng.integers(0, 256, (20, 56, 3), dtype=np.uint8))  # squashed, not cropped
    rgba = Image.fromarray(rng.integers(0, 256, (45, 45, 4), dtype=np.uint8), mode="RGBA")
    gray = Image.fromarray(rng.integers(0, 256, (64, 50), dtype=np.uint8), mode="L")
    for im in (wide, rgba, gray):
        got = preprocess(im, 32)
        assert got.shape == (3, 32, 32) and got.dtype == torch.float32
        assert torch.equal(got, official(im.convert("RGB")))
    assert torch.equal(fast.preprocess(wide), preprocess(wide, fast.settings.image_res))
    # CLIP mean/std: a mid-grey pixel of value v maps to (v/255 - mean) / std per channel
    flat = preprocess(Image.new("RGB", (10, 10), (128, 128, 128)), 8)
    expect = (torch.full((3,), 128 / 255) - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor(
        [0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(flat[:, 0, 0], expect)


@pytest.fixture(scope="module")
def bert_vocab_dir(tmp_path_factory) -> Path:
    from tests.shared_data import bert_tokenizer_dir

    folder = bert_tokenizer_dir(tmp_path_factory.mktemp("bert"))
    (folder / "tokenizer_config.json").unlink()  # a ModelScope folder carries only vocab.txt
    return folder


def test_question_is_lower_cased_and_truncated_to_25_tokens(bert_vocab_dir):
    tok = QuestionTokenizer(bert_vocab_dir)
    ids, mask = tok(["Is there a red cat?", "IS THERE A RED CAT?"])
    known = [101, 2003, 2045, 1037, 2417, 4937, 1029, 102]  # bert-base-uncased ids
    for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
        assert row[:8] == known and row[8:] == [0] * 17
        assert m == [1] * 8 + [0] * 17
    long_q = "Is the " + " ".join(["Very"] * 40) + " tall tower made of red bricks?"
    ids, mask = tok([long_q])
    row = ids[0].tolist()
    assert len(row) == 25 and mask[0].tolist() == [1] * 25
    assert row[0] == 101 and row[-1] == 102
    assert row[1:3] == [2003, 1996] and row[3:24] == [2200] * 21  # 23 word pieces kept ("very" = 2200)


def test_decode_matches_transformers_4_slow_tokenizer(bert_vocab_dir):
    try:
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as Slow
    except ImportError:  # transformers 4.x: BertTokenizer is the slow one
        from transformers import BertTokenizer as Slow
    slow = Slow(vocab_file=str(bert_vocab_dir / "vocab.txt"))
    tok = QuestionTokenizer(bert_vocab_dir)
    cases = [[101, 2748, 102], [101, 2053, 1005, 1056, 1012, 102, 2748], [101, 2048, 6077, 1010, 1037, 4937, 102],
             [101, 14477, 20961, 3468, 1029, 102], [101, 100, 2748, 0, 0]]
    for ids in cases:
        assert tok.decode(ids) == slow.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
    assert decode(["[CLS]", "yes", "[SEP]"], {"[CLS]", "[SEP]"}) == "yes"


# ------------------------------------------------------------------------- beam search
def _table_step(table: dict[tuple[int, ...], dict[int, float]], vocab: int, default: dict[int, float],
                calls: list | None = None):
    """A hand-built decoder: logits for the next token looked up by the prefix (after the start id).
    `table` values are {token: logit}; unlisted tokens get -30 (never chosen)."""

    def step(seq: torch.Tensor, row_items: torch.Tensor) -> torch.Tensor:
        out = torch.full((seq.shape[0], vocab), -30.0)
        for r in range(seq.shape[0]):
            key = (int(row_items[r]), *seq[r, 1:].tolist())
            for tok, val in table.get(key, default).items():
                out[r, tok] = val
        if calls is not None:
            calls.append(seq.shape)
        return out

    return step


def _logp(logits: dict[int, float], vocab: int, tok: int) -> float:
    full = torch.full((vocab,), -30.0)
    for k, v in logits.items():
        full[k] = v
    return float(torch.log(torch.softmax(full, 0))[tok])


V, S, E, A, B, C, FILL = 8, 0, 1, 2, 3, 4, 5  # toy vocab: start 0, end 1


def test_beam_search_min_length_bans_the_end_token_at_step_0():
    table = {(0,): {E: 5.0, A: 1.0, B: 0.5}, (0, A): {E: 5.0}, (0, B): {E: 5.0}}
    res = beam_search(_table_step(table, V, {E: 5.0}), 1, beam_size=2, min_length=1, max_length=5,
                      start_id=S, end_id=E)[0]
    assert res[0].ids == (S, A, E)  # E had the highest logit at step 0 but is banned
    no_min = beam_search(_table_step(table, V, {E: 5.0}), 1, beam_size=2, min_length=0, max_length=5,
                         start_id=S, end_id=E)[0]
    assert no_min[0].ids == (S, E)


def test_beam_search_length_penalty_and_scores_by_hand():
    step0 = {A: 2.0, B: 1.0}
    t_a, t_b = {C: 3.0, E: 0.0}, {E: 4.0}
    table = {(0,): step0, (0, A): t_a, (0, B): t_b, (0, A, C): {E: 6.0}}
    res = beam_search(_table_step(table, V, {FILL: 6.0}), 1, beam_size=2, min_length=1, max_length=6,
                      start_id=S, end_id=E)[0]
    # step 1: top beam is A·C (not finished), second is B·END: recorded as finished, yet it stays alive
    # step 2: A·C·END finishes the item, and with it every beam of the step (B·END·FILL); hypotheses
    # are ranked by cumulative log-prob / lp(step), so the longer B·END·FILL beats B·END
    lp_a = _logp(step0, V, A) + _logp(t_a, V, C) + _logp({E: 6.0}, V, E)
    lp_b = _logp(step0, V, B) + _logp(t_b, V, E)
    lp_bf = lp_b + _logp({FILL: 6.0}, V, FILL)
    expect = {(S, A, C, E): lp_a / length_penalty(2), (S, B, E): lp_b / length_penalty(1),
              (S, B, E, FILL): lp_bf / length_penalty(2)}
    # all three are finished hypotheses; the best beam_size (2) are returned, best first
    ranked = sorted(expect, key=expect.get, reverse=True)
    assert ranked == [(S, A, C, E), (S, B, E, FILL), (S, B, E)]
    assert [h.ids for h in res] == ranked[:2]
    for h in res:
        assert h.score == pytest.approx(expect[h.ids], abs=1e-5)
    assert length_penalty(0) == 1.0 and length_penalty(4) == pytest.approx((10 / 6) ** 0.6)


def test_beam_search_max_length_finishes_every_beam():
    calls: list = []
    res = beam_search(_table_step({}, V, {A: 1.0, B: 0.9, C: 0.8}, calls), 1, beam_size=3, min_length=1,
                      max_length=4, start_id=S, end_id=E)[0]
    assert len(calls) == 4 and len(res) == 3
    assert all(len(h.ids) == 5 and E not in h.ids for h in res)  # start + 4 tokens, no end token
    assert res[0].ids == (S, A, A, A, A)
    assert [h.score for h in res] == sorted((h.score for h in res), reverse=True)


def test_beam_search_batch_items_finish_independently():
    """Items of one batch that finish at different steps give what each gives alone (exercises the
    removal of finished items and the row → item mapping)."""
    table = {
        (0,): {A: 2.0, B: 1.5}, (0, A): {E: 5.0}, (0, B): {E: 5.0},
        (1,): {B: 2.0, C: 1.0}, (1, B): {C: 3.0}, (1, B, C): {A: 2.0}, (1, B, C, A): {E: 5.0},
        (1, C): {E: 1.0, A: 0.5},
        (2,): {C: 1.0}, (2, C): {FILL: 2.0}, (2, C, FILL): {FILL: 2.0},
    }
    step = _table_step(table, V, {FILL: 1.0})
    together = beam_search(step, 3, beam_size=2, min_length=1, max_length=5, start_id=S, end_id=E)

    for item in range(3):
        def alone(seq, row_items, item=item):
            return step(seq, torch.full_like(row_items, item))

        single = beam_search(alone, 1, beam_size=2, min_length=1, max_length=5, start_id=S, end_id=E)[0]
        assert [(h.ids, h.score) for h in together[item]] == [(h.ids, h.score) for h in single]
    assert together[0][0].ids == (S, A, E) and together[1][0].ids == (S, B, C, A, E)
    assert len(together[2][0].ids) == 6  # ran to max_length


# ------------------------------------------------------------------------- loader failures
def _edit_yaml(folder: Path, **changes: Any) -> None:
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg.update(changes)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_loader_refuses_a_config_image_size_the_checkpoint_was_not_trained_at(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    _edit_yaml(folder, image_res=48)
    with pytest.raises(MPlugLoadError, match=r"17 rows.*image_res 32.*config.yaml says image_res 48"):
        load_mplug(folder)


def test_loader_refuses_layer_counts_that_disagree(tiny_dir, tmp_path):
    folder = _copy(tiny_dir, tmp_path)
    bert = json.loads((folder / "config_bert.json").read_text())
    bert["text_encoder_layers"] = 1
    (folder / "config_bert.json").write_text(json.dumps(bert))
    with pytest.raises(MPlugLoadError, match=r"text_encoder\.encoder\.layer: the checkpoint has 2 layers"):
        load_mplug(folder)


def test_untied_answer_head_fails_unless_the_tying_is_chosen(tiny_dir, tmp_path, ref):
    folder = _copy(tiny_dir, tmp_path)
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    head = "text_decoder.cls.predictions.decoder.weight"
    emb = "text_decoder.bert.embeddings.word_embeddings.weight"
    sd[head] = sd[head].clone() + 0.5
    torch.save(sd, folder / "pytorch_model.bin")
    with pytest.raises(MPlugLoadError, match="untied answer head"):
        load_mplug(folder)
    m4, _, rep = load_mplug(folder, head_tying="transformers4")
    dec = m4.text_decoder
    assert torch.equal(dec.bert.embeddings.word_embeddings.weight, sd[head])
    assert dec.cls.predictions.decoder.weight is dec.bert.embeddings.word_embeddings.weight
    assert "transformers 4.x" in rep.head
    mu, _, _ = load_mplug(folder, head_tying="untied")
    assert torch.equal(mu.text_decoder.bert.embeddings.word_embeddings.weight, sd[emb])
    assert torch.equal(mu.text_decoder.cls.predictions.decoder.weight, sd[head])

    # a checkpoint that stores only the head: the head serves as the embeddings too
    del sd[emb]
    torch.save(sd, folder / "pytorch_model.bin")
    m, _, rep = load_mplug(folder)
    assert torch.equal(m.text_decoder.bert.embeddings.word_embeddings.weight, sd[head])
    assert "taken from the tied head" in rep.head


@pytest.mark.parametrize("missing", ["vocab.txt", "config.yaml", "config_bert.json", "pytorch_model.bin"])
def test_loader_names_missing_files(tiny_dir, tmp_path, missing):
    folder = _copy(tiny_dir, tmp_path)
    (folder / missing).unlink()
    with pytest.raises(MPlugLoadError, match=missing if missing != "pytorch_model.bin" else "no checkpoint"):
        MPlugVQA.from_folder(folder)


def test_a_checkpoint_that_needs_unpickling_loads_only_when_trusted(tiny_dir, tmp_path, ref):
    folder = _copy(tiny_dir, tmp_path)
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({"model": sd, "args": argparse.Namespace(lr=1e-5)}, folder / "pytorch_model.bin")
    with pytest.raises(MPlugLoadError, match="trust_pickle=True"):
        MPlugVQA.from_folder(folder)
    with pytest.warns(UserWarning, match="unsafe"):
        trusted = MPlugVQA.from_folder(folder, mode="reference", trust_pickle=True)
    assert trusted.report.unwrapped == "['model']"
    tile = _tiles(1, seed=5)[0]
    assert [r.score for r in trusted.answer_tile(tile, QUESTIONS[:2])] == [
        r.score for r in ref.answer_tile(tile, QUESTIONS[:2])]
    # converted once to safetensors, the folder then loads without any unpickling
    with pytest.warns(UserWarning, match="unsafe"):
        save_safetensors(folder, trust_pickle=True)
    converted = MPlugVQA.from_folder(folder, mode="reference")
    assert converted.report.checkpoint.endswith("model.safetensors")
    assert [r.score for r in converted.answer_tile(tile, QUESTIONS[:2])] == [
        r.score for r in ref.answer_tile(tile, QUESTIONS[:2])]


def test_wrapped_state_dicts_are_unwrapped_like_modelscope(tiny_dir, tmp_path, ref):
    folder = _copy(tiny_dir, tmp_path)
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({"module": {f"model.{k}": v for k, v in sd.items()}}, folder / "pytorch_model.bin")
    vqa = MPlugVQA.from_folder(folder, mode="reference")
    assert vqa.report.unwrapped == "['module']"
    tile = _tiles(1, seed=6)[0]
    assert [r.ids for r in vqa.answer_tile(tile, QUESTIONS)] == [r.ids for r in ref.answer_tile(tile, QUESTIONS)]


# ------------------------------------------------------------------------- backends
def test_backend_labels_keep_alternatives_apart():
    assert label("mplug") == "dpg"
    assert label("blip-vqa") == "dpg[vqa=blip-vqa]" and label("qwen-vl") == "dpg[vqa=qwen-vl]"
    assert BACKENDS[0] == "mplug"
    with pytest.raises(ValueError, match="unknown VQA backend"):
        make_backend("llava")


def test_mplug_backend_resolves_the_weights_dir(tiny_dir, tmp_path):
    from paintbench.metrics.dpg.mplug import MPLUG_FOLDER
    from paintbench.metrics.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=MPLUG_FOLDER):
        make_backend("mplug", weights_dir=tmp_path)
    shutil.copytree(tiny_dir, tmp_path / MPLUG_FOLDER)
    backend = make_backend("mplug", weights_dir=tmp_path, vqa_mode="reference")
    d = backend.describe()
    assert d["backend"] == "mplug" and d["mode"] == "reference" and d["comparable_with_published_dpg"]
    assert len(d["checkpoint_sha256"]) == 64
    assert backend.answer(_tiles(1), [QUESTIONS[0]])[0] in ("yes", "no")


@pytest.mark.parametrize("name", ["blip-vqa", "qwen-vl"])
def test_optional_backends_say_where_they_looked_for_weights(name, tmp_path):
    with pytest.raises(VQAWeightsError) as e:
        make_backend(name, weights_dir=tmp_path)
    msg = str(e.value)
    assert name in msg and str(tmp_path) in msg and "Hugging Face cache" in msg
    with pytest.raises(VQAWeightsError, match="not a model folder"):
        resolve_hf_folder(tmp_path / "nothing.bin", None, "x/y", name)


def test_yes_no_reduction_of_chat_replies():
    assert yes_no("Yes.") == "yes" and yes_no(" no, it is not") == "no" and yes_no("YES") == "yes"
    assert yes_no("Maybe") == "maybe"
    assert yes_no("") == ""


def test_blip_vqa_backend_on_a_tiny_random_model(tmp_path):
    """BlipForQuestionAnswering from a local folder (tiny random config + a tiny BERT vocab)."""
    transformers = pytest.importorskip("transformers")
    from paintbench.metrics.dpg.mplug import tiny_vocab

    folder = tmp_path / "blip"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n")
    tok = transformers.BertTokenizer.from_pretrained(str(folder))
    proc = transformers.BlipProcessor(
        image_processor=transformers.BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    vocab = len(tiny_vocab())
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32,
                bos_token_id=START_ID, sep_token_id=END_ID, pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = transformers.BlipForQuestionAnswering(transformers.BlipConfig(text_config=text, vision_config=vision))
    model.save_pretrained(str(folder))
    proc.save_pretrained(str(folder))
    backend = make_backend("blip-vqa", weights=folder)
    tiles = _tiles(2)
    got = backend.answer([tiles[0], tiles[1]], QUESTIONS[:2])
    assert len(got) == 2 and all(isinstance(a, str) for a in got)
    assert backend.answer([tiles[0], tiles[1]], QUESTIONS[:2]) == got
    d = backend.describe()
    assert d["backend"] == "blip-vqa" and d["comparable_with_published_dpg"] is False


def test_qwen_vl_backend_on_a_tiny_random_model(tmp_path):
    """A tiny random Qwen2-VL (byte-level tokenizer, chat template) saved as a local folder and
    loaded through the backend: replies are reduced per question, batching (left padding) changes
    nothing, and the result is labelled as not comparable."""
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("the tiny Qwen2-VL is built with transformers 5's processor API (video processor)")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from paintbench.metrics.tiny_tokenizers import byte_alphabet

    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(byte_alphabet())}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok.add_special_tokens(specials)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                                  pad_token="<|endoftext|>")
    ids = {t: hf_tok.convert_tokens_to_ids(t) for t in specials}
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
    grid = dict(patch_size=14, merge_size=2, temporal_patch_size=2)
    proc = transformers.Qwen2VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56, **grid),
        tokenizer=hf_tok, video_processor=Qwen2VLVideoProcessor(**grid), chat_template=template)
    special_ids = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                       pad_token_id=ids["<|endoftext|>"])
    cfg = transformers.Qwen2VLConfig(
        text_config=dict(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         rope_scaling={"type": "mrope", "mrope_section": [4, 2, 2]}, **special_ids),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, in_chans=3, mlp_ratio=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], **special_ids)
    torch.manual_seed(0)
    folder = tmp_path / "qwen"
    transformers.Qwen2VLForConditionalGeneration(cfg).save_pretrained(str(folder))
    proc.save_pretrained(str(folder))

    backend = make_backend("qwen-vl", weights=folder)
    tiles = _tiles(2, seed=9)
    qs = ["Is there a cat?", "Is the sky over the tall tower blue?"]  # different lengths: left padding
    batched = backend.answer(tiles, qs)
    alone = [backend.answer([t], [q])[0] for t, q in zip(tiles, qs, strict=True)]
    assert batched == alone and all(isinstance(a, str) for a in batched)
    assert "Is there a cat?" in backend.chat_text("Is there a cat?")
    d = backend.describe()
    assert d["backend"] == "qwen-vl" and d["comparable_with_published_dpg"] is False and "Yes" in d["prompt"]


# ------------------------------------------------------------------------- ModelScope parity fixtures
FIXTURE_LAYOUT = """expected layout of shared/fixtures/mplug (dpg_vqa.md: official ModelScope outputs on
deterministic synthetic weights, with the config files and the rule to rebuild the checkpoint):
  config.yaml, config_bert.json (anywhere below the folder; vocab.txt there too, else bert-base-uncased)
  *.manifest.json[.gz]: {seed, tensors|entries: [{key, shape, dtype, fill, sha256}], state_digest}
  expected.json: {cases|vqa: [{image, question, input_ids, attention_mask, pixels{sha256|sum|mean},
                  beams|topk|hypotheses: [{ids, score}], answer|text}]}"""


def _require_mplug_fixtures() -> Path:
    if not MPLUG_FIXTURES.exists():
        pytest.skip(f"mPLUG parity fixtures absent: {MPLUG_FIXTURES} (ModelScope outputs on synthetic weights;"
                    " these tests run unchanged once the folder exists)")
    return MPLUG_FIXTURES


TINY_SET = "tiny"
"""The fixture's tiny set (`tiny/`): the same official ModelScope code path at toy size, 24 cases."""
FULL_SIZE_BEAM_CASES = ("v2_",)
"""The full-size beam check runs the image whose three questions include the longest (ModelScope's 504-px
ViT-L/14 and 12-layer beam-search decoder take ~30 s a question on 2 cores). Every one of the 12
full-size cases still has its token ids and pixels checked (every image mode: RGB, L, RGBA, P), and every
one of the tiny set's 24 cases (those modes included) its beams, scores and answers, through the same
official code path."""


def _set_root(which: str = "full") -> Path:
    root = _require_mplug_fixtures()
    return root / TINY_SET if which == TINY_SET else root


def _find(pattern: str, which: str = "full") -> Path:
    root = _set_root(which)
    hits = sorted(p for p in root.rglob(pattern) if which == TINY_SET or TINY_SET not in p.relative_to(root).parts)
    if not hits:
        pytest.fail(f"{MPLUG_FIXTURES}: no {pattern}; {FIXTURE_LAYOUT}")
    return hits[0]


@cache
def _fixture_expected(which: str = "full") -> dict[str, Any]:
    return json.loads(_find("expected.json", which).read_text())


def _cases(which: str = "full") -> list[dict[str, Any]]:
    data = _fixture_expected(which)
    cases = data if isinstance(data, list) else next((data[k] for k in ("cases", "vqa", "results") if k in data), None)
    if not cases:
        pytest.fail(f"{MPLUG_FIXTURES}/expected.json has no cases; {FIXTURE_LAYOUT}")
    return cases


def _first(d: dict[str, Any], *keys: str) -> Any:
    return next((d[k] for k in keys if k in d), None)


@cache
def _fixture_model_dir(which: str = "full") -> Path:
    """A model folder: the fixture's configs (+ vocab) and the checkpoint rebuilt from its manifest
    (cached by digest, as the other full-size fixtures are)."""
    from paintbench.metrics.synthetic import build_state_dict
    from tests.shared_data import cache_dir, cached_file

    cfg = _find("config.yaml", which)
    manifest_path = _find("*.manifest.json*", which)
    opener = gzip.open if manifest_path.suffix == ".gz" else open
    with opener(manifest_path, "rt") as f:
        manifest = json.load(f)
    section = manifest
    if not any(k in section for k in ("tensors", "entries")):
        section = next((v for v in manifest.values() if isinstance(v, dict) and ("tensors" in v or "entries" in v)),
                       None) or pytest.fail(f"{manifest_path}: no tensor list; {FIXTURE_LAYOUT}")
    entries = section.get("tensors") or section.get("entries")
    digest = section.get("state_digest") or manifest.get("state_digest")
    seed = int(section.get("seed", manifest.get("seed", 0)))

    def write(path: Path) -> None:
        torch.save(build_state_dict(entries, seed, expected_digest=digest), path)

    ckpt = cached_file(digest or "mplug-fixture", "pytorch_model.bin", write)
    folder = cache_dir() / f"mplug-model-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(folder.parent / f"mplug-model-{digest}.lock", "a") as lock:   # pytest-xdist workers build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "pytorch_model.bin").exists():
            for name in ("config.yaml", "config_bert.json", "configuration.json", "vocab.txt"):
                src = cfg.parent / name
                if src.is_file():
                    shutil.copyfile(src, folder / name)
            if not (folder / "vocab.txt").is_file():
                from tests.shared_data import bert_tokenizer_dir

                shutil.copyfile(bert_tokenizer_dir(folder / "_bert") / "vocab.txt", folder / "vocab.txt")
            (folder / "pytorch_model.bin").symlink_to(ckpt)   # last: its presence means the folder is complete
    return folder


def _fixture_image(case: dict[str, Any], which: str = "full") -> Image.Image:
    name = _first(case, "image", "image_file", "tile")
    if name is None:
        pytest.fail(f"case without an image; {FIXTURE_LAYOUT}")
    hits = sorted(_set_root(which).rglob(Path(name).name))
    if not hits:
        pytest.fail(f"{MPLUG_FIXTURES}: image {name} not found")
    return Image.open(hits[0])


SETS = [pytest.param("full", marks=[pytest.mark.slow, pytest.mark.full_size]), TINY_SET]


@pytest.mark.parametrize("which", SETS)
def test_mplug_fixture_tokens(which):
    folder = _fixture_model_dir(which)
    tok = QuestionTokenizer(folder)
    checked = 0
    for case in _cases(which):
        ids = _first(case, "input_ids", "token_ids", "question_ids")
        if ids is None:
            continue
        got_ids, got_mask = tok([case["question"]])
        assert got_ids[0].tolist() == list(np.ravel(ids)), case["question"]
        if "attention_mask" in case:
            assert got_mask[0].tolist() == list(np.ravel(case["attention_mask"]))
        checked += 1
    if not checked:
        pytest.skip("the mPLUG fixture records no token ids")


@pytest.mark.parametrize("which", SETS)
def test_mplug_fixture_pixels(which):
    from paintbench.metrics.dpg.mplug import read_settings
    from paintbench.metrics.synthetic import tensor_sha256

    res = read_settings(_fixture_model_dir(which)).image_res
    checked = 0
    for case in _cases(which):
        px = _first(case, "pixels", "pixel_stats", "image_tensor")
        if not isinstance(px, dict):
            continue
        got = preprocess(_fixture_image(case, which), res)
        if "shape" in px:
            assert list(got.shape) == list(px["shape"])[-3:]
        if "sha256" in px:
            assert tensor_sha256(got.unsqueeze(0)) == px["sha256"] or tensor_sha256(got) == px["sha256"]
        for stat, fn in (("sum", torch.sum), ("mean", torch.mean), ("abs_sum", lambda t: t.abs().sum())):
            if stat in px:
                assert float(fn(got.double())) == pytest.approx(px[stat], rel=1e-6, abs=1e-6)
        checked += 1
    if not checked:
        pytest.skip("the mPLUG fixture records no pixel data")


@pytest.mark.parametrize("which", SETS)
def test_mplug_fixture_beams_and_answers(which):
    """Reference mode against ModelScope's beams (ids exactly, scores to 1e-4) and answer strings;
    fast mode must give the same answers. The tiny set runs every case; the full-size set (the one
    full-size mPLUG check; why it is slow: mPLUG-large, a 504-px ViT-L/14 and a 12-layer beam-search
    decoder, ~2.5 GB rebuilt once and cached, on CPU) the image with the longest question
    (`FULL_SIZE_BEAM_CASES`).
    Max |score diff| is printed for the report."""
    import warnings

    folder = _fixture_model_dir(which)
    ids_emb = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ref_vqa = MPlugVQA.from_folder(folder, mode="reference")
        except MPlugLoadError as e:
            if "untied answer head" not in str(e):
                raise
            ids_emb = "transformers4"  # ModelScope ran on transformers 4.x, where the head key wins
            ref_vqa = MPlugVQA.from_folder(folder, mode="reference", head_tying="transformers4")
    fast_vqa = MPlugVQA(ref_vqa.model, ref_vqa.settings, ref_vqa.tokenizer, mode="fast")
    worst = 0.0
    by_image: dict[str, list[dict[str, Any]]] = {}   # one ViT pass per image (the official code runs one per
    for case in _cases(which):                      # question; the vision states are the same tensor)
        name = str(_first(case, "image", "image_file", "tile"))
        if which == TINY_SET or Path(name).name.startswith(FULL_SIZE_BEAM_CASES):
            by_image.setdefault(name, []).append(case)
    assert by_image, "no fixture case selected"
    for cases in by_image.values():
        image = _fixture_image(cases[0], which)
        questions = [case["question"] for case in cases]
        refs, fasts = ref_vqa.answer_tile(image, questions), fast_vqa.answer_tile(image, questions)
        for case, got, fast in zip(cases, refs, fasts, strict=True):
            want_answer = _first(case, "answer", "text")
            beams = _first(case, "beams", "topk", "hypotheses")
            if beams:
                assert [tuple(_first(b, "ids", "token_ids")) for b in beams] == [h.ids for h in got.beams[: len(beams)]]
                for b, h in zip(beams, got.beams, strict=False):
                    worst = max(worst, abs(float(b["score"]) - h.score))
            if want_answer is not None:
                assert got.answer == want_answer
                assert fast.answer == want_answer
    print(f"mPLUG fixture parity ({which}): max |beam score diff| = {worst:.3g} (head tying: {ids_emb or 'strict'})")
    assert worst <= 1e-4


def test_mplug_fixture_is_absent_or_readable():
    """Runs whenever the folder exists: its layout is understood (a clear failure otherwise)."""
    _require_mplug_fixtures()
    assert _cases()
    _find("config.yaml")
    _find("*.manifest.json*")


def test_a_model_type_this_transformers_does_not_know_is_refused_naming_it(tmp_path):
    from paintbench.errors import UserError
    from paintbench.metrics.dpg.vqa import QwenVLBackend

    (tmp_path / "config.json").write_text('{"model_type": "qwen9_vl"}')
    with pytest.raises(UserError, match=r"config.json is a 'qwen9_vl' model, which transformers .* does not know"):
        QwenVLBackend(tmp_path)
