"""The lazy provider registry.

A metric is one module: beside its provider class it declares what it is (`METRICS`: name, protocol
version, direction, range, weight files, tiny-weight writer) and the weight files it reads (`WEIGHTS`:
official file names and sources), as plain literals. The registry reads those literals from the module's
source (`ast.literal_eval`) without importing it, so `available()`, `spec()` and `paintbench metrics`
never import torch or model code; `get` imports the module only when a provider is built.

Adding a built-in metric is one module plus its line in `BUILTIN_MODULES`. Code that lives outside
`metrics` (the harness's shapes-world detector, a user's own metric) adds itself with `register`, or
through the `paintbench.metrics` entry point; `metrics` never imports it.
"""

from __future__ import annotations

import ast
import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paintbench.errors import InputError, UnknownNameError, UserError


@dataclass(frozen=True)
class ProviderSpec:
    """Static facts about a provider.

    `version` is paintbench's protocol version for the metric: it changes whenever a score produced by
    the provider could change (preprocessing, rules, defaults), so results from different versions are
    never mixed silently. `weights` names entries of `metrics.weights.CATALOG`.
    """

    name: str
    target: str
    version: str
    higher_is_better: bool
    nominal_range: tuple[float, float]
    summary: str
    weights: tuple[str, ...] = ()
    needs_prompt: bool = True
    aliases: tuple[str, ...] = field(default=())
    tiny_writer: str | None = None  # `module:function` writing tiny checkpoints in the official formats
    display: tuple[float, int] = (1.0, 4)  # (scale, decimals): how every printer and page shows it (`format_value`)
    unit: str = ""                          # printed after the value ("%" for a percentage)
    # values outside this range are impossible (a damaged record), not just rare; None: unbounded on that side.
    # Every metric with a true bound declares it; None (both sides open) is a linear head on embeddings
    # (aesthetic, ImageReward, HPSv3) or a weight-dependent scale (PickScore's exp(logit_scale) x cosine).
    hard_range: tuple[float | None, float | None] | None = None
    # how the official code turns a set of pairs into one number, when it is not the mean of the per-pair
    # values: (detail key holding the per-pair quantity, transform of its mean); see harness.aggregate.
    # torchmetrics' CLIPScore.compute() is max(mean of the unclamped 100·cos, 0), not the mean of max(·, 0).
    set_value: tuple[str, str] | None = None


_REGISTRY: dict[str, ProviderSpec] = {}
_ALIASES: dict[str, str] = {}
_PLUGIN_GROUP = "paintbench.metrics"
_plugins_loaded = False
_builtins_loaded = False

# The built-in metric modules (paths under this package): one line per metric module. Each declares
# `METRICS` and/or `WEIGHTS` as literals (see the module docstring); `backbones` holds shared weights.
BUILTIN_MODULES = (
    "backbones",
    "aesthetic",
    "imagereward",
    "hps",
    "pickscore",
    "clipscore",
    "hpsv3",
    "unipercept",
    "deqa",
    "geneval/provider",
    "dpg/provider",
)
_PACKAGE = "paintbench.metrics"
_ROOT = Path(__file__).resolve().parent


def read_declarations(path: Path) -> dict[str, Any]:
    """The module-level literals `METRICS` and `WEIGHTS` of a source file, read without importing it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, Any] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id in ("METRICS", "WEIGHTS") and node.value is not None:
            try:
                found[target.id] = ast.literal_eval(node.value)
            except ValueError as e:
                raise ValueError(f"{path}: {target.id} must be a literal (the registry reads it without "
                                 f"importing the module): {e}") from None
    return found


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    from paintbench.metrics.weights import WeightSpec, register_weight

    for rel in BUILTIN_MODULES:
        module = f"{_PACKAGE}.{rel.replace('/', '.')}"
        decl = read_declarations(_ROOT / f"{rel}.py")
        for w in decl.get("WEIGHTS", []):
            register_weight(WeightSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in w.items()}))
        for m in decl.get("METRICS", []):
            m = dict(m)
            provider, writer = m.pop("provider"), m.pop("tiny_writer", None)
            register(ProviderSpec(target=f"{module}:{provider}", tiny_writer=writer and f"{module}:{writer}",
                                  **{k: tuple(v) if isinstance(v, list) else v for k, v in m.items()}))


def _load_plugins() -> None:
    """Register providers declared elsewhere: modules named in `$PAINTBENCH_PLUGINS` (comma-separated;
    each calls `metrics.register`), and installed packages' `paintbench.metrics` entry points (each
    names a `ProviderSpec` or a list of them, in a module that imports no model code). This is how the
    harness's shapes world, or a user's own metric, joins without `metrics` importing it."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import os
    import warnings
    from importlib.metadata import entry_points

    for module in filter(None, (m.strip() for m in os.environ.get("PAINTBENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(module)  # the module calls `metrics.register(...)` itself
        except Exception as e:
            warnings.warn(f"paintbench: PAINTBENCH_PLUGINS module {module!r} failed to import: {e}", stacklevel=2)
    for ep in entry_points(group=_PLUGIN_GROUP):
        try:
            found = ep.load()
        except Exception as e:  # a broken plugin must not break the built-in metrics
            warnings.warn(f"paintbench: metric plugin {ep.name!r} ({ep.value}) failed to load: {e}", stacklevel=2)
            continue
        for s in found if isinstance(found, (list, tuple)) else [found]:
            if s.name not in _REGISTRY:
                register(s)


def register(spec: ProviderSpec, *, replace: bool = False) -> None:
    """Add a provider. Raises if the name is taken, unless `replace`."""
    _load_builtins()
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"metric {spec.name!r} is already registered ({_REGISTRY[spec.name].target})")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name


def available() -> list[str]:
    """Names of all registered providers, sorted."""
    _load_builtins()
    _load_plugins()
    return sorted(_REGISTRY)


def spec(name: str) -> ProviderSpec:
    """The spec of `name` (or an alias); unknown names raise `KeyError` with close matches."""
    _load_builtins()
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        _load_plugins()
        key = _ALIASES.get(name, name)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise UnknownMetricError(name) from None


def get(name: str, **kwargs: Any):
    """Build provider `name`, importing its module now. Keyword arguments go to its constructor.

    Common arguments: `device`, `dtype`, `weights` (explicit path or mapping of weight name to path),
    `weights_dir`, `batch_size`.
    """
    s = spec(name)
    module_name, _, attr = s.target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    try:
        return cls(**kwargs)
    except Exception as e:  # only what a loading library raised is converted: see _raised_in_loader_library
        library = _raised_in_loader_library(e)
        if isinstance(e, UserError) or library is None:
            raise   # ours (already one line) or a bug: the traceback is the report
        raise InputError(f"{name}: {library} could not load its weights ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'no message'}); check the weight folder's files "
                         "(paintbench weights list shows where each is looked for)") from e


LOADER_LIBRARIES = ("transformers", "tokenizers", "safetensors", "huggingface_hub", "diffusers", "sentencepiece",
                    "open_clip", "timm")


def _raised_in_loader_library(e: BaseException) -> str | None:
    """The loading library an exception was raised in (its innermost frame), or None: a malformed weight
    folder makes transformers raise OSError/ValueError from deep inside `from_pretrained`, which is the
    user's to fix; the same types raised by paintbench's own code are bugs and keep their traceback."""
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return None
    module = str(last.tb_frame.f_globals.get("__name__", ""))
    top = module.split(".")[0]
    return top if top in LOADER_LIBRARIES else None


def metadata_problems(name: str, records: list[Any]) -> list[str]:
    """What is wrong with each metadata record for metric `name`, checked before any model is loaded
    (a provider class declares `metadata_problem(record) -> str | None`; most need no metadata). Imports
    the provider's module, not its weights."""
    s = spec(name)
    module_name, _, attr = s.target.partition(":")
    check = getattr(getattr(importlib.import_module(module_name), attr), "metadata_problem", None)
    if check is None:
        return []
    return [f"record {i} ({(r or {}).get('prompt', '')!r}): {why}" for i, r in enumerate(records)
            if (why := check(r or {})) is not None]


def require_valid_metadata(name: str, records: list[Any], where: str) -> None:
    problems = metadata_problems(name, records)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(f"{where}: {len(problems)} prompt(s) cannot be scored by {name}: {shown}")


class UnknownMetricError(UnknownNameError):
    def __init__(self, name: str) -> None:
        choices = sorted(set(_REGISTRY) | set(_ALIASES))
        close = list(dict.fromkeys(_ALIASES.get(c, c) for c in difflib.get_close_matches(name, choices, n=5,
                                                                                              cutoff=0.5)))[:3]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown metric {name!r}{hint} Available: {', '.join(sorted(_REGISTRY))}")
        self.name = name

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def format_value(name: str, value: float | None, *, signed: bool = False, decimals: int | None = None) -> str:
    """A metric's value as every CLI printer shows it: scaled and rounded by the metric's `display`, its
    unit beside it ('-' for no value). One rule, so `eval`, `results`, `compare`, `score` and the site
    show one number one way (the site's suite layouts choose only the decimals)."""
    if value is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    try:
        s = spec(name)
        scale, dec, unit = s.display[0], s.display[1], s.unit
    except KeyError:   # a plugin's metric that is not installed here
        scale, dec, unit = 1.0, 4, ""
    dec = dec if decimals is None else decimals
    return f"{value * scale:{'+' if signed else ''}.{dec}f}{unit}"
