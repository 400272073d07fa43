"""Reading what the site is built from: harness run directories and trainer log directories.

Files only, read-only, and nothing kept between builds except what `thumbs.py` caches: the site can
be rebuilt while jobs are still writing other runs. Everything here is plain data; the rules
(ranking, ties, layouts) live in `tables.py`, the pictures in `plots.py`.

Run directory (see `harness.rundir`): `results.json` (the run's summary, written last, so its presence
means the run finished), `samples.jsonl` (one record per image: prompt, category, image path, sha256)
and `scores/<metric>.jsonl` (one record per image: value, details, error).

Trainer log directory (see `trainer.logs`): `metrics.jsonl` (one row per logged step, at least `step`
and `reward/mean`), optional `config.yaml`, and `samples/step_<n>/` with images and `rewards.jsonl`.
Every key is read defensively: a row may lack any key, and values may be null.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paintbench.errors import UserError
from paintbench.harness.records import outside_hard_range, read_scores
from paintbench.harness.rundir import RunDir, read_jsonl
from paintbench.leaderboards.thumbs import is_sha256

Key = tuple[str, int]


@dataclass
class Sample:
    """One generated image of a run, with every metric's record for it."""

    prompt_id: str
    sample_index: int
    prompt: str
    category: str | None
    image: Path
    sha256: str | None
    width: int | None
    height: int | None
    seed: int | None = None
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> {value, details, error}

    @property
    def key(self) -> Key:
        return (self.prompt_id, self.sample_index)


@dataclass
class Run:
    """A finished harness run, as the site sees it."""

    root: Path
    results: dict[str, Any]
    samples: list[Sample]
    records: dict[str, list[dict[str, Any]]]  # metric -> raw score records, file order
    name: str
    slug: str
    problems: list[str] = field(default_factory=list)
    _prompts: dict[str, tuple[str, str | None]] | None = field(default=None, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def suite(self) -> dict[str, Any]:
        return self.results.get("suite") or {}

    @property
    def suite_name(self) -> str:
        return str(self.suite.get("name") or "unknown")

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.results.get("metrics") or {}

    @property
    def synthetic_weights(self) -> bool:
        """Scored with synthetic (random) weights: meaningless numbers, shown with a badge."""
        return any((m.get("provenance") or {}).get("synthetic_weights") for m in self.metrics.values()
                   if isinstance(m, dict))

    @property
    def n_prompts(self) -> int:
        return int(self.suite.get("n_prompts") or 0)

    @property
    def is_partial(self) -> bool:
        """Fewer prompts than the suite has (`--limit`): never ranked among complete runs."""
        total = self.suite.get("n_prompts_suite")
        return isinstance(total, int) and self.n_prompts < total

    @property
    def caveats(self) -> list[str]:
        """The headline tags of the run's metrics (`harness.badges`) other than synthetic weights, which
        has its own badge: values outside a metric's nominal range, scoring not in fp32."""
        from paintbench.harness.badges import SYNTHETIC, headline_tags

        out: dict[str, None] = {}
        for name, m in self.metrics.items():
            if isinstance(m, dict):
                for tag in headline_tags(name, m.get("value"), m.get("provenance")).strip().split("] ["):
                    tag = tag.strip("[] ")
                    if tag and tag != SYNTHETIC.strip("[]"):
                        out[f"{name}: {tag}" if "range" in tag else tag] = None
        return list(out)

    @property
    def missing_samples(self) -> int:
        """Samples the suite asked for that have no score in the run's headline metric: failed, missing or
        never generated (the official scripts skip them, so the score itself follows that rule)."""
        m = self.metrics.get(self.primary_metric or "", {})
        if not isinstance(m, dict):
            return 0
        expected, scored = m.get("n_expected"), m.get("n_samples")
        failed = int(m.get("n_failed") or 0)
        short = expected - scored if isinstance(expected, int) and isinstance(scored, int) else 0
        return max(failed, short, len(self.results.get("generation_failures") or []))

    @property
    def is_incomplete(self) -> bool:
        """Some asked-for samples have no score: never ranked among complete runs (a run with 2 of 416
        images missing scored 100 % on the rest and ranked #1 above the complete oracle)."""
        return self.missing_samples > 0

    @property
    def sample_coverage(self) -> str:
        m = self.metrics.get(self.primary_metric or "", {})
        expected = m.get("n_expected") if isinstance(m, dict) else None
        if isinstance(expected, int):
            return f"{expected - self.missing_samples} of {expected} scored"
        return f"{self.missing_samples} missing or failed"

    @property
    def prompt_coverage(self) -> str:
        total = self.suite.get("n_prompts_suite")
        return f"{self.n_prompts} of {total} prompts" if isinstance(total, int) else f"{self.n_prompts} prompts"

    @property
    def primary_metric(self) -> str | None:
        primary = self.results.get("primary_metric")
        if primary in self.metrics:
            return primary
        return next(iter(self.metrics), None)

    def metric_version(self, metric: str) -> str | None:
        prov = self.metrics.get(metric, {}).get("provenance") or {}
        return prov.get("version")

    def prompts(self) -> dict[str, tuple[str, str | None]]:
        """{prompt_id: (prompt text, category)}: what pairs two runs' prompts (id AND text must match)."""
        if self._prompts is None:
            self._prompts = {s.prompt_id: (s.prompt, s.category) for s in self.samples}
        return self._prompts

    def fingerprint(self) -> str:
        """Changes whenever a file the site reads from this run changes (size or mtime): the key of the
        statistics cache, so a rescored run is never shown with stale paired tests."""
        if self._fingerprint is not None:
            return self._fingerprint
        h = hashlib.sha256(str(self.root.resolve()).encode())
        rd = RunDir(self.root)
        files = [rd.results_path, rd.samples_path, *sorted((self.root / "scores").glob("*.jsonl"))]
        for f in files:
            if f.exists():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        self._fingerprint = h.hexdigest()
        return self._fingerprint


def slugify(text: str, *, limit: int = 40) -> str:
    """A file-name-safe slug: lowercase ASCII letters, digits and dashes only (names are untrusted)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].strip("-") or "x"


def unique_slug(prefix: str, name: str, identity: str) -> str:
    """`prefix-name-hash`: readable, and distinct for distinct identities (paths) with equal names."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return f"{prefix}-{slugify(name)}-{digest}"


def is_run_dir(path: Path) -> bool:
    """A finished run has results.json; an unfinished one at least config.yaml (load_run then says why)."""
    return (path / "results.json").is_file() or (path / "config.yaml").is_file()


def expand_run_dirs(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Run directories named, or found one level below a named folder that is not a run itself (so
    `paintbench leaderboard runs/` takes every run under runs/). A named run must be finished; unfinished
    runs found inside a folder are skipped, each with a message (the second value)."""
    out: list[Path] = []
    skipped: list[str] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p}: no such directory")
        if is_run_dir(p):
            out.append(p)
            continue
        found = sorted(c for c in p.iterdir() if c.is_dir() and is_run_dir(c))
        if not found:
            raise UserError(f"{p}: not a paintbench run directory (no results.json), and holds none")
        for c in found:
            if (c / "results.json").is_file():
                out.append(c)
            else:
                skipped.append(f"{c}: skipped, the run is not finished (no results.json)")
    return out, skipped


def load_run(path: str | Path) -> Run:
    root = Path(path)
    rd = RunDir(root)
    if not rd.results_path.exists():
        raise UserError(f"{root}: no results.json (is the run finished? rerun the same `paintbench eval` "
                        "to resume)")
    from paintbench import files
    from paintbench.harness.report import results_problem

    results = files.load_json(rd.results_path, "summary", what="paintbench results")
    why = results_problem(results)
    if why:
        raise UserError(f"{rd.results_path}: not a paintbench results file ({why})")
    raw_samples, problems = read_jsonl(rd.samples_path)
    samples: list[Sample] = []
    by_key: dict[Key, Sample] = {}
    for r in raw_samples:
        try:
            s = Sample(
                prompt_id=str(r["prompt_id"]), sample_index=int(r["sample_index"]), prompt=str(r.get("prompt", "")),
                category=None if r.get("category") is None else str(r["category"]),
                image=rd.resolve_image(str(r["image"])), sha256=r.get("sha256"),
                width=_int_or_none(r.get("width")), height=_int_or_none(r.get("height")),
                seed=_int_or_none(r.get("seed")),
            )
        except (KeyError, TypeError, ValueError):
            problems.append(f"{rd.samples_path}: a record without prompt_id/sample_index/image was skipped")
            continue
        if s.sha256 is not None and not is_sha256(s.sha256):
            problems.append(f"{rd.samples_path}: sample {s.prompt_id}#{s.sample_index} records sha256 "
                            f"{str(s.sha256)[:80]!r}, not 64 hex digits; the file's own hash is used instead")
            s.sha256 = None
        samples.append(s)
        by_key[s.key] = s
    records: dict[str, list[dict[str, Any]]] = {}
    for metric, entry in results["metrics"].items():
        _check_headline(rd.results_path, metric, entry)
        if isinstance(entry, dict) and entry.get("scores_sha256"):
            from paintbench.harness.evaluate import scores_digest

            if scores_digest(rd.scores_path(metric)) != entry["scores_sha256"]:
                raise UserError(f"{root}: results.json was computed from other scores than scores/{metric}.jsonl "
                                f"(an interrupted --rescore?); rerun `paintbench eval --rescore {metric} --out "
                                f"{root}` to rebuild it before publishing")
        recs, probs = read_scores(rd.scores_path(metric), metric)
        problems += probs
        records[metric] = recs
        for rec in recs:
            try:
                s = by_key.get((str(rec["prompt_id"]), int(rec["sample_index"])))
            except (KeyError, TypeError, ValueError):
                continue
            if s is not None:
                s.scores[metric] = rec
    name = str(results.get("run_name") or root.resolve().name)
    return Run(root=root, results=results, samples=samples, records=records, name=name,
               slug=unique_slug("run", name, str(root.resolve())), problems=problems)


def _check_headline(path: Path, metric: str, entry: Any) -> None:
    """results.json's value of `metric`: a number (or null) within a bounded metric's range."""
    from paintbench import metrics

    value = entry.get("value") if isinstance(entry, dict) else entry
    bad = None
    if not isinstance(entry, dict):
        bad = f"is {type(entry).__name__}, not an object"
    elif value is not None and (not is_number(value)):
        bad = f"value is {value!r}, not a number or null"
    else:
        try:
            spec = metrics.spec(metric)
        except KeyError:
            spec = None
        if value is not None:
            bad = outside_hard_range(value, spec)
    if bad:
        raise UserError(f"{path}: metrics.{metric} {bad}; the file was edited or damaged: rerun the same "
                        f"`paintbench eval` to rebuild it from the run's records")


def _int_or_none(x: Any) -> int | None:
    try:
        return None if x is None else int(x)
    except (TypeError, ValueError):
        return None


def dedupe_names(names: list[str]) -> list[str]:
    """Equal display names get ` #2`, ` #3`... so every row of a table can be told apart."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


# -- trainer logs ----------------------------------------------------------------------------------------
@dataclass
class TrainSample:
    step: int
    image: Path
    prompt: str
    reward: float | None
    components: dict[str, float]
    sha256: str | None = None


@dataclass
class TrainLog:
    root: Path
    name: str
    slug: str
    rows: list[dict[str, Any]]
    config: dict[str, Any] | None
    config_text: str | None
    samples: dict[int, list[TrainSample]]  # step -> images
    problems: list[str] = field(default_factory=list)
    warmstart: list[tuple[float, float]] = field(default_factory=list)  # (warm-start step, loss)

    def numeric_keys(self) -> list[str]:
        """Every key with at least one finite number, in first-seen order (`step` excluded)."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for k, v in row.items():
                if k != "step" and k not in seen and is_number(v):
                    seen[k] = None
        return list(seen)

    def series(self, key: str) -> list[tuple[float, float]]:
        """(step, value) points of `key`, skipping rows where it is absent, null or not finite."""
        return [(float(r["step"]), float(r[key])) for r in self.rows if is_number(r.get(key)) and is_number(r.get("step"))]


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


_STEP_DIR = re.compile(r"step_(\d+)$")


def load_train_log(path: str | Path) -> TrainLog:
    root = Path(path)
    metrics_path = root / "metrics.jsonl" if root.is_dir() else root
    if root.is_file():
        root = root.parent
    if not metrics_path.exists():
        raise UserError(f"{root}: not a trainer log directory (no metrics.jsonl)")
    rows, problems = read_jsonl(metrics_path)
    rows = [r for r in rows if is_number(r.get("step"))]
    rows.sort(key=lambda r: float(r["step"]))
    config, config_text = None, None
    cfg_path = root / "config.yaml"
    if cfg_path.exists() or cfg_path.is_symlink():
        from paintbench import files

        try:   # someone else's log: bounded, no link, no YAML aliases
            config_text = files.read_text(cfg_path, "config")
            loaded = files.load_yaml(config_text, cfg_path)
            config = loaded if isinstance(loaded, dict) else None
        except UserError as e:
            problems.append(str(e))
    warm, probs = read_jsonl(root / "warmstart.jsonl")
    problems += probs
    warmstart = [(float(r["step"]), float(r["loss"])) for r in warm if is_number(r.get("step")) and is_number(r.get("loss"))]
    samples: dict[int, list[TrainSample]] = {}
    sample_root = root / "samples"
    if sample_root.is_dir():
        for d in sorted(sample_root.iterdir()):
            m = _STEP_DIR.match(d.name)
            if not (d.is_dir() and m):
                continue
            step = int(m.group(1))
            recs, probs = read_jsonl(d / "rewards.jsonl")
            problems += probs
            items = []
            for r in recs:
                f = d / str(r.get("file", ""))
                if r.get("file") and not f.resolve().is_relative_to(d.resolve()):
                    problems.append(f"{d / 'rewards.jsonl'}: file {str(r['file'])[:80]!r} is outside {d}; not published")
                    continue
                if not r.get("file") or not f.is_file():
                    continue
                comps = {k.removeprefix("reward/"): float(v) for k, v in r.items()
                         if k.startswith("reward/") and is_number(v)}
                reward = float(r["reward"]) if is_number(r.get("reward")) else None
                items.append(TrainSample(step=step, image=f, prompt=str(r.get("prompt", "")), reward=reward,
                                         components=comps))
            if not recs:  # images without a rewards file still show
                items = [TrainSample(step=step, image=f, prompt="", reward=None, components={})
                         for f in sorted(d.glob("*.png"))]
            if items:
                samples[step] = items
    cfg_name = None
    if config:
        cfg_name = config.get("name") or config.get("run_name")
    name = str(cfg_name or root.resolve().name)
    return TrainLog(root=root, name=name, slug=unique_slug("train", name, str(root.resolve())), rows=rows,
                    config=config, config_text=config_text, samples=samples, problems=problems, warmstart=warmstart)
