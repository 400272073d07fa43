"""A metric served by `paintbench serve`, as a provider: `RemoteProvider(url, name).score(...)`.

It *is* a `Provider`, so everything that takes one takes it unchanged: `score --server URL`, `eval
--score-server URL` and the trainer's `reward_backend: remote` (through `RewardModel`, so the in-process
async scorer overlaps remote scoring with the next rollouts exactly as it does local scoring). It batches
as the served provider does (the batch size the server reports), so the server scores the same chunks an
in-process call would: equal scores, bit for bit, on the same device and dtype (tested per metric).

Faults: every chunk has a request id; a timeout, a dropped connection, a 5xx or a 503 ("busy") is retried
with the same id after an exponential backoff (`retries`, `backoff_s`), so a retry can never count a
sample twice; when the tries are spent, one `UserError` names the server and the last cause. A 4xx
other than 503 is the request's fault and is not retried. Only the standard library speaks HTTP here.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from paintbench.errors import InputError, UserError
from paintbench.metrics import wire
from paintbench.metrics.base import Provider, Scores

RETRY_STATUS = {500, 502, 503, 504}


class RemoteServiceError(UserError):
    """The metric service could not be reached or did not answer in time (after the retries)."""


def read_token(path: str | None) -> str | None:
    if not path:
        return None
    from paintbench import files

    token = files.read_text(path, "config").strip()
    if not token:
        raise InputError(f"{path}: the token file is empty")
    return token


class Client:
    """HTTP to one service: JSON in and out, a bearer token, timeouts, retries with backoff."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 120.0, retries: int = 3,
                 backoff_s: float = 0.5) -> None:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"--server {url}: give the service's URL, e.g. http://127.0.0.1:8470")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s

    max_request_bytes: int | None = None   # the service's cap, learnt from GET /metrics

    def request(self, path: str, body: bytes | None = None) -> dict[str, Any]:
        if body is not None and self.max_request_bytes is not None and len(body) > self.max_request_bytes:
            raise InputError(f"metric service {self.url}: a request of {len(body):,} bytes is over its limit of "
                             f"{self.max_request_bytes:,} (PAINTBENCH_MAX_REQUEST_BYTES there); send fewer images "
                             "per call (--batch-size)")
        last = "no answer"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url + path, data=body, method="POST" if body is not None else "GET",
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return wire.decode_response(resp.read(), self.url) if body is not None else json.loads(resp.read())
            except urllib.error.HTTPError as e:
                content = e.read()
                try:
                    message = json.loads(content).get("error", content[:200].decode(errors="replace"))
                except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
                    message = content[:200].decode(errors="replace")
                if e.code not in RETRY_STATUS:
                    raise InputError(f"metric service {self.url}{path}: {e.code}: {message}") from None
                last = f"{e.code}: {message}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        raise RemoteServiceError(f"metric service {self.url}: no answer after {self.retries + 1} tries "
                                 f"(last: {last}); is `paintbench serve` running there?")

    def served(self) -> dict[str, dict[str, Any]]:
        doc = self.request("/metrics")
        if isinstance(doc.get("max_request_bytes"), int):
            self.max_request_bytes = doc["max_request_bytes"]
        return {m["metric"]: m for m in doc.get("metrics", [])}


class RemoteProvider(Provider):
    """One served metric, through `Client`; `provenance()` records the server and what it ran."""

    def __init__(self, url: str, name: str, *, token: str | None = None, timeout_s: float = 120.0,
                 retries: int = 3, backoff_s: float = 0.5, client: Client | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.client = client or Client(url, token=token, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
        served = self.client.served()
        if name not in served:
            raise UserError(f"metric service {self.client.url} does not serve {name!r} (it serves "
                            f"{', '.join(sorted(served)) or 'nothing'})")
        self.info = served[name]
        theirs = {**(self.info.get("provenance") or {}), **(self.info.get("options") or {})}
        if options and any(theirs.get(k) != v for k, v in options.items()):
            raise UserError(f"metric service {self.client.url} runs {name} with options {theirs}, this needs "
                            f"{options}: start it with `--option {name}:KEY=VALUE`")
        self.name = name                                   # type: ignore[misc]
        self.needs_prompt = self.spec.needs_prompt         # type: ignore[misc]
        super().__init__(device="cpu", batch_size=int(self.info.get("batch_size") or 32))
        from paintbench.metrics.base import resolve_dtype

        self.dtype = resolve_dtype(self.info.get("dtype", "float32"))

    def provenance(self) -> dict[str, Any]:
        return {**self.info.get("provenance", {}), "served_by": self.client.url}

    def _score_batch(self, images, prompts, metadata) -> Scores:
        payload = images.tensor if images.tensor is not None else images.pil   # wire.encode_images refuses floats
        body = wire.encode_request(uuid.uuid4().hex, payload, None if prompts is None else list(prompts),
                                   None if metadata is None else [dict(m or {}) for m in metadata])
        doc = self.client.request(f"/v1/score/{self.name}", body)
        return Scores(metric=self.name, values=wire.values_tensor(doc["values"]), details=list(doc["details"]))
