"""GenEval's image layout, read strictly: every file that is not scored is reported by name.

The official layout (djghosh13/geneval `generation/diffusers_generate.py`, read by `evaluate_images.py`):

```
DIR/00000/metadata.jsonl      one JSON object: that prompt's line of evaluation_metadata.jsonl
DIR/00000/samples/00000.png   4 images per prompt (0000k.png)
DIR/00000/grid.png            optional, ignored
```

The official script visits sub-folders whose name is all digits and, in `samples/`, files whose name
matches `\\d+\\.png`; anything else (JPEGs in particular) is skipped without a word, and a folder
without metadata crashes it. Here the same files are scored, and everything else is reported:

- errors (the prompt's images cannot be scored): missing, unreadable or malformed `metadata.jsonl`
  (not one JSON object, no `tag`/`include`, an include clause without `class`/`count`), a class name
  GenEval's detector does not know, a folder without `samples/`, a folder with 0 images;
- skipped files (not scored, as officially, but named): JPEG or other non-PNG files in `samples/`,
  PNG names that are not digits, non-digit folders that hold images;
- warnings (scored anyway): a folder with other than 4 images, images whose size differs from the
  run's most common size (each is scored at its own size; same-size images are batched together).

Corrupt PNGs are found when decoded (`load`), and reported with the file name by the run loop.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from paintbench.metrics.geneval.detector import OBJECT_NAMES
from paintbench.metrics.geneval.rules import COLORS, RELATIONS, TAGS
from paintbench.metrics.images import BadImageError, image_header, load_image

SAMPLE_NAME = re.compile(r"\d+\.png")
IMAGES_PER_PROMPT = 4


@dataclass(frozen=True)
class ImageItem:
    """One image to score. `filename` is the path as the official results spell it
    (`os.path.join(DIR, folder, "samples", name)`), used as the resume key."""

    path: Path
    filename: str
    prompt_folder: str
    prompt_index: int
    sample_index: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Problem:
    """Something in the layout that is not scored as-is; `path` names the file or folder."""

    level: str  # "error" (images not scored), "skipped" (a file not scored), "warning" (scored anyway)
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.path}: {self.message}"


@dataclass
class Layout:
    root: Path
    items: list[ImageItem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def unscored(self) -> list[Problem]:
        """Problems that leave a file unscored (errors and skipped files)."""
        return [p for p in self.problems if p.level != "warning"]


def validate_metadata(meta: Any, known_classes: tuple[str, ...] = OBJECT_NAMES) -> list[str]:
    """What is wrong with one metadata record (empty when it is usable by the rules)."""
    if not isinstance(meta, dict):
        return [f"expected a JSON object, got {type(meta).__name__}"]
    issues = []
    tag = meta.get("tag")
    if not isinstance(tag, str):
        issues.append("no 'tag'")
    elif tag not in TAGS:
        issues.append(f"unknown tag {tag!r} (GenEval's are {', '.join(TAGS)})")
    include = meta.get("include")
    if not isinstance(include, list) or not include:
        issues.append("no 'include' clauses")
        include = []
    clauses = [("include", i, c) for i, c in enumerate(include)]
    exclude = meta.get("exclude", [])
    if not isinstance(exclude, list):
        issues.append("'exclude' is not a list")
        exclude = []
    clauses += [("exclude", i, c) for i, c in enumerate(exclude)]
    for kind, i, clause in clauses:
        where = f"{kind}[{i}]"
        if not isinstance(clause, dict):
            issues.append(f"{where} is not an object")
            continue
        cls = clause.get("class")
        if not isinstance(cls, str):
            issues.append(f"{where} has no 'class'")
        elif cls not in known_classes:
            issues.append(f"{where}: unknown class {cls!r} (not one of GenEval's 80 object names)")
        count = clause.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            issues.append(f"{where}: 'count' must be a positive integer, got {count!r}")
        if "color" in clause and clause["color"] not in COLORS:
            issues.append(f"{where}: unknown color {clause['color']!r}")
        if "position" in clause:
            pos = clause["position"]
            ok = (isinstance(pos, list) and len(pos) == 2 and pos[0] in RELATIONS and isinstance(pos[1], int)
                  and kind == "include" and 0 <= pos[1] < i)
            if not ok:
                issues.append(f"{where}: 'position' must be [relation, index of an earlier include clause], got {pos!r}")
    return issues


def read_metadata(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """One prompt's metadata file as the official `json.load` reads it: the whole file is one JSON
    object. Returns (record, None) or (None, reason)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "missing metadata.jsonl (the prompt's images cannot be scored)"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot read metadata.jsonl ({type(e).__name__}: {e})"
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        hint = f" (it has {len(lines)} non-empty lines; it must hold only this prompt's record)" if len(lines) > 1 else ""
        return None, f"malformed metadata.jsonl: not one JSON object ({e}){hint}"
    issues = validate_metadata(meta)
    if issues:
        return None, "malformed metadata.jsonl: " + "; ".join(issues)
    return meta, None


def scan(root: str | Path, *, check_sizes: bool = True) -> Layout:
    """Find every image of the official layout under `root`, with its metadata, and every problem."""
    root = Path(root)
    layout = Layout(root=root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    add = layout.problems.append
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    digit_folders = [p for p in folders if p.name.isdigit()]
    for p in folders:
        if not p.name.isdigit() and (p / "samples").is_dir():
            add(Problem("skipped", str(p), "folder name is not all digits; GenEval skips it, so do we"))
    if not digit_folders:
        add(Problem("error", str(root), "no prompt folders (00000/, 00001/, ... with metadata.jsonl and samples/)"))
        return layout
    for folder in sorted(digit_folders, key=lambda p: (int(p.name), p.name)):
        samples = folder / "samples"
        meta, why = read_metadata(folder / "metadata.jsonl")
        pngs, others = [], []
        if samples.is_dir():
            for f in sorted(samples.iterdir()):
                if not f.is_file():
                    continue
                if SAMPLE_NAME.fullmatch(f.name):
                    pngs.append(f)
                else:
                    others.append(f)
        else:
            add(Problem("error", str(samples), "no samples/ folder"))
        for f in others:
            suffix = f.suffix.lower()
            if suffix in (".jpg", ".jpeg"):
                msg = "JPEG image not scored: GenEval reads only NNNNN.png files (the official script skips it silently)"
            elif suffix == ".png":
                msg = "PNG name is not digits (NNNNN.png); not scored, as officially"
            else:
                msg = "not an NNNNN.png image; not scored"
            add(Problem("skipped", str(f), msg))
        if why is not None:
            add(Problem("error", str(folder / "metadata.jsonl"), why))
            for f in pngs:
                add(Problem("error", str(f), "not scored: its prompt folder has no usable metadata"))
            continue
        if samples.is_dir() and not pngs:
            add(Problem("error", str(samples), "0 images (expected 4 NNNNN.png files)"))
        elif pngs and len(pngs) != IMAGES_PER_PROMPT:
            add(Problem("warning", str(samples), f"{len(pngs)} images (GenEval generates {IMAGES_PER_PROMPT} per prompt)"))
        for f in pngs:
            layout.items.append(ImageItem(
                path=f,
                filename=str(root / folder.name / "samples" / f.name),
                prompt_folder=folder.name,
                prompt_index=int(folder.name),
                sample_index=int(f.stem),
                metadata=meta,
            ))
    if check_sizes and layout.items:
        _check_sizes(layout)
    return layout


def _check_sizes(layout: Layout) -> None:
    """Warn about images whose size differs from the most common one (read from headers only)."""
    sizes: dict[Path, tuple[int, int]] = {}
    for item in layout.items:
        try:
            sizes[item.path] = image_header(item.path)
        except BadImageError:  # unreadable or over the limits: reported when it is decoded
            continue
    if not sizes:
        return
    common, _ = Counter(sizes.values()).most_common(1)[0]
    for path, size in sizes.items():
        if size != common:
            layout.problems.append(Problem(
                "warning", str(path),
                f"size {size[0]}x{size[1]} differs from the run's usual {common[0]}x{common[1]} "
                "(scored at its own size)",
            ))


def load(item: ImageItem) -> Image.Image:
    """Decode one image fully (a corrupt file raises `BadImageError` naming it), with the EXIF
    orientation applied as the official colour step does (`ImageOps.exif_transpose`)."""
    return exif_upright(load_image(item.path, name=str(item.path)), str(item.path))


def exif_upright(img: Image.Image, name: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception as e:  # a broken EXIF block
        raise BadImageError(f"{name}: cannot apply its EXIF orientation ({e})") from e
