"""The lazy registry: listing needs no model code; names resolve with helpful errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from paintbench import metrics
from paintbench.metrics.registry import ProviderSpec, UnknownMetricError


def test_listing_imports_no_model_code():
    code = (
        "import sys, metrics\n"
        "names = metrics.available()\n"
        "specs = [metrics.spec(n) for n in names]\n"
        "heavy = [m for m in ('torch', 'open_clip', 'transformers', 'torchvision') if m in sys.modules]\n"
        "print(','.join(names)); print('HEAVY:' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "aesthetic" in out and "imagereward" in out and "hps-v2.1" in out
    assert out.strip().endswith("HEAVY:"), out


def test_every_builtin_spec_is_complete():
    from paintbench.metrics.weights import CATALOG

    for name in metrics.available():
        s = metrics.spec(name)
        lo, hi = s.nominal_range
        assert lo < hi, name
        assert s.version and "/" in s.version, name
        assert ":" in s.target, name
        for w in s.weights:
            assert w in CATALOG, f"{name} needs unknown weight {w}"


def test_unknown_metric_suggests_close_names():
    with pytest.raises(UnknownMetricError) as e:
        metrics.spec("hps-v21")
    assert "hps-v2.1" in str(e.value)
    with pytest.raises(KeyError):
        metrics.get("no-such-metric")


def test_aliases_resolve_to_the_canonical_spec():
    assert metrics.spec("hpsv2.1").name == "hps-v2.1"
    assert metrics.spec("hps-v2.0").name == "hps-v2"


def test_register_refuses_duplicates_unless_replacing():
    s = ProviderSpec(name="aesthetic", target="x:y", version="v/1", higher_is_better=True,
                     nominal_range=(0.0, 1.0), summary="dup")
    with pytest.raises(ValueError, match="already registered"):
        metrics.register(s)
