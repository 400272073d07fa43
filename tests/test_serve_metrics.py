"""Every registered metric through `paintbench serve` equals the same provider in process, bit for bit
(tiny weights in the official formats, the real code paths; CPU, float32)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from paintbench import metrics
from paintbench.metrics.synthetic import write_tiny_weights

pytest.importorskip("ray.serve", reason="Ray Serve is not installed here (pip install 'paintbench[serve]')")
pytestmark = [pytest.mark.slow, pytest.mark.hf]

MODELS = ["aesthetic", "imagereward", "hps-v2", "hps-v2.1", "pickscore", "clipscore", "clipscore-torchmetrics", "hpsv3",
          "unipercept-iaa", "unipercept-iqa", "unipercept-ista", "deqa", "geneval", "dpg"]
META = {"geneval": {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a cat"},
        "dpg": {"item_id": "x", "questions": [{"proposition_id": 1, "question": "is there a cat?", "dependency": "0",
                                               "tuple": "entity - whole (cat)"}]}}


def test_every_registered_metric_is_covered():
    from paintbench.harness.plugins import SPECS
    from paintbench.metrics import registry
    from paintbench.trainer.rewards import ensure_harness_metrics

    ensure_harness_metrics()
    worlds = {"shapes-geneval", "blocks-geneval", "blocks-layout", "blocks-detail"}
    shipped = {n for n in metrics.available() if registry.spec(n).target.startswith("paintbench.metrics.")}
    shipped |= {s.name for s in SPECS}                       # not test plugins other tests may have registered
    assert shipped == set(MODELS) | worlds                   # a new metric must join this test


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from test_serve import TOKEN, start_server, stop

    tmp = tmp_path_factory.mktemp("serve-all")
    weights = tmp / "weights"
    for m in MODELS:
        write_tiny_weights(m, weights)
    (tmp / "token").write_text(TOKEN)
    names = [*MODELS, "shapes-geneval", "blocks-geneval", "blocks-layout", "blocks-detail"]
    proc, url, log = start_server(tmp, *names, "--weights-dir", str(weights), "--token-file", str(tmp / "token"),
                                  timeout=900)
    yield url, weights
    assert stop(proc) == 0, log.read_text()[-2000:]


@pytest.mark.parametrize("metric", MODELS)
def test_model_metrics_through_the_service_equal_in_process(served, metric):
    from test_serve import TOKEN

    from paintbench.metrics.remote import RemoteProvider

    url, weights = served
    size = 96 if metric == "dpg" else 64
    images = [Image.new("RGB", (size, size), (40 * i, 120, 200 - 30 * i)) for i in range(3)]
    prompts = ["a photo of a cat", "two dogs", "a red car"]
    meta = [META[metric]] * 3 if metric in META else None
    local = metrics.get(metric, weights_dir=weights, device="cpu").score(images, prompts, meta)
    remote = RemoteProvider(url, metric, token=TOKEN).score(images, prompts, meta)
    assert torch.equal(remote.values, local.values.float().cpu()), metric
    assert remote.details == json.loads(json.dumps(local.details, default=str))


@pytest.mark.parametrize("metric", ["blocks-geneval", "blocks-layout", "blocks-detail"])
def test_world_metrics_through_the_service_equal_in_process(served, metric):
    from test_serve import TOKEN, rollout_images

    from paintbench.metrics.remote import RemoteProvider
    from paintbench.trainer.rewards import _get_provider

    url, _ = served
    images, records = rollout_images(8, world="blocks")
    prompts = [r["prompt"] for r in records]
    local = _get_provider(metric).score(images, prompts, records)
    remote = RemoteProvider(url, metric, token=TOKEN).score(images, prompts, records)
    assert torch.equal(remote.values, local.values.float().cpu())


def test_score_command_through_the_server_equals_in_process(served, tmp_path):
    """`paintbench score --server URL` writes the scores an in-process `score` writes, and says where they
    came from."""
    import subprocess
    import sys

    from test_serve import TOKEN

    url, weights = served
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(4):
        Image.new("RGB", (48 + 8 * i, 64), (60 * i, 100, 180)).save(imgs / f"{i}.png")
    (tmp_path / "p.txt").write_text("a cat\na dog\na car\na tree\n")
    (tmp_path / "token").write_text(TOKEN)
    base = [sys.executable, "-m", "paintbench", "score", "--metric", "aesthetic", "--metric", "imagereward",
            "--images", str(imgs), "--prompts", str(tmp_path / "p.txt"), "--no-progress"]
    local = subprocess.run([*base, "--weights-dir", str(weights), "--out", str(tmp_path / "local")],
                           capture_output=True, text=True, timeout=600)
    remote = subprocess.run([*base, "--server", url, "--token-file", str(tmp_path / "token"), "--out",
                             str(tmp_path / "remote")], capture_output=True, text=True, timeout=600)
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr[-2000:]

    def values(run):
        return [(r["id"], r["scores"]) for r in map(json.loads, (run / "scores.jsonl").read_text().splitlines())]

    got = values(tmp_path / "remote")
    assert got == values(tmp_path / "local") and all(len(scores) == 2 for _, scores in got)
    assert url in (tmp_path / "remote" / "summary.json").read_text()
