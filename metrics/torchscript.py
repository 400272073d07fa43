"""Read the tensors of a TorchScript archive without executing anything in it.

`torch.jit.load` runs the archive's code: a scripted `__setstate__` executes on load, so a crafted
`ViT-L-14.pt` could do whatever TorchScript can before paintbench ever saw a tensor. OpenAI's CLIP
checkpoints are TorchScript archives, so paintbench reads them itself:

- `<archive>/data.pkl` is unpickled by a restricted unpickler: `__torch__.*` classes become inert
  containers (their state is kept, no method of theirs exists, let alone runs), tensors are rebuilt
  from the archive's `data/<key>` storages, and every other global is refused by name;
- which attributes of a module are parameters and buffers is read from the `__parameters__` and
  `__buffers__` lists of its class in `<archive>/code/` (parsed as text by `ast`, never executed);
- a class that pickled a custom state (a `__getstate__`/`__setstate__` pair) is refused: its meaning
  is in code this reader will not run.

The result is what `torch.jit.load(path).state_dict()` returns for a plain module (a test checks this on
scripted modules), keyed the same way (`visual.conv1.weight`, ...).
"""

from __future__ import annotations

import ast
import pickle
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from paintbench.errors import InputError


class _ScriptObject:
    """An inert stand-in for a `__torch__` class instance: a name and the state it was pickled with
    (pickle creates it with `__new__` and hands it the state; nothing else is ever called)."""

    qualname: str = ""
    state: Any = None

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD; stores, never interprets
        self.state = state


def _script_class(qualname: str) -> type:
    return type("ScriptObject", (_ScriptObject,), {"qualname": qualname})


_SAFE_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    # TorchScript's typed-container markers: each returns its argument (re-implemented, not imported)
    **{("torch.jit._pickle", f"build_{kind}list"): list for kind in ("int", "double", "bool", "tensor", "generic")},
    ("torch.jit._pickle", "restore_type_tag"): lambda value, _type_str: value,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _script_class(f"{module}.{name}")
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name.endswith("Storage") and isinstance(getattr(torch, name, None), type):
            return getattr(torch, name)  # a storage type: only its dtype is used
        raise InputError(f"{self.path}: refused: the archive's data.pkl needs `{module}.{name}`, and paintbench "
                         "reads TorchScript archives only as tensors (no code from the file runs)")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise InputError(f"{self.path}: unexpected persistent id {pid!r} in data.pkl")
        _, storage_type, key, _location, _numel = pid
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        with warnings.catch_warnings():  # _rebuild_tensor_v2 takes the typed wrapper, as torch.load builds it
            warnings.simplefilter("ignore", UserWarning)
            return torch.storage.TypedStorage(wrap_storage=untyped, dtype=storage_type.dtype, _internal=True)


def _declared_names(archive: zipfile.ZipFile, prefix: str, qualname: str, path: Path) -> tuple[list[str], list[str]]:
    """(`__parameters__`, `__buffers__`) of a `__torch__` class, parsed from its code file."""
    module, _, cls = qualname.rpartition(".")
    source = f"{prefix}/code/{module.replace('.', '/')}.py"
    try:
        tree = ast.parse(archive.read(source).decode("utf-8"))
    except (KeyError, SyntaxError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the declaration of {qualname} ({source}: {e})") from None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            found: dict[str, list[str]] = {"__parameters__": [], "__buffers__": []}
            for item in node.body:
                if isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name) \
                        and item.targets[0].id in found:
                    found[item.targets[0].id] = list(ast.literal_eval(item.value))
            return found["__parameters__"], found["__buffers__"]
    raise InputError(f"{path}: class {cls} is not declared in {source}")


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, by their state-dict names (no code runs)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise InputError(f"{path}: not a TorchScript archive (expected one <name>/data.pkl)")
        prefix = pkl[0].split("/")[0]
        try:
            root = _RestrictedUnpickler(archive.read(pkl[0]), archive, prefix, path).load()
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{path}: data.pkl cannot be read as tensors ({type(e).__name__}: {e})") from e
        out: dict[str, torch.Tensor] = {}
        _collect(root, "", out, archive, prefix, path)
    return out


def _collect(obj: _ScriptObject, prefix: str, out: dict[str, torch.Tensor], archive: zipfile.ZipFile,
             zprefix: str, path: Path) -> None:
    if not isinstance(obj, _ScriptObject):
        raise InputError(f"{path}: the archive's root is a {type(obj).__name__}, not a scripted module")
    if not isinstance(obj.state, dict):
        raise InputError(f"{path}: {obj.qualname} pickled a custom state (a scripted __setstate__); paintbench "
                         "reads only plain modules and will not run the archive's code to interpret it")
    params, buffers = _declared_names(archive, zprefix, obj.qualname, path)
    for name in (*params, *buffers):
        value = obj.state.get(name)
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value.detach()
    for name, value in obj.state.items():
        if isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{name}.", out, archive, zprefix, path)
