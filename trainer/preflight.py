"""`paintbench train CONFIG --dry-run`: everything that can be checked before a model is loaded.

A launch on 8 GPUs that dies after twenty minutes of loading because a reward's weights are missing, a
prompt file is malformed or the policy does not fit costs a queue slot; this finds those first:
the config parses (done by `load_config`), the prompts load, every reward is a registered metric with
its weight files present, the policy's folders exist with their weights' headers readable and no
remote code, and the memory plan (`trainer.plan`) for the launch's world size. Nothing is loaded.
"""

from __future__ import annotations

from pathlib import Path

from paintbench.errors import UserError
from paintbench.trainer.config import HTGRPOConfig, check_rewards


def problems(cfg: HTGRPOConfig) -> list[str]:
    """What stops this config from training here, one line each (empty: ready)."""
    out: list[str] = []
    try:
        from paintbench.trainer.data import load_records

        load_records(cfg.prompts, seed=cfg.prompt_seed, per_tag=cfg.prompts_per_tag, split=cfg.prompt_split)
    except UserError as e:
        out.append(str(e))
    try:
        check_rewards(cfg)
        out += missing_reward_weights(cfg) if cfg.reward_backend == "local" else served_rewards(cfg)
    except UserError as e:
        out.append(f"rewards: {e}")
    if cfg.policy != "tiny":
        out += policy_folder_problems(cfg)
    return out


def served_rewards(cfg: HTGRPOConfig) -> list[str]:
    """reward_backend=remote: the service answers and serves every reward (its weights are its business)."""
    from paintbench.metrics.remote import Client, read_token

    served = Client(cfg.reward_url, token=read_token(cfg.reward_token_file or None), timeout_s=10, retries=0).served()
    return [f"reward {name}: not served by {cfg.reward_url} (it serves {', '.join(sorted(served)) or 'nothing'})"
            for name in cfg.reward_weights() if name not in served]


def missing_reward_weights(cfg: HTGRPOConfig) -> list[str]:
    from paintbench.metrics import registry, weights

    out = []
    for name in cfg.reward_weights():
        for wname in registry.spec(name).weights:
            spec = weights.catalog().get(wname)
            if spec is not None and spec.optional:
                continue
            if weights.find(wname, cfg.weights_dir) is None:
                out.append(f"reward {name}: weights {wname!r} not found in "
                           f"{cfg.weights_dir or weights.default_weights_dir()} ({spec.fetch_command if spec else 'unknown'})")
    return out


def policy_folder_problems(cfg: HTGRPOConfig) -> list[str]:
    from paintbench.metrics.memory import safetensors_header
    from paintbench.metrics.remote_code import checked_folder
    from paintbench.metrics.weights import safetensors_files

    out = []
    if not cfg.policy_path:
        return [f"policy={cfg.policy}: policy_path (the model folder) is not set"]
    folders = {"policy_path": cfg.policy_path}
    options = dict(cfg.policy_options)
    for key in ("vq_path", "tokenizer_path"):
        if options.get(key):
            folders[key] = str(options[key])
    for key, value in folders.items():
        folder = Path(value).expanduser()
        if not folder.is_dir():
            out.append(f"{key} {value}: no such folder (hub names are not fetched here; place the files locally)")
            continue
        try:
            checked_folder(folder)
            if key != "tokenizer_path" and any(folder.glob("*.safetensors*")):
                for f in safetensors_files(folder, key):
                    safetensors_header(f)
            elif key == "policy_path" and not (folder / "config.json").is_file():
                out.append(f"policy_path {value}: no config.json")
        except UserError as e:
            out.append(f"{key}: {e}")
    return out
