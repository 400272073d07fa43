"""The shipped recipes for the paper's backbones, `--dry-run` and `train plan`, without any model loaded.

A folder with header-only safetensors files describes the real MMaDA-8B (LLaDA-8B: 32 blocks of 4,096
wide, 12,288-wide MLP, 134,656 embeddings): the plan reads shapes from headers only, so an 8B plan runs
here in milliseconds and its arithmetic is checked against the published sizes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from paintbench.trainer.config import SHIPPED, load_config

RECIPES = ["mmada-geneval", "lumina-dimoo-geneval", "mmada-preference"]
SOURCE = re.compile(r"#\s*\[(paper|MaskGRPO|ours)\]")


def paintbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paintbench", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def header_only_safetensors(path: Path, tensors: dict[str, tuple[list[int], str]]) -> int:
    """A safetensors file whose header describes `tensors` (name -> (shape, dtype)) with no data after it;
    returns the bytes the header declares."""
    size = {"BF16": 2, "F32": 4}
    header, offset = {}, 0
    for name, (shape, dtype) in tensors.items():
        n = size[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return offset


def llada_8b(folder: Path) -> int:
    folder.mkdir(parents=True)
    d, ff, vocab, layers = 4096, 12288, 134656, 32
    t: dict[str, tuple[list[int], str]] = {"model.transformer.wte.weight": ([vocab, d], "BF16"),
                                           "model.transformer.ln_f.weight": ([d], "BF16"),
                                           "model.transformer.ff_out.weight": ([vocab, d], "BF16")}
    for i in range(layers):
        p = f"model.transformer.blocks.{i}."
        t |= {p + n + ".weight": ([d, d], "BF16") for n in ("q_proj", "k_proj", "v_proj", "attn_out")}
        t |= {p + "ff_proj.weight": ([ff, d], "BF16"), p + "up_proj.weight": ([ff, d], "BF16"),
              p + "ff_out.weight": ([d, ff], "BF16"), p + "attn_norm.weight": ([d], "BF16"),
              p + "ff_norm.weight": ([d], "BF16")}
    total = header_only_safetensors(folder / "model.safetensors", t)
    (folder / "config.json").write_text(json.dumps({"d_model": d, "n_layers": layers, "n_heads": 32,
                                                    "mlp_hidden_size": ff, "vocab_size": 126464}))
    return total


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_value_has_its_source_and_loads(name):
    text = (SHIPPED / f"{name}.yaml").read_text()
    values = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    unsourced = [ln for ln in values if not SOURCE.search(ln)]
    assert not unsourced, unsourced
    cfg = load_config(name)
    assert cfg.parallel == "fsdp" and cfg.policy in ("mmada", "lumina-dimoo") and cfg.lora_rank == 0


def test_dry_run_names_every_missing_piece_in_one_line(tmp_path):
    out = paintbench("train", "mmada-geneval", f"policy_path={tmp_path / 'nowhere'}",
                     f"prompts={tmp_path / 'none.jsonl'}", "--weights-dir", str(tmp_path), "--dry-run")
    assert out.returncode == 2, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "Traceback" not in out.stderr
    for what in ("nowhere", "none.jsonl", "geneval", "vq_path"):
        assert what in errors[0], what


@pytest.fixture(scope="module")
def ready(tmp_path_factory):
    """Everything the mmada-geneval recipe needs, as files: the 8B headers, a VQ folder, a tokenizer
    folder, GenEval-format prompts and the reward's weight files under their catalogue names."""
    from paintbench.metrics import registry, weights

    root = tmp_path_factory.mktemp("recipe")
    total = llada_8b(root / "MMaDA-8B-Base")
    (root / "vq").mkdir()
    header_only_safetensors(root / "vq" / "model.safetensors", {"decoder.conv.weight": ([256, 256, 3, 3], "F32")})
    (root / "vq" / "config.json").write_text("{}")
    (root / "tok").mkdir()
    (root / "tok" / "tokenizer_config.json").write_text("{}")
    prompts = root / "prompts.jsonl"
    prompts.write_text(json.dumps({"tag": "single_object", "include": [{"class": "cat", "count": 1}],
                                   "prompt": "a photo of a cat"}) + "\n")
    wdir = root / "weights"
    wdir.mkdir()
    for wname in registry.spec("geneval").weights:
        spec = weights.catalog()[wname]
        target = wdir / spec.filename
        if spec.is_dir:
            target.mkdir(parents=True)
            for f in spec.files:
                (target / f).write_bytes(b"{}")
        else:
            target.write_bytes(b"\0")
    args = [f"policy_path={root / 'MMaDA-8B-Base'}", f"policy_options={{vq_path: {root / 'vq'}, tokenizer_path: {root / 'tok'}}}",
            f"prompts={prompts}", "--weights-dir", str(wdir)]
    return args, total


def test_dry_run_of_a_ready_recipe_passes_and_plans(ready):
    args, _ = ready
    out = paintbench("train", "mmada-geneval", *args, "--dry-run", "--gpus", "8", "--gpu-memory", "80GiB")
    assert out.returncode == 0, out.stderr
    assert "dry run: config, prompts, reward weights and policy folders are ready" in out.stdout
    assert "parallel=fsdp, 8 GPU(s)" in out.stdout and "fits: yes" in out.stdout


def test_the_8b_plan_adds_up_and_says_what_to_change(ready):
    from paintbench.trainer.config import load_config
    from paintbench.trainer.plan import make_plan

    args, total = ready
    overrides = dict(a.split("=", 1) for a in args if "=" in a)
    from paintbench.config import parse_overrides

    cfg = load_config("mmada-geneval", parse_overrides([f"{k}={v}" for k, v in overrides.items()]))
    plan = make_plan(cfg, 8)
    vq = 256 * 256 * 9 * 4
    assert sum(plan.parameters) == total + 8 * vq                   # the model split in 8, the VQ on every rank
    assert 8.0e9 < total / 2 < 8.2e9                                 # ~8.1 B bf16 parameters: LLaDA-8B's size
    assert sum(plan.gradients) == total and sum(plan.optimizer) == 2 * total
    assert sum(plan.reference) == total                              # full fine-tuning keeps a frozen copy
    lora = make_plan(dataclasses.replace(cfg, lora_rank=128), 8)
    # LoRA: fp32 adapters r x (in + out) on q, k, v, o (attn_out), gate (ff_proj), up, down (ff_out, which in
    # LLaDA also names the output head, as peft's suffix match adapts it too); no reference copy
    adapters = 128 * 4 * (32 * (4 * (4096 + 4096) + 3 * (4096 + 12288)) + (134656 + 4096))
    assert sum(lora.gradients) == adapters and sum(lora.optimizer) == 2 * adapters and sum(lora.reference) == 0
    # one 40 GiB GPU, no sharding: ~10 B/param of bf16 training state does not fit; the advice says what would
    out = paintbench("train", "plan", "mmada-geneval", *args, "parallel=none", "--gpus", "1", "--gpu-memory", "40GiB")
    assert out.returncode == 3, out.stderr
    assert "fits: NO" in out.stdout and "lora_rank=128" in out.stdout and "more GPUs with parallel=fsdp" in out.stdout
    out8 = paintbench("train", "plan", "mmada-geneval", *args, "--gpus", "8", "--gpu-memory", "80GiB")
    assert out8.returncode == 0 and "fits: yes" in out8.stdout, out8.stdout + out8.stderr
    assert "activations (estimate)" in out8.stdout
