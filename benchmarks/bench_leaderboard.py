"""How long `paintbench leaderboard` takes for many big runs: first build, cached rebuild, one run rescored.

By default it writes N synthetic run directories shaped like GenEval runs (553 prompts x 4 images =
2,212 images of 512x512 each, six categories, per-image verdicts, reasons and detected boxes, results.json
with intervals), in the harness's run-directory format, once, under --work (kept for later invocations).
`--runs DIR...` benchmarks existing run directories instead (e.g. real `paintbench eval` runs).

    .venv/bin/python benchmarks/bench_leaderboard.py                      # 10 runs x 2,212 images
    .venv/bin/python benchmarks/bench_leaderboard.py --n-runs 3 --prompts 100
    .venv/bin/python benchmarks/bench_leaderboard.py --runs /tmp/lb/oracle /tmp/lb/random --browser

It prints the wall time of each build and its phases, the site's size, the largest pages, and with
`--browser` how long the biggest run page and the comparison page take to load in headless Chromium.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from paintbench.leaderboards.build import BuildOptions, build_site  # noqa: E402

CATEGORIES = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
RGB = {"red": (220, 30, 30), "orange": (240, 140, 20), "yellow": (240, 220, 30), "green": (30, 160, 60),
       "blue": (30, 60, 220), "purple": (130, 40, 160), "pink": (240, 120, 190), "brown": (120, 70, 30),
       "black": (10, 10, 10), "white": (250, 250, 250)}
OBJECTS = ["dog", "cat", "car", "cup", "chair", "bench", "clock", "apple", "bird", "boat"]


def synthetic_run(root: Path, name: str, *, prompts: int, images_per_prompt: int, size: int, skill: float,
                  seed: int) -> Path:
    """A finished run directory in the harness's format, with unique images (PNG, fast compression)."""
    if (root / "results.json").exists():
        return root
    rng = random.Random(seed)
    (root / "scores").mkdir(parents=True, exist_ok=True)
    samples, scores = [], []
    per_cat: dict[str, list[float]] = {c: [] for c in CATEGORIES}
    for p in range(prompts):
        cat = CATEGORIES[p % len(CATEGORIES)]
        obj = OBJECTS[p % len(OBJECTS)]
        colour = COLOURS[(p // len(OBJECTS)) % len(COLOURS)]
        prompt = f"a photo of a {colour} {obj}" if cat in ("colors", "color_attr") else f"a photo of a {obj}"
        pid = f"{p:05d}"
        for k in range(images_per_prompt):
            img = Image.new("RGB", (size, size), (128 + rng.randint(-20, 20),) * 3)
            draw = ImageDraw.Draw(img)
            dets: dict[str, list[dict]] = {}
            for _ in range(rng.randint(1, 4)):
                c = rng.choice(COLOURS)
                x, y, w = rng.randint(0, size - 80), rng.randint(0, size - 80), rng.randint(30, 80)
                draw.rectangle([x, y, x + w, y + w], fill=RGB[c])
                dets.setdefault(rng.choice(OBJECTS), []).append(
                    {"box": [float(x), float(y), float(x + w), float(y + w)], "colour": c, "score": 0.9})
            buf = io.BytesIO()
            img.save(buf, format="PNG", compress_level=1)
            data = buf.getvalue()
            rel = f"images/{pid}/{k:05d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
            ok = rng.random() < skill
            samples.append({"prompt_id": pid, "sample_index": k, "seed": rng.getrandbits(32), "prompt": prompt,
                            "category": cat, "generation": {"generator": "synthetic", "skill": skill},
                            "image": rel, "sha256": hashlib.sha256(data).hexdigest(), "width": size, "height": size})
            scores.append({"prompt_id": pid, "sample_index": k, "value": float(ok), "details": {
                "correct": ok, "reason": "" if ok else f"expected {obj}>=1, found 0", "tag": cat,
                "detections": dets}})
            per_cat[cat].append(float(ok))
    (root / "samples.jsonl").write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in samples))
    (root / "scores" / "geneval.jsonl").write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in scores))

    def est(vals: list[float]) -> dict:
        m = sum(vals) / len(vals)
        half = 1.96 * (m * (1 - m) / max(1, len(vals) / images_per_prompt)) ** 0.5
        return {"value": m, "ci": [max(0.0, m - half), min(1.0, m + half)], "n_prompts": len(vals) // images_per_prompt,
                "n_samples": len(vals)}

    cats = {c: est(v) for c, v in per_cat.items() if v}
    overall = sum(c["value"] for c in cats.values()) / len(cats)
    results = {
        "format_version": 1, "run_name": name, "date": "2026-01-01T00:00:00Z",
        "suite": {"name": "geneval", "version": 1, "hash": "synthetic", "n_prompts": prompts,
                  "images_per_prompt": images_per_prompt, "categories": CATEGORIES},
        "generator": {"generator": "synthetic", "skill": skill}, "seed": seed, "primary_metric": "geneval",
        "metrics": {"geneval": {"aggregation": "macro", "n_failed": 0, "confidence": 0.95, "n_resamples": 10000,
                                "value": overall, "ci": [overall - 0.02, overall + 0.02], "n_prompts": prompts,
                                "n_samples": len(samples), "categories": cats, "primary": True,
                                "options": {"mode": "correct"},
                                "provenance": {"metric": "geneval", "version": "geneval/1"}}},
        "n_samples": len(samples), "generation_failures": [],
        "environment": {"paintbench": "bench", "git_commit": "0" * 40}, "timing": {},
    }
    (root / "config.yaml").write_text("synthetic: true\n")
    (root / "results.json").write_text(json.dumps(results, indent=1))
    return root


def tree_size(path: Path) -> int:
    seen: set[int] = set()
    total = 0
    for f in path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            st = f.stat()
            if st.st_ino not in seen:  # hard links count once
                seen.add(st.st_ino)
                total += st.st_size
    return total


def browser_load_times(site: Path, pages: list[Path]) -> list[tuple[str, float]]:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    out = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        page = b.new_page(viewport={"width": 1280, "height": 900})
        for f in pages:
            t = time.perf_counter()
            page.goto(f.as_uri())
            page.wait_for_load_state("load")
            page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            out.append((f.name, time.perf_counter() - t))
        b.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", help="existing run directories (instead of synthetic ones)")
    ap.add_argument("--n-runs", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=553)
    ap.add_argument("--images-per-prompt", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--work", default="/tmp/paintbench-bench-leaderboard", help="synthetic runs are kept here")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--n-resamples", type=int, default=10_000)
    ap.add_argument("--browser", action="store_true", help="also time page loads in headless Chromium")
    args = ap.parse_args()

    work = Path(args.work)
    if args.runs:
        runs = [Path(r) for r in args.runs]
    else:
        t = time.perf_counter()
        runs = []
        for i in range(args.n_runs):
            tag = f"p{args.prompts}x{args.images_per_prompt}-s{args.size}"
            runs.append(synthetic_run(work / "runs" / f"{tag}-run{i:02d}", f"model-{i:02d}", prompts=args.prompts,
                                      images_per_prompt=args.images_per_prompt, size=args.size,
                                      skill=0.3 + 0.05 * i, seed=i))
        print(f"runs ready in {time.perf_counter() - t:.1f}s ({len(runs)} x {args.prompts * args.images_per_prompt} "
              f"images)")
    site = work / "site"
    shutil.rmtree(site, ignore_errors=True)
    opts = BuildOptions(jobs=args.jobs, n_resamples=args.n_resamples)
    n_images = sum(len((Path(r) / "samples.jsonl").read_text().splitlines()) for r in runs)
    print(f"{len(runs)} runs, {n_images} images, {os.cpu_count()} CPU cores")
    results = []
    for label in ("first build (empty site)", "rebuild (cached)", "rebuild after one run was rescored"):
        if label.startswith("rebuild after"):
            scores = next((Path(runs[0]) / "scores").glob("*.jsonl"))
            os.utime(scores)  # a rescore rewrites the file: new mtime, so its paired tests are redone
        t = time.perf_counter()
        report = build_site(runs, [], site, opts)
        wall = time.perf_counter() - t
        results.append((label, wall, report))
        print(f"{label:<38} {wall:7.2f}s   {report.summary()}")
    pages = sorted(site.glob("*.html"), key=lambda p: p.stat().st_size, reverse=True)
    print(f"site size {tree_size(site) / 1e6:.1f} MB (hard links counted once); largest pages: "
          + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in pages[:3]))
    if args.browser:
        chosen = [pages[0], next(p for p in pages if p.name.startswith("run-")), site / "index.html"]
        for name, secs in browser_load_times(site, chosen):
            print(f"browser load {name:<40} {secs:6.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
