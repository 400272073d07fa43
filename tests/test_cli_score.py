"""`paintbench score` and friends, end to end through the real CLI and real loaders.

Two kinds of weights: tiny random checkpoints written by `paintbench weights make-tiny` (every
provider, official file formats), and the official-parity synthetic checkpoints of the fixtures (the
scores must then equal the official implementations' numbers).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import shared_data as sd

# every test here runs the real CLI in a subprocess that loads real (tiny) models: the integration tier,
# `slow` (still in CI); the providers' own tests cover the same code in the inner loop
pytestmark = [pytest.mark.hf, pytest.mark.slow]

METRICS = ["imagereward", "hps-v2.1", "aesthetic"]


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "paintbench", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"paintbench {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-weights")
    cli("weights", "make-tiny", str(d), check=True)
    return d


def _images(folder: Path, n: int = 5) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(40 + 8 * i, 48, 3), dtype=np.uint8)
        p = folder / f"img{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_metrics_lists_every_provider_and_weight_presence(tiny_weights):
    out = cli("metrics", "--json", "--weights-dir", str(tiny_weights), check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    for m in [*METRICS, "hps-v2"]:
        assert rows[m]["weights_present"], rows[m]
        assert rows[m]["version"] and rows[m]["higher_is_better"] is True
    empty = json.loads(cli("metrics", "--json", "--weights-dir", str(tiny_weights / "nope"), check=True).stdout)
    missing = {r["name"]: r["missing"] for r in empty}
    assert "ImageReward.pt" in missing["imagereward"]
    assert "HPS_v2.1_compressed.pt" in missing["hps-v2.1"]
    # the plain table names the same facts
    table = cli("metrics", "--weights-dir", str(tiny_weights / "nope"), check=True).stdout
    assert "hps-v2.1" in table and "missing" in table and "paintbench weights fetch" in table


def test_score_folder_with_one_bad_file(tmp_path, tiny_weights):
    imgs = _images(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    names = sorted(p.name for p in (tmp_path / "imgs").iterdir())
    (tmp_path / "prompts.txt").write_text("\n".join(f"prompt for {n}" for n in names) + "\n")
    args = ["score", "--images", str(tmp_path / "imgs"), "--prompts", str(tmp_path / "prompts.txt"),
            "--weights-dir", str(tiny_weights), "--device", "cpu", "--batch-size", "2",
            "--out", str(tmp_path / "out"), "--no-progress"]
    for m in METRICS:
        args += ["--metric", m]
    out = cli(*args)
    assert out.returncode == 3, out.stderr
    records = [json.loads(x) for x in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == names  # every sample, in order, none dropped
    bad = next(r for r in records if r["id"] == "broken.png")
    assert "broken.png" in bad["errors"]["image"] and bad["scores"] == {}
    good = [r for r in records if r["id"] != "broken.png"]
    assert len(good) == len(imgs)
    for r in good:
        assert set(r["scores"]) == set(METRICS)
        assert all(np.isfinite(v) for v in r["scores"].values())
        assert r["prompt"] == f"prompt for {r['id']}"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for m in METRICS:
        vals = [r["scores"][m] for r in good]
        assert summary["metrics"][m]["n"] == len(imgs)
        assert summary["metrics"][m]["n_failed"] == 1
        assert summary["metrics"][m]["mean"] == pytest.approx(float(np.mean(vals)), abs=1e-9)
        assert summary["metrics"][m]["std"] == pytest.approx(float(np.std(vals, ddof=1)), abs=1e-9)
        assert summary["metrics"][m]["provenance"]["version"]
    assert [f["id"] for f in summary["failed"]] == ["broken.png"]
    assert "broken.png" in out.stdout


def test_score_jsonl_input_matches_python_api(tmp_path, tiny_weights):
    from paintbench import metrics

    imgs = _images(tmp_path / "imgs", n=3)
    lines = [{"image": f"imgs/{p.name}", "prompt": f"a photo number {i}"} for i, p in enumerate(imgs)]
    lines.append({"image": "imgs/missing.png", "prompt": "gone"})
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    out = cli("score", "--metric", "hps-v2.1", "--images", str(tmp_path / "in.jsonl"), "--weights-dir",
              str(tiny_weights), "--device", "cpu", "--out", str(tmp_path / "out"), "--no-progress")
    assert out.returncode == 3
    records = [json.loads(x) for x in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert len(records) == 5
    assert "no such file" in records[3]["errors"]["image"]
    assert "malformed" in records[4]["errors"]["input"]
    hps = metrics.get("hps-v2.1", weights_dir=tiny_weights)
    expected = hps.score(imgs, [x["prompt"] for x in lines[:3]]).tolist()
    got = [r["scores"]["hps-v2.1"] for r in records[:3]]
    assert got == pytest.approx(expected, abs=1e-6)


def test_missing_prompts_fail_only_prompted_metrics(tmp_path, tiny_weights):
    _images(tmp_path / "imgs", n=2)
    (tmp_path / "imgs" / "img0.txt").write_text("sidecar prompt\n")
    out = cli("score", "--metric", "aesthetic", "--metric", "imagereward", "--images", str(tmp_path / "imgs"),
              "--weights-dir", str(tiny_weights), "--device", "cpu", "--out", str(tmp_path / "o"), "--no-progress")
    assert out.returncode == 3
    recs = {r["id"]: r for r in map(json.loads, (tmp_path / "o" / "scores.jsonl").read_text().splitlines())}
    assert recs["img0.png"]["prompt"] == "sidecar prompt"
    assert set(recs["img0.png"]["scores"]) == {"aesthetic", "imagereward"}
    assert set(recs["img1.png"]["scores"]) == {"aesthetic"}
    assert "no prompt" in recs["img1.png"]["errors"]["imagereward"]


def test_usage_errors_are_one_clear_line(tmp_path, tiny_weights):
    _images(tmp_path / "imgs", n=1)
    out = cli("score", "--metric", "hps-v21", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "did you mean" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "imgs" / "img0.txt").write_text("a prompt\n")  # prompts are there: the weights are what is missing
    out = cli("score", "--metric", "hps-v2.1", "--images", str(tmp_path / "imgs"),
              "--weights-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "HPS_v2.1_compressed.pt" in out.stderr
    assert "paintbench weights fetch hps-v2.1" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    out = cli("score", "--metric", "hps-v2.1", "--images", str(tmp_path / "imgs"), "--prompts",
              str(tmp_path / "p.txt"), "--weights-dir", str(tiny_weights), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "3 prompts for 1 images" in out.stderr


def test_weights_list_and_path(tiny_weights):
    out = cli("weights", "list", "--json", "--weights-dir", str(tiny_weights), check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["hps-v2.1"]["present"].endswith("HPS_v2.1_compressed.pt")
    assert rows["clip-vit-l-14"]["used_by"] == ["aesthetic", "geneval"]  # one shared CLIP
    out = cli("weights", "path", "imagereward", "--weights-dir", str(tiny_weights), check=True)
    assert out.stdout.strip() == str(tiny_weights / "ImageReward.pt")


def test_score_with_fixture_checkpoints_reproduces_official_numbers(tmp_path):
    """The CLI on the official-parity synthetic weights gives the official implementations' scores."""
    from paintbench.metrics.synthetic import build_state_dict

    expected = sd.preference_expected()
    weights = tmp_path / "w"
    weights.mkdir()
    m = sd.manifest("aesthetic__tiny")
    torch.save(build_state_dict(m["clip"]["tensors"], m["seed"]), weights / "ViT-L-14.pt")
    torch.save(build_state_dict(m["head"]["tensors"], m["seed"]), weights / "sac+logos+ava1-l14-linearMSE.pth")
    hm = sd.manifest("hps__ViT-B-32")
    hps_file = sd.cached_file(hm["state_digest"], "HPS_v2.1_compressed.pt",
                              lambda p: torch.save({"state_dict": build_state_dict(hm["tensors"], hm["seed"])}, p))
    (weights / "HPS_v2.1_compressed.pt").symlink_to(hps_file)
    prompts = sd.preference_prompts()
    images = sorted(expected["aesthetic_v2"]["reduced_tiny"]["images"])
    lines = [{"image": str(sd.preference_image(f)), "prompt": prompts["P2"]} for f in images]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cli("score", "--metric", "aesthetic", "--metric", "hps-v2.1", "--images", str(tmp_path / "in.jsonl"),
        "--weights-dir", str(weights), "--device", "cpu", "--out", str(tmp_path / "o"), "--no-progress", check=True)
    records = [json.loads(x) for x in (tmp_path / "o" / "scores.jsonl").read_text().splitlines()]
    hps_pairs = {(p["image"], p["prompt_id"]): p["score"]
                 for p in expected["hps_v2"]["reduced_vit_b_32"]["pairs"]}
    for f, r in zip(images, records, strict=True):
        assert r["scores"]["aesthetic"] == pytest.approx(
            expected["aesthetic_v2"]["reduced_tiny"]["images"][f]["aesthetic_score"], abs=2e-5)
        assert r["scores"]["hps-v2.1"] == pytest.approx(hps_pairs[(f, "P2")], abs=1e-5)


def _png_with_header_size(path: Path, width: int, height: int) -> None:
    """A small real PNG whose IHDR claims another size (what a decompression bomb looks like up front)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    path.write_bytes(bytes(data))


def test_oversized_and_elongated_images_fail_alone_and_animated_ones_are_noted(tmp_path, tiny_weights):
    imgs = tmp_path / "imgs"
    _images(imgs, n=2)
    _png_with_header_size(imgs / "huge.png", 13000, 13000)
    Image.new("RGB", (1, 100000)).save(imgs / "thin.png")
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(imgs / "anim.gif", save_all=True, append_images=frames[1:])
    out = cli("score", "--metric", "aesthetic", "--images", str(imgs), "--weights-dir", str(tiny_weights),
              "--device", "cpu", "--out", str(tmp_path / "o"), "--no-progress")
    assert out.returncode == 3, out.stderr
    recs = {r["id"]: r for r in map(json.loads, (tmp_path / "o" / "scores.jsonl").read_text().splitlines())}
    assert "169,000,000 pixels, more than the limit" in recs["huge.png"]["errors"]["aesthetic"]
    assert "aspect ratio above 20" in recs["thin.png"]["errors"]["aesthetic"]
    assert set(recs["img0.png"]["scores"]) == {"aesthetic"} and set(recs["img1.png"]["scores"]) == {"aesthetic"}
    assert recs["anim.gif"]["details"]["aesthetic"]["note"] == "animated image (2 frames): scored on its first frame"
    # the limit is the user's to raise
    from paintbench.metrics.images import MAX_ASPECT_ENV

    env_out = subprocess.run([sys.executable, "-c", "from paintbench.metrics.images import check_size; "
                              "check_size(1, 100000, 'x'); print('ok')"], capture_output=True, text=True,
                             env={**os.environ, MAX_ASPECT_ENV: "200000"})
    assert env_out.stdout.strip() == "ok"


def test_problems_found_before_any_model_loads(tmp_path):
    """Before, these surfaced only after the models had loaded (minutes with real weights)."""
    _images(tmp_path / "imgs", n=2)
    empty = tmp_path / "no-weights"  # nothing could load: an error about weights would mean it tried
    out = cli("score", "--metric", "imagereward", "--images", str(tmp_path / "imgs"), "--weights-dir", str(empty),
              "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "gives none: pass --prompts FILE" in out.stderr
    (tmp_path / "file").write_text("x")
    out = cli("score", "--metric", "aesthetic", "--images", str(tmp_path / "imgs"), "--weights-dir", str(empty),
              "--out", str(tmp_path / "file"))
    assert out.returncode == 2 and "a file, not a run directory" in out.stderr and "Traceback" not in out.stderr
    out = cli("score", "--metric", "aesthetic", "--images", str(tmp_path / "imgs"), "--prompts", str(tmp_path / "imgs"),
              "--weights-dir", str(empty), "--out", str(tmp_path / "o2"))
    assert out.returncode == 2 and "a folder; give a file" in out.stderr


def test_synthetic_weights_never_look_official(tmp_path, tiny_weights):
    """After `make-tiny`, `metrics` and `weights list` said `present` and a run looked official."""
    rows = {r["name"]: r for r in json.loads(cli("metrics", "--json", "--weights-dir", str(tiny_weights), check=True).stdout)}
    assert rows["aesthetic"]["synthetic_weights"] and rows["hps-v2.1"]["synthetic_weights"]
    assert "synthetic" in cli("metrics", "--weights-dir", str(tiny_weights), check=True).stdout
    assert "SYNTHETIC (random, not the official file)" in cli("weights", "list", "--weights-dir", str(tiny_weights),
                                                                check=True).stdout
    _images(tmp_path / "imgs", n=2)
    cli("score", "--metric", "aesthetic", "--images", str(tmp_path / "imgs"), "--weights-dir", str(tiny_weights),
        "--device", "cpu", "--out", str(tmp_path / "o"), "--no-progress", check=True)
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    prov = results["metrics"]["aesthetic"]["provenance"]
    assert prov["synthetic_weights"] is True and prov["weights"]["clip-vit-l-14"]["synthetic"] is True
    assert "SYNTHETIC WEIGHTS" in cli("results", str(tmp_path / "o"), check=True).stdout
    site = tmp_path / "site"
    cli("leaderboard", str(tmp_path / "o"), "--out", str(site), check=True)
    assert any("synthetic weights</span>" in p.read_text() for p in site.glob("*.html"))


def test_a_file_that_is_not_the_official_one_is_flagged(tmp_path, tiny_weights):
    """The registry knows ViT-L-14.pt's official sha256; a different file under that name is flagged."""
    import shutil
    import warnings

    from paintbench.metrics.weights import weights_notes

    other = tmp_path / "w"
    shutil.copytree(tiny_weights, other)
    (other / ".paintbench-synthetic.json").unlink()  # a random file that does not say it is random
    prov = {"weights": {"clip-vit-l-14": {"path": str(other / "ViT-L-14.pt"), "sha256": "ab" * 32}}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = weights_notes(prov)
    assert out["weights"]["clip-vit-l-14"]["official_sha256_mismatch"] is True
    assert any("not the official file" in str(w.message) for w in caught)


NEW_METRICS = ["pickscore", "clipscore", "clipscore-torchmetrics", "hpsv3", "unipercept-iaa", "unipercept-iqa",
               "unipercept-ista", "deqa"]


def test_the_paper_and_preference_metrics_score_end_to_end_on_tiny_weights(tmp_path, tiny_weights):
    """`paintbench score` with every new metric at once: real loaders, the run engine, the reports; the
    numbers equal the Python API's, and the provenance records the dtype and the weights' sha256."""
    from paintbench import metrics

    imgs = _images(tmp_path / "imgs", n=3)
    lines = [{"image": f"imgs/{p.name}", "prompt": f"a photo number {i}"} for i, p in enumerate(imgs)]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    args = [a for m in NEW_METRICS for a in ("--metric", m)]
    cli("score", *args, "--images", str(tmp_path / "in.jsonl"), "--weights-dir", str(tiny_weights), "--device", "cpu",
        "--out", str(tmp_path / "out"), "--no-progress", check=True)
    records = [json.loads(x) for x in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert [set(r["scores"]) for r in records] == [set(NEW_METRICS)] * 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for m in NEW_METRICS:
        provider = metrics.get(m, weights_dir=tiny_weights)
        want = provider.score(imgs, [x["prompt"] for x in lines] if provider.needs_prompt else None).tolist()
        assert [r["scores"][m] for r in records] == pytest.approx(want, abs=1e-4), m
        prov = summary["metrics"][m]["provenance"]
        assert prov["dtype"] == "float32" and prov["version"] == provider.version, m
        for name, w in prov["weights"].items():                 # each weight file's sha256, marked synthetic
            assert len(w["sha256"]) == 64 and w["synthetic"] is True, (m, name)
