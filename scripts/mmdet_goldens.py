"""Golden outputs of mmdet running GenEval's detection pipeline, for tests/test_geneval_mmdet_goldens.py.

Run once, by hand, in two steps; never in CI (CI has no compiled mmcv). CI then checks paintbench's own
detector against what step 2 wrote (`tests/data/mmdet_goldens/`), from the same PNG files.

    # 1. in paintbench's environment: the synthetic checkpoint (from MANIFEST) and the PNG inputs
    .venv/bin/python scripts/mmdet_goldens.py inputs --out /tmp/mmdet-goldens-in
    # 2. in a side environment with mmdet and a compiled mmcv: mmdet's outputs on those PNGs
    V/bin/python scripts/mmdet_goldens.py goldens --inputs /tmp/mmdet-goldens-in --out tests/data/mmdet_goldens

The side environment (2 CPU cores, about 18 minutes, measured 2026-12-02):

    python3 -m venv V
    V/bin/pip install torch==2.14.1 torchvision==0.29.1 wheel ninja && V/bin/pip install --no-deps "setuptools<70"
    V/bin/pip download --no-deps --no-binary :all: mmcv==2.1.0 && tar xzf mmcv-2.1.0.tar.gz && cd mmcv-2.1.0
    sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' setup.py   # torch 2.14's headers need C++20
    MMCV_WITH_OPS=1 MAX_JOBS=2 ../V/bin/pip install --no-build-isolation . && cd ..
    V/bin/pip install mmengine==0.10.7 mmdet==3.3.0 && V/bin/pip uninstall -y opencv-python
    V/bin/pip install "numpy<2" opencv-python-headless==4.7.0.72                # GenEval's OpenCV pin
    V/bin/pip install --no-deps -e .                                              # paintbench's mmdet backend

What step 2 runs is `MmdetDetector(pipeline="geneval")`: GenEval's mmdet 2.x test pipeline made with
mmcv's own functions (`imrescale` by OpenCV, grey-128 `impad_to_multiple` before `imnormalize`) in
front of mmdet's own Mask2Former (built from GenEval's config with the manifest's architecture, the
checkpoint loaded strictly), `predict` with the 2.x image metas. The weights are
`random_tiny_model(seed, architecture, class_scale, class_bias)`: every tensor drawn from a seeded rule,
so CI rebuilds the same checkpoint (its sha256 is in the manifest) in both official key formats.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

MANIFEST = {
    "architecture": "TINY_CONFIG",
    "seed": 11,
    "class_scale": 10.0,
    "class_bias": {"0": 3.0, "2": 2.5, "16": 2.0},   # person, car, bird: some scores pass 0.3 and 0.9
    "images": [  # (name, height, width): square (GenEval's case), both orientations, odd and extreme ratios
        ["square-96x96", 96, 96],
        ["landscape-48x96", 48, 96],
        ["portrait-96x48", 96, 48],
        ["odd-50x75", 50, 75],
        ["wide-40x130", 40, 130],
        ["tall-121x37", 121, 37],
    ],
}


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """An RGB uint8 image with a smooth background and a few solid and textured shapes (deterministic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(0.02, 0.2), rng.uniform(0.02, 0.2), rng.uniform(0, 6.3)
        img[..., c] = 128 + 60 * np.sin(a * xx + b * yy + phase)
    for _ in range(4):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.1, 0.4) * height, rng.uniform(0.1, 0.4) * width
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[inside] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).round().astype(np.uint8)


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted (key, dtype, shape, bytes) of a state dict: the weights' identity."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def build_checkpoint_model(manifest: dict = MANIFEST):
    """The manifest's synthetic detector (paintbench's transformers model) and its architecture."""
    from paintbench.metrics.geneval import detector as D

    cfg = getattr(D, manifest["architecture"])
    bias = {int(k): float(v) for k, v in manifest["class_bias"].items()}
    model = D.random_tiny_model(manifest["seed"], cfg, class_scale=manifest["class_scale"], class_bias=bias)
    return model, cfg


def mmdet3_state(model, cfg) -> dict[str, torch.Tensor]:
    from paintbench.metrics.geneval.detector.conversion import hf_to_mmdet3

    return hf_to_mmdet3({k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg)


def write_inputs(out: Path) -> None:
    from PIL import Image

    from paintbench.metrics.geneval.detector import save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    model, cfg = build_checkpoint_model()
    save_checkpoint(model, cfg, out / "synthetic_mmdet3.pth", "mmdet3")
    for i, (name, h, w) in enumerate(MANIFEST["images"]):
        Image.fromarray(synthetic_image(h, w, 1000 + i)).save(out / f"{name}.png")
    meta = {**MANIFEST, "architecture_fields": asdict(cfg), "state_sha256": state_sha256(mmdet3_state(model, cfg))}
    (out / "inputs.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {out}")


def write_goldens(inputs: Path, out: Path) -> None:
    import cv2
    import mmcv
    from mmdet.apis import init_detector

    from paintbench.metrics.geneval.detector.configuration import DetectorConfig
    from paintbench.metrics.geneval.detector.mmdet_backend import MmdetDetector, mmdet_config

    meta = json.loads((inputs / "inputs.json").read_text())
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["architecture_fields"].items()}
    cfg = DetectorConfig(**fields)
    model = init_detector(mmdet_config(cfg), None, device="cpu")
    ckpt = torch.load(inputs / "synthetic_mmdet3.pth", map_location="cpu", weights_only=True)["state_dict"]
    own = {k for k in model.state_dict()}
    missing, unexpected = own - set(ckpt), set(ckpt) - own
    if unexpected or any("relative_position_index" not in k for k in missing):
        raise SystemExit(f"checkpoint does not fit mmdet's model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(ckpt, strict=False)     # only the rebuilt relative_position_index buffers are absent
    if state_sha256({k: v for k, v in model.state_dict().items() if k in ckpt}) != meta["state_sha256"]:
        raise SystemExit("the weights mmdet holds are not the manifest's")
    det = MmdetDetector(None, model=model, pipeline="geneval", architecture=cfg)
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for name, h, w in meta["images"]:
        png = inputs / f"{name}.png"
        bgr = mmcv.imread(str(png))                         # LoadImageFromFile: cv2, BGR, uint8
        rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)
        res = det.detect([rgb])[0]
        masks = res.masks.cpu().numpy()
        np.savez_compressed(out / f"{name}.npz", labels=res.labels.cpu().numpy(), scores=res.scores.cpu().numpy(),
                            boxes=res.boxes.cpu().numpy(), masks=np.packbits(masks.reshape(len(masks), -1), axis=1),
                            shape=np.array([h, w]))
        (out / f"{name}.png").write_bytes(png.read_bytes())
        s = res.scores.cpu().numpy()
        summary.append({"image": name, "height": h, "width": w, "detections": len(s),
                        "above_0.3": int((s > 0.3).sum()), "above_0.9": int((s > 0.9).sum()),
                        "max_score": float(s.max())})
        print(summary[-1], flush=True)
    manifest = {**{k: v for k, v in meta.items()}, "summary": summary, "provenance": {
        **det.provenance(), "mmcv": mmcv.__version__, "opencv": cv2.__version__, "torch": torch.__version__,
        "numpy": np.__version__, "config": "GenEval's mask2former_swin-s-p4-w7-224 config with the manifest's "
                                          "architecture (mmdet_backend.mmdet_config)"}}
    manifest["provenance"].pop("path", None)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("inputs", help="step 1 (paintbench's environment): checkpoint and PNGs")
    a.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("goldens", help="step 2 (side environment with mmdet): mmdet's outputs")
    b.add_argument("--inputs", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "inputs":
        write_inputs(args.out)
    else:
        write_goldens(args.inputs, args.out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
