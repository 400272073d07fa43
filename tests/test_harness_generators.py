"""Generators: a tiny randomly initialised diffusers pipeline, and user python functions."""

from __future__ import annotations

import json

import pytest
import torch

from paintbench.harness.evaluate import EvalConfig, run_eval
from paintbench.harness.rundir import read_jsonl

pytestmark = pytest.mark.hf


def _tiny_pipeline(path):
    diffusers = pytest.importorskip("diffusers")
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = diffusers.AutoencoderKL(block_out_channels=(8,), in_channels=3, out_channels=3, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                                  norm_num_groups=4, sample_size=32)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                        num_hidden_layers=1, vocab_size=1000, max_position_embeddings=77))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    vocab.update({f"{c}</w>": i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")})
    (path / "tok").mkdir(parents=True)
    (path / "tok" / "vocab.json").write_text(json.dumps(vocab))
    (path / "tok" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(path / "tok" / "vocab.json"), str(path / "tok" / "merges.txt"), model_max_length=77)
    pipe = diffusers.StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
        scheduler=diffusers.DDIMScheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(path / "pipe")
    return path / "pipe"


@pytest.mark.slow
def test_diffusers_tiny_pipeline_run(tmp_path):
    pipe = _tiny_pipeline(tmp_path)
    suite = tmp_path / "tiny.yaml"
    (tmp_path / "p.jsonl").write_text('{"id": "p0", "prompt": "a cat"}\n{"id": "p1", "prompt": "a dog"}\n')
    suite.write_text(f"name: tiny\nversion: 1\nprompts: {{format: jsonl, path: {tmp_path / 'p.jsonl'}}}\n"
                     "images_per_prompt: 2\nimage_size: 32\nmetrics: [shapes-geneval]\n")
    cfg = EvalConfig(suite=str(suite), generator=f"diffusers:{pipe}", out=str(tmp_path / "r"), progress=False,
                     generator_options={"steps": 2, "guidance": 3.0, "negative_prompt": "blurry"}, n_resamples=100)
    res = run_eval(cfg)
    samples = read_jsonl(tmp_path / "r" / "samples.jsonl")[0]
    assert len(samples) == 4 and all(s["width"] == s["height"] == 32 for s in samples)
    gen = samples[0]["generation"]
    assert gen["steps"] == 2 and gen["guidance"] == 3.0 and gen["negative_prompt"] == "blurry"
    assert gen["pipeline"] == "StableDiffusionPipeline" and gen["dtype"] == "float32"
    # the shapes metric needs GenEval metadata these prompts lack: every sample fails, none is dropped
    assert res["metrics"]["shapes-geneval"]["n_failed"] == 4
    # per-image seeds: the same prompt's two samples differ, and a rerun reproduces them exactly
    assert samples[0]["sha256"] != samples[1]["sha256"]
    run_eval(EvalConfig(**{**cfg.__dict__, "out": str(tmp_path / "r2")}))
    again = read_jsonl(tmp_path / "r2" / "samples.jsonl")[0]
    assert [s["sha256"] for s in again] == [s["sha256"] for s in samples]


def test_python_generator_gets_prompts_seeds_and_metadata(tmp_path):
    res = run_eval(EvalConfig(suite="shapes", generator="python:tests.support.slow:slow_oracle", limit=3,
                              out=str(tmp_path / "r"), progress=False, n_resamples=100))
    assert res["metrics"]["shapes-geneval"]["value"] == 1.0
    assert res["generator"]["generator"] == "python"


@pytest.mark.slow
def test_policy_generator_benchmarks_a_training_checkpoint(tmp_path):
    """`paintbench train` then `paintbench eval shapes --generator policy:RUN` (the README's pair)."""
    import subprocess
    import sys

    train = subprocess.run([sys.executable, "-m", "paintbench", "train", "shapes-tiny", "steps=2", "warmstart_steps=30",
                            "prompts_per_step=2", "group_size=4", "--out", str(tmp_path / "train")],
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    res = run_eval(EvalConfig(suite="shapes", generator=f"policy:{tmp_path / 'train'}", limit=4,
                              out=str(tmp_path / "r"), progress=False, n_resamples=100,
                              generator_options={"steps": 4}))
    m = res["metrics"]["shapes-geneval"]
    assert m["n_samples"] == 16 and m["n_failed"] == 0
    assert res["generator"]["generator"] == "policy" and res["generator"]["policy"]
    samples = read_jsonl(tmp_path / "r" / "samples.jsonl")[0]
    assert all(s["width"] == s["height"] == 128 for s in samples)
