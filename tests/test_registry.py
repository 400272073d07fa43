"""The lazy registry: listing needs no model code; names resolve with helpful errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from paintbench import metrics
from paintbench.metrics.registry import ProviderSpec, UnknownMetricError


def test_listing_imports_no_model_code():
    code = (
        "import sys\nfrom paintbench import metrics\n"
        "names = metrics.available()\n"
        "specs = [metrics.spec(n) for n in names]\n"
        "heavy = [m for m in ('torch', 'open_clip', 'transformers', 'torchvision') if m in sys.modules]\n"
        "print(','.join(names)); print('HEAVY:' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "aesthetic" in out and "imagereward" in out and "hps-v2.1" in out
    assert out.strip().endswith("HEAVY:"), out


def test_every_builtin_spec_is_complete():
    from paintbench.metrics.weights import catalog

    for name in metrics.available():
        s = metrics.spec(name)
        lo, hi = s.nominal_range
        assert lo < hi, name
        assert s.version and "/" in s.version, name
        assert ":" in s.target, name
        for w in s.weights:
            assert w in catalog(), f"{name} needs unknown weight {w}"


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


def test_each_metric_declares_itself_in_its_own_module():
    """A metric is one module: its spec, weight files and tiny writer are literals beside its provider,
    read by the registry without importing the module, and they name things that exist there."""
    import importlib

    from paintbench.metrics.registry import _ROOT, BUILTIN_MODULES, read_declarations
    from paintbench.metrics.weights import catalog

    declared = set()
    for rel in BUILTIN_MODULES:
        decl = read_declarations(_ROOT / f"{rel}.py")
        module = importlib.import_module("paintbench.metrics." + rel.replace("/", "."))
        for m in decl.get("METRICS", []):
            declared.add(m["name"])
            s = metrics.spec(m["name"])
            assert s.target == f"{module.__name__}:{m['provider']}" and hasattr(module, m["provider"])
            assert getattr(module, m["provider"]).name == m["name"]
            assert s.tiny_writer is None or callable(getattr(module, s.tiny_writer.split(":")[1]))
        for w in decl.get("WEIGHTS", []):
            assert catalog()[w["name"]].filename == w["filename"]
    assert declared | {"shapes-geneval"} <= set(metrics.available())  # (other tests register their own)
    assert {"aesthetic", "imagereward", "hps-v2", "hps-v2.1", "geneval", "dpg"} <= declared


def test_a_declaration_that_is_not_a_literal_is_a_clear_error(tmp_path):
    from paintbench.metrics.registry import read_declarations

    f = tmp_path / "mine.py"
    f.write_text("import os\nMETRICS = [{'name': os.environ['X']}]\n")
    with pytest.raises(ValueError, match=r"mine\.py: METRICS must be a literal"):
        read_declarations(f)
