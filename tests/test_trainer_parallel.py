"""Placements over torch's engine (trainer.parallel), for real: `torchrun --nproc-per-node 2` on gloo.

- `parallel: ddp` (FSDP2, replicated) and `parallel: fsdp` (FSDP2, sharded per block) give the hand-written
  all-reduce's results bit for bit, and one process's within 1e-6 (weights and losses, fp32);
- `reward_ranks: [1]` (rank 1 scores every rank's images) gives `per_rank`'s rewards and advantages exactly;
- a sharded checkpoint resumed in a fresh process group continues bit-identically; resumed on another
  world size it works and says so;
- the per-rank bytes the memory plan predicts are the bytes FSDP2 holds.

One module-scoped set of runs serves several assertions (each 2-process run costs ~10 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from paintbench.trainer import policies
from paintbench.trainer.logs import read_metrics

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_trainer_ddp import config
    from paintbench.trainer.loop import train
    out, resume, over = sys.argv[1], sys.argv[2] == "resume", json.loads(sys.argv[3])
    train(dataclasses.replace(config(), **over), out, resume=resume)
""")


def run(tmp: Path, name: str, nproc: int, resume: bool = False, **over) -> subprocess.CompletedProcess:
    script = tmp / "train_parallel.py"
    script.write_text(SCRIPT.format(tests=str(REPO / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [str(script), str(tmp / name), "resume" if resume else "fresh", json.dumps(over)]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
           if nproc > 1 else [sys.executable, *args])
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return dict(policies.load(folder).state_dict())


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def stable(rows: list[dict]) -> list[dict]:
    """Metric rows without their timings (the only values a resumed run may change)."""
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel")
    run(tmp, "single", 1)
    for placement in ("none", "ddp", "fsdp"):
        run(tmp, placement, 2, parallel=placement)
    run(tmp, "fsdp-reward-rank", 2, parallel="fsdp", reward_ranks=[1])
    run(tmp, "fsdp-offload", 2, parallel="fsdp", reference_offload=True)
    run(tmp, "fsdp-bf16", 2, parallel="fsdp", fsdp_param_dtype="bfloat16")
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["ddp", "fsdp"])
def test_torch_engines_equal_the_hand_written_all_reduce_and_one_process(runs, placement):
    hand, got, single = weights(runs / "none"), weights(runs / placement), weights(runs / "single")
    assert max_diff(hand, got) == 0.0                       # the same sums, in the same order
    assert max_diff(single, got) <= 1e-6
    rows_single, rows_got = read_metrics(runs / "single"), read_metrics(runs / placement)
    assert [r["reward/mean"] for r in rows_single] == [r["reward/mean"] for r in rows_got]
    assert [r["loss"] for r in rows_single] == pytest.approx([r["loss"] for r in rows_got], abs=1e-6)
    config = (runs / placement / "config.yaml").read_text()
    assert f"parallel: {placement}" in config


@pytest.mark.slow
def test_fsdp_checkpoint_is_sharded_and_its_policy_folder_is_whole(runs):
    step = runs / "fsdp" / "checkpoints" / "step_000002"
    assert (step / "sharded" / ".metadata").is_file()
    assert len(list((step / "sharded").glob("*.distcp"))) == 2          # one file per rank
    state = torch.load(step / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["parallel"] == "fsdp" and "optimizer" not in state
    whole = weights(step / "policy")
    assert max_diff(whole, weights(runs / "single")) <= 1e-6        # gathered: every parameter, full shape


@pytest.mark.slow
def test_reference_offload_and_mixed_precision(runs):
    """`reference_offload`: the frozen reference's shards on the CPU (FSDP2's CPUOffloadPolicy) change nothing;
    `fsdp_param_dtype: bfloat16` computes in bf16 and keeps fp32 sharded weights (FSDP2's MixedPrecisionPolicy):
    close to fp32, not equal (it is another precision), and the reward of round 1 — before any update,
    sampled in bf16 — may differ only through sampling in bf16."""
    fp32, offload, bf16 = weights(runs / "fsdp"), weights(runs / "fsdp-offload"), weights(runs / "fsdp-bf16")
    assert max_diff(fp32, offload) == 0.0
    assert all(v.dtype == torch.float32 for v in bf16.values())
    assert 0.0 < max_diff(fp32, bf16) < 5e-2
    kl = [r["kl"] for r in read_metrics(runs / "fsdp-bf16")]
    assert all(k == k and k < 1.0 for k in kl)                     # finite, and the loss stayed sane


@pytest.mark.slow
def test_reward_ranks_give_per_rank_rewards_and_advantages(runs):
    per_rank, placed = read_metrics(runs / "fsdp"), read_metrics(runs / "fsdp-reward-rank")
    for key in ("reward/mean", "reward/std", "reward/shapes-geneval/correct", "adv/abs_mean", "loss", "kl"):
        assert [r[key] for r in per_rank] == [r[key] for r in placed], key
    assert max_diff(weights(runs / "fsdp"), weights(runs / "fsdp-reward-rank")) == 0.0


@pytest.mark.slow
def test_sharded_resume_is_bit_identical_and_another_world_size_says_so(runs, tmp_path):
    # a 2-rank FSDP run SIGKILLed (the whole process group) once its first sharded checkpoint exists, then
    # resumed by a fresh process group, against the same run uninterrupted
    import shutil
    import signal
    import time

    run(runs, "fsdp-long", 2, parallel="fsdp", steps=8, save_every=2)
    script = runs / "train_parallel.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    victim = tmp_path / "resumed"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(script), str(victim), "fresh", json.dumps({"parallel": "fsdp", "steps": 8, "save_every": 2})],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (victim / "checkpoints" / "latest").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (victim / "checkpoints" / "step_000008").exists(), "the run finished before it could be killed"
    resumed = run(tmp_path, "resumed", 2, resume=True, parallel="fsdp", steps=8, save_every=2)
    assert "written by" not in resumed.stderr
    a, b = weights(runs / "fsdp-long"), weights(victim)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert stable(read_metrics(runs / "fsdp-long")) == stable(read_metrics(tmp_path / "resumed"))
    # ... and by one process: DCP re-splits the shards; the run continues and says it changed world size
    shutil.copytree(runs / "fsdp", tmp_path / "one", dirs_exist_ok=True)    # round 2's sharded checkpoint
    one = run(tmp_path, "one", 1, resume=True, steps=8, save_every=2)
    assert "written by 2 process(es), on 1" in one.stderr
    assert max_diff(a, weights(tmp_path / "one")) <= 1e-5


MEASURE = textwrap.dedent("""
    import dataclasses, json, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_trainer_ddp import config
    from paintbench.trainer import parallel
    from paintbench.trainer.loop import Trainer
    cfg = dataclasses.replace(config(), **json.loads(sys.argv[2]))
    trainer = Trainer(cfg, sys.argv[1])
    trainer.setup()
    trainer.step = 1
    trainer.round(1)        # the optimizer state exists after a step
    held = parallel.local_bytes(trainer.policy, trainer.optimizer)
    held["reference"] = parallel.local_bytes(trainer.reference)["parameters"]
    with open(f"{{sys.argv[1]}}/held_{{trainer.dist.rank}}.json", "w") as f:
        json.dump(held, f)
    trainer.dist.barrier()
    trainer.dist.close()
""")


@pytest.mark.slow
def test_the_plans_per_rank_bytes_are_what_fsdp_holds(tmp_path):
    """`paintbench train plan`'s parameters, gradients, optimizer and reference rows equal the bytes each
    rank's shards hold after an FSDP2 step (a 3-rank split, so the row chunks are uneven)."""
    import dataclasses

    from test_trainer_ddp import config

    from paintbench.trainer.plan import make_plan

    over = {"parallel": "fsdp", "prompts_per_step": 3, "group_size": 2, "steps": 1}
    script = tmp_path / "measure.py"
    script.write_text(MEASURE.format(tests=str(REPO / "tests")))
    (tmp_path / "run").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
                          str(script), str(tmp_path / "run"), json.dumps(over)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    plan = make_plan(dataclasses.replace(config(), **over), 3)
    for rank in range(3):
        held = json.loads((tmp_path / "run" / f"held_{rank}.json").read_text())
        assert held == {"parameters": plan.parameters[rank], "gradients": plan.gradients[rank],
                        "optimizer": plan.optimizer[rank], "reference": plan.reference[rank]}, rank
    assert len(set(plan.parameters)) > 1          # uneven shards: the chunk rule itself is checked


@pytest.mark.slow
def test_export_writes_the_trained_policy_that_loads_back_identically(runs, tmp_path):
    """`paintbench train export RUN --out DIR` on the FSDP run: the folder `policies.load` reads gives the
    same logits as the run's latest checkpoint; a used --out is refused in one line."""
    out = subprocess.run([sys.executable, "-m", "paintbench", "train", "export", str(runs / "fsdp"), "--out",
                          str(tmp_path / "export")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "exported" in out.stdout
    exported, trained = policies.load(tmp_path / "export"), policies.load(runs / "fsdp")
    batch = trained.encode_prompts(["a photo of a red circle", "two blue squares"])
    canvas = torch.full((2, trained.num_image_tokens), -1)
    with torch.no_grad():
        assert torch.equal(exported.image_logits(batch, canvas), trained.image_logits(batch, canvas))
    again = subprocess.run([sys.executable, "-m", "paintbench", "train", "export", str(runs / "fsdp"), "--out",
                            str(tmp_path / "export")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1 and "not an empty folder" in again.stderr
