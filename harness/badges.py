"""The tags every printed or written headline carries, so a number cannot be copied without its caveats:
`[SYNTHETIC WEIGHTS]` (random weights: meaningless numbers), `[outside nominal range lo..hi]` (a value
no real model gives: suspect weights or inputs), `[dtype bfloat16, ...]` (not the parity
setting, fp32). One function, used by every CLI printer and report file (`results`, `eval`, `score`, `geneval`,
`dpg eval`), so they cannot disagree. Pure."""

from __future__ import annotations

from typing import Any

SYNTHETIC = "[SYNTHETIC WEIGHTS]"
PARITY_DTYPE = "float32"


def headline_tags(metric: str, value: float | None, provenance: dict[str, Any] | None) -> str:
    """The tags of one metric's headline (empty when there is nothing to say), with a leading space."""
    from paintbench import metrics

    prov = provenance if isinstance(provenance, dict) else {}
    tags = []
    if prov.get("synthetic_weights"):
        tags.append(SYNTHETIC)
    try:
        lo, hi = metrics.spec(metric).nominal_range
    except KeyError:
        lo = hi = None
    if value is not None and lo is not None and hi is not None and not lo <= value <= hi:
        tags.append(f"[outside nominal range {lo:g}..{hi:g}]")
    dtype = str(prov.get("dtype") or "").removeprefix("torch.")
    if dtype and dtype != PARITY_DTYPE:
        tags.append(f"[dtype {dtype}, not the fp32 parity setting]")
    return (" " + " ".join(tags)) if tags else ""
