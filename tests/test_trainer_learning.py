"""The learning test: on the shapes world, HT-GRPO with the GenEval-rule reward raises the tiny policy's
mean reward clearly above its starting policy.

The starting policy is the documented supervised warm start (`trainer.warmstart`, a short MaskGIT-style
pre-training on oracle layouts); it is also the reference policy. The reward is measured before and after
the RL phase on the same held-out prompts (the held-out side of the shapes prompts' split: combinations
the training side never has, checked below) and the same sampling seeds, so the rise is the RL phase's
doing and is measured on prompts it never trained on.
"""

from __future__ import annotations

import pytest
import torch

from paintbench.config import load_yaml
from paintbench.harness.shapes.prompts import make_prompts
from paintbench.trainer.config import load_config, resolve_config_path
from paintbench.trainer.generate import generate_images
from paintbench.trainer.loop import Trainer
from paintbench.trainer.rewards import RewardModel

EVAL = make_prompts(0, 16, split="heldout")     # training uses prompt_split "train" (the default)


def mean_reward(policy, cfg, model):
    prompts = [r["prompt"] for r in EVAL] * 2
    images = generate_images(policy, prompts, list(range(len(prompts))), **cfg.sampler_options())
    res = model(images, prompts, EVAL * 2)
    return float(res.components["shapes-geneval"].mean()), float(res.extras["shapes-geneval/correct"].mean())


@pytest.mark.slow
def test_htgrpo_raises_the_geneval_reward_of_the_tiny_policy(tmp_path):
    torch.set_num_threads(1)
    cfg = load_config({**load_yaml(resolve_config_path("shapes-tiny")), **{
        "steps": 40, "warmstart_steps": 200, "lr": 1e-3, "save_every": 0, "sample_every": 0,
        "tensorboard": False}})
    trainer = Trainer(cfg, tmp_path)
    assert cfg.prompt_split == "train"
    assert not {r["prompt"] for r in EVAL} & {r["prompt"] for r in trainer.records}   # held out, by text too
    trainer.setup()
    model = RewardModel({"shapes-geneval": 1.0}, options={"shapes-geneval": {"mode": "reward"}})
    start, start_acc = mean_reward(trainer.policy, cfg, model)
    for step in range(1, cfg.steps + 1):
        trainer.step = step
        trainer.round(step)
    end, end_acc = mean_reward(trainer.policy, cfg, model)
    print(f"shapes-geneval reward {start:.3f} -> {end:.3f}; GenEval accuracy {start_acc:.3f} -> {end_acc:.3f}")
    assert end > start + 0.1, (start, end)
    assert end_acc > start_acc, (start_acc, end_acc)
