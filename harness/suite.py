"""Benchmark suites as data: a small YAML names the prompts, the sampling and the metrics.

A suite file holds: `name`, `version`, `description`; `prompts` (where they come from: an official URL
with its sha256, downloaded once into the data cache, a Hugging Face dataset, a local file, or a
built-in generator function named in `BUILTIN_PROMPTS`); `images_per_prompt`, `image_size`, optional
`grid` (DPG: 2x2 tiles per prompt image); optional `categories` (report order); `metrics`, each with an
`aggregation` (`mean` over images, or `macro` = unweighted mean of per-category means, as GenEval's
Overall), an optional `primary: true` and provider `options`; and an optional `leaderboard` (the
site's table: title, metrics, [label, category] columns, scale, decimals, note). A benchmark is this
one file.

Shipped suites live in `harness/suites/`; `--include-path DIR` adds a user's own. The data cache is
`$PAINTBENCH_DATA` (default `~/.cache/paintbench/data`); tests point it at `../shared/data`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import os
import urllib.request
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from paintbench.errors import UserError
from paintbench.harness.rundir import read_text
from paintbench.metrics.weights import sha256_file

SHIPPED = Path(__file__).parent / "suites"
ENV_DATA = "PAINTBENCH_DATA"
AGGREGATIONS = ("mean", "macro")


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a suite. `id` is stable across runs and machines (it keys seeds and resume).

    `files` lists images that already exist for this prompt (a suite read from a user's folder: the
    front ends of `paintbench geneval`, `dpg eval` and `score`); such an item has exactly that many
    samples, and the `folder` generator with `layout: listed` brings them. `prompt` is None when a
    folder gave no prompt for an image (metrics that need one then list that sample as failed)."""

    id: str
    prompt: str | None
    category: str | None = None
    metadata: dict[str, Any] | None = None
    files: tuple[str, ...] = ()

    def n_samples(self, images_per_prompt: int) -> int:
        return len(self.files) if self.files else images_per_prompt


@dataclass(frozen=True)
class SuiteMetric:
    name: str
    aggregation: str = "mean"
    primary: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    version: int | str
    description: str
    prompts: dict[str, Any]
    metrics: list[SuiteMetric]
    images_per_prompt: int = 1
    image_size: int = 512
    grid: dict[str, int] | None = None
    categories: list[str] | None = None
    path: Path | None = None
    leaderboard: dict[str, Any] | None = None  # how the site lays out its table (`leaderboards.layouts`)

    @property
    def primary_metric(self) -> str:
        for m in self.metrics:
            if m.primary:
                return m.name
        return self.metrics[0].name

    @cached_property
    def items(self) -> list[PromptItem]:
        return load_prompts(self)

    def suite_hash(self) -> str:
        """sha256 over the suite definition and its prompts: two runs with equal hashes asked for the same."""
        h = hashlib.sha256()
        # presentation (the leaderboard layout) changes no sample and no score: not part of the identity
        definition = {k: v for k, v in self.to_dict().items() if k not in ("path", "leaderboard")}
        h.update(json.dumps(definition, sort_keys=True).encode())
        for it in self.items:
            fields = [it.id, it.prompt, it.category, it.metadata] + ([list(it.files)] if it.files else [])
            h.update(json.dumps(fields, sort_keys=True).encode())
        return h.hexdigest()

    def n_samples(self, items: list[PromptItem] | None = None, images_per_prompt: int | None = None) -> int:
        """How many samples the run of `items` (default: all) has."""
        ipp = images_per_prompt or self.images_per_prompt
        return sum(it.n_samples(ipp) for it in (self.items if items is None else items))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "description": self.description,
            "prompts": self.prompts, "images_per_prompt": self.images_per_prompt, "image_size": self.image_size,
            "grid": self.grid, "categories": self.categories, "leaderboard": self.leaderboard,
            "metrics": [{"name": m.name, "aggregation": m.aggregation, "primary": m.primary, "options": m.options}
                        for m in self.metrics],
        }


REQUIRED = ("name", "version", "prompts", "metrics")


def parse_suite(data: dict[str, Any], path: Path | None = None) -> Suite:
    where = str(path) if path else "suite"
    if not isinstance(data, dict):
        raise UserError(f"{where}: a suite file must be a mapping")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise UserError(f"{where}: missing required field(s) {', '.join(missing)}")
    known = set(REQUIRED) | {"description", "images_per_prompt", "image_size", "grid", "categories", "leaderboard"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if not isinstance(data["name"], str) or not data["name"].strip() or len(data["name"]) > 200:
        raise UserError(f"{where}: `name` must be a short string")
    if not isinstance(data["version"], (str, int)) or isinstance(data["version"], bool) or len(str(data["version"])) > 100:
        raise UserError(f"{where}: `version` must be a short string or number")
    grid = data.get("grid")
    if grid is not None and not (isinstance(grid, dict) and len(grid) <= 8 and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 64 for k, v in grid.items())):
        raise UserError(f"{where}: `grid` must map a few names to whole numbers from 1 to 64 (e.g. rows: 2, cols: 2)")
    if not isinstance(data["prompts"], dict) or "format" not in data["prompts"]:
        raise UserError(f"{where}: `prompts` must be a mapping with a `format`")
    metrics_ = []
    if not isinstance(data["metrics"], list) or not data["metrics"]:
        raise UserError(f"{where}: `metrics` must be a non-empty list")
    for i, m in enumerate(data["metrics"]):
        if isinstance(m, str):
            m = {"name": m}
        if not isinstance(m, dict) or "name" not in m:
            raise UserError(f"{where}: metrics[{i}] needs a `name`")
        agg = m.get("aggregation", "mean")
        if agg not in AGGREGATIONS:
            raise UserError(f"{where}: metrics[{i}] aggregation {agg!r} is not one of {AGGREGATIONS}")
        metrics_.append(SuiteMetric(name=m["name"], aggregation=agg, primary=bool(m.get("primary", False)),
                                    options=dict(m.get("options") or {})))
    ipp = int(data.get("images_per_prompt", 1))
    if ipp < 1:
        raise UserError(f"{where}: images_per_prompt must be >= 1")
    return Suite(
        name=str(data["name"]), version=data["version"], description=str(data.get("description", "")),
        prompts=dict(data["prompts"]), metrics=metrics_, images_per_prompt=ipp,
        image_size=int(data.get("image_size", 512)), grid=data.get("grid"),
        categories=data.get("categories"), path=path, leaderboard=_leaderboard(data.get("leaderboard"), where),
    )


def _leaderboard(data: Any, where: str) -> dict[str, Any] | None:
    """The suite's `leaderboard` section, checked when the suite is read (not when a site is built)."""
    if data is None:
        return None
    columns = data.get("columns") if isinstance(data, dict) else None
    ok = (isinstance(data, dict) and isinstance(data.get("title"), str)
          and isinstance(data.get("metrics"), list) and all(isinstance(m, str) for m in data["metrics"])
          and isinstance(columns, list) and all(isinstance(c, list) and len(c) == 2 and isinstance(c[0], str)
                                                and (c[1] is None or isinstance(c[1], str)) for c in columns)
          and set(data) <= {"title", "metrics", "columns", "scale", "decimals", "note", "side_by_side"}
          and isinstance(data.get("side_by_side", False), bool))
    if not ok:
        raise UserError(f"{where}: `leaderboard` needs title, metrics [names] and columns [[label, category or "
                        "null], ...], and may have scale, decimals, note and side_by_side (true: the columns are "
                        "[[label, metric], ...], one table of metrics side by side)")
    return data


# -- the registry of suites ----------------------------------------------------------------------------
def suite_files(include_paths: list[str | Path] | None = None) -> dict[str, Path]:
    """name -> YAML file. A suite in an include path may not take the name of another suite (a shipped
    one included): `geneval` must mean GenEval, so a clash is an error naming both files."""
    found: dict[str, Path] = {}
    for folder in [SHIPPED, *(Path(p) for p in include_paths or [])]:
        if not folder.is_dir():
            raise UserError(f"{folder}: include path is not a folder")
        for f in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            data = _read_yaml(f)
            raw = data.get("name") if isinstance(data, dict) else None
            name = raw if isinstance(raw, str) and raw else f.stem
            if name in found and found[name] != f:
                raise UserError(f"{f}: suite name {name!r} is already taken by {found[name]}; give it another "
                                "`name:` (or pass the file's path instead of the name)")
            found[name] = f
    return found


def _read_yaml(path: Path) -> Any:
    """A suite file as data: a regular file within the config cap, YAML's safe loader (no `!!python`
    tags), no anchors or aliases, bounded nesting (`paintbench.files`); errors name the file."""
    from paintbench import files

    return files.load_yaml(files.read_text(path, "config"), path, what="suite YAML")


def load_suite(name_or_path: str, include_paths: list[str | Path] | None = None) -> Suite:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return parse_suite(_read_yaml(p), p)
    files = suite_files(include_paths)
    if name_or_path not in files:
        close = difflib.get_close_matches(name_or_path, list(files), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UserError(f"unknown suite {name_or_path!r}{hint} Available: {', '.join(sorted(files))}")
    f = files[name_or_path]
    return parse_suite(_read_yaml(f), f)


# -- prompts -------------------------------------------------------------------------------------------
def data_dir() -> Path:
    return Path(os.environ.get(ENV_DATA, "~/.cache/paintbench/data")).expanduser()


def fetch_source(src: dict[str, Any], suite: str) -> Path:
    """The prompt file of a suite: a local `path`, or `cache_path` in the data cache (downloaded from
    `url` once, then checked against `sha256`)."""
    if "path" in src:
        p = Path(src["path"]).expanduser()
        if not p.exists():
            raise UserError(f"suite {suite}: prompt file {p} does not exist")
        return p
    target = data_dir() / src["cache_path"]
    if not target.exists():
        if src.get("url"):
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            part = part.with_name(f"{part.name}.{os.getpid()}")  # ranks downloading at once never share a file
            try:
                with urllib.request.urlopen(src["url"], timeout=60) as r, open(part, "wb") as f:
                    f.write(r.read())
            except OSError as e:
                part.unlink(missing_ok=True)
                raise UserError(f"suite {suite}: cannot download {src['url']} into {target} ({e}); "
                                f"place the file there by hand, or set {ENV_DATA}") from e
            if src.get("sha256") and sha256_file(part) != src["sha256"]:
                part.unlink()
                raise UserError(f"suite {suite}: {src['url']} does not have the pinned sha256 {src['sha256']}")
            os.replace(part, target)
        elif src.get("hf_dataset"):
            _fetch_hf_dataset(src, target, suite)
        else:
            how = src.get("how_to_get", "")
            raise UserError(f"suite {suite}: prompt file {target} is missing. {how}".strip())
    if src.get("sha256") and target.is_file():
        got = sha256_file(target)
        if got != src["sha256"]:
            raise UserError(f"suite {suite}: {target} has sha256 {got}, expected {src['sha256']} "
                            "(a different version of the prompts; delete it to download again)")
    return target


def _fetch_hf_dataset(src: dict[str, Any], target: Path, suite: str) -> None:
    from huggingface_hub import hf_hub_download

    target.mkdir(parents=True, exist_ok=True)
    for f in src.get("files", []):
        try:
            got = hf_hub_download(src["hf_dataset"], f, repo_type="dataset")
        except Exception as e:
            raise UserError(f"suite {suite}: cannot get {f} from the dataset {src['hf_dataset']} ({e}); "
                            f"place it at {target / Path(f).name}") from e
        (target / Path(f).name).write_bytes(Path(got).read_bytes())


def load_prompts(suite: Suite) -> list[PromptItem]:
    src = suite.prompts
    fmt = src["format"]
    if fmt == "builtin":
        fn = builtin_prompt_function(str(src.get("function")), suite.path or suite.name)
        args = src.get("args") or {}
        if not isinstance(args, dict):
            raise UserError(f"{suite.path or suite.name}: prompts.args must be a mapping")
        records = fn(**args)
        return [_geneval_item(i, r) for i, r in enumerate(records)]
    path = fetch_source(src, suite.name)
    if fmt == "geneval-metadata":
        return [_geneval_item(i, r) for i, r in enumerate(_read_jsonl(path))]
    if fmt == "jsonl":
        id_field = src.get("id_field", "id")
        items = []
        for i, r in enumerate(_read_jsonl(path)):
            if "prompt" not in r:
                raise UserError(f"{path}: line {i + 1} has no `prompt`")
            items.append(PromptItem(id=str(r.get(id_field, f"{i:05d}")), prompt=str(r["prompt"]),
                                    category=r.get(src.get("category_field", "category")), metadata=r))
        _check_unique(items, path)
        return items
    if fmt == "hpdv2":
        items = []
        for f in src["files"]:
            style = Path(f).stem
            prompts = json.loads(read_text(path / Path(f).name))
            items += [PromptItem(id=f"{style}/{j:05d}", prompt=str(p), category=style) for j, p in enumerate(prompts)]
        return items
    raise UserError(f"suite {suite.name}: unknown prompt format {fmt!r}")


# Prompt generators a suite file may name (`prompts: {format: builtin, function: NAME}`). A suite file is
# data: the name is looked up here or among installed plugins' `paintbench.prompts` entry points, never
# imported from a module path written in the file (which would let a downloaded suite run any code).
BUILTIN_PROMPTS: dict[str, str] = {"shapes": "paintbench.harness.shapes.prompts:make_prompts"}
PROMPTS_ENTRY_POINTS = "paintbench.prompts"


def builtin_prompt_function(name: str, where: object) -> Any:
    from importlib.metadata import entry_points

    if name in BUILTIN_PROMPTS:
        module, _, attr = BUILTIN_PROMPTS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    for ep in entry_points(group=PROMPTS_ENTRY_POINTS):
        if ep.name == name:
            return ep.load()
    known = sorted({*BUILTIN_PROMPTS, *(ep.name for ep in entry_points(group=PROMPTS_ENTRY_POINTS))})
    raise UserError(f"{where}: unknown built-in prompt function {name!r}; suite files name one of "
                    f"{', '.join(known)} (a package adds its own through the {PROMPTS_ENTRY_POINTS!r} entry point)")


def _geneval_item(i: int, rec: dict[str, Any]) -> PromptItem:
    return PromptItem(id=f"{i:05d}", prompt=rec["prompt"], category=rec.get("tag"), metadata=rec)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: malformed JSON ({e})") from e
    return out


def _check_unique(items: list[PromptItem], path: Path) -> None:
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise UserError(f"{path}: duplicate prompt id {it.id!r}")
        seen.add(it.id)


def stratified_sample(items: list[PromptItem], n: int, seed: int) -> list[PromptItem]:
    """`n` prompts spread over the categories (round-robin over the suite's categories, a seeded shuffle
    within each), in suite order: `--limit 10` of a task-sorted suite covers every task, not the first one.
    Pure and deterministic for (items, n, seed)."""
    import random

    if n >= len(items):
        return list(items)
    groups: dict[str | None, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.category, []).append(i)
    rng = random.Random(f"paintbench-limit/{seed}")
    for idx in groups.values():
        rng.shuffle(idx)
    chosen: list[int] = []
    queues = list(groups.values())
    while len(chosen) < n:
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return [items[i] for i in sorted(chosen)]
