"""`EvalConfig`: the settings of `paintbench eval`, one schema for flags and YAML (no torch import, so
the CLI can build its parser without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EvalConfig:
    """Settings of `paintbench eval` (also readable from a YAML file with `--config`)."""

    suite: str = field(default="", metadata={"help": "suite name or YAML path", "cli": False})
    name: str | None = field(default=None, metadata={"help": "display name of the model/run in reports (default: the run directory's name)"})
    generator: str = field(default="", metadata={"help": "KIND[:ARG]: folder:DIR, diffusers:PATH, python:mod:fn, policy:CKPT, shapes-oracle, shapes-random, blocks-oracle"})
    out: str = field(default="", metadata={"help": "run directory (created, or resumed when it exists)"})
    generator_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "generator options (--gen-opt key=value)", "cli": False})
    metrics: list[str] | None = field(default=None, metadata={"help": "metrics to score instead of the suite's (repeatable --metrics)"})
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "per-metric provider options", "cli": False})
    seed: int = field(default=0, metadata={"help": "run seed; image seeds derive from (seed, prompt id, sample index)"})
    limit: int | None = field(default=None, metadata={"help": "only N prompts, spread over the categories (seeded by --seed; quick checks; marked partial)"})
    images_per_prompt: int | None = field(default=None, metadata={"help": "override the suite's images per prompt"})
    device: str | None = field(default=None, metadata={"help": "cuda, cuda:N or cpu (default: cuda if available; cuda:LOCAL_RANK under torchrun)"})
    dtype: str = field(default="float32", metadata={"help": "metric dtype: float32 (parity), bfloat16, float16"})
    batch_size: int = field(default=32, metadata={"help": "scoring batch size"})
    weights_dir: str | None = field(default=None, metadata={"help": "weights directory for the metrics"})
    score_server: str | None = field(default=None, metadata={"help": "URL of a `paintbench serve`: score there, not in this process (recorded in the provenance)"})
    score_token_file: str | None = field(default=None, metadata={"help": "file holding the score server's token (when it is not on loopback)"})
    include_path: list[str] | None = field(default=None, metadata={"help": "extra folders of suite YAML files (repeatable)"})
    n_resamples: int = field(default=10_000, metadata={"help": "bootstrap resamples for CIs"})
    confidence: float = field(default=0.95, metadata={"help": "confidence level of the CIs"})
    progress: bool = field(default=True, metadata={"help": "progress bars (rank 0)"})
