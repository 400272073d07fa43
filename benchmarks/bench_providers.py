"""Throughput of each provider: paintbench's batched path vs the official packages' per-image loop.

Measured in the same run, on the same weights and the same images, so the printed ratios compare like
with like on whatever machine runs this. For each provider:

- `official-style`: one image per call (`score([img], [prompt])`, batch size 1), as the official
  packages are used (ImageReward's `score`, `hpsv2.score`, the aesthetic script's loop). For HPS the
  official pip API re-reads the checkpoint on every call; `--hps-reload` reproduces that too.
- `batched (PIL)`: one `score(images, prompts)` call over all images with `--batch-size`.
- `batched (tensor)`: the RL path, a [B,3,H,W] tensor already on the device.

It also checks that batched and per-image scores agree (max |delta|).

    python benchmarks/bench_providers.py --tiny                       # CPU, tiny random weights
    python benchmarks/bench_providers.py --weights-dir ~/weights --device cuda --n-images 256
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paintbench import metrics
from paintbench.metrics.synthetic import write_tiny_weights

DEFAULT_METRICS = ["aesthetic", "imagereward", "hps-v2.1"]


def make_images(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    # smooth-ish content (upsampled noise) rather than pure noise, like generated images
    return [Image.fromarray(b).resize((size, size), Image.BICUBIC) for b in base]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def bench_metric(name: str, images, prompts, args, weights_dir) -> dict:
    kw = dict(device=args.device, dtype=args.dtype, weights_dir=weights_dir)
    provider = metrics.get(name, batch_size=args.batch_size, **kw)
    single = metrics.get(name, batch_size=1, **kw)
    # warm-up (kernels, caches) on both paths
    provider.score(images[: min(2, len(images))], prompts[:2])
    single.score(images[:1], prompts[:1])

    n_single = min(len(images), args.n_single)
    t_single, s_single = timed(lambda: [single.score([im], [p]).values for im, p in
                                        zip(images[:n_single], prompts[:n_single], strict=True)], args.device)
    t_batch, s_batch = timed(lambda: provider.score(images, prompts).values, args.device)
    tensor = torch.stack([torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1) for im in images])
    tensor = tensor.to(args.device)
    t_tensor, _ = timed(lambda: provider.score(tensor, prompts).values, args.device)
    per_image = torch.cat([v.float().cpu() for v in s_single])
    delta = (per_image - s_batch.float().cpu()[:n_single]).abs().max().item()
    row = {
        "metric": name,
        "official_style_img_s": n_single / t_single,
        "batched_pil_img_s": len(images) / t_batch,
        "batched_tensor_img_s": len(images) / t_tensor,
        "max_abs_delta_batched_vs_single": delta,
    }
    if name.startswith("hps") and args.hps_reload:
        n_reload = min(n_single, args.n_reload)

        def reload_loop():
            for im, p in zip(images[:n_reload], prompts[:n_reload], strict=True):
                metrics.get(name, batch_size=1, **kw).score([im], [p])  # a fresh load per call

        t_reload, _ = timed(reload_loop, args.device)
        row["official_reload_img_s"] = n_reload / t_reload
    row["ratio_batched_vs_official"] = row["batched_pil_img_s"] / row["official_style_img_s"]
    row["ratio_tensor_vs_official"] = row["batched_tensor_img_s"] / row["official_style_img_s"]
    return row


def bench_unipercept_three(images, args, weights_dir) -> dict:
    """UniPercept's three dimensions: the official code runs the whole model three times per image, one
    image per call; paintbench batches images and the three metrics share one vision pass per batch."""
    kw = dict(device=args.device, dtype=args.dtype, weights_dir=weights_dir)
    names = ("unipercept-iaa", "unipercept-iqa", "unipercept-ista")
    batched = [metrics.get(n, batch_size=args.batch_size, **kw) for n in names]
    single = [metrics.get(n, batch_size=1, **kw) for n in names]
    shared = batched[0].shared
    n_single = min(len(images), args.n_single)

    def official_style():
        out = []
        for im in images[:n_single]:
            for p in single:
                shared._last = None          # no reuse across dimensions: a full forward each, as officially
                out.append(p.score([im]).values)
        return out

    batched[0].score(images[:2])
    t_single, _ = timed(official_style, args.device)
    t_batch, _ = timed(lambda: [p.score(images).values for p in batched], args.device)
    row = {"metric": "unipercept x3", "official_style_img_s": n_single / t_single,
           "batched_pil_img_s": len(images) / t_batch, "batched_tensor_img_s": float("nan"),
           "max_abs_delta_batched_vs_single": float("nan")}
    row["ratio_batched_vs_official"] = row["batched_pil_img_s"] / row["official_style_img_s"]
    row["ratio_tensor_vs_official"] = float("nan")
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metric", action="append", help=f"default: {', '.join(DEFAULT_METRICS)}")
    p.add_argument("--tiny", action="store_true", help="tiny random weights written to a temp dir")
    p.add_argument("--weights-dir")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--n-single", type=int, default=32, help="images timed in the per-image loop")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--hps-reload", action="store_true", help="also time HPS reloading its checkpoint per call")
    p.add_argument("--n-reload", type=int, default=4)
    p.add_argument("--json-out")
    args = p.parse_args()
    chosen = args.metric or DEFAULT_METRICS
    images = make_images(args.n_images, args.image_size)
    prompts = [f"a photo of object number {i} on a table, studio light" for i in range(args.n_images)]
    with tempfile.TemporaryDirectory() as tmp:
        weights_dir = args.weights_dir
        if args.tiny:
            weights_dir = tmp
            for m in chosen:
                write_tiny_weights(m, tmp)
        rows = [bench_metric(m, images, prompts, args, weights_dir) for m in chosen]
        if {"unipercept-iaa", "unipercept-iqa", "unipercept-ista"} <= set(chosen):
            rows.append(bench_unipercept_three(images, args, weights_dir))
    print(f"device={args.device} dtype={args.dtype} batch={args.batch_size} images={args.n_images} "
          f"size={args.image_size} weights={'tiny' if args.tiny else args.weights_dir} torch={torch.__version__}")
    print(f"{'metric':<22} {'official img/s':>15} {'batched img/s':>14} {'tensor img/s':>13} "
          f"{'ratio':>7} {'ratio(t)':>9} {'max|d|':>9} {'reload img/s':>13}")
    for r in rows:
        reload = f"{r['official_reload_img_s']:.2f}" if "official_reload_img_s" in r else "-"
        print(f"{r['metric']:<22} {r['official_style_img_s']:>15.2f} {r['batched_pil_img_s']:>14.2f} "
              f"{r['batched_tensor_img_s']:>13.2f} {r['ratio_batched_vs_official']:>6.2f}x "
              f"{r['ratio_tensor_vs_official']:>8.2f}x {r['max_abs_delta_batched_vs_single']:>9.2e} {reload:>13}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
