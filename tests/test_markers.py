"""The rule that picks what tox's `models` environment runs (README, tox.ini): a test module whose imports
reach transformers, diffusers or peft — directly or through any paintbench module, lazy imports inside
functions included — carries `pytestmark = pytest.mark.hf` (or a list holding it). Modules that reach
those libraries only through the metric registry's lazy names mark themselves; this test cannot see that
and does not try."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HF_LIBRARIES = ("transformers", "diffusers", "peft")
FOLDERS = {"paintbench.metrics": "metrics", "paintbench.harness": "harness", "paintbench.trainer": "trainer",
           "paintbench.leaderboards": "leaderboards", "paintbench": "paintbench", "tests": "tests"}


def source_of(module: str) -> Path | None:
    for prefix in sorted(FOLDERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            rest = module[len(prefix):].lstrip(".").replace(".", "/")
            base = REPO / FOLDERS[prefix] / rest if rest else REPO / FOLDERS[prefix]
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
    if "." not in module and (REPO / "tests" / f"{module}.py").is_file():   # `from test_harness_run import ...`
        return REPO / "tests" / f"{module}.py"
    return None


@cache
def imported(path: Path) -> frozenset[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return frozenset(names)


def hf_path(path: Path, seen: set[Path]) -> list[str] | None:
    """The import chain from `path` to a Hugging Face library, or None."""
    if path in seen:
        return None
    seen.add(path)
    for name in sorted(imported(path)):
        if name.split(".")[0] in HF_LIBRARIES:
            return [name]
        nxt = source_of(name)
        if nxt is not None and (chain := hf_path(nxt, seen)):
            return [str(nxt.relative_to(REPO)), *chain]
    return None


def module_marks(path: Path) -> set[str]:
    """The marks of a module's `pytestmark` (a single mark or a list)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            return {n.attr for n in ast.walk(node.value) if isinstance(n, ast.Attribute)} - {"mark"}
    return set()


def test_every_module_that_imports_a_hugging_face_library_is_marked_hf():
    missing = {}
    for path in sorted((REPO / "tests").glob("test_*.py")):
        chain = hf_path(path, set())
        if chain and "hf" not in module_marks(path):
            missing[path.name] = " -> ".join(chain)
    assert not missing, f"mark these modules `pytestmark = pytest.mark.hf` (they reach a HF library): {missing}"


def test_the_rule_sees_lazy_imports_and_chains(tmp_path, monkeypatch):
    probe = REPO / "tests" / "_probe_marker_rule.py"   # never collected: no test_ prefix
    probe.write_text("def f():\n    from paintbench.metrics.pickscore import PickScoreProvider\n", encoding="utf-8")
    try:
        chain = hf_path(probe, set())
    finally:
        probe.unlink()
    assert chain and chain[0] == "metrics/pickscore.py" and chain[-1].split(".")[0] in HF_LIBRARIES
    marked = tmp_path / "m.py"
    marked.write_text("import pytest\npytestmark = [pytest.mark.hf, pytest.mark.slow]\n", encoding="utf-8")
    assert module_marks(marked) == {"hf", "slow"}
