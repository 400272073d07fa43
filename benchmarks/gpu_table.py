"""Turn the JSON files `benchmarks/gpu.sh` writes into the markdown table the README links.

    python benchmarks/gpu_table.py benchmarks/results/json > benchmarks/results/gpu.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(folder: Path) -> list[str]:
    out = ["| benchmark | weights | dtype | official-style | batched | ratio | notes |", "|---|---|---|---|---|---|---|"]
    for f in sorted(folder.glob("providers-*.json")):
        doc = json.loads(f.read_text())
        a = doc["args"]
        for r in doc["rows"]:
            out.append(f"| {r['metric']} | {'tiny' if a.get('tiny') else a.get('weights_dir')} | {a['dtype']} | "
                       f"{r['official_style_img_s']:.1f} img/s | {r['batched_pil_img_s']:.1f} img/s | "
                       f"{r['ratio_batched_vs_official']:.1f}x | tensor path {r['batched_tensor_img_s']:.1f} img/s, "
                       f"max |Δ| {r['max_abs_delta_batched_vs_single']:.1e} |")
    for f in sorted(folder.glob("geneval-*.json")):
        r = json.loads(f.read_text())
        out.append(f"| geneval ({r['n_images']} images) | {r['weights']} | {r['dtype']} | "
                   f"{r['official_style_img_s']:.1f} img/s | {r['batched_img_s']:.1f} img/s | {r['ratio']:.1f}x | "
                   f"2,212 images in {r['geneval_2212_seconds']:.0f} s; verdicts {r['agreement']} |")
    for f in sorted(folder.glob("dpg-*.json")):
        r = json.loads(f.read_text())
        res = r["results"]
        base = res.get("official-style", res["reference"])
        out.append(f"| dpg mPLUG ({r['tiles']} tiles x {r['questions_per_tile']} q) | {r['model']} | {r['fast_dtype']} | "
                   f"{base['questions_per_s']:.2f} q/s | {res['fast']['questions_per_s']:.2f} q/s | "
                   f"{res['fast']['speedup_vs_official']:.1f}x | answers agree {r['fast_vs_reference_answer_agreement']:.2f} |")
    for f in sorted(folder.glob("train-*.json")):
        for r in json.loads(f.read_text()):
            worst = max(r["ranks"], key=lambda x: x["held_bytes"])
            out.append(f"| train {r.get('label', 'shapes-tiny')}, parallel={r['placement']} x{r['world_size']} | "
                       f"{r.get('policy', 'tiny')} policy | float32 | "
                       f"{r['median_round_s']:.3f} s/round | | | held {worst['held_bytes']:,} B (plan "
                       f"{worst['plan_bytes']:,} B); peak allocated {worst['peak_allocated_bytes']:,} B "
                       f"(plan's activation estimate {worst['plan_activations_estimate']:,} B) |")
    for f in sorted(folder.glob("serve-*.json")):
        r = json.loads(f.read_text())
        out.append(f"| serve {r['metric']} ({r['images']} images, 2 clients) | {r['weights']} | float32 | "
                   f"{r['in_process_img_s']:.1f} img/s (2 in-process) | {r['service_img_s']:.1f} img/s (1 service) | "
                   f"{r['ratio_service_vs_in_process']:.2f}x | identical scores: {r['identical_scores']} |")
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    env = folder / "environment.txt"
    print("# GPU benchmarks (`bash benchmarks/gpu.sh`)\n")
    if env.is_file():
        print("```\n" + env.read_text().strip() + "\n```\n")
    print("\n".join(rows(folder)))
