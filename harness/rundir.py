"""The run directory: what a benchmark run leaves on disk, written so that it can always resume.

```
RUN/
  config.yaml              resolved configuration (suite + hash, generator + settings, metrics, seed)
  samples.jsonl            one record per (prompt_id, sample_index), sorted: seed, prompt, settings,
                           image path and sha256
  scores/<metric>.jsonl    one record per sample: value (null on error), details, error
  results.json             per metric and category: value, CI, n; versions, weights, hardware, timing
  images/<prompt_id>/<k>.png
  parts/                   append-only logs written while the run is in progress, one per rank
  log.jsonl                events with timestamps and process ids (kept out of the records)
```

Records carry no timestamps or process ids, so two runs of one configuration give identical files.
Appends are atomic in the way that matters: each record is one `write()` of one line on an O_APPEND
descriptor, flushed to disk; a process killed mid-write leaves at most a torn last line, which the
next reader detects (no newline, or not JSON) and drops, so that sample is simply done again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from paintbench import files
from paintbench.errors import UserError

FORMAT_VERSION = 1
Key = tuple[str, int]


_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def prompt_folder(prompt_id: str) -> str:
    """The folder name of a prompt's images: one-to-one, and always a single plain name inside `images/`.

    A plain id (letters, digits, `_.-`, not starting with a dot) is its own name; any other (`a/b`, `..`,
    `.`, `""`, a name with `%`) is `%` + its percent-encoding, which no plain id can equal, so two ids
    never share a folder and none escapes it (`..` is not `../`)."""
    if _PLAIN_ID.fullmatch(prompt_id):
        return prompt_id
    name = "%" + urllib.parse.quote(prompt_id, safe="")
    if len(name) > 200:
        raise UserError(f"prompt id {prompt_id[:60]!r}... is too long to name a folder ({len(name)} characters "
                        "encoded; at most 200)")
    return name


def legacy_prompt_folder(prompt_id: str) -> str:
    """How runs made before paintbench 0.1.1 named the folder (`/` as `__`; not one-to-one)."""
    return prompt_id.replace("/", "__")


def sample_key(rec: dict[str, Any]) -> Key:
    return (str(rec["prompt_id"]), int(rec["sample_index"]))


class JsonlAppender:
    """Append-only JSONL with whole-line atomic appends."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(path)
        self._fd = files.open_append(path)   # never through a link planted in a folder we did not create

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):  # a short write (disk full): make the line detectably torn, then fail
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes); disk full?")
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_torn_tail(path: Path) -> bool:
    """Cut a last line that has no newline (a write interrupted by a kill). True if something was cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return False
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    return True


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Valid records of a JSONL file, and one message per line that is not (torn or corrupt).
    Corrupt lines are reported and skipped: their samples count as not done and are redone."""
    numbered, problems = read_jsonl_numbered(path)
    return [rec for _, rec in numbered], problems


def read_jsonl_numbered(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """`read_jsonl`, each record with its line number (for errors that point at the line)."""
    if not path.exists():
        return [], []
    from paintbench.files import read_bytes

    records, problems = [], []
    raw = read_bytes(path, "records")
    lines = raw.split(b"\n")
    torn_tail = not raw.endswith(b"\n") and raw != b""
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if torn_tail and i == len(lines):
            problems.append(f"{path}:{i}: torn last line (interrupted write), will be redone")
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
            records.append((i, rec))
        except (ValueError, UnicodeDecodeError) as e:
            problems.append(f"{path}:{i}: corrupt line skipped ({e}); its sample will be redone")
    return records, problems


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # paths
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def samples_path(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def results_path(self) -> Path:
        return self.root / "results.json"

    @property
    def parts(self) -> Path:
        return self.root / "parts"

    def scores_path(self, metric: str) -> Path:
        return self.root / "scores" / f"{metric}.jsonl"

    def image_path(self, prompt_id: str, sample_index: int) -> Path:
        return self.root / "images" / prompt_folder(prompt_id) / f"{sample_index:05d}.png"

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def resolve_image(self, image: str) -> Path:
        p = Path(image)
        return p if p.is_absolute() else self.root / p

    # configuration
    def prepare(self, config: dict[str, Any], *, identity: dict[str, Any]) -> None:
        """Create the run directory, or check that an existing one was made by the same configuration
        (`identity`: the settings that determine the samples and scores)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists() and self.has_records():
            raise UserError(f"{self.root} holds samples or scores but no config.yaml (deleted?), so the settings "
                            "they were made with are unknown and cannot be checked against this run's; restore "
                            "config.yaml, or use a new --out")
        if self.config_path.exists() and self.has_records():
            old = self._config_doc()
            if old.get("identity") != identity:
                diffs = sorted(k for k in set(identity) | set(old.get("identity", {}))
                               if identity.get(k) != old.get("identity", {}).get(k))
                raise UserError(f"{self.root} holds a run with a different configuration (differs in: "
                                f"{', '.join(diffs)}); use another --out, or the same settings to resume")
            return
        doc = {"format_version": FORMAT_VERSION, "identity": identity, **config}
        files.write_atomic(self.config_path, files.dump_yaml(doc).encode("utf-8"))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for this process: a second paintbench process on the same --out is
        refused at once, naming the holder, instead of racing on the same files. The OS releases the lock
        when the holder exits, even when it is killed."""
        with hold_folder(self.root):
            yield


    def _config_doc(self) -> dict[str, Any]:
        try:
            doc = files.load_yaml(read_text(self.config_path, "config"), self.config_path) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{self.config_path}: not valid YAML ({str(e).splitlines()[0]}); it was edited or "
                            "damaged: restore it, or use a new --out") from e
        if not isinstance(doc, dict):
            raise UserError(f"{self.config_path}: not a paintbench run configuration (not a mapping)")
        return doc

    def has_records(self) -> bool:
        """Whether any sample or score was recorded (a run that failed before any is free to restart)."""
        files = [self.samples_path, *self.parts.glob("*.jsonl")] if self.parts.exists() else [self.samples_path]
        return any(f.exists() and f.stat().st_size > 0 for f in files)

    def check_identity(self, identity: dict[str, Any], timeout: float = 120.0) -> None:
        """On ranks other than 0: wait for rank 0's config.yaml and check it; never write it."""
        deadline = time.time() + timeout
        while not self.config_path.exists():
            if time.time() > deadline:
                raise UserError(f"{self.config_path} did not appear (is --out on a filesystem all ranks share?)")
            time.sleep(0.2)
        old = self._config_doc()
        if old.get("identity") != identity:
            raise UserError(f"{self.root}: rank 0 prepared a run with a different configuration than this rank's")

    def read_config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise UserError(f"{self.root}: not a paintbench run directory (no config.yaml)")
        return self._config_doc()

    # parts: in-progress logs
    def sample_part(self, rank: int) -> Path:
        return self.parts / f"samples.rank{rank:05d}.jsonl"

    def score_part(self, metric: str, rank: int) -> Path:
        return self.parts / f"scores.{metric}.rank{rank:05d}.jsonl"

    def _collect(self, merged: Path, pattern: str) -> tuple[dict[Key, dict[str, Any]], list[str]]:
        done: dict[Key, dict[str, Any]] = {}
        problems: list[str] = []
        files = [merged, *sorted(self.parts.glob(pattern))] if self.parts.exists() else [merged]
        for f in files:
            recs, probs = read_jsonl(f)
            problems += probs
            for r in recs:
                try:
                    done[sample_key(r)] = r
                except (KeyError, TypeError, ValueError):
                    problems.append(f"{f}: a record without prompt_id/sample_index was skipped")
        return done, problems

    def samples_done(self) -> tuple[dict[Key, dict[str, Any]], list[str]]:
        """Generated samples whose image file still exists (a deleted image is generated again)."""
        done, problems = self._collect(self.samples_path, "samples.rank*.jsonl")
        kept = {}
        for k, r in done.items():
            if not isinstance(r.get("image"), str) or not r["image"]:
                problems.append(f"{self.samples_path}: the record of sample {k} has no image path; it will be redone")
            elif self.resolve_image(r["image"]).exists():
                kept[k] = r
            else:
                problems.append(f"{r['image']}: image file is missing; sample {k} will be redone")
        return kept, problems

    def scores_done(self, metric: str) -> tuple[dict[Key, dict[str, Any]], list[str]]:
        return self._collect(self.scores_path(metric), f"scores.{metric}.rank*.jsonl")

    def generation_failures(self) -> list[dict[str, Any]]:
        """Samples the generator could not produce (or a folder could not bring), with the reason:
        `{"prompt_id", "sample_index", "error"}`; retried on the next run."""
        out: list[dict[str, Any]] = []
        for f in sorted(self.root.glob("parts/generation_failures.rank*.jsonl")):
            out += read_jsonl(f)[0]
        return out

    def promote_scores(self, staged: str, metric: str) -> None:
        """Make the completed staged scores of a rescore the metric's own (each file one atomic rename)."""
        for suffix in (".jsonl", ".provenance.json", ".request.json"):
            src = self.root / "scores" / f"{staged}{suffix}"
            if src.exists():
                os.replace(src, self.root / "scores" / f"{metric}{suffix}")

    # merging
    def merge(self, order: list[Key], metrics: list[str]) -> None:
        """Write the sorted, canonical `samples.jsonl` and `scores/<metric>.jsonl` from everything
        recorded so far, then drop the parts they came from."""
        samples, _ = self.samples_done()
        _write_sorted(self.samples_path, samples, order)
        for m in metrics:
            scores, _ = self.scores_done(m)
            _write_sorted(self.scores_path(m), scores, order)
        if self.parts.exists():  # only what was merged: another metric's unmerged scores stay
            for pattern in ["samples.rank*.jsonl", *(f"scores.{m}.rank*.jsonl" for m in metrics)]:
                for f in self.parts.glob(pattern):
                    f.unlink()

    def log(self, event: str, **fields: Any) -> None:
        rec = {"time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), "event": event, **fields}
        fd = files.open_append(self.root / "log.jsonl")
        try:
            os.write(fd, (json.dumps(rec, default=str) + "\n").encode("utf-8"))
        finally:
            os.close(fd)


def _write_sorted(path: Path, records: dict[Key, dict[str, Any]], order: list[Key]) -> None:
    rank = {k: i for i, k in enumerate(order)}
    keys = sorted(records, key=lambda k: (rank.get(k, len(rank)), k))
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, "".join(json.dumps(records[k], ensure_ascii=False, sort_keys=True) + "\n"
                                     for k in keys).encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Replace `path` atomically (a reader sees the old or the new file, never half of one)."""
    files.write_atomic(path, (json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n").encode("utf-8"))


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace a JSONL file atomically, one record per line, in the given order."""
    files.write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))


def read_text(path: Path, kind: str = "prompts") -> str:
    """A text file the user gave or edited, as UTF-8, through `paintbench.files` (a regular file, no link,
    within its kind's cap); an error names the file and what is wrong."""
    return files.read_text(path, kind)


@contextlib.contextmanager
def hold_folder(root: Path) -> Iterator[None]:
    """Hold `root` for this process through `root/.lock` (see `RunDir.lock`; `train` takes it too).

    The lock file is opened without following a link and must be a regular file with one name: a
    `.lock` someone planted as a link, a FIFO or a hard link to another file is refused, never
    truncated or written."""
    from paintbench.files import open_fd

    root.mkdir(parents=True, exist_ok=True)
    path = root / ".lock"
    fd = open_fd(path, os.O_RDWR | os.O_CREAT, 0o644)
    if os.fstat(fd).st_nlink != 1:
        os.close(fd)
        raise UserError(f"{path}: has other names (a hard link); remove it, paintbench makes its own lock file")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            holder = "".join(c if c.isprintable() else "?" for c in holder)[:200]
            raise UserError(f"{root} is in use by {holder}; wait for it to finish (or stop it), then rerun "
                            "to resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
