"""DPG-Bench image grids: one 2×2 grid of R×R tiles per prompt, named by its item id.

The official scorer opens every file of the image folder, keys it by the file name up to the first
`.`, crops the tiles `(0,0,R,R)`, `(R,0,2R,R)`, `(0,R,R,2R)`, `(R,R,2R,2R)` (top-left, top-right,
bottom-left, bottom-right) with R = `--resolution`, and asks its questions on the first `--pic-num`
of them. It never checks the size (PIL pads an out-of-range crop with black) and silently skips any
file that fails. Here every such case is reported:

- a grid that is not exactly 2R × 2R fails its item with the size found and the size expected;
- a table item with no image, two images for one item, a file no table item matches and a file that
  cannot be decoded are each listed (`GridScan`), counted and never scored silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from paintbench.metrics.dpg.questions import DPGError
from paintbench.metrics.dpg.scoring import TILE_NAMES
from paintbench.metrics.images import IMAGE_SUFFIXES, BadImageError, image_header

DEFAULT_PIC_NUM = 4


class GridError(DPGError):
    """An image that is not a usable 2×2 grid for the requested resolution."""


def tile_boxes(resolution: int) -> list[tuple[int, int, int, int]]:
    """PIL crop boxes of the four tiles in the official order TL, TR, BL, BR."""
    r = int(resolution)
    return [(0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r)]


def check_pic_num(pic_num: int) -> int:
    if not 1 <= int(pic_num) <= len(TILE_NAMES):
        raise DPGError(f"pic_num must be 1..{len(TILE_NAMES)} (tiles of a 2x2 grid), got {pic_num}")
    return int(pic_num)


def grid_resolution(size: tuple[int, int], resolution: int | None, name: str = "image") -> int:
    """The tile size R of a grid of `size` (width, height): `resolution` when given and the grid is
    exactly 2R × 2R; inferred as width / 2 for a square grid of even side when `resolution` is None."""
    w, h = size
    if resolution is None:
        if w != h or w % 2 or w < 2:
            raise GridError(
                f"{name}: {w}x{h} is not a square grid of even side, so the tile size cannot be inferred;"
                " pass the resolution of one tile"
            )
        return w // 2
    r = int(resolution)
    if r < 1:
        raise DPGError(f"resolution must be a positive tile size in pixels, got {resolution}")
    if (w, h) != (2 * r, 2 * r):
        hint = f" (a {w // 2}-pixel tile grid?)" if w == h and w % 2 == 0 else ""
        raise GridError(
            f"{name}: grid is {w}x{h}, expected {2 * r}x{2 * r} for 2x2 tiles of {r} px{hint}; the official"
            " scorer would crop it anyway and score padding or a wrong region"
        )
    return r


def split_grid(image: Image.Image, resolution: int | None, pic_num: int = DEFAULT_PIC_NUM,
               name: str = "image") -> list[Image.Image]:
    """The first `pic_num` tiles of a PIL grid (TL, TR, BL, BR), each R×R, as the official crops."""
    r = grid_resolution(image.size, resolution, name)
    return [image.crop(box) for box in tile_boxes(r)[: check_pic_num(pic_num)]]


def split_grid_tensor(grid: torch.Tensor, resolution: int | None, pic_num: int = DEFAULT_PIC_NUM,
                      name: str = "image") -> list[torch.Tensor]:
    """The tensor version of `split_grid` for a [3, 2R, 2R] grid: views [3, R, R] in the same order."""
    if grid.dim() != 3:
        raise GridError(f"{name}: expected a [3,H,W] grid tensor, got shape {tuple(grid.shape)}")
    r = grid_resolution((int(grid.shape[2]), int(grid.shape[1])), resolution, name)
    return [grid[:, top:bottom, left:right] for left, top, right, bottom in tile_boxes(r)[: check_pic_num(pic_num)]]


def image_key(filename: str, official: bool = True) -> str:
    """The item id an image file stands for. Official: the name up to the first `.` (so `a.b.png`
    is item `a`, and an id containing `.` can never match). Otherwise: the name without its image
    suffix (`a.b.png` is item `a.b`)."""
    name = Path(filename).name
    if official:
        return name.split(".")[0]
    p = Path(name)
    return p.stem if p.suffix.lower() in IMAGE_SUFFIXES else name


@dataclass
class GridScan:
    """How an image folder matches a question table; every file and every item is accounted for.

    `matched`: item → its grid file. `missing`: items with no image. `duplicates`: items with more
    than one file (none of them is used). `extra`: files that stand for no item, with the reason.
    `bad`: matched files whose size or format is wrong (item → reason); they are also in `matched`
    only if usable, i.e. never."""

    folder: str
    resolution: int | None
    matched: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)

    def failures(self) -> dict[str, str]:
        """item → why it cannot be scored (no image, several images, unusable grid)."""
        out = {item: "no image in the folder" for item in self.missing}
        for item, files in self.duplicates.items():
            out[item] = f"{len(files)} images for one item ({', '.join(files)}); remove all but one"
        out.update(self.bad)
        return out

    def counts(self) -> dict[str, int]:
        return {"images_matched": len(self.matched), "items_missing_image": len(self.missing),
                "items_with_duplicate_images": len(self.duplicates), "bad_grids": len(self.bad),
                "extra_files": len(self.extra)}

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "resolution": self.resolution, **self.counts(),
                "missing": list(self.missing), "duplicates": dict(self.duplicates),
                "bad": dict(self.bad), "extra": dict(self.extra)}

    def report(self) -> list[str]:
        """Human-readable lines, one per problem (nothing hidden)."""
        lines = [f"images: {len(self.matched)} grids matched in {self.folder}"]
        if self.missing:
            lines.append(f"items with no image ({len(self.missing)}): {', '.join(self.missing)}")
        for item, files in self.duplicates.items():
            lines.append(f"item {item!r} has {len(files)} images: {', '.join(files)}")
        for item, why in self.bad.items():
            lines.append(f"unusable grid for item {item!r}: {why}")
        if self.extra:
            lines.append(f"files matching no question table ({len(self.extra)}):")
            lines.extend(f"  {f}: {why}" for f, why in self.extra.items())
        return lines


def _probe_size(path: Path) -> tuple[int, int]:
    """Image size from the header only (fast), within the image limits (`metrics.images.image_header`:
    a decompression bomb is this item's failure, not the run's); decoding errors surface when the grid
    is used."""
    try:
        return image_header(path, path.name)
    except BadImageError as e:
        raise GridError(str(e)) from None


def scan_folder(
    folder: str | os.PathLike[str],
    items: Iterable[str],
    *,
    resolution: int | None,
    official_keys: bool = True,
    check_sizes: bool = True,
    skip_names: Sequence[str] = (),
) -> GridScan:
    """Match the files of `folder` to the table `items` (see `image_key`) and check grid sizes.

    `skip_names`: file names to leave out silently because this run wrote them (its own outputs when
    they live in the image folder); everything else that is not a usable grid is listed."""
    root = Path(folder)
    if not root.is_dir():
        raise DPGError(f"{root}: no such image folder")
    wanted = list(dict.fromkeys(str(i) for i in items))
    wanted_set = set(wanted)
    scan = GridScan(folder=str(root), resolution=resolution)
    by_item: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        if p.name in skip_names:
            continue
        if p.is_dir():
            scan.extra[p.name + "/"] = "a folder (not searched)"
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            scan.extra[p.name] = f"not an image file ({', '.join(IMAGE_SUFFIXES)})"
            continue
        key = image_key(p.name, official_keys)
        if key not in wanted_set:
            why = f"stands for item {key!r}, which has no question table"
            if official_keys and "." in Path(p.name).stem:
                why += " (the official scorer keys images by the name up to the first '.')"
            scan.extra[p.name] = why
            continue
        by_item.setdefault(key, []).append(p)
    for item in wanted:
        files = by_item.get(item)
        if not files:
            scan.missing.append(item)
        elif len(files) > 1:
            scan.duplicates[item] = [f.name for f in files]
        else:
            path = files[0]
            if check_sizes:
                try:
                    grid_resolution(_probe_size(path), resolution, path.name)
                except DPGError as e:
                    scan.bad[item] = str(e)
                    continue
            scan.matched[item] = path
    return scan
