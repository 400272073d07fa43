"""The `geneval` provider end to end on tiny random weights: colour classifier, provider outputs, the
official image layout (bad inputs included), results JSONL, summary, resume, the CLI command."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from paintbench.commands import geneval as geneval_cmd
from paintbench.errors import UserError
from paintbench.metrics.geneval import Detection, format_summary, judge, summarize
from paintbench.metrics.geneval import detector as D
from paintbench.metrics.geneval.colour import ColourClassifier, crop_pil, crop_tensor, pil_box
from paintbench.metrics.geneval.layout import scan
from paintbench.metrics.geneval.provider import (
    OFFICIAL_DETECTOR_FILE,
    GenEvalProvider,
    write_tiny_weights,
)
from tests.shared_data import SHARED, require

pytestmark = pytest.mark.hf

SCALE = (160, 96)
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@pytest.fixture(scope="module")
def prompts() -> list[dict]:
    """The first prompt of each tag in the official metadata file."""
    lines = require(SHARED / "data" / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines if x.strip()]
    return [next(r for r in records if r["tag"] == t) for t in TAGS]


@pytest.fixture(scope="module")
def weights(tmp_path_factory, prompts) -> dict:
    """Tiny weights in the official layout; the detector is biased towards the prompts' classes so the
    colour and position rules actually run."""
    folder = tmp_path_factory.mktemp("geneval-weights")
    written = write_tiny_weights(folder, seed=0)
    classes = {c["class"] for p in prompts for c in p["include"]}
    bias = {D.OBJECT_NAMES.index(c): 5.0 for c in classes}
    D.save_checkpoint(D.random_tiny_model(1, class_bias=bias), D.TINY_CONFIG, folder / OFFICIAL_DETECTOR_FILE, "mmdet2")
    return {"dir": folder, "written": written}


@pytest.fixture(scope="module")
def provider(weights) -> GenEvalProvider:
    return GenEvalProvider(weights_dir=weights["dir"], detector_scale=SCALE, batch_size=8)


def shapes_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(3):
        x0, y0 = (int(v) for v in rng.integers(0, min(size) - 24, 2))
        w, h = (int(v) for v in rng.integers(10, 24, 2))
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return im


def write_layout(root, records, n_images=4, size=(64, 64), seed=0):
    for k, meta in enumerate(records):
        folder = root / f"{k:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        for s in range(n_images):
            shapes_image(seed + 10 * k + s, size).save(folder / "samples" / f"{s:05d}.png")
    return root


# --------------------------------------------------------------------------------------------- colour
def test_crop_sets_pixels_outside_the_mask_to_999_and_rounds_the_box_like_pillow():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    mask = rng.random((8, 10)) > 0.5
    box = (1.5, 2.5, 6.4, 7.6)  # Pillow: round() each → (2, 2, 6, 8) (half to even)
    assert pil_box(box) == (2, 2, 6, 8)
    crop = np.asarray(crop_pil(Image.fromarray(arr), box, mask))
    expected = np.where(mask[..., None], arr, np.uint8(153))[2:8, 2:6]
    assert crop.shape == (6, 4, 3) and np.array_equal(crop, expected)
    assert (crop[~mask[2:8, 2:6]] == 153).all()
    t = crop_tensor(torch.from_numpy(arr).permute(2, 0, 1), box, torch.from_numpy(mask))
    assert np.array_equal((t * 255).round().byte().permute(1, 2, 0).numpy(), expected)
    # no mask: plain crop
    assert np.array_equal(np.asarray(crop_pil(Image.fromarray(arr), box, None)), arr[2:8, 2:6])


def test_colour_classifier_caches_text_and_classifies_a_batch_in_one_forward(weights):
    clf = ColourClassifier(weights["dir"] / "ViT-L-14.pt")
    assert clf.texts("fire hydrant")[0] == [
        "a photo of a red fire hydrant", "a photo of a red-colored fire hydrant", "a photo of a red object",
    ]
    calls = {"text": 0, "image": 0}
    hooks = [
        clf.clip.token_embedding.register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1)),
        clf.clip.visual.register_forward_hook(lambda *a: calls.__setitem__("image", calls["image"] + 1)),
    ]
    try:
        crops = [shapes_image(s, (30 + 7 * s, 40)) for s in range(5)]
        classes = ["car", "car", "bus", "car", "bus"]
        first = clf.classify(clf.pixels_pil(crops), classes)
        assert calls == {"text": 2, "image": 1}  # one text encoding per class, one image forward
        again = clf.classify(clf.pixels_pil(crops), classes)
        assert calls == {"text": 2, "image": 2}  # text weights came from the cache
    finally:
        for h in hooks:
            h.remove()
    assert [r.colour for r in first] == [r.colour for r in again]
    # each crop on its own, with the zero-shot weights built here from the templates, gives the same
    from open_clip.tokenizer import tokenize

    for crop, cls, got in zip(crops, classes, first, strict=True):
        texts = [f"a photo of a {c} {cls}" for c in clf.colours] + [f"a photo of a {c}-colored {cls}" for c in clf.colours] \
            + [f"a photo of a {c} object" for c in clf.colours]
        with torch.no_grad():
            emb = torch.nn.functional.normalize(clf.clip.encode_text(tokenize(texts)), dim=-1).view(3, 10, -1)
            w = emb.mean(0)
            w = w / w.norm(dim=-1, keepdim=True)
            f = torch.nn.functional.normalize(clf.clip.encode_image(clf.pixels_pil([crop])), dim=-1)
            logits = 100 * f @ w.T
        assert clf.colours[int(logits.argmax())] == got.colour
        assert np.allclose(logits[0].numpy(), got.logits, atol=1e-3)


# --------------------------------------------------------------------------------------------- provider
def test_provider_scores_pil_and_device_tensors_alike(provider, prompts):
    images = [shapes_image(s) for s in range(4)]
    meta = [prompts[3], prompts[5], prompts[4], prompts[2]]  # colors, color_attr, position, counting
    pil = provider.score(images, [m["prompt"] for m in meta], meta)
    tensor = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images])
    dev = provider.score(tensor, [m["prompt"] for m in meta], meta)
    for a, b in zip(pil.details, dev.details, strict=True):
        assert a["detections"] == b["detections"]  # the detector sees the same uint8 pixels
        assert a["kept"] == b["kept"]
    for d, v in zip(pil.details, pil.tolist(), strict=True):
        assert v == pytest.approx(d["reward"])  # default value: Flow-GRPO's reward
        assert set(d) >= {"correct", "reason", "reward", "strict", "kept", "detections", "colours"}
    assert any(d["colours"] for d in pil.details[:2])  # the colour prompts had objects to classify
    correct = GenEvalProvider(weights_dir=provider.detector_path.parent, detector_scale=SCALE, value="correct")
    s = correct.score(images, [m["prompt"] for m in meta], meta)
    assert s.tolist() == [float(d["correct"]) for d in s.details]
    assert json.dumps(s.details)  # JSON-serialisable


def test_provider_needs_valid_metadata(provider, prompts):
    img = [shapes_image(0)]
    with pytest.raises(ValueError, match="metadata"):
        provider.score(img, ["a photo of a cat"], None)
    bad = {"tag": "single_object", "include": [{"class": "unicorn", "count": 1}], "prompt": "a unicorn"}
    with pytest.raises(ValueError, match="unknown class 'unicorn'"):
        provider.score(img, [bad["prompt"]], [bad])


def test_registry_and_tiny_writer(tmp_path, weights):
    from paintbench import metrics
    from paintbench.metrics.synthetic import write_tiny_weights as write_any

    files = write_any("geneval", tmp_path)
    assert {f.name for f in files} == {OFFICIAL_DETECTOR_FILE, "ViT-L-14.pt"}
    p = metrics.get("geneval", weights_dir=tmp_path, detector_scale=SCALE)
    assert p.spec.weights == ("geneval-mask2former", "clip-vit-l-14")
    prov = p.provenance()
    assert prov["detector"]["format"] == "mmdet2" and len(prov["weights"]["detector"]["sha256"]) == 64


# --------------------------------------------------------------------------------------------- layout
def test_layout_reports_every_bad_input_by_name(tmp_path, weights, prompts):
    root = write_layout(tmp_path / "imgs", prompts[:2], n_images=4)
    # 00002: three images, one of them a different size; a JPEG and a misnamed PNG next to them
    write_layout(tmp_path / "tmp3", [prompts[0]], n_images=3)
    shutil.move(tmp_path / "tmp3" / "00000", root / "00002")
    shapes_image(1, (80, 48)).save(root / "00002" / "samples" / "00002.png")
    shapes_image(2).save(root / "00002" / "samples" / "00003.jpg")
    shapes_image(3).save(root / "00002" / "samples" / "extra.png")
    # 00003: no metadata; 00004: malformed metadata (the whole jsonl pasted); 00005: unknown class
    for k in (3, 4, 5):
        (root / f"{k:05d}" / "samples").mkdir(parents=True)
        shapes_image(k).save(root / f"{k:05d}" / "samples" / "00000.png")
    (root / "00004" / "metadata.jsonl").write_text(json.dumps(prompts[0]) + "\n" + json.dumps(prompts[1]) + "\n")
    (root / "00005" / "metadata.jsonl").write_text(json.dumps(
        {"tag": "single_object", "include": [{"class": "mouse", "count": 1}], "prompt": "a photo of a mouse"}))
    # 00006: zero images; 00001/samples/00001.png: a corrupt PNG
    (root / "00006" / "samples").mkdir(parents=True)
    (root / "00006" / "metadata.jsonl").write_text(json.dumps(prompts[0]))
    corrupt = root / "00001" / "samples" / "00001.png"
    corrupt.write_bytes(corrupt.read_bytes()[:60])

    layout = scan(root)
    found = {(p.level, p.path): p.message for p in layout.problems}

    def has(level, path, text):
        msg = found.get((level, str(path)))
        assert msg is not None and text in msg, (level, path, sorted(found))

    has("skipped", root / "00002/samples/00003.jpg", "JPEG")
    has("skipped", root / "00002/samples/extra.png", "not digits")
    has("warning", root / "00002/samples", "3 images")
    has("warning", root / "00002/samples/00002.png", "80x48")
    has("error", root / "00003/metadata.jsonl", "missing")
    has("error", root / "00003/samples/00000.png", "no usable metadata")
    has("error", root / "00004/metadata.jsonl", "2 non-empty lines")
    has("error", root / "00005/metadata.jsonl", "unknown class 'mouse'")  # GenEval says "computer mouse"
    has("error", root / "00006/samples", "0 images")
    assert len(layout.items) == 4 + 4 + 3  # folders 0, 1 (incl. the corrupt file) and 2

    status = _cli([str(root), "--out", str(tmp_path / "run"), "--weights-dir", str(weights["dir"]), "--scale",
                   "160,96", "--device", "cpu", "--no-progress"])
    assert status == geneval_cmd.EXIT_SOME_FAILED
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 11  # every image of the usable folders has a line, scored or not
    failed = [r for r in records if "error" in r]
    assert [r["filename"] for r in failed] == [str(corrupt)] and str(corrupt) in failed[0]["error"]
    assert sum("correct" in r for r in records) == 10
    assert summarize([r for r in records if "correct" in r])["total_images"] == 10


# --------------------------------------------------------------------------------------------- end to end
def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    geneval_cmd.add_arguments(parser)
    return geneval_cmd.run(parser.parse_args(argv))


def _count_scored(monkeypatch, fail_after: int | None = None) -> list[int]:
    """Count the samples the run engine scores; with `fail_after`, stop the run (as a kill would)
    once that many batches were recorded."""
    from paintbench.harness import evaluate

    calls: list[int] = []
    real = evaluate._score_batch

    def counting(provider, batch, decoded, meta):
        if fail_after is not None and len(calls) == fail_after:
            raise KeyboardInterrupt
        calls.append(len(batch))
        return real(provider, batch, decoded, meta)

    monkeypatch.setattr(evaluate, "_score_batch", counting)
    return calls


def test_end_to_end_official_layout_interrupted_and_resumed(tmp_path, weights, prompts, capsys, monkeypatch):
    root = write_layout(tmp_path / "imgs", prompts, n_images=4)
    run = tmp_path / "run"
    argv = [str(root), "--out", str(run), "--weights-dir", str(weights["dir"]), "--scale", "160,96",
            "--device", "cpu", "--batch-size", "8", "--no-progress"]
    with monkeypatch.context() as mp:
        _count_scored(mp, fail_after=1)
        with pytest.raises(KeyboardInterrupt):  # stopped after the first batch of 8 was recorded
            _cli(argv)
    part = run / "parts" / "scores.geneval.rank00000.jsonl"
    first = part.read_text().splitlines()
    assert len(first) == 8
    # a torn last line, as a kill in the middle of a write leaves it
    part.write_text("\n".join(first[:7]) + "\n" + first[7][: len(first[7]) // 2])
    capsys.readouterr()

    with monkeypatch.context() as mp:
        calls = _count_scored(mp)
        status = _cli(argv)
    printed = capsys.readouterr().out
    assert status == 0
    assert sum(calls) == 17  # finished images were not redone; the torn one was
    out = run / "results.jsonl"
    lines = out.read_text().splitlines()
    assert len(lines) == 24
    records = [json.loads(x) for x in lines]
    assert len({r["filename"] for r in records}) == 24
    assert [json.loads(x)["prompt_id"] for x in (run / "scores" / "geneval.jsonl").read_text().splitlines()][:8] == \
        ["00000"] * 4 + ["00001"] * 4  # merged in suite order

    # the official fields, as GenEval's results.jsonl has them
    rec = records[0]
    assert set(rec) >= {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    assert rec["filename"] == str(root / "00000" / "samples" / "00000.png")
    assert json.loads(rec["metadata"]) == prompts[0]
    for r in records:
        kept = json.loads(r["details"])
        assert all(len(row) == 5 and row[4] > (0.9 if r["tag"] == "counting" else 0.3) for v in kept.values() for row in v)
        # the verdict follows from the recorded raw detections and colours through the rules
        dets = {c: [Detection(tuple(d["box"]), d["score"]) for d in v] for c, v in r["detections"].items()}
        ranks: dict[int, tuple[str, int]] = {}

        def colour_of(cls, det, r=r, ranks=ranks):
            return r["colours"][cls][ranks[id(det)][1]]

        from paintbench.metrics.geneval.rules import filter_detections

        meta = json.loads(r["metadata"])
        for cls, lst in filter_detections(meta, dets).items():
            for i, d in enumerate(lst):
                ranks[id(d)] = (cls, i)
        v = judge(meta, dets, colour_of)
        assert (v.correct, v.reason) == (r["correct"], r["reason"])
    assert any(r["colours"] for r in records if r["tag"] in ("colors", "color_attr"))

    # the printed summary is the official text for these rows
    expected = format_summary(summarize(records))
    assert printed.startswith(expected)
    assert "Overall score (avg. over tasks):" in printed and "counting         = " in printed
    # the engine's results.json agrees: GenEval's Overall is the macro mean over tasks
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["geneval"]["value"] == pytest.approx(summarize(records)["overall"], abs=1e-12)

    # running again scores nothing and writes the same results
    with monkeypatch.context() as mp:
        calls = _count_scored(mp)
        assert _cli(argv) == 0
    assert calls == [] and out.read_text().splitlines() == lines


def test_resume_with_other_settings_is_refused(tmp_path, weights, prompts, monkeypatch):
    root = write_layout(tmp_path / "imgs", prompts[:1], n_images=1)
    run = tmp_path / "run"
    base = [str(root), "--out", str(run), "--weights-dir", str(weights["dir"]), "--scale", "160,96",
            "--device", "cpu", "--no-progress"]
    assert _cli(base) == 0
    # refused before any model is loaded, although nothing is left to score
    from paintbench.harness import evaluate

    monkeypatch.setattr(evaluate, "_provider", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(UserError, match=r"other settings \(options\.options\.threshold: 0\.3 -> 0\.5"):
        _cli([*base, "--threshold", "0.5"])
    monkeypatch.undo()
    assert _cli([*base, "--threshold", "0.5", "--overwrite"]) == 0
    lines = (run / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert "0.5" in (run / "scores" / "geneval.request.json").read_text()


def test_an_output_file_for_out_is_refused(tmp_path, weights, prompts):
    root = write_layout(tmp_path / "imgs", prompts[:1], n_images=1)
    with pytest.raises(UserError, match="give a run directory"):
        _cli([str(root), "--out", str(tmp_path / "results.jsonl"), "--weights-dir", str(weights["dir"])])


def test_its_own_output_directory_is_not_taken_for_a_suite_run(tmp_path, weights, prompts):
    root = write_layout(tmp_path / "imgs", prompts[:1], n_images=1)
    base = ["--weights-dir", str(weights["dir"]), "--scale", "160,96", "--device", "cpu", "--no-progress"]
    assert _cli([str(root), "--out", str(tmp_path / "run"), *base]) == 0
    with pytest.raises(UserError, match=r"output of scoring the folder .*imgs; rerun that command"):
        _cli([str(tmp_path / "run"), *base[:2]])

