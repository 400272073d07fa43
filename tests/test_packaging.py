"""paintbench installs as one namespace: the wheel's only top-level package is `paintbench`, every file
of the four top-level folders is inside it, and no module of the code base imports the old top-level
names (which would load a second copy of a module, or someone else's package of the same name)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"paintbench": "paintbench", "metrics": "paintbench/metrics", "harness": "paintbench/harness",
           "trainer": "paintbench/trainer", "leaderboards": "paintbench/leaderboards"}
OLD_NAMES = ("metrics", "harness", "trainer", "leaderboards")


def _tracked(*paths: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", *paths], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout (the wheel is built from the tracked files)")
    src = tmp_path_factory.mktemp("src")
    for rel in _tracked():
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    dist = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "-w", str(dist), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    (whl,) = dist.glob("paintbench-*.whl")
    return zipfile.ZipFile(whl)


def test_the_wheel_has_one_top_level_package(wheel):
    tops = {n.split("/")[0] for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"paintbench"}
    top_level = next(n for n in wheel.namelist() if n.endswith(".dist-info/top_level.txt"))
    assert wheel.read(top_level).decode().split() == ["paintbench"]


def test_every_source_and_data_file_is_in_the_wheel(wheel):
    names = set(wheel.namelist())
    missing = []
    for folder, installed in FOLDERS.items():
        for rel in _tracked(folder):
            inside = installed + rel[len(folder):]
            if inside not in names:
                missing.append(rel)
    assert not missing, f"not packaged (add the sub-package to pyproject's [tool.setuptools] packages): {missing}"


def test_the_plugin_entry_point_names_the_namespace(wheel):
    ep = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(ep).decode()
    assert "harness = paintbench.harness.plugins:SPECS" in text
    assert "paintbench = paintbench.cli:main" in text


def _old_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in OLD_NAMES]
    return found


def test_no_code_imports_the_old_top_level_names():
    files = [REPO / f for f in _tracked("*.py")] if (REPO / ".git").exists() else list(REPO.rglob("*.py"))
    bad = [hit for f in files if ".venv" not in f.parts for hit in _old_imports(f)]
    assert not bad, "import these as paintbench.<name>:\n" + "\n".join(bad)


def test_the_old_names_are_not_importable_from_an_install():
    """Outside the repository (no checkout on sys.path) only `paintbench` is installed."""
    code = ("import importlib.util, sys\n"
            "import paintbench.metrics, paintbench.harness, paintbench.trainer, paintbench.leaderboards\n"
            f"print([n for n in {OLD_NAMES!r} if importlib.util.find_spec(n) is not None])\n")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_importing_the_metrics_namespace_does_not_import_torch():
    code = ("import sys\nimport paintbench.metrics as m\nm.available(); m.spec('hps-v2.1')\n"
            "print([x for x in ('torch', 'transformers', 'open_clip') if x in sys.modules])\n")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# who may import whom: CLI -> leaderboards / trainer -> harness -> metrics -> plumbing (errors, config, files, text)
ALLOWED = {"metrics": {"metrics"}, "harness": {"harness", "metrics"}, "trainer": {"trainer", "harness", "metrics"},
           "leaderboards": {"leaderboards", "harness", "metrics"}}
PLUMBING = {"paintbench.errors", "paintbench.config", "paintbench.files", "paintbench.text", "paintbench.__version__"}


def test_dependencies_point_one_way():
    """The graph of the README's architecture section, checked on every import statement (a policy
    generator reaches the trainer by a registered name, never by an import)."""
    bad = []
    for top, allowed in ALLOWED.items():
        for f in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                mods = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    mods = [f"{node.module}.{a.name}" if node.module == "paintbench" else node.module for a in node.names]
                elif isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                for m in mods:
                    parts = m.split(".")
                    if parts[0] != "paintbench" or m in PLUMBING or (len(parts) > 1 and parts[1] in allowed):
                        continue
                    bad.append(f"{f.relative_to(REPO)}:{node.lineno}: {top} imports {m}")
    plumbing = [REPO / "paintbench" / f"{name}.py" for name in ("errors", "config", "files", "text", "__init__")]
    for f in plumbing:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = [f"{node.module}.{a.name}" if node.module == "paintbench" else node.module
                     for a in node.names] if isinstance(node, ast.ImportFrom) and node.module else []
            if any(n.startswith("paintbench") and n not in PLUMBING - {"paintbench.config"} for n in names):
                bad.append(f"{f.relative_to(REPO)}:{node.lineno}: plumbing imports {node.module}")
    assert not bad, "\n".join(bad)
