"""The lazy provider registry.

Each provider is declared here as data (`ProviderSpec`): what it measures, its protocol version, its
direction and range, and the weight files it needs. The implementing class is named by a string
(`module:Class`) and imported only by `get`, so `available()` and `paintbench metrics` never import
model code. Code that lives outside `metrics` (the harness's shapes-world detector, a user's own
metric) adds itself with `register`; `metrics` never imports it.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

from paintbench.errors import UnknownNameError


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


_REGISTRY: dict[str, ProviderSpec] = {}
_ALIASES: dict[str, str] = {}
_PLUGIN_GROUP = "paintbench.metrics"
_plugins_loaded = False


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
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"metric {spec.name!r} is already registered ({_REGISTRY[spec.name].target})")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name


def available() -> list[str]:
    """Names of all registered providers, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def spec(name: str) -> ProviderSpec:
    """The spec of `name` (or an alias); unknown names raise `KeyError` with close matches."""
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
    return cls(**kwargs)


class UnknownMetricError(UnknownNameError):
    def __init__(self, name: str) -> None:
        choices = sorted(set(_REGISTRY) | set(_ALIASES))
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown metric {name!r}{hint} Available: {', '.join(sorted(_REGISTRY))}")
        self.name = name

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


# -- the built-in providers -------------------------------------------------------------------------
register(ProviderSpec(
    name="aesthetic",
    target="paintbench.metrics.aesthetic:AestheticProvider",
    version="laion-aesthetic-v2/1",
    higher_is_better=True,
    nominal_range=(1.0, 10.0),
    summary="LAION improved aesthetic predictor v2 (OpenAI CLIP ViT-L/14 + linear MLP head)",
    weights=("aesthetic-head", "clip-vit-l-14"),
    needs_prompt=False,
))
register(ProviderSpec(
    name="imagereward",
    target="paintbench.metrics.imagereward:ImageRewardProvider",
    version="imagereward-v1.0/1",
    higher_is_better=True,
    nominal_range=(-2.5, 2.5),
    summary="ImageReward v1.0 (BLIP ViT-L/16 + BERT cross-attention + MLP), z-scored reward",
    weights=("imagereward", "imagereward-med-config", "bert-base-uncased"),
))
register(ProviderSpec(
    name="hps-v2",
    target="paintbench.metrics.hps:HPSv2Provider",
    version="hps-v2.0/1",
    higher_is_better=True,
    nominal_range=(0.0, 0.4),
    summary="Human Preference Score v2.0 (OpenCLIP ViT-H-14 fine-tuned), cosine similarity",
    weights=("hps-v2",),
    aliases=("hpsv2", "hps-v2.0"),
))
register(ProviderSpec(
    name="hps-v2.1",
    target="paintbench.metrics.hps:HPSv21Provider",
    version="hps-v2.1/1",
    higher_is_better=True,
    nominal_range=(0.0, 0.4),
    summary="Human Preference Score v2.1 (OpenCLIP ViT-H-14 fine-tuned), cosine similarity",
    weights=("hps-v2.1",),
    aliases=("hpsv2.1", "hpsv21"),
))
register(ProviderSpec(
    name="geneval",
    target="paintbench.metrics.geneval.provider:GenEvalProvider",
    version="geneval-1.0/1",
    higher_is_better=True,
    nominal_range=(0.0, 1.0),
    summary="GenEval object check (Mask2Former Swin-S COCO + CLIP ViT-L/14 colour): Flow-GRPO reward "
    "(default) or GenEval's 0/1 correctness (value='correct')",
    weights=("geneval-mask2former", "clip-vit-l-14"),
))
register(ProviderSpec(
    name="dpg",
    target="paintbench.metrics.dpg.provider:DPGProvider",
    version="dpg-bench/1",
    higher_is_better=True,
    nominal_range=(0.0, 1.0),
    summary="DPG-Bench (ELLA): mPLUG-large VQA on the 4 tiles of a 2x2 grid, dependency-aware yes rate "
    "per prompt (official or fixed rules)",
    weights=("mplug-vqa-large",),
    needs_prompt=False,
))
