"""A model that cannot fit its device is refused before loading, with the figures and the fix."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from paintbench.errors import UserError
from paintbench.metrics import memory

pytestmark = pytest.mark.hf


def test_elements_come_from_the_header_and_bytes_follow_the_dtype(tmp_path):
    f = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(3, 5), "b": torch.zeros(7, dtype=torch.float16)}, str(f), metadata={"format": "pt"})
    assert memory.safetensors_elements(f) == 22
    assert memory.estimated_bytes([f], torch.bfloat16, overhead=1.0) == 44
    assert memory.estimated_bytes([f], torch.float32) == int(88 * memory.OVERHEAD)


def test_a_model_too_big_for_the_free_memory_is_refused_naming_the_numbers(tmp_path, monkeypatch):
    f = tmp_path / "HPSv3.safetensors"
    save_file({"w": torch.zeros(1000, 1000)}, str(f), metadata={"format": "pt"})
    monkeypatch.setattr(memory, "free_bytes", lambda device: 1_000_000)
    with pytest.raises(UserError, match=r"hpsv3: needs about 0\.0 GiB on cpu in float32 .*HPSv3\.safetensors.*dtype="):
        memory.require_fits("hpsv3", [f], torch.device("cpu"), torch.float32)
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10_000_000)
    memory.require_fits("hpsv3", [f], torch.device("cpu"), torch.float32)      # fits: no error


def test_the_cpu_figure_is_read_from_the_system():
    free = memory.free_bytes(torch.device("cpu"))
    assert free is None or free > 0


def test_providers_check_before_loading(tmp_path, monkeypatch):
    from paintbench import metrics
    from paintbench.metrics.synthetic import write_tiny_weights

    write_tiny_weights("hpsv3", tmp_path)
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10)
    with pytest.raises(memory.InsufficientMemoryError, match="hpsv3: needs about"):
        metrics.get("hpsv3", weights_dir=tmp_path)
