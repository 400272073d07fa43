"""A benchmark run: generate the suite's images, score them with its metrics, aggregate with CIs.

Two phases, each resumable on its own: generation appends one record per image to this rank's part
file as soon as the image is on disk; scoring appends one record per (metric, image). Re-running the
same command skips everything already recorded, so nothing is generated or scored twice and nothing
is lost; the merged files and `results.json` equal those of an uninterrupted run.

Under `torchrun`/`accelerate launch` each rank takes a strided shard of the prompts, and rank 0
merges and aggregates. Seeds depend only on (run seed, prompt id, sample index).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from paintbench.errors import InputError, UserError
from paintbench.harness.aggregate import aggregate_metric
from paintbench.harness.config import EvalConfig
from paintbench.harness.dist import Dist, derive_seed, shard
from paintbench.harness.generators import GENERATORS, make_generator, parse_spec
from paintbench.harness.generators.base import GeneratorError, Request
from paintbench.harness.records import read_scores
from paintbench.harness.rundir import JsonlAppender, RunDir, write_json
from paintbench.harness.suite import PromptItem, Suite, SuiteMetric, load_suite, stratified_sample
from paintbench.metrics.images import frames_of
from paintbench.metrics.weights import weights_notes


def run_eval(cfg: EvalConfig, *, rescore: list[str] | None = None, suite: Suite | None = None,
             providers: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Run (or resume) an evaluation; returns results.json's content on rank 0, None on other ranks.

    `suite` is a suite built in memory (a user's folder read by `harness.folders`); by default the
    suite is loaded by `cfg.suite`'s name or path. `providers` (metric name -> a provider already
    built, e.g. to evaluate many runs with one loaded model) are used instead of building them; their
    provenance is checked against the run's like any other."""
    import paintbench.metrics as M

    started = time.time()
    if not (cfg.suite or suite) or not cfg.out:
        raise UserError("eval needs a suite and --out")
    suite = suite or load_suite(cfg.suite, cfg.include_path)
    items = stratified_sample(suite.items, cfg.limit, cfg.seed) if cfg.limit else suite.items
    ipp = cfg.images_per_prompt or suite.images_per_prompt
    rescore = [M.spec(m).name for m in rescore or []]  # unknown names fail now, aliases resolve
    metrics_ = _metrics(suite, cfg, extra=rescore)
    for m in metrics_:  # a prompt a metric cannot score is found now, not after the models load
        M.require_valid_metadata(m.name, [it.metadata for it in items], f"suite {suite.name}")
    kind, _ = parse_spec(cfg.generator)
    if not rescore and kind not in GENERATORS:
        make_generator(cfg.generator, {}, suite)  # raises the "unknown generator, did you mean" error
    rd = RunDir(cfg.out)
    if rd.root.exists() and not rd.root.is_dir():
        raise UserError(f"--out {rd.root}: a file, not a run directory")
    if rescore and not rd.config_path.exists():
        raise UserError(f"--rescore: {cfg.out} is not an existing run")
    dist = Dist.from_env(cfg.device)
    held = contextlib.ExitStack()  # rank 0 holds the run directory's lock for the whole job
    try:
        device = dist.device(cfg.device)
        identity = {
            "suite": suite.name, "suite_version": suite.version, "suite_hash": suite.suite_hash(),
            "generator": cfg.generator, "generator_options": cfg.generator_options, "seed": cfg.seed,
            "images_per_prompt": ipp, "n_prompts": len(items),
        }
        if cfg.limit:  # which prompts a limited run has (the sampling may change between versions)
            identity["prompt_ids_sha256"] = hashlib.sha256("\x1f".join(it.id for it in items).encode()).hexdigest()
        if dist.is_main:
            def setup() -> None:
                held.enter_context(rd.lock())  # a second job on this --out stops here, and so do its ranks
                rd.prepare(_config_doc(cfg, suite, metrics_), identity=identity)

            _on_all_ranks(dist, "setup", setup)
        else:
            _on_all_ranks(dist, "setup", lambda: rd.check_identity(identity))
        if dist.is_main:
            if not rescore:  # failures of earlier attempts are retried now; forget them
                for f in rd.root.glob("parts/generation_failures.rank*.jsonl"):
                    f.unlink()
            rd.log("start", rank=dist.rank, world_size=dist.world_size, rescore=rescore)
        mine = shard(items, dist.rank, dist.world_size)
        show = cfg.progress and dist.is_main
        t_gen = time.time()
        if not rescore:
            _on_all_ranks(dist, "generation", lambda: generate_phase(rd, suite, mine, ipp, cfg, dist, device, show))
        t_score = time.time()
        for m in metrics_:
            if rescore and m.name not in rescore:
                continue
            # --rescore writes beside the old scores (`<metric>@rescore`) and swaps them in only when
            # complete: an interrupted rescore leaves the run as it was (and resumes when run again)
            store = staged(m.name) if m.name in rescore else m.name
            given = (providers or {}).get(m.name)
            _on_all_ranks(dist, f"scoring {m.name}", lambda m=m, given=given, store=store: score_phase(
                rd, suite, mine, m, cfg, dist, device, show, provider=given, store=store))
        results = None
        if dist.is_main:
            order = [(it.id, k) for it in items for k in range(it.n_samples(ipp))]
            rd.merge(order, [m.name for m in metrics_] + [staged(m) for m in rescore])
            for m in rescore:
                rd.promote_scores(staged(m), m)
            results = build_results(rd, suite, items, ipp, metrics_, cfg, dist, timing={
                "wall_s": time.time() - started, "generation_s": t_score - t_gen, "scoring_s": time.time() - t_score})
            write_json(rd.results_path, results)
            rd.log("done", wall_s=time.time() - started)
        dist.barrier()
        return results
    finally:
        held.close()
        dist.close()


def say(message: str) -> None:
    """A line for the person running the job (stderr; plain text in logs)."""
    print(message, file=sys.stderr, flush=True)


def _on_all_ranks(dist: Dist, what: str, fn) -> None:
    """Run `fn` on every rank; if it fails on any rank, every rank stops (no rank is left waiting at a
    barrier) and the failing rank's error is raised there."""
    error: BaseException | None = None
    try:
        fn()
    except Exception as e:
        error = e
    if not dist.all_ok(error is None):
        if error is not None:
            raise error
        raise UserError(f"another rank failed during {what}; fix it and rerun the same command to resume")
    dist.barrier()


def _metrics(suite: Suite, cfg: EvalConfig, extra: list[str] | None = None) -> list[SuiteMetric]:
    import paintbench.metrics as M

    by_name = {M.spec(m.name).name: m for m in suite.metrics}
    names = [M.spec(n).name for n in cfg.metrics] if cfg.metrics else list(by_name)
    names += [n for n in extra or [] if n not in names]  # --rescore may add a metric the run lacked
    for name in cfg.metric_options:
        if M.spec(name).name not in names:
            raise UserError(f"--metric-opt for {name!r}, which this run does not score ({', '.join(names)})")
    chosen = [by_name.get(n, SuiteMetric(name=n)) for n in names]
    out = []
    for m in chosen:
        name = M.spec(m.name).name  # unknown names fail now, before any work
        options = {**m.options, **cfg.metric_options.get(name, {})}
        out.append(SuiteMetric(name=name, aggregation=m.aggregation, primary=m.primary, options=options))
    return out


def _config_doc(cfg: EvalConfig, suite: Suite, metrics_: list[SuiteMetric]) -> dict[str, Any]:
    from paintbench.config import to_dict

    return {"eval": to_dict(cfg), "suite": suite.to_dict(),
            "metrics": [{"name": m.name, "aggregation": m.aggregation, "primary": m.primary, "options": m.options}
                        for m in metrics_]}


# -- generation ------------------------------------------------------------------------------------
def generate_phase(rd: RunDir, suite: Suite, mine: list[PromptItem], ipp: int, cfg: EvalConfig, dist: Dist,
                   device: str, show: bool) -> None:
    """Generate every missing sample of this rank's prompts. For a grid suite (DPG: 2×2) a sample is
    one grid image composed of rows×cols tiles, tile t of sample k seeded by (run seed, prompt id,
    k·tiles + t)."""
    done, problems = rd.samples_done()
    for p in problems:
        rd.log("repair", message=p)
    rows, cols = (int(suite.grid["rows"]), int(suite.grid["cols"])) if suite.grid else (1, 1)
    tiles, size = rows * cols, suite.image_size
    units = [Request(item=it, sample_index=k, seed=derive_seed(cfg.seed, it.id, k), width=cols * size,
                     height=rows * size) for it in mine for k in range(it.n_samples(ipp)) if (it.id, k) not in done]
    total = sum(it.n_samples(ipp) for it in mine)
    if dist.is_main and len(units) < total:
        say(f"resuming: {total - len(units)} of {total} images already generated"
            + ("" if units else "; nothing left to generate"))
    if not units:
        return
    gen = make_generator(cfg.generator, cfg.generator_options, suite, device=device)
    settings = json.loads(json.dumps(gen.settings(), default=str))  # as it will read back from disk
    earlier = next(iter(done.values()), None)
    if earlier is not None and earlier.get("generation") != settings:
        diff = _provenance_diff(earlier.get("generation") or {}, settings)
        raise UserError(f"{rd.root}: its images were generated with other settings ({'; '.join(diff)}); "
                        "finish it with the same generator, or use a new --out")
    from tqdm import tqdm

    bar = tqdm(total=len(units), desc="read images" if gen.brings_files else "generate", unit="img",
               disable=not show, file=sys.stderr)
    failures = []
    with JsonlAppender(rd.sample_part(dist.rank)) as log:
        if gen.brings_files:  # existing files (whole grids): one missing file is that sample's problem
            for u in units:
                try:
                    log.append(_save_sample(rd, u, gen.generate([u])[0], settings, check_size=False))
                except (GeneratorError, OSError) as e:  # missing or unreadable file: that sample only
                    failures.append({"prompt_id": u.item.id, "sample_index": u.sample_index,
                                     "error": str(e) if isinstance(e, GeneratorError) else f"{type(e).__name__}: {e}"})
                bar.update(1)
        else:
            per_batch = max(1, gen.batch_size // tiles)
            for start in range(0, len(units), per_batch):
                batch = units[start : start + per_batch]
                tile_requests = [
                    Request(item=u.item, sample_index=u.sample_index, width=size, height=size,
                            seed=u.seed if tiles == 1 else derive_seed(cfg.seed, u.item.id, u.sample_index * tiles + t))
                    for u in batch for t in range(tiles)]
                outs = _call_generator(gen, tile_requests)
                for j, u in enumerate(batch):
                    part = outs[j * tiles : (j + 1) * tiles]
                    if tiles == 1:
                        log.append(_save_sample(rd, u, part[0], settings, check_size=True))
                    else:
                        grid = compose_grid([_to_pil(t, r) for t, r in zip(part, tile_requests[j * tiles:], strict=False)],
                                            rows, cols, size, u)
                        rec = _save_sample(rd, u, grid, settings, check_size=True)
                        rec["tile_seeds"] = [r.seed for r in tile_requests[j * tiles : (j + 1) * tiles]]
                        log.append(rec)
                bar.update(len(batch))
    bar.close()
    if failures:
        with JsonlAppender(rd.parts / f"generation_failures.rank{dist.rank:05d}.jsonl") as f:
            for rec in failures:
                f.append(rec)


def compose_grid(tiles: list[Image.Image], rows: int, cols: int, size: int, r: Request) -> Image.Image:
    """Tiles in reading order (TL, TR, BL, BR for 2×2) into one (cols·size)×(rows·size) image."""
    grid = Image.new("RGB", (cols * size, rows * size))
    for t, tile in enumerate(tiles):
        if tile.size != (size, size):
            raise GeneratorError(f"generator returned a {tile.size[0]}x{tile.size[1]} tile for prompt {r.item.id}; "
                                 f"the suite asks for {size}x{size} tiles")
        grid.paste(tile, ((t % cols) * size, (t // cols) * size))
    return grid


def _call_generator(gen, batch: list[Request]) -> list[Any]:
    try:
        outs = gen.generate(batch)
    except (UserError, GeneratorError):
        raise
    except Exception as e:  # a bug in the generator's code: keep its traceback, say where and what is kept
        ids = ", ".join(f"{r.item.id}#{r.sample_index}" for r in batch[:4])
        e.add_note(f"paintbench: generator {gen.kind} failed on {ids}; finished images are kept, rerun the "
                   "same command to resume")
        raise
    if outs is None or len(outs) != len(batch):
        got = "None" if outs is None else len(outs)
        raise GeneratorError(f"generator {gen.kind} returned {got} images for {len(batch)} prompts")
    return list(outs)


def _save_sample(rd: RunDir, r: Request, img: Any, settings: dict[str, Any], *, check_size: bool) -> dict[str, Any]:
    if isinstance(img, (str, Path)):
        path = Path(img)
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
                w, h = im.size
        except Exception as e:
            why = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "its bytes", str(e))
            raise OSError(f"{path}: not a readable image ({type(e).__name__}: {why})") from e
        image_ref = str(path)
    else:
        pil = _to_pil(img, r)
        w, h = pil.size
        if check_size and (w, h) != (r.width, r.height):
            raise GeneratorError(f"generator returned a {w}x{h} image for prompt {r.item.id} sample "
                                 f"{r.sample_index}; the suite asks for {r.width}x{r.height}")
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        data = buf.getvalue()
        path = rd.image_path(r.item.id, r.sample_index)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:  # on disk before its record is: a crash never leaves a record without it
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise UserError(f"cannot save {path} ({e.strerror or e}); fix that (disk full? permissions?) and "
                            "rerun the same command to resume") from e
        image_ref = rd.rel(path)
    return {
        "prompt_id": r.item.id, "sample_index": r.sample_index, "seed": r.seed, "prompt": r.item.prompt,
        "category": r.item.category, "generation": settings, "image": image_ref,
        "sha256": hashlib.sha256(data).hexdigest(), "width": w, "height": h,
    }


def _to_pil(img: Any, r: Request) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.dim() != 3 or t.shape[0] != 3:
            raise GeneratorError(f"generator returned a tensor of shape {tuple(t.shape)} for prompt {r.item.id}; "
                                 "expected [3,H,W]")
        if t.dtype != torch.uint8:
            t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return Image.fromarray(t.permute(1, 2, 0).numpy())
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            if not np.issubdtype(img.dtype, np.floating):
                raise GeneratorError(f"generator returned a {img.dtype} array for prompt {r.item.id}; expected "
                                     "uint8 (0-255) or float (0-1)")
            img = (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)
        return Image.fromarray(img).convert("RGB")
    raise GeneratorError(f"generator returned a {type(img).__name__} for prompt {r.item.id}; expected a PIL "
                         "image, a [3,H,W] tensor or a path")


# -- scoring -----------------------------------------------------------------------------------------
def staged(metric: str) -> str:
    """Where `--rescore metric` writes until it is complete."""
    return f"{metric}@rescore"


def score_phase(rd: RunDir, suite: Suite, mine: list[PromptItem], m: SuiteMetric, cfg: EvalConfig, dist: Dist,
                device: str, show: bool, provider: Any = None, store: str | None = None) -> None:
    """Score this rank's samples that have no score yet (a recorded error is retried), into the files
    of `store` (default: the metric's own; `staged(...)` while rescoring)."""
    store = store or m.name
    samples, _ = rd.samples_done()
    scored, problems = rd.scores_done(store)
    for p in problems:
        rd.log("repair", message=p)
    my_ids = {it.id for it in mine}
    meta = {it.id: it.metadata for it in mine}
    pending = [s for k, s in sorted(samples.items())
               if k[0] in my_ids and (k not in scored or scored[k].get("error"))]
    _check_requested_settings(rd, m, cfg, scored, write=dist.is_main, store=store)
    mine_total = sum(1 for k in samples if k[0] in my_ids)
    if dist.is_main and mine_total and len(pending) < mine_total:
        say(f"resuming {m.name}: {mine_total - len(pending)} of {mine_total} images already scored"
            + ("" if pending else "; nothing left to score (no model loaded)"))
    if not pending:
        return
    from tqdm import tqdm

    provider = provider or _provider(m, cfg, device)
    prov_path = rd.root / "scores" / f"{store}.provenance.json"
    current = weights_notes(provider.provenance())  # synthetic weights and non-official files say so
    if any(not r.get("error") for r in scored.values()) and prov_path.exists():
        before = json.loads(prov_path.read_text(encoding="utf-8"))
        diff = _provenance_diff(before, current)
        if diff:
            raise UserError(f"{rd.root}: {m.name} scores on disk were made with other settings ({'; '.join(diff)}); "
                            f"rerun with the original settings, or recompute them all with --rescore {m.name}")
    if dist.is_main:
        prov_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(prov_path, current)
    bar = tqdm(total=len(pending), desc=f"score {m.name}", unit="img", disable=not show, file=sys.stderr)
    batches = [pending[i : i + cfg.batch_size] for i in range(0, len(pending), cfg.batch_size)]
    decode = getattr(provider, "decode", None)  # plugins without the hook get paths
    with JsonlAppender(rd.score_part(store, dist.rank)) as log, ThreadPoolExecutor(DECODE_WORKERS) as pool:
        def submit(batch: list[dict[str, Any]]) -> list[Future[Any]]:
            return [pool.submit(_decode, decode, rd.resolve_image(s["image"]), s.get("sha256")) for s in batch]

        ahead = deque(submit(b) for b in batches[:DECODE_AHEAD])
        for n, batch in enumerate(batches):
            decoded = [f.result() for f in ahead.popleft()]
            if n + DECODE_AHEAD < len(batches):
                ahead.append(submit(batches[n + DECODE_AHEAD]))
            for rec in _score_batch(provider, batch, decoded, meta):
                log.append(rec)
            bar.update(len(batch))
    bar.close()


DECODE_AHEAD = 2  # batches decoded on threads while the device scores the current one
DECODE_WORKERS = 4


def _decode(decode: Any, path: Path, recorded_sha256: str | None) -> Any:
    """The decoded image, the path itself (a provider without `decode`), or the error, named. A file
    whose bytes no longer match the sha256 its sample recorded is an error: scoring the replacement under
    the old record would publish numbers for an image nobody generated."""
    try:
        data = path.read_bytes() if recorded_sha256 else None
        if data is not None:
            got = hashlib.sha256(data).hexdigest()
            if got != recorded_sha256:
                raise InputError(f"{path}: the file changed since it was recorded (sha256 {got[:12]}..., the "
                                 f"run recorded {recorded_sha256[:12]}...); restore it, or score the new images "
                                 "into a new --out")
        image = str(path) if decode is None else decode(path)
        frames = frames_of(io.BytesIO(data) if data is not None else path)  # the bytes already read
        note = f"animated image ({frames} frames): scored on its first frame" if frames > 1 else None
        return Decoded(image, note)
    except Exception as e:  # recorded on that sample with its type and message; the others go on
        return e


@dataclass
class Decoded:
    image: Any  # what the provider scores: a PIL image, or the path for a provider without `decode`
    note: str | None = None  # said in the sample's details (e.g. an animated image's first frame)


# options that name files: what they hold is compared through the provenance's sha256 instead
_FILE_OPTIONS = ("weights", "questions", "answers_path")


def _check_requested_settings(rd: RunDir, m: SuiteMetric, cfg: EvalConfig, scored: dict[Any, dict[str, Any]], *,
                              write: bool, store: str) -> None:
    """Refuse scores made with other options or dtype *before* loading any model, even when nothing is
    left to score (a finished run asked again with `--threshold 0.5` must not print the old numbers).
    The provenance check after loading adds what only the model knows (weights sha256, versions)."""
    path = rd.root / "scores" / f"{store}.request.json"
    wanted = json.loads(json.dumps({"options": {k: v for k, v in m.options.items() if k not in _FILE_OPTIONS},
                                    "dtype": cfg.dtype}, default=str))
    if any(not r.get("error") for r in scored.values()) and path.exists():
        diff = _provenance_diff(json.loads(path.read_text(encoding="utf-8")), wanted)
        if diff:
            raise UserError(f"{rd.root}: {m.name} scores on disk were made with other settings ({'; '.join(diff)}); "
                            f"rerun with the original settings, or recompute them all with --rescore {m.name} "
                            "(for `paintbench geneval`, `dpg eval` and `score`: a new --out)")
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, wanted)


def _provider(m: SuiteMetric, cfg: EvalConfig, device: str):
    import paintbench.metrics as M

    if cfg.score_server:   # the same provider contract, served by `paintbench serve` (metrics.remote)
        from paintbench.metrics.remote import RemoteProvider, read_token

        return RemoteProvider(cfg.score_server, m.name, token=read_token(cfg.score_token_file),
                              options=dict(m.options))
    try:
        return M.get(m.name, device=device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                     weights_dir=cfg.weights_dir, **m.options)
    except TypeError as e:
        raise UserError(f"metric {m.name}: unsupported options {m.options} ({e})") from e


def _provenance_diff(before: Any, after: Any, where: str = "") -> list[str]:
    """Differences that change scores (versions, options, weights sha256), ignoring file locations."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after)):
            if k in ("path", "file", "questions", "synthetic", "synthetic_weights", "official_sha256_mismatch"):
                continue
            out += _provenance_diff(before.get(k), after.get(k), f"{where}.{k}" if where else str(k))
        return out
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


def _score_batch(provider, batch: list[dict[str, Any]], decoded: list[Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One score record per sample of `batch`, in order. A sample fails alone: an image that could not
    be decoded, a sample without a prompt for a metric that needs one (never scored on ""), or a
    failure inside the provider (`score_each` pins it on the sample that caused it)."""
    records: list[dict[str, Any]] = []
    usable = []
    for s, image in zip(batch, decoded, strict=True):
        rec = {"prompt_id": s["prompt_id"], "sample_index": s["sample_index"], "value": None, "details": {}}
        if isinstance(image, Exception):
            why = str(image) if isinstance(image, UserError) else f"{type(image).__name__}: {image}"
            rec["error"] = why if s["image"] in why else f"{s['image']}: {why}"
        elif s.get("prompt") is None and provider.needs_prompt:
            rec["error"] = f"{s['image']}: no prompt (needed by {provider.name})"
        else:
            usable.append(len(records))
        records.append(rec)
    if usable:
        chosen = [batch[i] for i in usable]
        prompts = [s.get("prompt") or "" for s in chosen]
        metadata = [meta.get(s["prompt_id"]) or {} for s in chosen]
        results = provider.score_each([decoded[i].image for i in usable], prompts, metadata)
        for i, (v, d, err) in zip(usable, results, strict=True):
            if decoded[i].note:
                d = {**d, "note": decoded[i].note}
            records[i].update(value=v, details=d)
            if err is not None:
                records[i]["error"] = f"{batch[i]['image']}: {err}"
    return records


# -- results -----------------------------------------------------------------------------------------
def build_results(rd: RunDir, suite: Suite, items: list[PromptItem], ipp: int, metrics_: list[SuiteMetric],
                  cfg: EvalConfig, dist: Dist, *, timing: dict[str, float]) -> dict[str, Any]:
    import paintbench.metrics as M
    from paintbench.harness.rundir import read_jsonl

    category_of = {it.id: it.category for it in items}
    samples, _ = read_jsonl(rd.samples_path)
    gen_failures = rd.generation_failures()
    out_metrics = {}
    for m in metrics_:
        records, _ = read_scores(rd.scores_path(m.name), m.name, known_prompts=category_of)
        res = aggregate_metric(records, category_of, aggregation=m.aggregation, categories=suite.categories,
                               n_resamples=cfg.n_resamples, confidence=cfg.confidence, seed=cfg.seed,
                               set_value=M.spec(m.name).set_value)
        res.update(metric_summary(m.name, records))
        res["primary"] = m.primary
        res["higher_is_better"] = M.spec(m.name).higher_is_better  # so a site ranks it without the plugin
        # what the headline was computed from: a site or report refuses a results.json whose scores were
        # swapped afterwards (a --rescore killed between the swap and this file)
        res["scores_sha256"] = scores_digest(rd.scores_path(m.name))
        res["options"] = m.options
        res["n_expected"] = suite.n_samples(items, ipp)
        errors = [r["error"] for r in records if r.get("error")]
        res["errors"] = errors[:50] + ([f"... and {len(errors) - 50} more (scores/{m.name}.jsonl has them all)"]
                                       if len(errors) > 50 else [])
        res["n_errors"] = len(errors)
        prov = rd.root / "scores" / f"{m.name}.provenance.json"
        res["provenance"] = json.loads(prov.read_text()) if prov.exists() else None
        out_metrics[m.name] = res
    primary = next((m.name for m in metrics_ if m.primary), metrics_[0].name)
    return {
        "format_version": 1,
        "run_name": cfg.name or Path(cfg.out).resolve().name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "suite": {"name": suite.name, "version": suite.version, "hash": suite.suite_hash(),
                  "n_prompts": len(items), "n_prompts_suite": len(suite.items), "images_per_prompt": ipp,
                  "categories": suite.categories,
                  "leaderboard": suite.leaderboard},
        "generator": samples[0]["generation"] if samples else {"generator": parse_spec(cfg.generator)[0]},
        "seed": cfg.seed,
        "primary_metric": primary,
        "metrics": out_metrics,
        "n_samples": len(samples),
        "generation_failures": [f["error"] for f in gen_failures],
        "environment": environment(dist),
        "timing": timing,
    }


def metric_summary(name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Metric-specific aggregates a provider class offers through `summarize_records(records)` (DPG's
    category scores, whose categories belong to questions, not prompts); overrides generic fields."""
    import paintbench.metrics as M

    module, _, attr = M.spec(name).target.partition(":")
    hook = getattr(getattr(importlib.import_module(module), attr), "summarize_records", None)
    return hook(records) if hook is not None else {}


def environment(dist: Dist) -> dict[str, Any]:
    from paintbench import __version__

    hw: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"paintbench": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": git_commit(), "hardware": hw, "world_size": dist.world_size}


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def scores_digest(path: Path) -> str | None:
    """sha256 of a scores file (None when there is none)."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
