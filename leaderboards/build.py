"""Build the static site: leaderboards per suite, a page per run, comparisons, training reports.

`build_site(run_dirs, train_dirs, out)` reads the directories (files only), computes every table once
(`tables.py`), publishes the images (`thumbs.py`: thumbnails and copies keyed by sha256, made once),
and renders jinja2 templates with autoescape on. The result opens from file:// and any static host:
every link is relative, nothing comes from a CDN, and each page carries a Content-Security-Policy that
allows only the site's own files (so nothing injected could run, nor reach a network).

Site layout::

    SITE/index.html                leaderboards, one section per suite
    SITE/run-<name>-<hash>.html    a run: breakdowns, provenance, gallery of every image
    SITE/compare-<suite>.html      runs of one suite side by side on their shared prompts (with
                                   compare-<suite>-part<k>.html when the images need several pages)
    SITE/train-<name>-<hash>.html  a training report
    SITE/exports/<table>.{csv,json,tex}
    SITE/thumbs/, SITE/images/     content-addressed (sha256) images
    SITE/static/                   site.css, site.js
    SITE/_cache/paired.json        paired tests already computed (keyed by the runs' file stamps)
    SITE/_cache/pages.json         what each page was rendered from

Rebuilding is cheap: thumbnails and copies exist already, paired tests come from the cache, a page whose
inputs (code, options, navigation, its runs' file stamps, its images) did not change is not rendered
again, and files whose content did not change are not rewritten. Ten GenEval-sized runs (22,120
images) rebuild in about two seconds; see benchmarks/bench_leaderboard.py.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from paintbench.errors import UserError
from paintbench.harness.aggregate import compare_metric
from paintbench.leaderboards import exports, gallery, plots, tables
from paintbench.leaderboards.layouts import display_format
from paintbench.leaderboards.model import (
    Run,
    TrainLog,
    dedupe_names,
    expand_run_dirs,
    is_number,
    load_run,
    load_train_log,
    slugify,
)
from paintbench.leaderboards.thumbs import (
    ImageRef,
    ImageStore,
    file_sha256,
    image_size,
    missing_key,
    verify_recorded_hashes,
)

HERE = Path(__file__).parent
CACHE_VERSION = 1


@dataclass
class BuildOptions:
    title: str = "paintbench leaderboard"
    baseline: str | None = None  # run name (or directory name) that comparisons measure against
    images: str = "copy"  # copy | symlink | none
    thumb_size: int = 256
    jobs: int | None = None
    alpha: float = tables.ALPHA
    n_resamples: int = 10_000
    seed: int = 0
    cards_per_page: int = 4000  # side-by-side images per comparison page (more: split by category)


@dataclass
class BuildReport:
    out: Path
    pages: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    thumbs_made: int = 0
    thumbs_cached: int = 0
    pages_cached: int = 0
    paired_computed: int = 0
    paired_cached: int = 0

    def summary(self) -> str:
        t = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        return (f"{len(self.pages)} pages ({self.pages_cached} unchanged), {len(self.exports)} export files, "
                f"thumbnails {self.thumbs_made} made / "
                f"{self.thumbs_cached} cached, paired tests {self.paired_computed} computed / "
                f"{self.paired_cached} cached ({t})")


# -- paired tests (the harness's), cached ------------------------------------------------------------------
def paired_test(a: Run, b: Run, metric: str, *, n_resamples: int = 10_000, seed: int = 0) -> dict[str, Any] | None:
    """harness.aggregate.compare_metric (b − a) on the prompts both runs share with the same text; None
    when they share fewer than two scored prompts."""
    if metric not in a.metrics or metric not in b.metrics:
        return None
    pa, pb = a.prompts(), b.prompts()
    same = {p for p in pa.keys() & pb.keys() if pa[p][0] == pb[p][0]}
    if len(same) < 2:
        return None
    ra = [r for r in a.records.get(metric, []) if str(r.get("prompt_id")) in same]
    rb = [r for r in b.records.get(metric, []) if str(r.get("prompt_id")) in same]
    try:
        out = compare_metric(ra, rb, {p: pa[p][1] for p in same},
                             aggregation=str(a.metrics[metric].get("aggregation", "mean")),
                             n_resamples=n_resamples, seed=seed)
    except (ValueError, KeyError):
        return None
    return out


class PairedCache:
    """Paired tests keyed by both runs' file stamps, the metric and the resampling settings."""

    def __init__(self, path: Path, *, n_resamples: int, seed: int) -> None:
        self.path = path
        self.n_resamples, self.seed = n_resamples, seed
        self.computed = self.hits = 0
        self.data: dict[str, Any] = {}
        if path.exists():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                if doc.get("version") == CACHE_VERSION:
                    self.data = doc.get("entries", {})
            except ValueError:
                self.data = {}
        self.used: set[str] = set()

    def __call__(self, a: Run, b: Run, metric: str) -> dict[str, Any] | None:
        key = hashlib.sha256(f"{a.fingerprint()}|{b.fingerprint()}|{metric}|{self.n_resamples}|{self.seed}"
                             .encode()).hexdigest()
        self.used.add(key)
        if key in self.data:
            self.hits += 1
            return self.data[key]
        self.computed += 1
        res = paired_test(a, b, metric, n_resamples=self.n_resamples, seed=self.seed)
        self.data[key] = res
        return res

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keep = {k: v for k, v in self.data.items() if k in self.used}
        _write_if_changed(self.path, json.dumps({"version": CACHE_VERSION, "entries": keep}, sort_keys=True))


# -- helpers -----------------------------------------------------------------------------------------------
def _write_if_changed(path: Path, text: str) -> bool:
    data = text.encode("utf-8")
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = lambda v, col: col.fmt(v)
    env.filters["sortkey"] = _sort_key
    env.filters["num"] = _num
    env.globals["is_number"] = is_number
    return env


def _sort_key(cell: tables.Cell | None, col: tables.Column) -> str:
    if cell is None:
        return ""
    if col.kind in ("number", "rank"):
        return repr(float(cell.value)) if is_number(cell.value) else ""
    return "" if cell.value is None else str(cell.value).lower()


def _num(v: Any, decimals: int = 3, scale: float = 1.0) -> str:
    return f"{v * scale:.{decimals}f}" if is_number(v) else "–"


def _unique_ids(all_tables: list[tables.Table]) -> None:
    seen: dict[str, int] = {}
    for t in all_tables:
        n = seen.get(t.id, 0)
        seen[t.id] = n + 1
        if n:
            t.id = f"{t.id}-{n + 1}"


def _pick_baseline(runs: list[Run], baseline: str | None) -> list[Run]:
    """Runs with the baseline first: the one named (display name or directory name), else the run with
    the most prompts (a partial run as the baseline would restrict every comparison to its prompts)."""
    if baseline:
        for i, r in enumerate(runs):
            if _is_named(r, baseline):
                return [r, *runs[:i], *runs[i + 1 :]]
    if not runs:
        return []
    best = max(range(len(runs)), key=lambda i: (runs[i].n_prompts, -i))
    return [runs[best], *runs[:best], *runs[best + 1 :]]


def _is_named(run: Run, name: str) -> bool:
    return name in (run.name, run.root.name, str(run.root))


# -- the build ---------------------------------------------------------------------------------------------
_TEMP = re.compile(r"^\..+\.\d+\.tmp$")  # `.NAME.PID.tmp`: how every write of the build starts


def remove_stale_temp(site: Path) -> list[Path]:
    """Delete the temporary files a killed build left (a build writes `.NAME.PID.tmp` and renames it into
    place; a kill in between leaves one behind, which a later build would otherwise publish)."""
    removed = []
    for folder in (site, site / "thumbs", site / "images", site / "_cache"):
        if folder.is_dir():
            for f in folder.rglob(".*.tmp"):
                if f.is_file() and _TEMP.match(f.name):
                    f.unlink()
                    removed.append(f)
    return removed


def build_site(run_dirs: Sequence[str | Path], train_dirs: Sequence[str | Path] = (), out: str | Path = "site",
               options: BuildOptions | None = None, *, log: Callable[[str], None] | None = None,
               experiments: Sequence[str | Path] = ()) -> BuildReport:
    opts = options or BuildOptions()
    say = log or (lambda msg: None)
    out = Path(out)
    t0 = time.perf_counter()
    report = BuildReport(out=out)
    if not run_dirs and not train_dirs and not experiments:
        raise UserError("nothing to build: give run directories, --train-log directories and/or --experiment files")
    from paintbench.leaderboards.experiment import experiment_context, load_experiment

    exps = unique_experiments([load_experiment(p) for p in experiments])
    run_paths, skipped = expand_run_dirs(list(run_dirs)) if run_dirs else ([], [])
    report.problems += skipped
    runs = [load_run(p) for p in run_paths]
    if opts.baseline and not any(_is_named(r, opts.baseline) for r in runs):
        raise UserError(f"--baseline {opts.baseline!r} is none of the runs ({', '.join(r.name for r in runs)})")
    verify_recorded_hashes(runs, Path(out) / "_cache" / "verified-images.json")
    for r, name in zip(runs, dedupe_names([r.name for r in runs]), strict=True):
        r.name = name
        report.problems += r.problems
    logs = [load_train_log(p) for p in train_dirs]
    for lg, name in zip(logs, dedupe_names([lg.name for lg in logs]), strict=True):
        lg.name = name
        report.problems += lg.problems
    report.timings["load"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    report.problems += [f"removed a temporary file left by an interrupted build: {f}" for f in remove_stale_temp(out)]

    # images first: every page needs their URLs
    t = time.perf_counter()
    store = ImageStore(out, mode=opts.images, size=opts.thumb_size, jobs=opts.jobs)
    refs: list[ImageRef] = []
    dims: dict[str, tuple[int, int]] = {}
    for r in runs:
        for s in r.samples:
            if not s.sha256:
                s.sha256 = file_sha256(s.image) if s.image.is_file() else missing_key(s.image)
            refs.append(ImageRef(s.image, s.sha256))
            if s.width and s.height:
                dims[s.sha256] = (s.width, s.height)
    for lg in logs:
        for items in lg.samples.values():
            for smp in items:
                smp.sha256 = file_sha256(smp.image)
                refs.append(ImageRef(smp.image, smp.sha256))
                dims[smp.sha256] = image_size(smp.image)
    say(f"images: {len({r.sha256 for r in refs})} unique")
    published = store.publish(refs, dims)
    report.thumbs_made, report.thumbs_cached = store.stats.thumbs_made, store.stats.thumbs_cached
    report.problems += store.stats.missing
    report.timings["images"] = time.perf_counter() - t

    # tables (cheap; always computed, so exports are always current)
    t = time.perf_counter()
    paired = PairedCache(out / "_cache" / "paired.json", n_resamples=opts.n_resamples, seed=opts.seed)
    suites: dict[str, list[Run]] = {}
    for r in runs:
        suites.setdefault(r.suite_name, []).append(r)
    compare_pages: dict[str, str] = {}
    for suite, group in suites.items():
        if len(group) >= 2 and tables.shared_prompts(group):
            compare_pages[suite] = f"compare-{slugify(suite)}-{hashlib.sha256(suite.encode()).hexdigest()[:6]}.html"
    nav = {"runs": [(r.name, f"{r.slug}.html") for r in runs], "logs": [(lg.name, f"{lg.slug}.html") for lg in logs],
           "compares": list(compare_pages.items()),
           "experiments": [(e.name, f"{e.slug}.html") for e in exps]}
    cards = CardCache(published)
    pages: list[Page] = []

    sections = []
    for suite, group in suites.items():
        tbls = tables.suite_tables(suite, group, paired=paired, alpha=opts.alpha)
        sections.append({"suite": suite, "anchor": f"suite-{slugify(suite)}",
                         "tables": [(tb, _forest(tb)) for tb in tbls], "compare": compare_pages.get(suite),
                         "runs": group, "description": _suite_description(group)})
    pages.append(Page("index.html", "index.html.j2", {"sections": sections, "logs": logs},
                      tables=[tb for sec in sections for tb, _ in sec["tables"]],
                      key=[*(f"{r.fingerprint()}:{r.name}" for r in runs), *(_log_stamp(lg) for lg in logs)]))

    for r in runs:
        cat_tables = [tables.category_table(r, m) for m in r.metrics]
        figs = [_category_plot(m, tb) for m, tb in zip(r.metrics, cat_tables, strict=True)]
        ctx = {"run": r, "breakdowns": list(zip(cat_tables, figs, strict=True)),
               "provenance": tables.run_provenance(r), "compare": compare_pages.get(r.suite_name),
               "problems": r.problems[:20]}
        pages.append(Page(f"{r.slug}.html", "run.html.j2", ctx, tables=cat_tables,
                          key=[r.fingerprint(), r.name, str(compare_pages.get(r.suite_name)),
                               _published_digest(published, [s.sha256 for s in r.samples])],
                          lazy=functools.partial(_run_gallery, r, cards)))

    for suite, fname in compare_pages.items():
        group = _pick_baseline(suites[suite], opts.baseline)
        pages += _compare_pages(suite, fname, group, cards, paired, opts)

    for lg in logs:
        ctx = _train_context(lg, published)
        pages.append(Page(f"{lg.slug}.html", "train.html.j2", ctx, tables=ctx.pop("all_tables"),
                          key=[_log_stamp(lg), lg.name,
                               _published_digest(published, [x.sha256 for v in lg.samples.values() for x in v])]))
    for e in exps:
        ctx = experiment_context(e)
        st = e.path.stat()
        pages.append(Page(f"{e.slug}.html", "experiment.html.j2", ctx, tables=[t for w in ctx["worlds"] for t in (w["table"], w["tuning"]) if t is not None],
                          key=[str(e.path.resolve()), f"{st.st_size}:{st.st_mtime_ns}"]))
    _unique_ids([tb for pg in pages for tb in pg.tables])
    report.timings["tables"] = time.perf_counter() - t

    # write: exports always (written only when their content changed); pages only when their inputs changed
    t = time.perf_counter()
    env = environment()
    export_links: dict[str, dict[str, str]] = {}
    for pg in pages:
        for tb in pg.tables:
            links = exports.write_exports(tb, out / "exports")
            export_links[tb.id] = links
            report.exports += list(links.values())
    env.globals["exports_of"] = lambda table: export_links.get(table.id, {})
    common = {"site_title": opts.title, "tie_rule": tables.tie_rule(opts.alpha), "version": _version(),
              "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    page_cache = PageCache(out / "_cache" / "pages.json")
    shared_key = [_code_version(), _version(), json.dumps({k: v for k, v in asdict(opts).items() if k != "jobs"},
                                                          sort_keys=True), json.dumps(nav, sort_keys=True)]
    for pg in pages:
        key = hashlib.sha256("\x00".join([*shared_key, pg.file, *pg.key]).encode()).hexdigest()
        report.pages.append(pg.file)
        if page_cache.fresh(out, pg.file, key):
            report.pages_cached += 1
            continue
        ctx = {**pg.context, **(pg.lazy() if pg.lazy else {})}
        html = env.get_template(pg.template).render(**common, nav=nav, page=pg.file, **ctx)
        _write_if_changed(out / pg.file, html)
        page_cache.store(pg.file, key)
    page_cache.save(keep=report.pages)
    static = out / "static"
    static.mkdir(exist_ok=True)
    for f in sorted((HERE / "static").iterdir()):
        if f.is_file():
            _write_if_changed(static / f.name, f.read_text(encoding="utf-8"))
    paired.save()
    report.paired_computed, report.paired_cached = paired.computed, paired.hits
    _write_if_changed(out / "_cache" / "README.txt", "Build cache of `paintbench leaderboard` (safe to delete).\n")
    report.timings["write"] = time.perf_counter() - t
    report.timings["total"] = time.perf_counter() - t0
    return report


@dataclass
class Page:
    """A page to write: its template, the context computed up front (tables: the exports need them), what
    its content depends on (`key`), and the heavy part of its context, computed only when it is rendered."""

    file: str
    template: str
    context: dict[str, Any]
    tables: list[tables.Table] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    lazy: Callable[[], dict[str, Any]] | None = None


class PageCache:
    """{page file: key of the inputs it was rendered from}; a page whose key is unchanged is not rendered
    again (the key covers the code and templates, the options, the navigation, the runs' file stamps and
    the published images)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, str] = {}
        if path.exists():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                self.data = doc if isinstance(doc, dict) else {}
            except ValueError:
                self.data = {}

    def fresh(self, out: Path, file: str, key: str) -> bool:
        return self.data.get(file) == key and (out / file).is_file()

    def store(self, file: str, key: str) -> None:
        self.data[file] = key

    def save(self, keep: list[str]) -> None:
        kept = {k: v for k, v in self.data.items() if k in keep}
        _write_if_changed(self.path, json.dumps(kept, sort_keys=True, indent=0))


class CardCache:
    """Gallery cards, built once per (run, sample) and shared by the run page and the comparison."""

    def __init__(self, published: dict[str, Any]) -> None:
        self.published = published
        self._cards: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}

    def of(self, run: Run) -> dict[tuple[str, int], dict[str, Any]]:
        if run.slug not in self._cards:
            self._cards[run.slug] = {s.key: gallery.card(run, s, self.published) for s in run.samples}
        return self._cards[run.slug]


_CODE_VERSION: str | None = None


def _code_version() -> str:
    """Hash of this package's code, templates and static files: a page rendered by other code is stale."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        h = hashlib.sha256(str(CACHE_VERSION).encode())
        for f in sorted(HERE.rglob("*")):
            if f.is_file() and f.suffix in (".py", ".j2", ".css", ".js"):
                h.update(f.relative_to(HERE).as_posix().encode() + b"\x00" + f.read_bytes())
        _CODE_VERSION = h.hexdigest()
    return _CODE_VERSION


def _published_digest(published: dict[str, Any], shas: Sequence[str | None]) -> str:
    h = hashlib.sha256()
    for sha in shas:
        pub = published.get(sha or "")
        h.update(f"{sha}|{pub.thumb}|{pub.full}|{pub.width}|{pub.height};".encode() if pub else b"-;")
    return h.hexdigest()


def _log_stamp(lg: TrainLog) -> str:
    parts = [str(lg.root.resolve()), lg.name]
    for f in [lg.root / "metrics.jsonl", lg.root / "config.yaml", *sorted((lg.root / "samples").glob("step_*/rewards.jsonl"))]:
        if f.exists():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _run_gallery(run: Run, cards: CardCache) -> dict[str, Any]:
    items = list(cards.of(run).values())
    cats = sorted({c["category"] for c in items if c["category"]}, key=_category_order(run))
    tags = sorted({c["tag"] for c in items if c["tag"]})
    # "failed" on a card means judged wrong (✗) or not scored; the two are counted apart, so the gallery
    # never reads "390 failed" beside a headline card that says "0 failed" (scoring failures)
    return {"cards": items, "categories": cats, "n_failed": sum(c["failed"] for c in items),
            "n_wrong": sum(any(e["verdict"] is False for e in c["scores"]) for c in items),
            "n_unscored": sum(any(e["value"] is None for e in c["scores"]) for c in items),
            "has_boxes": any(c["boxes"] for c in items),
            "tags": tags if set(tags) != set(cats) else []}  # GenEval's tags are its categories: one menu


def _version() -> str:
    from paintbench import __version__

    return __version__


def _category_order(run: Run) -> Callable[[str], tuple[int, str]]:
    order = [str(c) for c in (run.suite.get("categories") or [])]
    return lambda c: (order.index(c) if c in order else len(order), c)


def _suite_description(group: list[Run]) -> str:
    s = group[0].suite
    versions = sorted({str(r.suite.get("version")) for r in group})
    hashes = {r.suite.get("hash") for r in group}
    text = f"suite {s.get('name')} v{', v'.join(versions)}, {len(group)} run(s)"
    if len(hashes) > 1:
        text += "; the runs used different prompt sets (suite hashes differ): paired tests use shared prompts only"
    return text


def _forest(tb: tables.Table):
    key = tb.rank_key
    if key is None:
        return None
    col = tb.column(key)
    items = [(r.cells["model"].value, r.cells[key].value, r.cells[key].low, r.cells[key].high, r.cells[key].mark)
             for r in tb.rows]
    return plots.interval_plot(items, title=f"{col.label} with confidence intervals", scale=col.scale,
                               decimals=col.decimals)


def _category_plot(metric: str, tb: tables.Table):
    col = tb.column("value")
    items = [(r.cells["category"].value, r.cells["value"].value, r.cells["value"].low, r.cells["value"].high, None)
             for r in tb.rows]
    return plots.interval_plot(items, title=f"{metric} by category", scale=col.scale, decimals=col.decimals,
                               bars=True)


def chunk_prompts(categories: Sequence[str], cards_per_prompt: Sequence[int], limit: int = 4000) -> list[list[int]]:
    """Split prompts (indices, in order) into pages of at most `limit` cards. When each category's prompts
    are contiguous (GenEval, the shapes world), a new page also starts at a category change once the current
    page holds a quarter of the limit: ten GenEval runs (22,120 images) become about a page per task instead
    of one 30 MB page. A single page when everything fits."""
    if sum(cards_per_prompt) <= limit:
        return [list(range(len(categories)))]
    changes = sum(1 for a, b in itertools.pairwise(categories) if a != b)
    contiguous = changes + 1 == len(set(categories))
    parts: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, (cat, k) in enumerate(zip(categories, cards_per_prompt, strict=True)):
        new_category = contiguous and cat != categories[current[-1]] if current else False
        if current and (size + k > limit or (new_category and size >= limit // 4)):
            parts.append(current)
            current, size = [], 0
        current.append(i)
        size += k
    if current:
        parts.append(current)
    return parts


def _compare_pages(suite: str, fname: str, runs: list[Run], cards: CardCache, paired: PairedCache,
                   opts: BuildOptions) -> list[Page]:
    prompts = tables.shared_prompts(runs)
    metrics: list[str] = [m for m in runs[0].metrics if all(m in r.metrics for r in runs)]
    primary = runs[0].primary_metric if runs[0].primary_metric in metrics else (metrics[0] if metrics else None)
    sid = f"compare-{slugify(suite)}"
    info = runs[0].prompts()
    keys_of: list[dict[str, list[tuple[str, int]]]] = [{} for _ in runs]  # per run: prompt id -> its samples
    for j, r in enumerate(runs):
        for smp in sorted(r.samples, key=lambda x: x.sample_index):
            keys_of[j].setdefault(smp.prompt_id, []).append(smp.key)
    parts = chunk_prompts([info[p][1] or "" for p in prompts],
                          [sum(len(k.get(p, ())) for k in keys_of) for p in prompts], opts.cards_per_page)
    stem = fname.removesuffix(".html")
    part_files = [fname] if len(parts) == 1 else [f"{stem}-part{k + 1}.html" for k in range(len(parts))]
    file_of = {n: part_files[k] for k, part in enumerate(parts) for n in part}

    ptable = tables.paired_table(runs, metrics, paired, table_id=f"{sid}-paired", alpha=opts.alpha)
    cat_tables = [tables.category_compare_table(runs, m, table_id=f"{sid}-{m}-categories") for m in metrics]
    delta_tables = [tables.prompt_delta_table(runs, m, prompts, table_id=f"{sid}-{m}-prompts",
                                              href_of=lambda n: ("" if file_of[n] == fname else file_of[n]) + f"#p-{n}")
                    for m in metrics]
    diff_plots = []
    for m in metrics:
        items = []
        for row in ptable.rows:
            if row.cells["metric"].value == m:
                d = row.cells["diff"]
                items.append((f"{row.cells['run'].value} − {runs[0].name}", d.value, d.low, d.high,
                              "leader" if row.cells["verdict"].mark else "tied"))
        scale, decimals = display_format(suite, m, runs)
        diff_plots.append(plots.interval_plot(items, title=f"{m}: difference from the baseline (B − A)",
                                              scale=scale, decimals=decimals + 1, zero=0.0))
    scale, decimals = display_format(suite, primary, runs)
    means = [tables.prompt_means(r, primary) if primary else {} for r in runs]
    all_cats = sorted({info[p][1] for p in prompts if info[p][1]}, key=_category_order(runs[0]))

    def label(part: list[int]) -> str:
        cats = list(dict.fromkeys(info[prompts[n]][1] or "" for n in part))
        what = cats[0] if len(cats) == 1 and cats[0] else f"{len(cats)} categories"
        return f"{what}: prompts {part[0] + 1}–{part[-1] + 1}"

    def blocks(part: list[int]) -> dict[str, Any]:
        by_run = [cards.of(r) for r in runs]
        out = []
        for n in part:
            p = prompts[n]
            text, cat = info[p]
            cols = []
            for j, r in enumerate(runs):
                items = [by_run[j][key] for key in keys_of[j].get(p, [])]  # this run's images of p, in order
                mean = means[j].get(p)
                base = means[0].get(p)
                delta = mean - base if j and is_number(mean) and is_number(base) else None
                cols.append({"run": r, "cards": items, "mean": mean, "delta": delta})
            vals = [c["mean"] for c in cols if is_number(c["mean"])]
            out.append({"n": n, "prompt_id": p, "prompt": text, "category": cat or "", "cols": cols,
                        "differ": len(vals) > 1 and max(vals) - min(vals) > 1e-12, "search": text.lower()})
        cats = sorted({b["category"] for b in out if b["category"]}, key=_category_order(runs[0]))
        return {"blocks": out, "categories": cats}

    key = [*(f"{r.fingerprint()}:{r.name}:{r.slug}" for r in runs),
           _published_digest(cards.published, [s.sha256 for r in runs for s in r.samples])]
    common = {"suite": suite, "runs": runs, "prompts": prompts, "primary": primary, "scale": scale,
              "decimals": decimals, "main": fname, "categories_all": all_cats,
              "parts": [(label(part), part_files[k], len(part)) for k, part in enumerate(parts)]}
    main = Page(fname, "compare.html.j2", {**common, "paired_table": ptable, "diff_plots": diff_plots,
                                          "cat_tables": cat_tables, "delta_tables": delta_tables,
                                          "inline": len(parts) == 1},
                tables=[ptable, *cat_tables, *delta_tables], key=key,
                lazy=(lambda: blocks(parts[0])) if len(parts) == 1 else (lambda: {"blocks": [], "categories": []}))
    if len(parts) == 1:
        return [main]
    out = [main]
    for k, part in enumerate(parts):
        out.append(Page(part_files[k], "compare_part.html.j2", {**common, "part": k, "part_label": label(part)},
                        key=[*key, str(k)], lazy=functools.partial(blocks, part)))
    return out


KEY_CHARTS = ("reward", "kl", "clip_frac", "guard", "objects", "eval")
"""Chart groups shown first on a training report; the others are folded, constant series listed."""


def _train_context(lg: TrainLog, published) -> dict[str, Any]:
    charts, more, constants = [], [], []
    for title, members in plots.chart_groups(lg.numeric_keys()):
        series = [(label, lg.series(key)) for key, label in members]
        values = {y for _, pts in series for _, y in pts}
        if len(values) == 1 and sum(len(pts) for _, pts in series) > 1:   # a flat line says one number
            constants.append((title, next(iter(values))))
            continue
        chart = plots.line_chart(series, title=title, legend="*" in title, smooth=True)
        (charts if title.split("/")[0] in KEY_CHARTS else more).append(chart)
    if lg.warmstart:   # the supervised phase before RL: its own step axis, first
        charts.insert(0, plots.line_chart([("loss", lg.warmstart)], title="warm start: loss (supervised, before RL)",
                                          x_label="warm-start step", smooth=True))
    summary = tables.training_summary_table(lg)
    stage = tables.stage_table(lg)
    tbls = [summary] + ([stage] if stage is not None else [])
    last = lg.rows[-1] if lg.rows else {}
    return {"log": lg, "charts": charts, "more_charts": more, "constants": constants, "summary": summary,
            "stage": stage, "all_tables": tbls,
            "steps": gallery.train_steps(lg, published), "n_rows": len(lg.rows),
            "last_step": last.get("step"), "config_text": lg.config_text, "problems": lg.problems[:20]}


def unique_experiments(exps: list[Any]) -> list[Any]:
    """Experiments whose files share a name (`a/hierarchy.json`, `b/hierarchy.json`) each get their own
    page, named with their folder, instead of one silently overwriting the other; the same file given
    twice is one page."""
    from paintbench.leaderboards.model import slugify

    seen_paths: set[Path] = set()
    out = []
    for e in exps:
        key = e.path.resolve()
        if key not in seen_paths:
            seen_paths.add(key)
            out.append(e)
    taken: dict[str, int] = {}
    for e in out:
        taken[e.slug] = taken.get(e.slug, 0) + 1
    used: set[str] = set()
    for e in out:
        if taken[e.slug] > 1:
            e.name = f"{e.path.stem} ({e.path.parent.name or '.'})"
            slug, n = f"experiment-{slugify(e.name)}", 2
            while slug in used:
                slug, n = f"experiment-{slugify(e.name)}-{n}", n + 1
            e.slug = slug
        used.add(e.slug)
    return out
