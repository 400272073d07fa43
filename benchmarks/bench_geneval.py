"""GenEval throughput: the batched evaluation loop vs one image at a time, as the official script runs.

Both paths use the same weights, the same images and the same process:

- `one-at-a-time`: like GenEval's `evaluate_images.py` — for each image, decode the file, run the
  detector on that single image, then the colour classifier on that image's crops (provider batch size
  1, no decode prefetch);
- `batched`: what `paintbench geneval` runs — the folder read as a suite (`harness.folders`) and scored
  by the one run engine (`harness.evaluate.run_eval`): images decoded on a thread pool ahead of the
  device, the detector on `--batch-size` images per forward, all colour crops of a batch in one CLIP
  forward, records appended per batch, then GenEval's official results.jsonl written from the run.

The images are written in GenEval's layout (4 per prompt) from the official prompt list when available.
The ratio of images/s is printed, with the agreement of the two paths (their verdicts must match).

    python benchmarks/bench_geneval.py                                   # CPU, tiny random weights
    python benchmarks/bench_geneval.py --weights-dir ~/weights --device cuda --n-images 2212 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paintbench.harness.config import EvalConfig
from paintbench.harness.folder_reports import geneval_report
from paintbench.harness.folders import read_geneval_folder, run_folder
from paintbench.harness.rundir import RunDir
from paintbench.metrics.geneval.detector import random_tiny_model
from paintbench.metrics.geneval.layout import load, scan
from paintbench.metrics.geneval.provider import GenEvalProvider, write_tiny_weights

FALLBACK_PROMPTS = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
     "prompt": "a photo of a cat and a dog"},
    {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}],
     "prompt": "a photo of two clocks"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
    {"tag": "position", "include": [{"class": "cup", "count": 1}, {"class": "book", "count": 1,
                                                                   "position": ["left of", 0]}],
     "prompt": "a photo of a book left of a cup"},
    {"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "blue"},
                                      {"class": "vase", "count": 1, "color": "green"}],
     "prompt": "a photo of a blue bus and a green vase"},
]


def prompts() -> list[dict]:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "geneval" / "evaluation_metadata.jsonl"
    if path.exists():
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return FALLBACK_PROMPTS


def make_layout(root: Path, n_images: int, size: int, seed: int = 0) -> Path:
    """GenEval's layout with `n_images` smooth synthetic images (4 per prompt, prompts in file order)."""
    records = prompts()
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        k, s = divmod(i, 4)
        folder = root / f"{k:05d}"
        if s == 0:
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            (folder / "metadata.jsonl").write_text(json.dumps(records[k % len(records)]) + "\n")
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(4):
            x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, 2))
            w, h = (int(v) for v in rng.integers(size // 10, size // 3, 2))
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        im.save(folder / "samples" / f"{s:05d}.png")
    return root


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights-dir", help="real weights (default: tiny random weights written to a temp dir)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--n-images", type=int, default=None, help="images in the run (default 2212 on GPU, 24 on CPU)")
    p.add_argument("--n-single", type=int, default=None, help="images timed one at a time (default: 64 GPU, 8 CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32 on GPU, 8 on CPU")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--scale", default=None, help="detector resize LONG,SHORT (default: the official 1333,800)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--synthetic-full", action="store_true",
                   help="full-size random weights (Swin-S Mask2Former, CLIP ViT-L/14) instead of tiny ones")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    n_images = args.n_images or (2212 if gpu else 24)
    n_single = min(n_images, args.n_single or (64 if gpu else 8))
    batch_size = args.batch_size or (32 if gpu else 8)
    scale = tuple(int(v) for v in args.scale.split(",")) if args.scale else None
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        weights_dir = Path(args.weights_dir) if args.weights_dir else tmp_path / "weights"
        if args.synthetic_full:
            write_full_weights(weights_dir)
        elif not args.weights_dir:
            write_tiny_weights(weights_dir)
        root = make_layout(tmp_path / "images", n_images, args.image_size)
        common = dict(device=args.device, dtype=args.dtype, weights_dir=weights_dir, detector_scale=scale,
                      value="correct")
        batched = GenEvalProvider(batch_size=batch_size, **common)
        single = GenEvalProvider(batch_size=1, **common)
        items = scan(root).items
        warm = [load(it) for it in items[:2]]
        for prov in (batched, single):  # warm-up: kernels, cuDNN autotuning, text caches
            prov.score(warm, [it.metadata["prompt"] for it in items[:2]], [it.metadata for it in items[:2]])

        sync(args.device)
        t0 = time.perf_counter()
        singles = []
        for it in items[:n_single]:
            img = load(it)
            singles.append(single.score([img], [it.metadata["prompt"]], [it.metadata]).details[0])
        sync(args.device)
        t_single = time.perf_counter() - t0

        sync(args.device)
        t0 = time.perf_counter()
        fi = read_geneval_folder(root, {"detector_scale": list(scale)} if scale else {})
        cfg = EvalConfig(out=str(tmp_path / "run"), device=args.device, dtype=args.dtype, batch_size=batch_size,
                         progress=False, n_resamples=1000)
        run_folder(fi, cfg, providers={"geneval": batched})
        report = geneval_report(RunDir(tmp_path / "run"), fi)
        sync(args.device)
        t_batch = time.perf_counter() - t0
        records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]

    by_name = {r["filename"]: r for r in records}
    scored = sum("correct" in r for r in records)
    assert report.summary is not None
    agree = sum(by_name[it.filename]["correct"] == d["correct"] for it, d in zip(items, singles, strict=False))
    reward_delta = max(abs(by_name[it.filename]["reward"] - d["reward"]) for it, d in zip(items, singles, strict=False))
    single_ips = n_single / t_single
    batch_ips = scored / t_batch
    weights = "tiny random" if not args.weights_dir else str(weights_dir)
    print(f"device {args.device} ({torch.cuda.get_device_name() if gpu else f'{torch.get_num_threads()} threads'}), "
          f"dtype {args.dtype}, weights: {weights}, images {args.image_size}px, "
          f"detector scale {scale or (1333, 800)}")
    print(f"one image at a time (official-style): {single_ips:8.2f} img/s  ({n_single} images, {t_single:.1f} s)")
    print(f"batched (batch {batch_size}, prefetch):     {batch_ips:8.2f} img/s  ({scored} images, {t_batch:.1f} s, engine incl. records)")
    print(f"ratio batched / one-at-a-time: {batch_ips / single_ips:.2f}x")
    print(f"2212-image GenEval run at the batched rate: {2212 / batch_ips:.0f} s")
    print(f"agreement on {n_single} images: verdicts {agree}/{n_single}, max |reward delta| {reward_delta:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": args.device, "dtype": args.dtype, "weights": "synthetic-full" if args.synthetic_full else weights,
            "n_images": scored, "batch_size": batch_size, "official_style_img_s": single_ips,
            "batched_img_s": batch_ips, "ratio": batch_ips / single_ips, "geneval_2212_seconds": 2212 / batch_ips,
            "agreement": f"{agree}/{n_single}", "max_reward_delta": reward_delta}, indent=1) + "\n")
    return 0 if agree == n_single else 1


def write_full_weights(directory: Path) -> None:
    """GenEval's architectures at full size with random weights, in the official file formats."""
    from paintbench.metrics.aesthetic import random_openai_clip_state_dict
    from paintbench.metrics.geneval.detector import SWIN_S_CONFIG, save_checkpoint
    from paintbench.metrics.geneval.provider import OFFICIAL_DETECTOR_FILE

    directory.mkdir(parents=True, exist_ok=True)
    save_checkpoint(random_tiny_model(0, SWIN_S_CONFIG), SWIN_S_CONFIG, directory / OFFICIAL_DETECTOR_FILE, "mmdet2")
    torch.save(random_openai_clip_state_dict(VIT_L_14, 0), directory / "ViT-L-14.pt")


VIT_L_14 = {"embed_dim": 768, "image_resolution": 224, "vision_layers": 24, "vision_width": 1024, "vision_patch_size": 14,
            "context_length": 77, "vocab_size": 49408, "transformer_width": 768, "transformer_layers": 12}


if __name__ == "__main__":
    sys.exit(main())
