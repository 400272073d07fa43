"""Image inputs: documented conversions, clear errors naming the sample, tensor validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from paintbench.metrics.base import check_prompts
from paintbench.metrics.images import BadImageError, as_image_batch, load_image


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    good = _save(Image.new("RGB", (64, 64), (10, 20, 30)), tmp_path / "good.png")
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(b"this is not an image")
    for name in ("trunc.png", "garbage.png"):
        with pytest.raises(BadImageError, match=name):
            load_image(tmp_path / name)
    with pytest.raises(BadImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(BadImageError, match="directory"):
        load_image(tmp_path)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "g16.png")
    img = load_image(path)
    assert img.mode == "L"
    assert list(np.asarray(img)[0]) == [0, 128, 255]  # PIL's own convert would give [0, 255, 255]


def test_palette_rgba_grayscale_and_tiny_images(tmp_path):
    pal = Image.new("P", (8, 8))
    pal.putpalette([255, 0, 0] * 256)
    assert load_image(_save(pal, tmp_path / "p.png")).mode == "RGB"
    assert load_image(_save(Image.new("RGBA", (4, 4), (1, 2, 3, 0)), tmp_path / "a.png")).mode == "RGBA"
    assert load_image(_save(Image.new("L", (4, 4), 7), tmp_path / "l.png")).mode == "L"
    assert load_image(_save(Image.new("LA", (4, 4)), tmp_path / "la.png")).mode == "L"
    one = load_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "one.png"))
    assert one.size == (1, 1)


def test_tensor_batches_are_validated_and_stay_on_device():
    t = torch.rand(2, 3, 16, 16)
    b = as_image_batch(t)
    assert b.is_tensor and b.tensor is t and len(b) == 2
    assert b.float01("cpu").max() <= 1.0
    u = as_image_batch(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8))
    assert torch.all(u.float01("cpu") == 1.0)
    for bad in (torch.rand(3, 16, 16), torch.rand(2, 4, 8, 8), torch.zeros(1, 3, 4, 4, dtype=torch.int32)):
        with pytest.raises(BadImageError):
            as_image_batch(bad)


def test_prompt_validation_messages():
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        check_prompts("m", ["a", "b", "c"], 2, required=True)
    with pytest.raises(ValueError, match="needs one prompt"):
        check_prompts("m", None, 2, required=True)
    with pytest.raises(TypeError, match="single string"):
        check_prompts("m", "abc", 3, required=True)
    with pytest.raises(TypeError, match="prompt 1"):
        check_prompts("m", ["a", 3], 2, required=True)
    assert check_prompts("m", ["", "x" * 2000], 2, required=True) == ["", "x" * 2000]
    assert check_prompts("m", None, 2, required=False) is None


def test_non_image_items_are_rejected_with_their_position():
    with pytest.raises(BadImageError, match="#1"):
        as_image_batch([Image.new("RGB", (2, 2)), 42])
