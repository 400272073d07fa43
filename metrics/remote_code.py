"""No code from a weights folder ever runs: `trust_remote_code=False` on every Hugging Face load, and a
folder whose configs ask for custom code (`auto_map`, a `custom_pipeline`) is refused with one line.

transformers' auto classes import the Python files an `auto_map` names when `trust_remote_code` is true
and, when it is left unset, *ask on the terminal* and then run them: a UniPercept folder holding
`evil.py` and an `auto_map` ran it after one "y". Passing False makes transformers refuse instead, and
`checked_folder` refuses first, naming the file, so the user reads one line and no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from paintbench.errors import InputError
from paintbench.files import read_text

NO_REMOTE_CODE = {"trust_remote_code": False}
"""Keyword arguments every `from_pretrained` in paintbench passes."""

CONFIG_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                "image_processor_config.json", "video_preprocessor_config.json", "generation_config.json",
                "model_index.json", "feature_extractor_config.json")
REMOTE_CODE_KEYS = ("auto_map", "custom_pipeline")


TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer.model", "spiece.model")


def checked_folder(folder: str | Path) -> Path:
    """`folder`, after checking that none of its configs (top level and one level down, where diffusers
    keeps its parts) asks for code from the folder, and that its tokenizer files are regular files within
    the tokenizer cap (a 150 MB merges.txt aborted the process inside the Rust tokenizer); an
    `InputError` naming the file otherwise. Called before every Hugging Face load."""
    from paintbench.files import check_regular

    root = Path(folder)
    if not root.is_dir():
        return root
    candidates = [root / name for name in CONFIG_FILES]
    candidates += [sub / name for sub in sorted(root.iterdir()) if sub.is_dir() and not sub.is_symlink()
                   for name in CONFIG_FILES]
    for sub in (root, *[d for d in sorted(root.iterdir()) if d.is_dir() and not d.is_symlink()]):
        for name in TOKENIZER_FILES:
            if (sub / name).exists() or (sub / name).is_symlink():
                check_regular(sub / name, "tokenizer", follow_links=True)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            data = json.loads(read_text(path, "config"))
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        found = [k for k in REMOTE_CODE_KEYS if isinstance(data, dict) and k in data]
        if found:
            raise InputError(f"{path}: asks for code from the weights folder ({found[0]}); paintbench never runs code "
                             "from a weights folder (trust_remote_code=False): use the model's standard "
                             f"architecture and remove '{found[0]}'")
    return root
