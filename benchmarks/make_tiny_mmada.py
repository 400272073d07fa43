"""Write a tiny MMaDA model folder with MMaDA's OWN code (the vendored copy in ../shared/vendor/mmada), for
training benchmarks that must run the official model classes: 2 LLaDA blocks with the fixture manifest's
weights, the real 134,656-entry vocabulary and special ids, a seeded MAGVIT-v2, a word-level tokenizer with
MMaDA's id layout (the fixture's `make_tokenizer.py`). Run it where MMaDA's pins are (tox's `models` env):

    PYTHONPATH=../shared/vendor/mmada .tox/models/bin/python benchmarks/make_tiny_mmada.py OUT
    # then: policy=mmada policy_path=OUT/model policy_options='{vq_path: OUT/vq, tokenizer_path: OUT/tok}'

The same construction as the `mmada` fixture of tests/test_adapters_official.py (which checks the adapter
against that code), without pytest.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
from pathlib import Path

import torch

SHARED = Path(os.environ.get("PAINTBENCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    from models import MAGVITv2, MMadaConfig, MMadaModelLM  # MMaDA's repository, on PYTHONPATH

    from paintbench.metrics.synthetic import build_state_dict

    fixture = SHARED / "fixtures" / "mmada"
    model = MMadaModelLM(MMadaConfig(**json.loads((fixture / "config.json").read_text())))
    with gzip.open(fixture / "manifest.json.gz", "rt") as f:
        man = json.load(f)
    model.load_state_dict(build_state_dict(man["entries"], man["seed"], expected_digest=man["state_digest"]), strict=True)
    model.save_pretrained(args.out / "model")
    torch.manual_seed(0)
    MAGVITv2().save_pretrained(args.out / "vq")
    spec = importlib.util.spec_from_file_location("mmada_make_tokenizer", fixture / "make_tokenizer.py")
    tok = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tok)
    tok.build("mmada", args.out / "tok")
    print(f"tiny MMaDA (official code) written to {args.out}: model/, vq/, tok/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
