"""`paintbench serve` for real: a local Ray, Serve's HTTP proxy on loopback, the server in another process.

- scores through the service equal in-process scores bit for bit (values and details): the world metrics
  here, and every registered metric on tiny weights in `test_every_metric_through_the_service`;
- `score --server`, `eval --score-server` and the trainer's `reward_backend: remote` give the in-process
  results, and record where the scores came from;
- a request id answered twice is answered from the record; a killed replica is restarted by Serve and the
  client's retry gets the same scores; a server that is gone is one line naming it, and the trainer stops
  before any update;
- a token-protected server refuses requests without it; a non-loopback bind without a token is refused;
  an oversized body is 413; SIGTERM drains and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray.serve", reason="Ray Serve is not installed here (pip install 'paintbench[serve]')")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, *args: str, env: dict | None = None, timeout: float = 240.0):
    port = free_port()
    log = open(tmp / f"serve-{port}.log", "w")   # noqa: SIM115 - closed by the caller through proc
    proc = subprocess.Popen([sys.executable, "-m", "paintbench", "serve", *args, "--port", str(port)], cwd=REPO,
                            env={**os.environ, **(env or {}), "RAY_AUTH_MODE": "disabled"}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {(tmp / f'serve-{port}.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "/ready", headers=headers), timeout=5) as r:
                if json.loads(r.read()).get("ready"):
                    return proc, url, tmp / f"serve-{port}.log"
        except (urllib.error.URLError, ConnectionError, OSError, json.JSONDecodeError):
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"serve did not become ready: {(tmp / f'serve-{port}.log').read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return -9


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "token").write_text(TOKEN + "\n")
    proc, url, log = start_server(tmp, "shapes-geneval", "blocks-geneval", "--token-file", str(tmp / "token"),
                                  "--option", "shapes-geneval:mode=reward", "--max-batch", "2", "--max-queued", "2",
                                  env={"PAINTBENCH_MAX_REQUEST_BYTES": str(4 * 2**20)})
    yield url, tmp / "token", proc
    code = stop(proc)
    assert code == 0, log.read_text()[-2000:]
    assert "draining" in log.read_text()


def rollout_images(n: int = 12, world: str = "shapes") -> tuple[torch.Tensor, list[dict]]:
    """Images a tiny policy draws (codes at random), with GenEval-format shapes prompts."""
    from paintbench.trainer.data import load_records
    from paintbench.trainer.policies.tiny import TinyPolicy

    policy = TinyPolicy(world=world, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    codes = torch.randint(0, policy.codebook_size, (n, policy.num_image_tokens), generator=torch.Generator().manual_seed(0))
    records = load_records("shapes", seed=0, per_tag=4)[:n]
    return policy.decode(codes), records


def test_scores_through_the_service_equal_in_process_bit_for_bit(server):
    from paintbench.metrics.remote import RemoteProvider
    from paintbench.trainer.rewards import _get_provider

    url, _, _ = server
    images, records = rollout_images()
    prompts = [r["prompt"] for r in records]
    local = _get_provider("shapes-geneval", mode="reward").score(images, prompts, records)
    remote = RemoteProvider(url, "shapes-geneval", token=TOKEN, options={"mode": "reward"})
    got = remote.score(images, prompts, records)
    assert torch.equal(got.values, local.values.cpu()) and got.details == json.loads(json.dumps(local.details))
    assert remote.provenance()["served_by"] == url and remote.provenance()["version"] == "shapes-geneval/1"
    # PIL images take the in-process PIL path on the server too
    from torchvision.transforms.functional import to_pil_image

    pil = [to_pil_image(im) for im in images[:5]]
    assert torch.equal(remote.score(pil, prompts[:5], records[:5]).values,
                       _get_provider("shapes-geneval", mode="reward").score(pil, prompts[:5], records[:5]).values.cpu())


def post(url: str, path: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, data=body, method="POST", headers={
        "Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_request_ids_make_retries_idempotent_and_limits_hold(server):
    from paintbench.metrics import wire

    url, _, _ = server
    images, records = rollout_images(4)
    body = wire.encode_request("same-id", images, [r["prompt"] for r in records], records)
    s1, first = post(url, "/v1/score/shapes-geneval", body)
    s2, again = post(url, "/v1/score/shapes-geneval", body)
    assert s1 == s2 == 200 and first["values"] == again["values"]
    assert first["served_by"]["cached"] is False and again["served_by"]["cached"] is True
    assert post(url, "/v1/score/shapes-geneval", body, token=None)[0] == 401          # the token is checked
    assert post(url, "/v1/score/shapes-geneval", body, token="wrong")[0] == 401
    assert post(url, "/v1/score/nope", body)[0] == 404
    # a body over the cap is refused from its declared length, before it is read
    import http.client

    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    conn.putrequest("POST", "/v1/score/shapes-geneval")
    for k, v in (("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "application/json"),
                 ("Content-Length", str(5 * 2**20))):
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "bytes" in json.loads(resp.read())["error"]
    conn.close()
    # and the client, which learnt the cap, says so before sending
    from paintbench.errors import InputError
    from paintbench.metrics.remote import RemoteProvider

    remote = RemoteProvider(url, "shapes-geneval", token=TOKEN)
    with pytest.raises(InputError, match="over its limit"):
        remote.score(torch.zeros(40, 3, 256, 256, dtype=torch.uint8), ["x"] * 40, [{}] * 40)
    status, err = post(url, "/v1/score/shapes-geneval", b'{"version": 1, "request_id": "x", "images": {"kind": "path", "items": ["/etc/passwd"]}}')
    assert status == 400 and "kind" in err["error"]                                  # no client-named paths


def test_a_full_queue_answers_busy_and_the_client_retries_through_it(server):
    """16 simultaneous requests against 8 in flight + 2 queued: the overflow is 503 "busy" at once (a
    bounded queue, never an unbounded wait), and `RemoteProvider`'s retries get every answer, unchanged."""
    import concurrent.futures

    from paintbench.metrics import wire
    from paintbench.metrics.remote import Client, RemoteProvider

    url, _, _ = server
    images, records = rollout_images(12)
    images = images.repeat(3, 1, 1, 1)                  # 36 images a request (2.4 MB): long enough to overlap
    records = records * 3
    body = [wire.encode_request(f"burst-{i}", images, [r["prompt"] for r in records], records) for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda b: post(url, "/v1/score/shapes-geneval", b), body))
    codes = sorted(s for s, _ in statuses)
    assert 503 in codes and 200 in codes, codes
    assert all("busy" in d["error"] for s, d in statuses if s == 503)
    provider = RemoteProvider(url, "shapes-geneval", client=Client(url, token=TOKEN, retries=20, backoff_s=0.5))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: provider.score(images, [r["prompt"] for r in records], records).values, range(8)))
    assert all(torch.equal(g, got[0]) for g in got)


def test_a_killed_replica_is_restarted_and_the_retry_gives_the_same_scores(server):
    from paintbench.metrics.remote import Client, RemoteProvider

    url, _, _ = server
    client = Client(url, token=TOKEN, retries=8, backoff_s=1.0)
    before = client.served()["shapes-geneval"]["pid"]
    images, records = rollout_images(6)
    prompts = [r["prompt"] for r in records]
    provider = RemoteProvider(url, "shapes-geneval", client=client)
    want = provider.score(images, prompts, records).values
    os.kill(before, signal.SIGKILL)                       # the replica's process, mid-service
    got = provider.score(images, prompts, records).values
    assert torch.equal(got, want)
    deadline = time.monotonic() + 120
    while client.served()["shapes-geneval"]["pid"] == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.served()["shapes-geneval"]["pid"] != before   # Serve started a new replica


def test_score_and_eval_through_the_server_equal_in_process(server, tmp_path):
    url, token_file, _ = server
    cmd = [sys.executable, "-m", "paintbench"]
    base = ["eval", "shapes", "--generator", "shapes-random", "--limit", "6", "--no-progress", "--n-resamples", "200",
            "--metric-opt", "shapes-geneval.mode=reward"]      # the options the server runs it with
    local = subprocess.run([*cmd, *base, "--out", str(tmp_path / "local")], capture_output=True, text=True, timeout=300)
    remote = subprocess.run([*cmd, *base, "--out", str(tmp_path / "remote"), "--score-server", url,
                             "--score-token-file", str(token_file)], capture_output=True, text=True, timeout=300)
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr[-2000:]

    def values(run: Path) -> list:
        return [json.loads(x)["value"] for x in (run / "scores" / "shapes-geneval.jsonl").read_text().splitlines()]

    assert values(tmp_path / "local") == values(tmp_path / "remote")
    res = json.loads((tmp_path / "remote" / "results.json").read_text())
    assert url in json.dumps(res)                                       # where the scores came from
    gone = subprocess.run([*cmd, *base, "--out", str(tmp_path / "gone"), "--score-server", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=300)
    assert gone.returncode == 2 and "Traceback" not in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1 and "http://127.0.0.1:9" in gone.stderr


def test_training_with_the_remote_backend_equals_in_process(server, tmp_path):
    from paintbench.trainer import policies
    from paintbench.trainer.logs import read_metrics

    url, token_file, _ = server
    common = ["train", "shapes-tiny", "steps=2", "warmstart_steps=5", "prompts_per_step=2", "group_size=4",
              "eval_every=0", "save_every=0", "sample_every=0", "tensorboard=false", "--quiet"]
    cmd = [sys.executable, "-m", "paintbench"]
    local = subprocess.run([*cmd, *common, "--out", str(tmp_path / "local")], capture_output=True, text=True, timeout=600)
    remote = subprocess.run([*cmd, *common, "reward_backend=remote", f"reward_url={url}",
                             f"reward_token_file={token_file}", "reward_async=true", "--out", str(tmp_path / "remote")],
                            capture_output=True, text=True, timeout=600)
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr[-2000:]
    a, b = read_metrics(tmp_path / "local"), read_metrics(tmp_path / "remote")
    assert [r["reward/mean"] for r in a] == [r["reward/mean"] for r in b]
    wa, wb = policies.load(tmp_path / "local").state_dict(), policies.load(tmp_path / "remote").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a service that is gone: one line naming it, and no round is written (no partial update)
    gone = subprocess.run([*cmd, *common, "reward_backend=remote", "reward_url=http://127.0.0.1:9", "reward_retries=1",
                           "--out", str(tmp_path / "gone")], capture_output=True, text=True, timeout=600)
    assert gone.returncode == 2 and "Traceback" not in gone.stderr and "http://127.0.0.1:9" in gone.stderr
    rows = read_metrics(tmp_path / "gone") if (tmp_path / "gone" / "metrics.jsonl").exists() else []
    assert not any("reward/mean" in r for r in rows)


def test_a_public_bind_without_a_token_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "paintbench", "serve", "shapes-geneval", "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--token-file" in out.stderr and len(out.stderr.strip().splitlines()) == 1
