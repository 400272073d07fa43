"""Generators by name. A spec is `KIND[:ARG]`, e.g. `folder:DIR`, `diffusers:PATH`,
`python:module:function`, `policy:CHECKPOINT`, `shapes-oracle`. Classes are imported lazily."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from paintbench.errors import UserError

GENERATORS: dict[str, str] = {
    "folder": "paintbench.harness.generators.folder:FolderGenerator",
    "diffusers": "paintbench.harness.generators.diffusers:DiffusersGenerator",
    "python": "paintbench.harness.generators.python:PythonGenerator",
    "policy": "paintbench.harness.generators.policy:PolicyGenerator",
    "shapes-oracle": "paintbench.harness.generators.shapes:ShapesOracleGenerator",
    "shapes-random": "paintbench.harness.generators.shapes:ShapesRandomGenerator",
    "blocks-oracle": "paintbench.harness.generators.shapes:BlocksOracleGenerator",
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    kind, sep, arg = spec.partition(":")
    return kind, (arg if sep else None)


def make_generator(spec: str, options: dict[str, Any], suite, *, device: str = "cpu"):
    kind, arg = parse_spec(spec)
    if kind not in GENERATORS:
        close = difflib.get_close_matches(kind, list(GENERATORS), n=2, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UserError(f"unknown generator {kind!r}{hint} Available: {', '.join(GENERATORS)}")
    module, _, attr = GENERATORS[kind].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    try:
        return cls(arg, options, suite, device=device)
    except TypeError as e:
        raise UserError(f"generator {kind}: unsupported options {options} ({e})") from e
