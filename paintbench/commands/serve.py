"""`paintbench serve METRIC [METRIC ...]`: the metrics as a service on Ray Serve (see `metrics.service`).

    paintbench serve hpsv3 geneval --port 8470                      # a local Ray, loopback only
    paintbench serve hpsv3 --replicas 2 --num-gpus 1 --host 0.0.0.0 --token-file secret --address auto  # a cluster
    paintbench score --metric hpsv3 --images imgs/ --prompts p.txt --server http://127.0.0.1:8470 --out s/
    paintbench train CONFIG reward_backend=remote reward_url=http://127.0.0.1:8470 --out run/

Runs until SIGTERM or Ctrl-C, then drains: Serve finishes the requests in flight and the command exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import signal
import sys
import time

from paintbench.errors import UserError

DEFAULT_PORT = 8470


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("metrics", nargs="+", metavar="METRIC", help="metrics to serve (registry names)")
    p.add_argument("--replicas", type=int, default=1, help="replicas per metric")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica (fractions pack small metrics)")
    p.add_argument("--max-batch", type=int, default=16, help="requests gathered into one scoring call")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument("--max-queued", type=int, default=64, help="queued requests per metric before 'busy' (503)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (anything but loopback needs --token-file)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--address", help="an existing Ray cluster to join (e.g. auto, or ray://HOST:10001)")
    p.add_argument("--token-file", help="file holding the shared secret every request must send")
    p.add_argument("--weights-dir", help="weights directory of the metrics")
    p.add_argument("--device", default=None, help="cuda or cpu for the replicas (default: cuda when --num-gpus > 0)")
    p.add_argument("--dtype", default="float32", help="float32 (parity), bfloat16 or float16")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads per CPU replica (default: what "
                   "torch uses in this process; CPU scores equal an in-process run's only with the same count)")
    p.add_argument("--option", action="append", default=[], metavar="METRIC:KEY=VALUE",
                   help="a provider option (repeatable), e.g. shapes-geneval:mode=reward")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metric_options(args: argparse.Namespace) -> dict[str, dict]:
    from paintbench import metrics
    from paintbench.config import parse_overrides
    from paintbench.trainer.rewards import ensure_harness_metrics

    ensure_harness_metrics()
    names = list(dict.fromkeys(metrics.spec(m).name for m in args.metrics))   # unknown names: one line, now
    device = args.device or ("cuda" if args.num_gpus > 0 else "cpu")
    out = {n: {"device": device, "dtype": args.dtype, **({"weights_dir": args.weights_dir} if args.weights_dir else {})}
           for n in names}
    for item in args.option:
        name, sep, kv = item.partition(":")
        if not sep or metrics.spec(name).name not in out:
            raise UserError(f"--option {item!r}: give METRIC:KEY=VALUE for a served metric")
        out[metrics.spec(name).name].update(parse_overrides([kv]))
    return out


def run(args: argparse.Namespace) -> int:
    from paintbench.metrics.remote import read_token

    if not 0 < args.port < 65536 or args.replicas < 1 or args.max_batch < 1 or args.max_queued < 1 or args.num_gpus < 0:
        raise UserError("--port 1..65535, --replicas/--max-batch/--max-queued >= 1 and --num-gpus >= 0")
    token = read_token(args.token_file)
    if not is_loopback(args.host) and token is None:
        raise UserError(f"--host {args.host} is reachable beyond this machine: give --token-file with a shared "
                        "secret (or bind 127.0.0.1)")
    options = metric_options(args)
    from paintbench.harness.dist import Dist

    Dist().device(next(iter(options.values()))["device"])      # `--device cuda` without CUDA: one line, now
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise UserError(f"paintbench serve needs Ray Serve: pip install 'paintbench[serve]' ({e})") from e
    from paintbench.metrics.service import build_app

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False,
             **({} if args.address else {"num_cpus": 2}))
    serve.start(http_options={"host": args.host, "port": args.port})
    import torch

    app = build_app(options, replicas=args.replicas, num_gpus=args.num_gpus, max_batch=args.max_batch,
                    wait_ms=args.batch_wait_ms, max_queued=args.max_queued,
                    threads=args.threads or torch.get_num_threads(),
                    token_sha256=hashlib.sha256(token.encode()).hexdigest() if token else None)
    serve.run(app, name="paintbench", route_prefix="/", blocking=False)
    print(f"serving {', '.join(options)} at http://{args.host}:{args.port} "
          f"({args.replicas} replica(s) each{', token required' if token else ''}); Ctrl-C or SIGTERM drains and stops",
          flush=True)
    stop = {"now": False}

    def drain(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    while not stop["now"]:
        time.sleep(0.2)
    print("draining: finishing the requests in flight", file=sys.stderr, flush=True)
    serve.shutdown()
    ray.shutdown()
    return 0
