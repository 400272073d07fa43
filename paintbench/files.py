"""Opening untrusted files: never through a symbolic link, regular files only, bounded before reading.

Every file paintbench reads from a folder it did not create (run folders, weight folders, suite and
prompt files, configs, experiment summaries) or writes inside one (the run lock, records, markers) goes
through here, so one rule holds everywhere:

- the last path component is opened with `O_NOFOLLOW` (a link there is refused, never followed: a
  `RUN/.lock` pointing at `~/.bashrc` is not truncated), and the opened file must be a regular file (a
  FIFO would block, `/dev/zero` would never end);
- a reader names its cap (`max_bytes`) and refuses a larger file before reading a byte of it;
- `inside(folder, name)` resolves a name a file gave (an index's `weight_map`, a record's image path) and
  refuses anything that lands outside the folder.

Caps default per kind of file (`LIMITS`) and can be raised with `PAINTBENCH_MAX_<KIND>_BYTES`. This
module is plumbing: it imports nothing of paintbench but `errors`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from paintbench.errors import InputError

MiB = 1 << 20
LIMITS: dict[str, int] = {
    "config": 4 * MiB,      # YAML/JSON settings: suites, trainer configs, model config.json
    "prompts": 64 * MiB,    # prompt tables, metadata JSONL
    "records": 512 * MiB,   # a run folder's samples/scores JSONL
    "tokenizer": 64 * MiB,  # vocab.txt, merges.txt, tokenizer.json, tokenizer.model
    "summary": 64 * MiB,    # experiment summaries, results.json
}


def limit(kind: str) -> int:
    """The byte cap of a kind of file (`LIMITS`), or its `PAINTBENCH_MAX_<KIND>_BYTES` override."""
    env = f"PAINTBENCH_MAX_{kind.upper()}_BYTES"
    raw = os.environ.get(env)
    if raw is None:
        return LIMITS[kind]
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{env}={raw!r}: not a whole number of bytes") from None
    if value < 1:
        raise InputError(f"{env}={raw!r}: must be at least 1")
    return value


def open_fd(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """`os.open` that follows no link in the last component, never blocks on a FIFO, and accepts only a
    regular file; the error names the file and what it is instead."""
    p = Path(path)
    try:
        fd = os.open(p, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a folder, not a file") from None
    except OSError as e:
        if os.path.islink(p):
            raise InputError(f"{p}: is a symbolic link; paintbench does not follow links here (replace it "
                             "with the file itself)") from None
        raise InputError(f"{p}: cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{p}: not a regular file ({_kind(st.st_mode)})")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def read_bytes(path: str | os.PathLike[str], kind: str, *, max_bytes: int | None = None) -> bytes:
    """The whole of a regular file, refused (naming the size and the cap) when over its kind's cap."""
    cap = limit(kind) if max_bytes is None else max_bytes
    fd = open_fd(path)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise InputError(f"{path}: {size:,} bytes, more than the {cap:,}-byte limit for a {kind} file "
                             f"(set PAINTBENCH_MAX_{kind.upper()}_BYTES to allow it)")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, cap + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:   # it grew while being read
                raise InputError(f"{path}: more than the {cap:,}-byte limit for a {kind} file")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], kind: str, *, max_bytes: int | None = None) -> str:
    """`read_bytes` decoded as UTF-8; an error names the file and the byte."""
    data = read_bytes(path, kind, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def check_regular(path: str | os.PathLike[str], kind: str, *, follow_links: bool = False) -> Path:
    """`path` if it is a regular file within its kind's cap: for files a library opens itself (a
    tokenizer's merges.txt), checked before the library reads them. `follow_links` checks what a link
    points at (a Hugging Face cache snapshot links every file to its blob) instead of refusing it."""
    if follow_links:
        try:
            st = os.stat(path)
        except OSError as e:
            raise InputError(f"{path}: cannot be read ({e.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file ({_kind(st.st_mode)})")
        size = st.st_size
    else:
        fd = open_fd(path)
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    cap = limit(kind)
    if size > cap:
        raise InputError(f"{path}: {size:,} bytes, more than the {cap:,}-byte limit for a {kind} file "
                         f"(set PAINTBENCH_MAX_{kind.upper()}_BYTES to allow it)")
    return Path(path)


def inside(folder: str | os.PathLike[str], name: str, what: str = "file") -> Path:
    """`folder/name`, refused unless it resolves (links followed) inside `folder`: a name a file gave
    (`../../etc/passwd`, an absolute path) never reaches outside the folder it came with."""
    root = Path(folder).resolve()
    if not name or "\x00" in name:
        raise InputError(f"{folder}: an empty or invalid {what} name {name!r}")
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise InputError(f"{folder}: the {what} {name!r} lies outside the folder; every file a folder names "
                         "must be inside it")
    return target


MAX_YAML_DEPTH = 32


def load_yaml(text: str, source: str | os.PathLike[str], *, what: str = "YAML") -> Any:
    """YAML from an untrusted file, refused with one line when it uses anchors or aliases (a 0.5 KB
    alias bomb expands to gigabytes), nests deeper than `MAX_YAML_DEPTH`, or does not parse. The check
    walks the parser's events, which never expand an alias, before anything is constructed."""
    import yaml

    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise InputError(f"{source}: YAML anchors and aliases (&name / *name) are not allowed here; "
                                 "write the values out")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise InputError(f"{source}: nested more than {MAX_YAML_DEPTH} levels deep")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{source}: not valid {what} ({first})") from None


def load_json(path: str | os.PathLike[str], kind: str, *, what: str = "JSON") -> Any:
    """JSON from an untrusted file: regular, within its cap, UTF-8, no NaN or Infinity (not JSON, and
    they break every page and export downstream), nesting no deeper than Python's parser can take; one
    `InputError` naming the file otherwise."""
    import json

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    text = read_text(path, kind)
    try:
        return json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise InputError(f"{path}: not {what} paintbench reads (nested too deeply)") from None
    except ValueError as e:
        raise InputError(f"{path}: not valid {what} ({e})") from None


def write_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Replace `path` with `data` atomically and without following links: the bytes go to a new
    temporary file (`O_EXCL | O_NOFOLLOW`: a planted file or link of that name is refused, never
    written through), then `os.replace` renames it over `path` (a rename replaces a link at `path`
    itself, never what it points to). A reader sees the old or the new file, never half of one."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        os.unlink(tmp)   # our own leftover from a killed process with this pid (a link is removed, not followed)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)


def open_append(path: str | os.PathLike[str]) -> int:
    """A file descriptor appending to a regular file (created if absent), never through a link."""
    return open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def dump_yaml(data: Any) -> str:
    """YAML that `load_yaml` reads back: never anchors or aliases (PyYAML writes `&id001`/`*id001` for an
    object that appears twice, which `load_yaml` refuses)."""
    import yaml

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(data, Dumper=NoAliases, sort_keys=False, allow_unicode=True)
