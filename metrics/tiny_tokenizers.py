"""Tiny tokenizer folders for the tiny checkpoints (`paintbench weights make-tiny`): a byte-level BPE in
the Qwen2 layout (`vocab.json` + `merges.txt` + `tokenizer_config.json`), loaded by the real
`AutoTokenizer` of either transformers generation, so the providers' real tokenizer code runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode alphabet (what byte-level BPE vocabularies start with)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_qwen2_tokenizer(folder: Path, specials: Sequence[str], *, merges: Sequence[tuple[str, str]] = (),
                          eos: str, pad: str, chat_template: str | None = None) -> dict[str, int]:
    """Write a Qwen2-style byte-level BPE (the byte alphabet, then one token per merge, then `specials`)
    into `folder`; returns the special tokens' ids."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = byte_alphabet() + ["".join(m) for m in merges]
    ids = {s: len(vocab) + i for i, s in enumerate(specials)}
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    config = {
        "tokenizer_class": "Qwen2Tokenizer", "add_prefix_space": False, "errors": "replace", "bos_token": None,
        "eos_token": eos, "pad_token": pad, "unk_token": None, "model_max_length": 32768,
        "clean_up_tokenization_spaces": False, "split_special_tokens": False,
        "additional_special_tokens": [s for s in specials if s not in (eos, pad)],
        "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for s, i in ids.items()},
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return ids
