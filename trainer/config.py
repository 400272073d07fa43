"""`HTGRPOConfig`: every setting of a training run, in one documented dataclass.

The same dataclass is the YAML schema (`trainer/configs/*.yaml`), the `key=value` overrides of
`paintbench train`, and what the run directory records (`DIR/config.yaml`), through
`paintbench.config` (`build`, `load_yaml`, `parse_overrides`, `to_dict`).

Every ambiguous choice of the paper is a switch here with htgrpo.md's default, and the baselines are
*presets* of the same trainer (`preset`), applied above the YAML file and below the overrides:

A preset is a bundle of registered strategies (`trainer.strategies`: estimator context, credit map,
stage schedule) plus the keys they need:

- `htgrpo` (default): Sketch-Then-Paint stages, P1 partition, hierarchical credit, full-mask estimator.
- `d1grpo` (alias `grpo`, its earlier name): uniform-credit GRPO with d1's one-step mean-field estimator
  on image tokens (the prompt intact, where d1 masks 15 % of it): every iteration global, all tokens
  in every loss (rho_min = 1), weights all 1.
- `unigrpo`: UniGRPO (MMaDA): a random mask ratio per rollout, the rest of the image visible, one
  importance ratio per rollout from its mean masked-token log-prob (`ratio_level=sequence`).
- `maskgrpo` / `maskgrpo-emerge`: MaskGRPO's per-rollout re-masking at its rising rate (the re-masked
  set is both the loss set and the only masked input); `-emerge` also rolls out with its sampler.
- `tracegrpo`: TraceGRPO (TraceRL on images): each token's log-prob from the canvas of tokens committed
  before its own commit step (`context=trace`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from paintbench.errors import UserError

SHIPPED = Path(__file__).parent / "configs"


def _f(default: Any, help_text: str) -> Any:
    """A field with an immutable default and its help text (mutable defaults use `field` directly)."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class HTGRPOConfig:
    # -- run ---------------------------------------------------------------------------------------
    preset: str = _f("htgrpo", "method preset, a bundle of strategies (see PRESETS): htgrpo | d1grpo (alias grpo) | "
                               "unigrpo | maskgrpo | maskgrpo-emerge | tracegrpo")
    seed: int = _f(0, "run seed: rollouts, subsets, warm start and prompt order all derive from it")
    steps: int = _f(60, "training rounds (each = rollouts + rewards + K inner optimizer steps)")
    device: str = _f("cpu", "torch device (cuda picks cuda:LOCAL_RANK under torchrun)")
    dtype: str = _f("float32", "policy dtype: float32 | bfloat16 (real backbones: bfloat16)")

    # -- policy ------------------------------------------------------------------------------------
    policy: str = _f("tiny", "policy kind: tiny | mmada | lumina-dimoo")
    policy_path: str = _f("", "initial weights: a saved policy folder / checkpoint (any kind), or the "
                             "model folder of mmada / lumina-dimoo")
    policy_options: dict = field(default_factory=dict, metadata={"cli": False, "help": (
        "extra constructor options of the policy (tiny: d_model, n_layers, ...; mmada/dimoo: vq_path, "
        "tokenizer_path, layout, ...)")})
    lora_rank: int = _f(0, "LoRA rank for mmada/dimoo (0 = full fine-tuning); MaskGRPO uses 128")
    lora_alpha: float = _f(64.0, "LoRA alpha")
    lora_dropout: float = _f(0.05, "LoRA dropout")
    lora_targets: list = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "LoRA target module names (MaskGRPO: q,k,v,o,gate,up,down)"})
    gradient_checkpointing: bool = _f(False, "gradient checkpointing in the training forward (real backbones)")

    # -- parallelism and placement (trainer.parallel; torchrun starts the processes) ---------------------
    parallel: str = _f("auto", "auto (none in one process, ddp in several) | none (hand-written gradient all-reduce) | "
                               "ddp (torch FSDP2, replicated) | fsdp (FSDP2 sharded per transformer block)")
    fsdp_param_dtype: str = _f("", "FSDP2 mixed precision: dtype parameters are cast to for compute "
                                   "('' = the policy's dtype; bfloat16 on GPUs)")
    fsdp_reduce_dtype: str = _f("float32", "FSDP2 mixed precision: dtype of the gradient reduction")
    fsdp_reshard_after_forward: bool = _f(True, "free each block's gathered parameters after its forward (ZeRO-3); "
                                                "false keeps them until backward (ZeRO-2, more memory, less traffic)")
    reference_offload: bool = _f(False, "fsdp, full fine-tuning: keep the frozen reference copy's shards on the CPU")
    reward_ranks: list = field(default_factory=list, metadata={"help": (
        "ranks that hold the reward models and score every rank's images ([] = every rank scores its own)")})

    world: str = _f("shapes", "synthetic world of the tiny policy: shapes | blocks (layout decided first) | "
                              "blocks-control (details first); sets its decoder, warm-start oracle and premise logs")

    # -- supervised warm start (tiny policy only) ----------------------------------------------------
    warmstart_steps: int = _f(0, "masked-token steps on oracle layouts before RL (0 = none); the result "
                                 "is the reference policy and the 'starting policy' of the run")
    warmstart_batch: int = _f(64, "warm-start batch size")
    warmstart_lr: float = _f(2e-3, "warm-start learning rate (AdamW)")
    warmstart_drop_prompt: float = _f(0.1, "warm-start probability of the empty prompt (trains CFG's branch)")

    # -- data ----------------------------------------------------------------------------------------
    prompts: str = _f("shapes", "training prompts: 'shapes' (the shapes world's generator) or a JSONL "
                                "file of GenEval-format records / {'prompt': ...} lines, or a .txt file")
    prompt_seed: int = _f(1, "seed of the shapes prompt generator (the shapes eval suite uses 0)")
    prompt_split: str = _f("train", "which side of the shapes prompts' split to train on: train (= fit + "
                                    "validation) | fit (train without the validation prompts, for tuning) | "
                                    "validation | heldout | all (evaluation suites *-heldout use the held-out side)")
    prompts_per_tag: int = _f(200, "shapes prompts per GenEval tag (smaller tags are used whole)")
    prompts_per_step: int = _f(8, "B: prompts per round (global, across all processes)")
    group_size: int = _f(8, "G: images per prompt (MaskGRPO: 9)")

    # -- rollout -------------------------------------------------------------------------------------
    rollout_steps: int = _f(8, "T: unmasking steps per rollout (MaskGRPO: 12 for MMaDA)")
    cfg_scale: float = _f(1.0, "rollout classifier-free guidance scale s: (1+s)·cond − s·uncond")
    temperature: float = _f(1.0, "rollout temperature (confidence noise; DiMOO mode: also the draw)")
    temperature_mode: str = _f("compound", "compound (MMaDA: τ·(1−(n+1)/T) compounding) | constant (DiMOO)")
    sampler: str = _f("maskgit", "maskgit | emerge (MaskGRPO's low-discrepancy sampler)")
    rollout_batch_size: int = _f(0, "rollouts per forward batch (0 = a rank's whole share at once)")

    # -- rewards ---------------------------------------------------------------------------------------
    reward: list = field(default_factory=lambda: ["shapes-geneval=1.0"],
                         metadata={"help": "rewards as NAME=WEIGHT; any registered metric provider"})
    reward_options: dict = field(default_factory=lambda: {"shapes-geneval": {"mode": "reward"}}, metadata={
        "cli": False, "help": "constructor options per reward provider (device is added)"})
    reward_aggregation: str = _f("sum_then_normalize", "sum_then_normalize | normalize_then_sum (GDPO)")
    weights_dir: str | None = _f(None, "weights directory of the reward metrics (default: $PAINTBENCH_WEIGHTS)")
    reward_async: bool = _f(False, "score each rollout batch in a worker thread while the next is sampled")
    reward_backend: str = _f("local", "local (providers in this process) | remote (a `paintbench serve` at reward_url)")
    reward_url: str = _f("", "remote backend: the service's URL, e.g. http://127.0.0.1:8470")
    reward_timeout_s: float = _f(300.0, "remote backend: seconds to wait for one scoring request")
    reward_retries: int = _f(3, "remote backend: retries (same request id, exponential backoff) before stopping")
    reward_token_file: str = _f("", "remote backend: file holding the service's token (when not on loopback)")

    # -- advantages --------------------------------------------------------------------------------------
    adv_scale: str = _f("group", "group (MaskGRPO std) | batch (Flow-GRPO global std) | none (d1)")
    adv_leave_one_out: bool = _f(False, "leave-one-out baseline (DiffuCoder)")
    adv_eps: float = _f(1e-5, "epsilon added to the std")

    # -- partition and credit ------------------------------------------------------------------------
    partition: str = _f("commit", "structure tokens: commit (P1) | entropy (P2) | boundary (P3)")
    rho_s: float = _f(0.3, "structure fraction for P1/P2")
    eta: float = _f(0.5, "P3 threshold: boundary at the first step whose mean entropy < eta·Ĥ(0)")
    lambda_s: float = _f(1.0, "extra credit weight of structure tokens (0 with lambda_h 0 = uniform)")
    lambda_h: float = _f(0.0, "entropy-graded credit weight")
    credit_form: str = _f("indicator", "indicator | graded_step (1 + λ_s·(1 − s/(T−1))^power)")
    credit_power: float = _f(1.0, "exponent of the graded_step form")
    credit_negative: str = _f("weighted", "weighted (same weights for A<0) | uniform (weight 1 when A<0)")
    credit: str = _f("hierarchical", "credit map (trainer.strategies.CREDITS): hierarchical | uniform (all weights 1)")

    # -- inner loop: Sketch-Then-Paint schedule, estimator, loss ---------------------------------------
    inner_iters: int = _f(6, "K: optimizer steps per round (μ)")
    n_global: int = _f(2, "inner iterations of the global stage (all tokens)")
    n_struct: int = _f(2, "inner iterations of the structure stage; the rest are refinement")
    stage_schedule: str = _f("every_round", "stage schedule (trainer.strategies.SCHEDULES): every_round | progressive "
                                            "(structure only until stage_switch_round, then refinement only)")
    stage_switch_round: int = _f(0, "progressive schedule: last round of the structure phase (0 = half of steps)")
    subset: str = _f("random", "token subsets: random (ρ~U[rho_min,1]) | maskgrpo (MaskGRPO's rising rate)")
    rho_min: float = _f(0.5, "lower bound of the per-rollout subset fraction (1 = every candidate)")
    remask_min_rate: float = _f(0.6, "m0 of MaskGRPO's re-masking rate min(m0 + (1−m0)k/K, 0.999)")
    context: str = _f("full_mask", "estimator context (trainer.strategies.CONTEXTS): full_mask | reveal_unsampled | "
                                   "sketch_visible | trace (TraceGRPO)")
    trace_shrink: int = _f(1, "trace context: consecutive commit steps merged into one view (dLLM-RL's shrink)")
    ratio_level: str = _f("token", "importance ratio per token | per sequence (UniGRPO: mean selected log-prob)")
    estimator_cfg: float = _f(0.0, "CFG scale inside the estimator (0: none, as MaskGRPO's default)")
    clip_eps: float = _f(0.2, "PPO clip ε")
    beta: float = _f(0.01, "k3 KL weight to the reference policy (0 skips the reference)")
    loss_norm: str = _f("token", "token (mean over selected tokens) | sequence (per rollout, then mean)")
    micro_batch_size: int = _f(0, "rollouts per backward pass (gradient accumulation; 0 = all at once)")

    # -- optimizer -----------------------------------------------------------------------------------
    lr: float = _f(3e-4, "AdamW learning rate (MaskGRPO on 8B with LoRA: 3e-6)")
    betas: list = field(default_factory=lambda: [0.9, 0.99], metadata={"help": "AdamW betas"})
    weight_decay: float = _f(0.0, "AdamW weight decay (MaskGRPO: 0.1)")
    max_grad_norm: float = _f(1.0, "gradient-norm clip (MaskGRPO: 0.2; 0 = off)")
    warmup_steps: int = _f(0, "linear LR warm-up, in optimizer steps")
    lr_schedule: str = _f("constant_with_warmup", "constant_with_warmup | cosine")

    # -- logging, checkpoints, evaluation ---------------------------------------------------------------
    log_every: int = _f(1, "write metrics.jsonl every N rounds")
    sample_every: int = _f(20, "save sample images with rewards every N rounds (0 = never)")
    num_samples: int = _f(8, "images saved per sample dump")
    save_every: int = _f(20, "checkpoint every N rounds (and at the end; 0 = only at the end)")
    keep_checkpoints: int = _f(2, "checkpoints kept (oldest deleted; 0 = keep all)")
    eval_every: int = _f(0, "evaluate on `eval_suite` before round 1, every N rounds and after the last (0 = never)")
    eval_suite: str = _f("shapes-heldout", "harness suite for periodic evaluation (default: held-out prompts)")
    eval_images_per_prompt: int = _f(0, "images per prompt in periodic evaluation (0 = the suite's own)")
    eval_max_prompts: int = _f(0, "cap on evaluation prompts, chosen as `eval --limit` does (0 = the whole suite)")
    eval_seed: int = _f(0, "the evaluation's seed: the logged number equals `paintbench eval SUITE "
                           "--generator policy:CHECKPOINT --seed eval_seed`")
    tensorboard: bool = _f(True, "also write TensorBoard events when tensorboard is installed")
    guard_every: int = _f(5, "guard metrics (trainer.guard: ratio, out-of-clip share and KL of the update and to "
                             "the reference, each rollout token read on the canvas it was committed from) in round 1 "
                             "and every N rounds (0 = never); costs T/guard_shrink forwards of every rollout, twice")
    guard_shrink: int = _f(1, "guard metrics: consecutive commit steps merged into one sampling-context view")

    def __post_init__(self) -> None:
        _check_choice("preset", self.preset, PRESETS)
        from paintbench.trainer.parallel import PARALLEL

        _check_choice("parallel", self.parallel, PARALLEL)
        for key in ("fsdp_param_dtype", "fsdp_reduce_dtype"):
            if getattr(self, key) not in ("", "float32", "bfloat16", "float16"):
                raise UserError(f"{key} must be '', float32, bfloat16 or float16, got {getattr(self, key)!r}")
        if (not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in self.reward_ranks)
                or len(set(self.reward_ranks)) != len(self.reward_ranks)):
            raise UserError(f"reward_ranks must be distinct ranks (integers >= 0), got {self.reward_ranks!r}")
        _check_choice("policy", self.policy, ("tiny", "mmada", "lumina-dimoo"))
        from paintbench.harness.worlds import WORLDS

        _check_choice("world", self.world, WORLDS)
        _check_choice("prompt_split", self.prompt_split, ("train", "fit", "validation", "heldout", "all"))
        _check_choice("temperature_mode", self.temperature_mode, ("compound", "constant"))
        _check_choice("sampler", self.sampler, ("maskgit", "emerge"))
        _check_choice("reward_aggregation", self.reward_aggregation, ("sum_then_normalize", "normalize_then_sum"))
        _check_choice("reward_backend", self.reward_backend, ("local", "remote"))
        if self.reward_backend == "remote" and not self.reward_url:
            raise UserError("reward_backend=remote needs reward_url (the `paintbench serve` URL)")
        if self.reward_timeout_s <= 0 or self.reward_retries < 0:
            raise UserError(f"reward_timeout_s must be > 0 and reward_retries >= 0, got {self.reward_timeout_s}, "
                            f"{self.reward_retries}")
        _check_choice("adv_scale", self.adv_scale, ("group", "batch", "none"))
        _check_choice("partition", self.partition, ("commit", "entropy", "boundary"))
        _check_choice("credit_form", self.credit_form, ("indicator", "graded_step"))
        _check_choice("credit_negative", self.credit_negative, ("weighted", "uniform"))
        _check_choice("subset", self.subset, ("random", "maskgrpo"))
        from paintbench.trainer.strategies import CONTEXTS, CREDITS, SCHEDULES

        _check_choice("context", self.context, CONTEXTS)
        _check_choice("credit", self.credit, CREDITS)
        _check_choice("stage_schedule", self.stage_schedule, SCHEDULES)
        _check_choice("ratio_level", self.ratio_level, ("token", "sequence"))
        if self.ratio_level == "sequence" and self.loss_norm != "sequence":
            raise UserError("ratio_level=sequence (one ratio per rollout) needs loss_norm=sequence")
        if self.trace_shrink < 1 or self.guard_shrink < 1:
            raise UserError(f"trace_shrink and guard_shrink must be >= 1, got {self.trace_shrink}, {self.guard_shrink}")
        if self.guard_every < 0 or self.warmup_steps < 0:
            raise UserError(f"guard_every and warmup_steps must be >= 0, got {self.guard_every}, {self.warmup_steps}")
        _check_choice("loss_norm", self.loss_norm, ("token", "sequence"))
        _check_choice("lr_schedule", self.lr_schedule, ("constant_with_warmup", "cosine"))
        if self.group_size < 1 or self.prompts_per_step < 1 or self.inner_iters < 1 or self.rollout_steps < 1:
            raise UserError("group_size, prompts_per_step, inner_iters and rollout_steps must be >= 1")
        if self.n_global < 0 or self.n_struct < 0 or self.n_global + self.n_struct > self.inner_iters:
            raise UserError(f"need n_global + n_struct <= inner_iters, got {self.n_global} + {self.n_struct} "
                            f"> {self.inner_iters}")
        if not 0 <= self.rho_s <= 1 or not 0 <= self.rho_min <= 1:
            raise UserError("rho_s and rho_min must lie in [0, 1]")
        if self.adv_leave_one_out and self.group_size < 2:
            raise UserError("adv_leave_one_out needs group_size >= 2")
        for f in dataclasses.fields(self):  # lr=inf trained "successfully" into a NaN model
            value = getattr(self, f.name)
            numbers = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise UserError(f"{f.name} = {value}: not a finite number")
        for f in dataclasses.fields(self):  # steps=-5 ran silently: every count is >= 0 (seeds may be anything)
            value = getattr(self, f.name)
            if (isinstance(value, int) and not isinstance(value, bool) and value < 0
                    and f.name not in ("seed", "prompt_seed")):
                raise UserError(f"{f.name} = {value}: must be >= 0")
        if self.steps < 1:
            raise UserError(f"steps = {self.steps}: must be >= 1")
        for name in ("policy_options", "reward_options"):
            if not isinstance(getattr(self, name), dict):
                raise UserError(f"{name}: must be a mapping (key: value), got {type(getattr(self, name)).__name__}")
        if not all(isinstance(v, dict) for v in self.reward_options.values()):
            raise UserError("reward_options: each reward's options must be a mapping")
        for name in ("lr", "warmstart_lr"):
            if not 0 < getattr(self, name) <= 1:  # lr=1e300 overflowed Adam into a traceback
                raise UserError(f"{name} = {getattr(self, name)}: a learning rate must lie in (0, 1]")
        for name in ("clip_eps", "beta", "max_grad_norm", "weight_decay", "temperature", "adv_eps"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} = {getattr(self, name)}: must be >= 0")

    # -- derived -----------------------------------------------------------------------------------
    def reward_weights(self) -> dict[str, float]:
        """`reward` entries NAME=WEIGHT (WEIGHT defaults to 1) as an ordered dict."""
        out: dict[str, float] = {}
        for item in self.reward:
            name, sep, weight = str(item).partition("=")
            name = name.strip()
            if not name:
                raise UserError(f"reward entry {item!r} has no metric name")
            try:
                out[name] = float(weight) if sep else 1.0
            except ValueError:
                raise UserError(f"reward entry {item!r}: weight {weight!r} is not a number") from None
        if not out:
            raise UserError("at least one reward is needed")
        return out

    def sampler_options(self) -> dict[str, Any]:
        return {"steps": self.rollout_steps, "cfg_scale": self.cfg_scale, "temperature": self.temperature,
                "temperature_mode": self.temperature_mode, "sampler": self.sampler}

    def stages(self, round_: int = 1) -> list[str]:
        """The stage of each inner iteration of round `round_`, by the stage schedule."""
        from paintbench.trainer.strategies import SCHEDULES

        return SCHEDULES[self.stage_schedule](self, round_)


_UNIFORM_GLOBAL = {"n_struct": 0, "credit": "uniform", "lambda_s": 0.0, "lambda_h": 0.0, "stage_schedule": "every_round"}
PRESETS: dict[str, dict[str, Any]] = {
    "htgrpo": {},
    # d1/diffu-GRPO's one-step mean-field estimator on image tokens, prompt intact (d1 masks 15 % of it)
    "d1grpo": {**_UNIFORM_GLOBAL, "subset": "random", "rho_min": 1.0, "context": "full_mask"},
    # UniGRPO (MMaDA paper): per rollout a mask ratio p ~ U[rho_min, 1], the rest of the image visible,
    # one ratio per rollout from its mean masked-token log-prob
    "unigrpo": {**_UNIFORM_GLOBAL, "subset": "random", "rho_min": 0.0, "context": "reveal_unsampled",
                "loss_norm": "sequence", "ratio_level": "sequence"},
    # MaskGRPO's "uni" re-masking at its rising rate (rollouts with the run's sampler) ...
    "maskgrpo": {**_UNIFORM_GLOBAL, "subset": "maskgrpo", "context": "reveal_unsampled"},
    # ... and with MaskGRPO's own emerge sampler for the rollouts
    "maskgrpo-emerge": {**_UNIFORM_GLOBAL, "subset": "maskgrpo", "context": "reveal_unsampled", "sampler": "emerge"},
    # TraceGRPO (TraceRL on images): each token's ratio from the canvas it was committed on
    "tracegrpo": {**_UNIFORM_GLOBAL, "subset": "random", "rho_min": 1.0, "context": "trace", "loss_norm": "sequence"},
}
PRESETS["grpo"] = PRESETS["d1grpo"]  # the name this preset had before; kept so old configs still load
"""Overrides each preset applies (n_global is set to inner_iters for the baselines: every iteration
global)."""


def _check_choice(name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise UserError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}")


def preset_layer(name: str, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The preset's overrides; `n_global` follows the final `inner_iters` for the baselines."""
    if name not in PRESETS:
        raise UserError(f"preset: {name!r} is not one of {', '.join(PRESETS)}")
    out = dict(PRESETS[name])
    if name != "htgrpo":
        k = HTGRPOConfig.__dataclass_fields__["inner_iters"].default
        for layer in layers:
            if layer.get("inner_iters") is not None:
                k = int(layer["inner_iters"])
        out["n_global"] = k
    return out


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a shipped config (`shapes-tiny`)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise UserError(f"{p}: no such config file")
        return p
    shipped = SHIPPED / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(f.stem for f in SHIPPED.glob("*.yaml"))
    raise UserError(f"unknown config {name_or_path!r}: not a file, and the shipped configs are {', '.join(names)}")


def load_config(config: str | Path | dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> HTGRPOConfig:
    """defaults < YAML file (or dict) < preset < overrides. `config` may be a path, a shipped name or a
    dict of keys. The preset sits above the file so `paintbench train shapes-tiny preset=grpo` gives the
    pure baseline even though the file spells out HT-GRPO's settings; `key=value` still wins."""
    from paintbench.config import build, load_yaml

    if config is None:
        file_layer: dict[str, Any] = {}
        source = "config"
    elif isinstance(config, dict):
        file_layer, source = dict(config), "config"
    else:
        path = resolve_config_path(str(config))
        file_layer, source = load_yaml(path), str(path)
    over = dict(overrides or {})
    preset = str(over.get("preset") or file_layer.get("preset") or "htgrpo")
    layers = [file_layer, over]
    preset_from_file = "preset" not in over and "preset" in file_layer
    if "reward" in over and "reward_options" not in over:
        # a replaced reward list keeps only the options of the rewards it still names (the file's options
        # for `shapes-geneval` must not clash with `--reward geneval=1.0 --reward hps-v2.1=0.5`)
        names = {str(r).partition("=")[0].strip() for r in (over["reward"] if isinstance(over["reward"], list)
                                                             else [over["reward"]])}
        kept = {k: v for k, v in (file_layer.get("reward_options") or {}).items() if k in names}
        file_layer = {**file_layer, "reward_options": kept}
        over = {**over, "reward_options": kept}
    if preset_from_file:  # a file's own preset is its starting point: the file's keys win over it
        return build(HTGRPOConfig, preset_layer(preset, layers), file_layer, over,
                     sources=[f"preset {preset!r}", source, "the command line (key=value)"])
    # a preset asked for on the command line sits above the file (`shapes-tiny preset=grpo` is the pure
    # baseline even though the file spells out HT-GRPO's settings); key=value still wins
    return build(HTGRPOConfig, file_layer, preset_layer(preset, layers), over,
                 sources=[source, f"preset {preset!r}", "the command line (key=value)"])


def check_rewards(cfg: HTGRPOConfig) -> None:
    """Every reward is a registered metric: checked before any model is built (`--dry-run` too)."""
    from paintbench import metrics
    from paintbench.trainer.rewards import ensure_harness_metrics

    ensure_harness_metrics()
    for name in cfg.reward_weights():
        metrics.spec(name)  # UnknownMetricError: one line with the close names


def config_keys() -> list[str]:
    return [f.name for f in fields(HTGRPOConfig)]
