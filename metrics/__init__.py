"""paintbench metric providers.

`metrics.get(name, device=..., dtype=..., weights=..., weights_dir=..., batch_size=...)` builds a
provider; `metrics.available()` lists them without importing any model code. See `metrics.base` for
the contract every provider follows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from paintbench.metrics.registry import (
    ProviderSpec,
    UnknownMetricError,
    available,
    get,
    metadata_problems,
    register,
    require_valid_metadata,
    spec,
)

if TYPE_CHECKING:  # pragma: no cover
    from paintbench.metrics.base import Provider, Scores
    from paintbench.metrics.images import BadImageError, ImageBatch
    from paintbench.metrics.weights import MissingWeightsError

__all__ = [
    "BadImageError",
    "ImageBatch",
    "MissingWeightsError",
    "Provider",
    "ProviderSpec",
    "Scores",
    "UnknownMetricError",
    "available",
    "get",
    "metadata_problems",
    "register",
    "require_valid_metadata",
    "spec",
]

_LAZY = {
    "Provider": "paintbench.metrics.base",
    "Scores": "paintbench.metrics.base",
    "BadImageError": "paintbench.metrics.images",
    "ImageBatch": "paintbench.metrics.images",
    "MissingWeightsError": "paintbench.metrics.weights",
}


def __getattr__(name: str) -> Any:  # PEP 562: keep `import metrics` free of torch and model code
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metrics' has no attribute {name!r}")
