"""One schema for CLI flags and config files.

A config is a dataclass whose fields carry their help text in `field(metadata={"help": ...})`. The
same dataclass produces the argparse flags (`add_dataclass_arguments`), reads a YAML file
(`load_yaml`), applies `key=value` overrides (`apply_overrides`), and is written back into run
directories (`to_dict`), so a flag, a YAML key and a recorded setting are always the same thing.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from paintbench.errors import UserError

T = TypeVar("T")


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[f.name]


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_list) of an annotation such as `int | None` or `list[str]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _base_type(args[0])
        return str, False
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return (args[0] if args else str), True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one `--flag` per field of `cls` (underscores become dashes). Defaults stay None so that
    only flags the user gave override a config file."""
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        tp, is_list = _base_type(_field_type(cls, f))
        help_text = f.metadata.get("help", "")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif is_list:
            parser.add_argument(flag, dest=f.name, action="append", type=tp if tp in (int, float) else str,
                                default=None, help=help_text if "repeatable" in help_text else help_text + " (repeatable)")
        else:
            parser.add_argument(flag, dest=f.name, type=tp if tp in (int, float) else str, default=None,
                                help=help_text)


def load_yaml(path: str | Path) -> dict[str, Any]:
    from paintbench import files

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such config file")
    data = files.load_yaml(files.read_text(p, "config"), p) or {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config keys")
    return data


def build(cls: type[T], *layers: dict[str, Any], source: str = "config", sources: list[str] | None = None) -> T:
    """Instantiate `cls` from dict layers (later layers win; None values are ignored). Unknown keys are
    an error naming the key and where it came from (`sources`: one name per layer, e.g. the YAML file and
    "the command line", so a typo on the command line never blames the file)."""
    names = {f.name for f in dataclasses.fields(cls)}
    merged: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        where = sources[i] if sources is not None and i < len(sources) else source
        for k, v in layer.items():
            key = k.replace("-", "_")
            if key not in names:
                import difflib

                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(f"{where}: unknown key {k!r}{hint}")
            if v is not None:
                merged[key] = v
    try:
        obj = cls(**{k: _coerce(cls, k, v) for k, v in merged.items()})
    except TypeError as e:
        raise UserError(f"{source}: {e}") from e
    return obj


def _coerce(cls: type, name: str, value: Any) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    tp, is_list = _base_type(_field_type(cls, f))
    try:
        if is_list:
            items = value if isinstance(value, (list, tuple)) else [value]
            return [tp(x) if tp in (int, float, str) else x for x in items]
        if tp is bool and isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        if tp in (int, float, str) and not isinstance(value, tp):
            return tp(value)
    except (TypeError, ValueError) as e:
        raise UserError(f"{name}: cannot read {value!r} as {tp.__name__}") from e
    return value


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` strings into a dict; values are parsed as YAML scalars (numbers, booleans, lists), so
    quote text that YAML would read otherwise: `negative_prompt='no'`."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"override {pair!r} is not key=value")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError:
            out[k.strip()] = v  # not a YAML scalar: keep the text as given
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def help_table(cls: type) -> str:
    """Markdown table of the fields (for the README)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")  # type: ignore[misc]
        rows.append(f"| `{f.name}` | `{default}` | {f.metadata.get('help', '')} |")
    return "\n".join(rows)
