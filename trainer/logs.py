"""Training logs: `DIR/metrics.jsonl` (one line per logged round), TensorBoard when installed, and sample
images with their rewards.

metrics.jsonl is the input of the leaderboards' training report. Every line has `step` (the round,
1-based) and `reward/mean`, plus, under stable names:
`reward/<name>/mean|std` per component, `reward/std`, `reward/zero_std_frac`, `adv/abs_mean`,
`loss`, `kl`, `clip_frac`, `ratio`, `entropy` (mean commit entropy of the rollouts), `structure_frac`,
`stage/<global|struct|refine>/{tokens,clip_frac,kl,adv_abs}` (per-stage statistics), `lr`, `grad_norm`,
`time/rollout_s`, `time/reward_s`, `time/update_s`, `time/step_s`, `throughput/images_per_s`,
`throughput/sequences_per_s` (model sequences pushed through the estimator per second), and `eval/...`
when the periodic evaluation ran that round.

Samples: `DIR/samples/step_<n>/<i>.png` and `DIR/samples/step_<n>/rewards.jsonl` (one line per image:
file, prompt, reward and each component).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from paintbench.files import open_append, write_atomic


def _clean(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    """Writes on the main process only; other ranks get a logger that does nothing."""

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.dir = Path(out_dir)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.dir / "tensorboard"))
            except Exception:  # tensorboard not installed: JSONL only
                self.writer = None

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint's step (they will be logged again)."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    keep.append(line)
            except (json.JSONDecodeError, ValueError, TypeError):
                continue
        write_atomic(self.path, "".join(x + "\n" for x in keep).encode("utf-8"))

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _clean(v) for k, v in values.items()}}
        fd = open_append(self.path)   # never through a link planted in the run folder
        try:
            os.write(fd, (json.dumps(row, sort_keys=False) + "\n").encode("utf-8"))
        finally:
            os.close(fd)
        if self.writer is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(k, v, step)
            self.writer.flush()

    def samples(self, step: int, images: torch.Tensor, prompts: Sequence[str], rewards: torch.Tensor,
                components: Mapping[str, torch.Tensor]) -> Path | None:
        """Save uint8 images [n, 3, H, W] as PNGs with a rewards.jsonl beside them."""
        if not self.enabled:
            return None
        from PIL import Image

        folder = self.dir / "samples" / f"step_{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "rewards.jsonl").open("w", encoding="utf-8") as f:
            for i, img in enumerate(images.detach().cpu()):
                name = f"{i:03d}.png"
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / name)
                row = {"file": name, "prompt": prompts[i], "reward": float(rewards[i]),
                       **{f"reward/{k}": float(v[i]) for k, v in components.items()}}
                f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            self.writer.add_images("samples", images[: min(len(images), 16)], step, dataformats="NCHW")
        return folder

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (for reports and tests)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
