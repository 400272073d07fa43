"""`paintbench train plan CONFIG --gpus N --gpu-memory 80GiB`: the bytes each rank will hold, before launch.

Nothing is loaded. The policy's tensors come from the safetensors headers of `policy_path` (MMaDA,
Lumina-DiMOO) or from building the tiny policy on torch's `meta` device; LoRA adds rank × (in + out)
float32 elements per adapted linear layer (peft keeps adapters in float32 under a bf16 base). Reward
models are sized from their weight files (headers, or the catalogue's size when absent).

Exact per rank (the FSDP2 run holds exactly these bytes; tested on CPU):
- parameters: each tensor split on dim 0 as FSDP2 splits it (`torch.chunk` into `world` parts: rank r
  holds rows [r·c, min((r+1)·c, d0)), c = ceil(d0 / world)) under `fsdp`; whole under `ddp` / `none`;
- gradients: the trainable parameters' local shards, in their dtype;
- optimizer: AdamW's two moments per trainable element, in the parameter's dtype;
- reference: the frozen copy under full fine-tuning (sharded like the policy; 0 on the GPU with
  `reference_offload`; nothing under LoRA, whose reference is the adapter switched off).
An estimate, labelled so until a GPU measures it: activations of one training micro-batch (per layer
the stored block input, one recomputed layer under activation checkpointing, else Korthikanti et al.'s
34·s·h + 5·a·s² bytes per sequence and layer in 16-bit) and the fp32 logits with their gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paintbench.errors import UserError
from paintbench.trainer.config import HTGRPOConfig
from paintbench.trainer.parallel import resolve

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}
TORCH_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    itemsize: int
    trainable: bool
    sharded: bool = True     # False: a module FSDP2 does not wrap (the VQ decoder), whole on every rank


@dataclass
class Plan:
    """Per-rank bytes (lists indexed by rank) and what they came from."""

    world: int
    parallel: str
    parameters: list[int]
    gradients: list[int]
    optimizer: list[int]
    reference: list[int]
    rewards: list[int]
    activations: int
    gpu_memory: int | None
    notes: list[str] = field(default_factory=list)

    def total(self, rank: int) -> int:
        return (self.parameters[rank] + self.gradients[rank] + self.optimizer[rank] + self.reference[rank]
                + self.rewards[rank] + self.activations)

    def fits(self) -> bool | None:
        if self.gpu_memory is None:
            return None
        return max(self.total(r) for r in range(self.world)) <= self.gpu_memory


def parse_bytes(text: str) -> int:
    """'80GiB', '80GB', '81920MiB', '1.5TiB', or a number of bytes."""
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    s = str(text).strip().lower().replace(" ", "")
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in units or not math.isfinite(value) or value <= 0:
        raise UserError(f"--gpu-memory {text!r}: give a size such as 80GiB, 141GB or 24000MiB")
    return int(value * units[unit])


def shard_rows(rows: int, world: int, rank: int) -> int:
    """Rows of a dim-0 split FSDP2 gives `rank` (torch.chunk semantics: trailing ranks may hold none)."""
    chunk = math.ceil(rows / world) if rows else 0
    return max(0, min(rows, (rank + 1) * chunk) - rank * chunk) if chunk else 0


def local_bytes(t: TensorSpec, world: int, rank: int, sharded: bool) -> int:
    if not t.shape:
        return t.itemsize
    rest = math.prod(t.shape[1:])
    rows = shard_rows(t.shape[0], world, rank) if (sharded and t.sharded) else t.shape[0]
    return rows * rest * t.itemsize


# -- where the tensors come from ---------------------------------------------------------------------------
def tiny_tensors(cfg: HTGRPOConfig) -> list[TensorSpec]:
    import torch

    from paintbench.trainer.policies.tiny import TinyPolicy

    options = {"world": cfg.world, **dict(cfg.policy_options)}
    with torch.device("meta"):
        model = TinyPolicy(**options)
    size = TORCH_BYTES.get(cfg.dtype, 4)
    return [TensorSpec(n, tuple(p.shape), size, True) for n, p in model.named_parameters()]


def header_tensors(folder: Path, *, trainable: bool, sharded: bool = True, what: str = "policy_path") -> list[TensorSpec]:
    """Tensors named in a model folder's safetensors headers: the index's shards or `model.safetensors`,
    else every `*.safetensors` file (a diffusers-style VQ folder names its own)."""
    from paintbench.metrics.memory import safetensors_header
    from paintbench.metrics.weights import safetensors_files

    files = (safetensors_files(folder, what) if (folder / "model.safetensors").is_file()
             or (folder / "model.safetensors.index.json").is_file() else sorted(folder.glob("*.safetensors")))
    out = []
    for f in files:
        for name, entry in safetensors_header(f).items():
            size = DTYPE_BYTES.get(str(entry.get("dtype", "F32")).upper(), 4)
            out.append(TensorSpec(name, tuple(entry["shape"]), size, trainable, sharded))
    return out


def lora_tensors(base: list[TensorSpec], targets: list[str], rank: int) -> list[TensorSpec]:
    """peft's A (rank × in) and B (out × rank), float32, for every 2-D weight of a targeted module."""
    out = []
    for t in base:
        parts = t.name.split(".")
        if len(t.shape) == 2 and parts[-1] == "weight" and len(parts) > 1 and parts[-2] in targets:
            out_f, in_f = t.shape
            out.append(TensorSpec(t.name.replace(".weight", ".lora_A.weight"), (rank, in_f), 4, True))
            out.append(TensorSpec(t.name.replace(".weight", ".lora_B.weight"), (out_f, rank), 4, True))
    return out


def backbone_tensors(cfg: HTGRPOConfig) -> tuple[list[TensorSpec], list[str]]:
    from paintbench.trainer import policies

    notes = []
    if not cfg.policy_path:
        raise UserError(f"policy={cfg.policy}: set policy_path (the model folder) to plan its memory")
    folder = Path(cfg.policy_path).expanduser()
    if not folder.is_dir():
        raise UserError(f"policy_path {cfg.policy_path}: no such folder")
    lora = cfg.lora_rank > 0
    base = header_tensors(folder, trainable=not lora)
    want = TORCH_BYTES.get(cfg.dtype, 2)   # loaded in cfg.dtype whatever the files hold
    base = [TensorSpec(t.name, t.shape, want, t.trainable) for t in base]
    tensors = list(base)
    if lora:
        cls = policies.policy_class(cfg.policy)
        targets = [cls.LORA_NAMES.get(t, t) for t in cfg.lora_targets]
        adapters = lora_tensors(base, targets, cfg.lora_rank)
        if not adapters:
            raise UserError(f"lora_targets {list(cfg.lora_targets)} match no 2-D weight of {folder}")
        tensors += adapters
    vq = str(dict(cfg.policy_options).get("vq_path", "") or "")
    if vq and Path(vq).expanduser().is_dir():
        tensors += header_tensors(Path(vq).expanduser(), trainable=False, sharded=False, what="vq_path")
    else:
        notes.append("VQ decoder not sized (policy_options.vq_path is not a local folder); it is whole on every rank")
    return tensors, notes


def policy_tensors(cfg: HTGRPOConfig) -> tuple[list[TensorSpec], list[str]]:
    if cfg.policy == "tiny":
        return tiny_tensors(cfg), []
    return backbone_tensors(cfg)


def reward_bytes(cfg: HTGRPOConfig) -> tuple[int, list[str]]:
    """Bytes of the configured reward models' weights (loaded in their stored precision)."""
    from paintbench.metrics import registry, weights
    from paintbench.metrics.memory import safetensors_header

    total, notes = 0, []
    for name in cfg.reward_weights():
        for wname in registry.spec(name).weights:
            spec = weights.catalog().get(wname)
            path = weights.find(wname, cfg.weights_dir)
            if path is None:
                if spec is not None and spec.size_bytes:
                    total += spec.size_bytes
                    notes.append(f"{name}: {wname} absent, sized from the catalogue ({spec.size_bytes:,} bytes)")
                else:
                    notes.append(f"{name}: {wname} absent and of unknown size (not counted)")
                continue
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            for f in files:
                if not f.is_file() or (f.is_symlink() and not f.resolve().is_file()):
                    continue
                if f.suffix == ".safetensors":
                    total += sum(math.prod(e["shape"]) * DTYPE_BYTES.get(str(e.get("dtype", "F32")).upper(), 4)
                                 for e in safetensors_header(f).values())
                elif f.suffix in (".bin", ".pt", ".pth", ".ckpt"):
                    total += f.stat().st_size
    return total, notes


def activation_estimate(cfg: HTGRPOConfig, world: int, tensors: list[TensorSpec]) -> tuple[int, str]:
    from paintbench.trainer.policies import policy_class

    rows = cfg.micro_batch_size or math.ceil(cfg.prompts_per_step * cfg.group_size / world)
    if cfg.policy == "tiny":
        opts = dict(cfg.policy_options)
        hidden, layers, heads = opts.get("d_model", 128), opts.get("n_layers", 3), opts.get("n_heads", 4)
        from paintbench.harness.worlds import get

        w = get(cfg.world)
        image, text, vocab, size = w.grid * w.grid, opts.get("max_text_len", 16), w.codebook_size, 4
    else:
        cls = policy_class(cfg.policy)
        config = _model_config(Path(cfg.policy_path).expanduser())
        hidden = int(config.get("d_model") or config.get("hidden_size") or 4096)
        layers = int(config.get("n_layers") or config.get("num_hidden_layers") or 32)
        heads = int(config.get("n_heads") or config.get("num_attention_heads") or 32)
        image, text, vocab = cls.PLAN_IMAGE_TOKENS, cls.PLAN_TEXT_TOKENS, 8192
        size = TORCH_BYTES.get(cfg.fsdp_param_dtype or cfg.dtype, 2)
    seq = text + image
    per_layer_stored = rows * seq * hidden * size
    full_layer = rows * seq * (34 * hidden + 5 * heads * seq) * size // 2
    body = layers * per_layer_stored + full_layer if cfg.gradient_checkpointing else layers * full_layer
    logits = 3 * rows * image * vocab * 4
    how = (f"{rows} rollouts x {seq} tokens, hidden {hidden}, {layers} layers, "
           f"{'checkpointed' if cfg.gradient_checkpointing else 'no checkpointing'}")
    return body + logits, how


def _model_config(folder: Path) -> dict[str, Any]:
    from paintbench import files

    path = folder / "config.json"
    if not path.is_file():
        return {}
    data = files.load_json(path, "config")
    return data if isinstance(data, dict) else {}


def make_plan(cfg: HTGRPOConfig, gpus: int, gpu_memory: int | None = None) -> Plan:
    if gpus < 1:
        raise UserError(f"--gpus must be >= 1, got {gpus}")
    parallel = resolve(cfg.parallel, gpus)
    tensors, notes = policy_tensors(cfg)
    sharded = parallel == "fsdp"
    params = [sum(local_bytes(t, gpus, r, sharded) for t in tensors) for r in range(gpus)]
    trainable = [sum(local_bytes(t, gpus, r, sharded) for t in tensors if t.trainable) for r in range(gpus)]
    copy = cfg.beta != 0 and not (cfg.policy != "tiny" and cfg.lora_rank > 0)
    model_only = [sum(local_bytes(t, gpus, r, sharded) for t in tensors if t.sharded) for r in range(gpus)]
    reference = [0 if not copy or (cfg.reference_offload and sharded) else model_only[r] for r in range(gpus)]
    if copy and cfg.reference_offload and sharded:
        notes.append("reference copy offloaded to the CPU: its shards take host memory, not GPU memory")
    rbytes, rnotes = reward_bytes(cfg)
    notes += rnotes
    holders = set(cfg.reward_ranks) if cfg.reward_ranks else set(range(gpus))
    rewards = [rbytes if r in holders else 0 for r in range(gpus)]
    act, how = activation_estimate(cfg, gpus, tensors)
    notes.append(f"activations are an estimate ({how}); measure them on a GPU (benchmarks/gpu.sh)")
    return Plan(gpus, parallel, params, trainable, [2 * b for b in trainable], reference, rewards, act,
                gpu_memory, notes)


def gib(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1 (exact bytes below 1 KiB)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,} B"


def render(plan: Plan, cfg: HTGRPOConfig) -> str:
    ranks = sorted({0, plan.world - 1})
    lines = [f"memory plan: {cfg.policy} ({'LoRA r=' + str(cfg.lora_rank) if cfg.lora_rank and cfg.policy != 'tiny' else 'full fine-tuning'}), "
             f"parallel={plan.parallel}, {plan.world} GPU(s), dtype {cfg.dtype}"]
    header = f"{'':28}" + "".join(f"{'rank ' + str(r):>16}" for r in ranks)
    lines.append(header)
    rows = [("parameters", plan.parameters), ("gradients", plan.gradients), ("optimizer (AdamW)", plan.optimizer),
            ("reference copy", plan.reference), ("reward models", plan.rewards),
            ("activations (estimate)", [plan.activations] * plan.world)]
    for label, values in rows:
        lines.append(f"{label:28}" + "".join(f"{gib(values[r]):>16}" for r in ranks))
    lines.append(f"{'total':28}" + "".join(f"{gib(plan.total(r)):>16}" for r in ranks))
    for note in plan.notes:
        lines.append(f"note: {note}")
    fits = plan.fits()
    if fits is None:
        lines.append("fits: give --gpu-memory to check")
    elif fits:
        worst = max(plan.total(r) for r in range(plan.world))
        lines.append(f"fits: yes ({gib(worst)} of {gib(plan.gpu_memory or 0)} on the fullest rank)")
    else:
        lines.append(f"fits: NO ({gib(max(plan.total(r) for r in range(plan.world)))} on the fullest rank, "
                     f"{gib(plan.gpu_memory or 0)} per GPU); {advice(plan, cfg)}")
    return "\n".join(lines)


def advice(plan: Plan, cfg: HTGRPOConfig) -> str:
    tips = []
    if plan.parallel != "fsdp" and plan.world > 1:
        tips.append("parallel=fsdp (shards parameters, gradients and optimizer state)")
    if plan.world == 1:
        tips.append("more GPUs with parallel=fsdp")
    if cfg.policy != "tiny" and cfg.lora_rank == 0:
        tips.append("lora_rank=128 (MaskGRPO's setting: no full gradients or optimizer state)")
    if cfg.policy != "tiny" and not cfg.gradient_checkpointing:
        tips.append("gradient_checkpointing=true")
    if cfg.micro_batch_size == 0 or cfg.micro_batch_size > 1:
        tips.append("a smaller micro_batch_size")
    if max(plan.rewards) and not cfg.reward_ranks and plan.world > 1:
        tips.append("reward_ranks=[0] (reward models on one rank only)")
    if plan.reference and max(plan.reference) and not cfg.reference_offload:
        tips.append("reference_offload=true")
    return "try " + "; ".join(tips) if tips else "use GPUs with more memory"
