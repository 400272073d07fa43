"""Data parallelism: `torchrun --nproc-per-node 2` on gloo trains like one process with the same global
batch (groups span ranks; rewards are gathered before advantages; gradients are summed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from paintbench.trainer.logs import read_metrics

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_trainer_ddp import config
    from paintbench.trainer.loop import train
    train(config(), sys.argv[1])
""")


def config():
    from paintbench.config import load_yaml
    from paintbench.trainer.config import load_config, resolve_config_path

    # 3 prompts x 4 images = 12 rollouts: rank 0 holds prompt 0, 1 and a third of 2; prompt 2's group spans
    # both ranks. micro_batch_size 4 also exercises gradient accumulation across micro-batches.
    return load_config({**load_yaml(resolve_config_path("shapes-tiny")), **{
        "steps": 2, "warmstart_steps": 3, "warmstart_batch": 8, "prompts_per_step": 3, "group_size": 4,
        "rollout_steps": 4, "inner_iters": 3, "n_global": 1, "n_struct": 1, "save_every": 0, "sample_every": 0,
        "tensorboard": False, "prompts_per_tag": 20, "lr": 1e-3, "micro_batch_size": 4, "eval_every": 0,
        "policy_options": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "max_text_len": 12}}})


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT.format(tests=str(REPO / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(tmp_path / "ddp")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    from paintbench.trainer import policies
    from paintbench.trainer.loop import train

    torch.set_num_threads(1)
    train(config(), tmp_path / "single")
    single = policies.load(tmp_path / "single")
    ddp = policies.load(tmp_path / "ddp")
    for (name, a), b in zip(single.state_dict().items(), ddp.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=2e-5, rtol=0), name
    rows_single, rows_ddp = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    for key in ("reward/mean", "reward/zero_std_frac", "structure_frac", "stage/struct/tokens"):
        assert [r[key] for r in rows_single] == [r[key] for r in rows_ddp], key
    for key in ("kl", "loss", "clip_frac"):
        assert [r[key] for r in rows_single] == pytest.approx([r[key] for r in rows_ddp], abs=1e-6), key
