"""Where weight files come from: one catalog, one resolution order, one safe loader.

A weights directory holds files under their *official* names, so files a user already downloaded
drop in unchanged. `resolve` searches, in order:

1. an explicit path given to the provider (`weights=` argument);
2. the weights directory: `--weights-dir` / `weights_dir=`, else `$PAINTBENCH_WEIGHTS`, else
   `~/.cache/paintbench/weights` (where `paintbench weights fetch` puts files);
3. the Hugging Face cache (read with `local_files_only=True`, so it works under `HF_HUB_OFFLINE=1`).

A file that is nowhere raises `MissingWeightsError`, which names the file, every place searched, and
the command that fetches it. Nothing ever falls back silently to other weights.

Checkpoints are read with `torch.load(weights_only=True)` or safetensors; a TorchScript archive
(OpenAI's CLIP `.pt` files) is read as tensors by `metrics.torchscript`: nothing in the file runs
(never `torch.jit.load`, which executes the archive's code).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paintbench.errors import InputError, MissingFileError, UserError

ENV_WEIGHTS_DIR = "PAINTBENCH_WEIGHTS"


@dataclass(frozen=True)
class WeightSpec:
    """One weight file (or folder) under its official name."""

    name: str
    filename: str
    description: str
    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    files: tuple[str, ...] = ()  # for a folder: the files it must contain (the first is required)
    optional: bool = False
    source_note: str | None = None  # where it comes from when that is no URL or hub repo (ModelScope, ...)

    @property
    def is_dir(self) -> bool:
        return bool(self.files)

    @property
    def fetch_command(self) -> str:
        return f"paintbench weights fetch {self.name}"

    @property
    def source(self) -> str:
        if self.hf_repo and self.is_dir:
            return f"hf://{self.hf_repo} ({', '.join(self.files)})"
        if self.hf_repo:
            return f"hf://{self.hf_repo}/{self.hf_filename or self.filename}"
        return self.url or self.source_note or "(no public source)"


# name -> WeightSpec. Filled from the metric modules' `WEIGHTS` declarations on first use of the
# registry (`catalog()`), and by plugins through `register_weight`.
CATALOG: dict[str, WeightSpec] = {}


def catalog() -> dict[str, WeightSpec]:
    """Every known weight file: the built-in metrics' declarations, then plugins'."""
    from paintbench.metrics.registry import available

    available()  # reads the declarations (and plugins) once
    return CATALOG


def register_weight(spec: WeightSpec, *, replace: bool = False) -> None:
    """Add a weight file to the catalog (later issues: the GenEval detector, the mPLUG folder)."""
    if spec.name in CATALOG and not replace:
        raise ValueError(f"weight {spec.name!r} is already in the catalog")
    catalog()[spec.name] = spec


class MissingWeightsError(MissingFileError):
    """A weight file was not found anywhere; the message says where we looked and how to fetch it."""

    def __init__(self, spec: WeightSpec, searched: list[str]) -> None:
        places = "\n".join(f"  - {p}" for p in searched)
        msg = (
            f"weight file '{spec.filename}' ({spec.description}) not found. Searched:\n{places}\n"
            f"Fetch it with `{spec.fetch_command}` (source: {spec.source}), or put it into a weights "
            f"directory under that exact name and pass --weights-dir DIR or set {ENV_WEIGHTS_DIR}."
        )
        super().__init__(msg)
        self.spec = spec
        self.searched = searched

    def __str__(self) -> str:
        return str(self.args[0])


def default_weights_dir() -> Path:
    env = os.environ.get(ENV_WEIGHTS_DIR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/paintbench/weights").expanduser()


def _present(path: Path, spec: WeightSpec) -> bool:
    if spec.is_dir:
        return path.is_dir() and (path / spec.files[0]).is_file()
    return path.is_file()


def _from_hf_cache(spec: WeightSpec) -> Path | None:
    if not spec.hf_repo:
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    try:
        if spec.is_dir:
            first = hf_hub_download(spec.hf_repo, spec.files[0], local_files_only=True)
            folder = Path(first).parent
            return folder if _present(folder, spec) else None
        return Path(hf_hub_download(spec.hf_repo, spec.hf_filename or spec.filename, local_files_only=True))
    except Exception:  # not in the cache (the hub raises several exception types for that)
        return None


def resolve(
    name: str,
    explicit: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Find weight `name` (a `CATALOG` key). See the module docstring for the order."""
    spec = catalog()[name]
    searched: list[str] = []
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.is_dir() and not spec.is_dir:
            p = p / spec.filename
        if _present(p, spec):
            return p
        raise MissingWeightsError(spec, [f"explicit path {p} (does not exist or is incomplete)"])
    directory = Path(weights_dir).expanduser() if weights_dir is not None else default_weights_dir()
    candidate = directory / spec.filename
    if _present(candidate, spec):
        return candidate
    where = "--weights-dir" if weights_dir is not None else f"${ENV_WEIGHTS_DIR} or the default"
    note = f" (the folder {directory} does not exist: is {where} right?)" if not directory.is_dir() else ""
    searched.append(f"weights directory: {candidate}{note}")
    cached = _from_hf_cache(spec)
    if cached is not None:
        return cached
    if spec.hf_repo:
        searched.append(f"Hugging Face cache ({_hf_cache_dir()}): {spec.hf_repo}/{spec.hf_filename or spec.filename}")
    else:
        searched.append("Hugging Face cache: not searched (this file has no Hugging Face source)")
    raise MissingWeightsError(spec, searched)


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"


def find(name: str, weights_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Like `resolve`, but returns None when absent (for listings)."""
    try:
        return resolve(name, weights_dir=weights_dir)
    except MissingWeightsError:
        return None


def pick(
    name: str,
    weights: str | os.PathLike[str] | Mapping[str, Any] | None,
    weights_dir: str | os.PathLike[str] | None,
    *,
    primary: str | None = None,
) -> Path:
    """Resolve weight `name` for a provider given its `weights=` argument.

    `weights` may be a path (used for the provider's `primary` weight), or a mapping of weight name to
    path (any of the provider's weights), or None.
    """
    explicit = None
    if isinstance(weights, Mapping):
        explicit = weights.get(name)
    elif weights is not None and name == primary:
        explicit = weights
    elif weights is not None:
        # The other files of a provider are looked for next to its explicitly given main file first
        # (ImageReward.pt beside med_config.json and bert-base-uncased/), then in the usual places.
        folder = Path(weights).expanduser()
        folder = folder if folder.is_dir() else folder.parent
        sibling = folder / catalog()[name].filename
        if _present(sibling, catalog()[name]):
            return sibling
    return resolve(name, explicit=explicit, weights_dir=weights_dir)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: Path) -> str:
    """sha256 of a weight file; for a weight folder, sha256 over its files' names and hashes (so the
    provenance identifies the weights, not just a config file). Cached per (path, mtime, size)."""
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path)}\t{fingerprint(f)}\n".encode())
        return h.hexdigest()
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = sha256_file(path)
    return _FINGERPRINTS[key]


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


# -- loading --------------------------------------------------------------------------------------
def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code.

    Accepts safetensors, `torch.save` files (read with `weights_only=True`) and TorchScript archives
    (their parameters and buffers are returned as a state dict).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from paintbench.metrics.memory import safetensors_header

        safetensors_header(path)   # a hostile header is one clear error before the library parses it
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise InputError(f"{path}: not a readable safetensors file ({e})") from None
    import torch

    if _is_torchscript(path):  # never torch.jit.load: it runs the archive's code
        from paintbench.metrics.torchscript import read_torchscript_state_dict

        return read_torchscript_state_dict(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(   # a ValueError too: callers that catch ValueError keep working
            f"{path}: cannot be read as a weights-only checkpoint ({type(e).__name__}: {e}). paintbench "
            "never unpickles arbitrary objects; convert the file to a plain state dict or safetensors."
        ) from e


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


# -- fetching (online users) ----------------------------------------------------------------------
def fetch(name: str, dest: str | os.PathLike[str] | None = None, *, progress: bool = True) -> Path:
    """Download weight `name` into `dest` (default: the weights directory) and check its sha256."""
    spec = catalog()[name]
    directory = Path(dest).expanduser() if dest is not None else default_weights_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / spec.filename
    if _present(target, spec):
        _check_sha(spec, target)
        return target
    if not (spec.hf_repo or spec.url):
        raise MissingWeightsError(spec, ["no public download source is known for this file"])
    try:
        if spec.hf_repo:
            from huggingface_hub import hf_hub_download

            if spec.is_dir:
                target.mkdir(exist_ok=True)
                for f in spec.files:
                    got = hf_hub_download(spec.hf_repo, f)
                    shutil.copyfile(got, target / f)
            else:
                got = hf_hub_download(spec.hf_repo, spec.hf_filename or spec.filename)
                _atomic_copy(Path(got), target)
        else:
            _download(spec.url, target, progress=progress)  # type: ignore[arg-type]
    except Exception as e:  # offline, refused, timed out: say what was fetched, where to, and the way by hand
        raise FetchError(spec, target, e) from e
    _check_sha(spec, target)
    return target


class FetchError(UserError):
    """A download that failed; the message names the file, the destination and how to place it by hand."""

    def __init__(self, spec: WeightSpec, target: Path, cause: BaseException) -> None:
        super().__init__(
            f"cannot fetch {spec.name} ({spec.filename}) from {spec.source} into {target}: "
            f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}. On a machine without "
            f"network, download it elsewhere and copy it to {target} (or into any folder you pass as --weights-dir)")


def _check_sha(spec: WeightSpec, target: Path) -> None:
    if not spec.sha256:
        return
    f = target / spec.files[0] if spec.is_dir else target
    got = sha256_file(f)
    if got != spec.sha256:
        raise InputError(f"{f}: sha256 {got} does not match the expected {spec.sha256}; delete it and fetch again")


def _atomic_copy(src: Path, dst: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=dst.parent, delete=False, suffix=".part") as tmp, open(src, "rb") as s:
        shutil.copyfileobj(s, tmp)
    os.replace(tmp.name, dst)


def _download(url: str, dst: Path, *, progress: bool) -> None:
    from tqdm import tqdm

    part = dst.with_name(dst.name + ".part")
    with urllib.request.urlopen(url) as r, open(part, "wb") as f:
        total = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dst.name, disable=not progress) as bar:
            while block := r.read(1 << 20):
                f.write(block)
                bar.update(len(block))
    os.replace(part, dst)


# -- synthetic weights: never mistaken for the official ones ----------------------------------------------
SYNTHETIC_MARKER = ".paintbench-synthetic.json"


def mark_synthetic(directory: Path, files: list[Path]) -> None:
    """Record in `directory` that `files` are synthetic (random, written by paintbench), so every result
    made with them says so."""
    import json

    marker = directory / SYNTHETIC_MARKER
    listed = set(json.loads(marker.read_text(encoding="utf-8")).get("files", [])) if marker.is_file() else set()
    listed |= {f.name for f in files if f.parent.resolve() == directory.resolve()}
    marker.write_text(json.dumps({"synthetic": True, "written_by": "paintbench weights make-tiny",
                                  "files": sorted(listed)}, indent=1) + "\n", encoding="utf-8")


def is_synthetic(path: str | os.PathLike[str]) -> bool:
    """Whether a weight file (or folder) was written by paintbench as synthetic weights."""
    import json

    p = Path(path)
    marker = p.parent / SYNTHETIC_MARKER
    if not marker.is_file():
        return False
    try:
        return p.name in json.loads(marker.read_text(encoding="utf-8")).get("files", [])
    except ValueError:
        return False


def weights_notes(provenance: dict[str, Any]) -> dict[str, Any]:
    """`provenance` with what its weight files are: each entry with a `path` that is synthetic gets
    `synthetic: true` (and the whole `synthetic_weights: true`); a file whose official sha256 is known
    and differs gets `official_sha256_mismatch` (and a warning). Results and the site carry both."""
    import warnings

    official = {spec.filename: spec.sha256 for spec in catalog().values() if spec.sha256 and not spec.is_dir}
    synthetic = False

    def walk(node: Any) -> None:
        nonlocal synthetic
        if isinstance(node, dict):
            path = node.get("path")
            if isinstance(path, str) and path:
                if is_synthetic(path):
                    node["synthetic"] = synthetic = True
                expected = official.get(Path(path).name)
                if expected and node.get("sha256") and node["sha256"] != expected and not node.get("synthetic"):
                    node["official_sha256_mismatch"] = True
                    warnings.warn(f"{path}: not the official file (sha256 {node['sha256'][:12]}..., official "
                                  f"{expected[:12]}...): results are not the official metric's numbers", stacklevel=3)
            for v in list(node.values()):
                walk(v)

    walk(provenance)
    if synthetic:
        provenance["synthetic_weights"] = True
    return provenance


def safetensors_files(folder: Path, what: str) -> list[Path]:
    """A model folder's safetensors file(s): `model.safetensors`, or the shards its index names (each
    checked present, naming the missing one)."""
    import json

    from paintbench import files as safe

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(safe.read_text(index, "config")).get("weight_map")
        except (json.JSONDecodeError, AttributeError):
            raise InputError(f"{index}: not a safetensors index (JSON with a 'weight_map')") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise InputError(f"{index}: 'weight_map' must map tensor names to shard file names")
        # every shard lies inside the folder (no '../../etc/passwd', no absolute path to another model),
        # so the folder's fingerprint covers exactly the files that are read
        files = sorted({safe.inside(folder, name, "shard") for name in weight_map.values()})
    else:
        files = [folder / "model.safetensors"]
    for f in files:
        if not f.is_file():
            raise MissingFileError(f"{f}: missing ({what}'s weights: model.safetensors or the shards of its index)")
    return files
