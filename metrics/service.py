"""`paintbench serve`: metric providers as a Ray Serve application (one deployment per metric).

    Gateway (HTTP ingress, token check, size caps)  ──handle──▶  Metric "<name>" replicas (@serve.batch)

Each metric is one deployment of `MetricReplica`: the same provider object `metrics.get` builds in process,
`--replicas N` copies placed by Ray (`--num-gpus 0.25` packs four small metrics on one GPU), and
`@serve.batch` gathering concurrent callers' requests into one `provider.score` call per kind of input.
The gateway is the only HTTP entry: `GET /health` (the process is up), `GET /ready` (every metric has a live
replica), `GET /metrics` (what is served: versions, weights sha256, dtype, synthetic-weights flag, replica
pids), `POST /v1/score/<metric>` (the wire format of `metrics.wire`). It never reads or writes a path a
client names.

Idempotency: a replica keeps the answers of its last `--cache` request ids, so a retry that reaches the
same replica returns the recorded answer; one that reaches another replica recomputes the same
deterministic scores. Either way the client (`metrics.remote`) keeps exactly one answer per request id, so
no reward is counted twice or lost. A replica that dies is restarted by Serve; the client's retry covers
the gap.

Security: the command binds 127.0.0.1 unless told otherwise, and any other address needs `--token-file`
(a shared secret every request must send as `Authorization: Bearer <token>`, compared in constant time).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import os
from collections import OrderedDict
from typing import Any

from paintbench.errors import InputError
from paintbench.metrics import wire


def decode_file(fileobj: io.BytesIO):
    """An image file's bytes decoded as `Provider.decode` decodes a path: the header checked against the
    image limits first, then the whole image, then the documented mode conversions."""
    from PIL import Image, UnidentifiedImageError

    from paintbench.metrics.images import BadImageError, image_header, normalize_mode

    image_header(fileobj, "image file")
    fileobj.seek(0)
    try:
        with Image.open(fileobj) as opened:
            opened.load()
            img = opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"image file: cannot decode ({type(e).__name__}: {e})") from e
    return normalize_mode(img)


class MetricReplica:
    """One replica of one metric (wrapped by `serve.deployment` in `build_app`)."""

    def __init__(self, name: str, options: dict[str, Any], max_batch: int, wait_ms: float, cache: int,
                 threads: int = 0) -> None:
        import torch

        from paintbench import metrics

        if threads > 0:   # Ray starts workers with one intra-op thread; CPU sums depend on the thread count
            torch.set_num_threads(threads)
        self.name = name
        self.options = {k: v for k, v in options.items() if k not in ("device", "dtype", "weights_dir")}
        self.provider = metrics.get(name, **options)
        self.answers: OrderedDict[str, bytes] = OrderedDict()
        self.cache = cache
        self.score_batch.set_max_batch_size(max_batch)
        self.score_batch.set_batch_wait_timeout_s(wait_ms / 1000.0)

    def info(self) -> dict[str, Any]:
        import torch

        prov = self.provider.provenance()
        return {"metric": self.name, "version": self.provider.version, "provenance": prov,
                "dtype": str(self.provider.dtype).removeprefix("torch."), "device": str(self.provider.device),
                "synthetic_weights": bool(prov.get("synthetic_weights", False)), "pid": os.getpid(),
                "batch_size": self.provider.batch_size, "options": self.options,
                "torch": torch.__version__, "threads": torch.get_num_threads()}

    def _score_group(self, requests: list[wire.ScoreRequest]) -> list[tuple[Any, list[dict[str, Any]]]]:
        import torch

        if requests[0].kind == "tensor":
            images: Any = torch.cat([r.images for r in requests])
        else:
            images = [im for r in requests for im in r.images]
        prompts = None if any(r.prompts is None for r in requests) else [p for r in requests for p in r.prompts]
        metadata = None if any(r.metadata is None for r in requests) else [m for r in requests for m in r.metadata]
        scores = self.provider.score(images, prompts, metadata)
        out, start = [], 0
        for r in requests:
            n = len(r.images)
            out.append((scores.values[start:start + n].cpu(), scores.details[start:start + n]))
            start += n
        return out

    async def score_batch(self, requests: list[wire.ScoreRequest]) -> list[Any]:
        """Requests of concurrent callers, scored together per kind of input (tensors of one size, or images)."""
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(requests):
            key = (r.kind, tuple(r.images.shape[2:]) if r.kind == "tensor" else None,
                   r.prompts is None, r.metadata is None)
            groups.setdefault(key, []).append(i)
        results: list[Any] = [None] * len(requests)
        for idx in groups.values():
            try:
                for i, res in zip(idx, self._score_group([requests[i] for i in idx]), strict=True):
                    results[i] = res
            except Exception as e:   # one bad request must not fail the others it was batched with
                if len(idx) == 1:
                    results[idx[0]] = e
                    continue
                for i in idx:
                    try:
                        results[i] = self._score_group([requests[i]])[0]
                    except Exception as alone:
                        results[i] = alone
        return results

    async def score(self, body: bytes) -> tuple[int, bytes]:
        try:
            request = wire.decode_request(body, decode_file)
        except InputError as e:
            return 400, wire.encode_error(str(e), 400)
        if request.request_id in self.answers:
            self.answers.move_to_end(request.request_id)
            return 200, self.answers[request.request_id]
        result = await self.score_batch(request)
        if isinstance(result, Exception):
            status = 400 if isinstance(result, (InputError, ValueError)) else 500
            return status, wire.encode_error(f"{self.name}: {type(result).__name__}: {result}", status)
        values, details = result
        answer = wire.encode_response(request.request_id, self.name, values, details, self.provider.provenance(),
                                      {"replica": os.getpid(), "cached": False})
        self.answers[request.request_id] = answer.replace(b'"cached": false', b'"cached": true')
        while len(self.answers) > self.cache:
            self.answers.popitem(last=False)
        return 200, answer


class Gateway:
    """The HTTP ingress: routes, token, caps, busy answers."""

    def __init__(self, handles: dict[str, Any], token_sha256: str | None, max_bytes: int) -> None:
        self.handles = handles
        self.token_sha256 = token_sha256
        self.max_bytes = max_bytes

    def _authorised(self, request: Any) -> bool:
        if self.token_sha256 is None:
            return True
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        return hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), self.token_sha256)

    async def __call__(self, request: Any):
        from starlette.responses import Response

        def answer(status: int, body: bytes) -> Any:
            return Response(content=body, status_code=status, media_type="application/json")

        path, method = request.url.path.rstrip("/") or "/", request.method
        if path == "/health" and method == "GET":
            return answer(200, b'{"status": "ok"}')
        if not self._authorised(request):
            return answer(401, wire.encode_error("missing or wrong token (Authorization: Bearer <token>)", 401))
        if path in ("/ready", "/metrics") and method == "GET":
            import json

            infos = await asyncio.gather(*(h.info.remote() for h in self.handles.values()))
            if path == "/ready":
                return answer(200, json.dumps({"ready": True, "metrics": sorted(self.handles)}).encode())
            return answer(200, json.dumps({"version": wire.WIRE_VERSION, "max_request_bytes": self.max_bytes,
                                           "metrics": infos}).encode())
        if path.startswith("/v1/score/") and method == "POST":
            name = path.removeprefix("/v1/score/")
            if name not in self.handles:
                return answer(404, wire.encode_error(f"metric {name!r} is not served here (served: "
                                                     f"{', '.join(sorted(self.handles))})", 404))
            length = request.headers.get("content-length")
            if length is None or not length.isdigit() or int(length) > self.max_bytes:
                return answer(413, wire.encode_error(f"request body must declare its length, at most "
                                                     f"{self.max_bytes:,} bytes", 413))
            body = await request.body()
            if len(body) > self.max_bytes:
                return answer(413, wire.encode_error(f"request body over {self.max_bytes:,} bytes", 413))
            try:
                status, content = await self.handles[name].score.remote(body)
            except Exception as e:
                if type(e).__name__ == "BackPressureError":
                    return answer(503, wire.encode_error(f"{name}: busy (queue full); retry later", 503))
                raise
            return answer(status, content)
        return answer(404, wire.encode_error(f"no endpoint {method} {path}", 404))


def build_app(metrics_options: dict[str, dict[str, Any]], *, replicas: int, num_gpus: float, max_batch: int,
              wait_ms: float, max_queued: int, token_sha256: str | None, cache: int = 4096, threads: int = 0):
    """The Serve application: one deployment per metric behind one gateway."""
    from ray import serve

    handles = {}
    for name, options in metrics_options.items():
        dep = serve.deployment(MetricReplica, name=f"metric-{name}", num_replicas=replicas,
                               ray_actor_options={"num_gpus": num_gpus, "num_cpus": 0},
                               max_ongoing_requests=max(2 * max_batch, 8), max_queued_requests=max_queued,
                               health_check_period_s=2, health_check_timeout_s=30)
        handles[name] = dep.bind(name, options, max_batch, wait_ms, cache, threads)
    # the gateway only forwards: it takes every request, so the bound that answers "busy" is each metric's queue
    gateway = serve.deployment(Gateway, name="gateway", num_replicas=1, ray_actor_options={"num_cpus": 0},
                               max_ongoing_requests=10_000)
    return gateway.bind(handles, token_sha256, wire.max_request_bytes())


# `@serve.batch` must wrap the method at class definition; done here so importing this module needs no Ray
# until the decorator is available (the client side never imports Ray).
def _batched() -> None:
    try:
        from ray import serve
    except ImportError:
        return
    MetricReplica.score_batch = serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)(MetricReplica.score_batch)


_batched()
