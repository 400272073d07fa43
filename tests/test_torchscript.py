"""TorchScript archives (OpenAI's CLIP `.pt`) are read as tensors: nothing in the file runs."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
import torch

from paintbench.errors import InputError
from paintbench.metrics import weights as W
from paintbench.metrics.torchscript import read_torchscript_state_dict
from tests.support.scripted import Hostile, Model


def test_the_tensors_equal_what_torch_jit_load_gives(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    torch.jit.script(Model()).save(str(path))
    got = W.load_state_dict(path)
    expected = torch.jit.load(str(path), map_location="cpu").state_dict()  # our own archive: trusted here
    assert list(got) == list(expected) or set(got) == set(expected)
    assert "blocks.0.attn_mask" not in got  # a plain attribute is not state, as in torch's state_dict
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def test_a_scripted_setstate_never_runs(tmp_path):
    """A crafted archive whose __setstate__ acts on load: torch.jit.load runs it (shown first, in a
    subprocess); paintbench refuses the file without running it."""
    path = tmp_path / "ViT-L-14.pt"
    torch.jit.script(Hostile()).save(str(path))
    check = "import torch, sys; m = torch.jit.load(sys.argv[1]); print(float(m.weight[0]))"
    ran = subprocess.run([sys.executable, "-c", check, str(path)], capture_output=True, text=True)
    assert "PAINTBENCH-SETSTATE-RAN" in ran.stdout and "1000.0" in ran.stdout  # the danger is real
    load = "from paintbench.metrics import weights as W; import sys; W.load_state_dict(sys.argv[1])"
    ours = subprocess.run([sys.executable, "-c", load, str(path)], capture_output=True, text=True)
    assert "PAINTBENCH-SETSTATE-RAN" not in ours.stdout + ours.stderr
    assert ours.returncode != 0 and "custom state" in ours.stderr


def test_a_global_outside_the_allow_list_is_refused_by_name(tmp_path):
    path = tmp_path / "evil.pt"
    torch.jit.script(Model()).save(str(path))
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    data = next(n for n in entries if n.endswith("/data.pkl"))
    entries[data] = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."  # os.system("true")
    with zipfile.ZipFile(path, "w") as z:
        for n, b in entries.items():
            z.writestr(n, b)
    with pytest.raises(InputError, match=r"refused: the archive's data.pkl needs `os.system`"):
        read_torchscript_state_dict(path)
