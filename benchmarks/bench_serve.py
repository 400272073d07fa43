"""Two concurrent clients against one batched `paintbench serve`, against two in-process scorers: same
inputs, one run, the ratio of their wall times.

    python benchmarks/bench_serve.py --metric imagereward --tiny          # CPU, tiny weights (written here)
    python benchmarks/bench_serve.py --metric hpsv3 --weights-dir ~/w --device cuda --num-gpus 1 --json out.json

The in-process side is what two training processes do without a service: each loads its own copy of the
model and scores its own requests. The service side is one replica (`--num-gpus` of a GPU) that
`@serve.batch` feeds with both clients' requests. Prints images/s for each and the ratio (service /
in-process), and checks the scores are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metric", default="imagereward")
    ap.add_argument("--tiny", action="store_true", help="write tiny weights in the official format and use them")
    ap.add_argument("--weights-dir")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num-gpus", type=float, default=0.0)
    ap.add_argument("--requests", type=int, default=8, help="requests per client")
    ap.add_argument("--images", type=int, default=8, help="images per request")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    import torch

    from paintbench import metrics
    from paintbench.metrics.remote import RemoteProvider

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    weights = args.weights_dir
    if args.tiny:
        from paintbench.metrics.synthetic import write_tiny_weights

        weights = str(tmp / "weights")
        write_tiny_weights(args.metric, weights)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8, generator=g)
               for _ in range(args.requests)]
    prompts = [f"a photo of object {i}" for i in range(args.images)]

    def clients(score) -> tuple[float, list]:
        results: list = [[], []]

        def one(k: int) -> None:
            for b in batches:
                results[k].append(score(k, b))

        threads = [threading.Thread(target=one, args=(k,)) for k in range(2)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t, results

    scorers = [metrics.get(args.metric, device=args.device, weights_dir=weights) for _ in range(2)]
    t_local, r_local = clients(lambda k, b: scorers[k].score(b, prompts).values.float().cpu())
    scorers.clear()

    port = free_port()
    cmd = [sys.executable, "-m", "paintbench", "serve", args.metric, "--port", str(port), "--device", args.device,
           "--num-gpus", str(args.num_gpus), "--max-batch", "8"] + (["--weights-dir", weights] if weights else [])
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        remote = None
        while remote is None and time.monotonic() < deadline:
            try:
                remote = [RemoteProvider(url, args.metric, retries=0) for _ in range(2)]
            except Exception:
                time.sleep(1.0)
        if remote is None:
            raise SystemExit("the service did not start")
        t_serve, r_serve = clients(lambda k, b: remote[k].score(b, prompts).values)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    same = all(torch.equal(a, b) for ka, kb in zip(r_local, r_serve, strict=True) for a, b in zip(ka, kb, strict=True))
    n = 2 * args.requests * args.images
    out = {"metric": args.metric, "device": args.device, "images": n, "in_process_s": t_local, "service_s": t_serve,
           "in_process_img_s": n / t_local, "service_img_s": n / t_serve, "ratio_service_vs_in_process": t_local / t_serve,
           "identical_scores": same, "weights": "tiny" if args.tiny else weights}
    print(f"{args.metric} on {args.device}: two in-process scorers {n / t_local:.1f} img/s, one batched service "
          f"{n / t_serve:.1f} img/s (x{t_local / t_serve:.2f}); scores identical: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
