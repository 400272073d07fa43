"""Images of the site: thumbnails made once per image content, full images copied once.

Files are named by the image's sha256 (which `samples.jsonl` already records), so:

- a rebuild finds every thumbnail it made before and does no image work at all (a 2,212-image run costs
  one `stat` per image);
- the same image in two runs (or two sites sharing a folder) is stored once;
- a file is written to a temporary name and renamed, so an interrupted build never leaves a half
  thumbnail that a later build would take for a finished one.

Thumbnails: images larger than `size` are shrunk to fit `size` x `size` (aspect kept) as JPEG (quality 88,
no chroma subsampling, so GenEval's colours stay true); smaller ones are stored as PNG unchanged.
Transparent images are composited on white. Work runs in a process pool (`jobs`).

Full images: `copy` hard-links when the site is on the same filesystem (instant, no extra space) and
copies otherwise; `symlink` links to the original (local viewing only); `none` publishes thumbnails only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

IMAGE_MODES = ("copy", "symlink", "none")
JPEG_QUALITY = 88


@dataclass(frozen=True)
class ImageRef:
    """An image the site shows: where it is, and its content hash."""

    src: Path
    sha256: str


@dataclass
class Published:
    thumb: str | None  # URL relative to the site root
    full: str | None
    width: int | None = None  # thumbnail size in pixels
    height: int | None = None


@dataclass
class StoreStats:
    thumbs_made: int = 0
    thumbs_cached: int = 0
    full_copied: int = 0
    full_cached: int = 0
    missing: list[str] = field(default_factory=list)


def thumb_size_of(width: int, height: int, size: int) -> tuple[int, int]:
    """The thumbnail's size: fit in size x size keeping the aspect ratio, never enlarge."""
    if width <= size and height <= size:
        return width, height
    scale = min(size / width, size / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels, within the image limits
    (`metrics.images.image_header`)."""
    from paintbench.metrics.images import image_header

    return image_header(path)


def _atomic_write(path: Path, data: bytes) -> None:
    from paintbench.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, fsync=False)


def make_thumbnail(src: Path, dest_stem: Path, size: int) -> tuple[Path, int, int]:
    """Write the thumbnail of `src` next to `dest_stem` (+ .jpg or .png); returns (path, width, height)."""
    import io

    with Image.open(src) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            base = Image.new("RGB", rgba.size, (255, 255, 255))
            base.paste(rgba, mask=rgba.getchannel("A"))
            img = base
        else:
            img = im.convert("RGB")
    buf = io.BytesIO()
    if img.width <= size and img.height <= size:
        path = dest_stem.with_suffix(".png")
        img.save(buf, format="PNG", optimize=False)
    else:
        # reducing_gap=1: box-average by the largest integer factor first (fast, and a proper antialias),
        # then a bicubic resize for what remains
        img.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=1.0)
        path = dest_stem.with_suffix(".jpg")
        img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    _atomic_write(path, buf.getvalue())
    return path, img.width, img.height


def _thumb_job(args: tuple[str, str, int]) -> tuple[str, str | None, int, int, str]:
    src, stem, size = args
    try:
        path, w, h = make_thumbnail(Path(src), Path(stem), size)
        return src, str(path), w, h, ""
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return src, None, 0, 0, f"{src}: cannot make a thumbnail ({type(e).__name__}: {e})"


SHA256_HEX = re.compile(r"[0-9a-f]{64}")
PUBLISHED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and SHA256_HEX.fullmatch(value) is not None


def missing_key(path: Path) -> str:
    """The key of an image that is not there: a hash of its path, never the path itself."""
    return "missing-" + hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()


def check_key(key: str) -> str:
    """Every file the site writes is named by a key checked here: 64 hex digits (a sha256), or a
    `missing_key`. A record's field is never trusted to be a file name (`../../.bashrc`)."""
    if is_sha256(key) or (key.startswith("missing-") and is_sha256(key[8:])):
        return key
    raise ValueError(f"refused image key {key!r}: not a sha256")


class ImageStore:
    """Publishes images into `site/thumbs/` and `site/images/`, keyed by sha256."""

    def __init__(self, site: Path, *, mode: str = "copy", size: int = 256, jobs: int | None = None) -> None:
        if mode not in IMAGE_MODES:
            raise ValueError(f"images mode must be one of {IMAGE_MODES}, got {mode!r}")
        self.site = Path(site)
        self.mode = mode
        self.size = int(size)
        self.jobs = jobs or os.cpu_count() or 1
        self.stats = StoreStats()

    def _stem(self, sha: str) -> Path:
        return self.site / "thumbs" / check_key(sha)[:2] / f"{sha}-{self.size}"

    def _url(self, path: Path) -> str:
        return path.relative_to(self.site).as_posix()

    def _listing(self, folder: str) -> set[str]:
        """Names under `site/<folder>/<xx>/`, read with one scandir per subfolder: a rebuild checks 22,000
        images with ~256 directory reads instead of 44,000 stats."""
        names: set[str] = set()
        root = self.site / folder
        if not root.is_dir():
            return names
        with os.scandir(root) as subs:
            for sub in subs:
                if sub.is_dir():
                    with os.scandir(sub.path) as files:
                        names.update(f"{sub.name}/{f.name}" for f in files if not f.name.startswith("."))
        return names

    def _existing_thumb(self, sha: str, listing: set[str]) -> str | None:
        for ext in (".png", ".jpg"):
            name = f"{sha[:2]}/{sha}-{self.size}{ext}"
            if name in listing:
                return f"thumbs/{name}"
        return None

    def publish(self, refs: Iterable[ImageRef], dims: dict[str, tuple[int, int]] | None = None) -> dict[str, Published]:
        """Thumbnail (and copy) every image once; returns {sha256: Published}. `dims` ({sha: (w, h)} of the
        originals, from samples.jsonl) gives cached thumbnails their size without opening any image."""
        dims = dims or {}
        unique: dict[str, Path] = {}
        for ref in refs:
            unique.setdefault(ref.sha256, ref.src)
        out: dict[str, Published] = {}
        todo: list[tuple[str, str, int]] = []
        thumbs = self._listing("thumbs")
        for sha, src in unique.items():
            existing = self._existing_thumb(sha, thumbs)
            if existing is not None:
                self.stats.thumbs_cached += 1
                w, h = thumb_size_of(*dims[sha], self.size) if sha in dims else (None, None)
                out[sha] = Published(existing, None, w, h)
            elif not src.is_file():
                self.stats.missing.append(f"{src}: image file is missing")
                out[sha] = Published(None, None)
            else:
                todo.append((str(src), str(self._stem(sha)), self.size))
        sha_of = {str(unique[s]): s for s in unique}
        for src, path, w, h, err in self._run(todo):
            sha = sha_of[src]
            if path is None:
                self.stats.missing.append(err)
                out[sha] = Published(None, None)
            else:
                self.stats.thumbs_made += 1
                out[sha] = Published(self._url(Path(path)), None, w, h)
        if self.mode != "none":
            fulls = self._listing("images")
            for sha, pub in out.items():
                if pub.thumb is not None:
                    pub.full = self._publish_full(unique[sha], sha, fulls)
        for pub in out.values():
            if pub.full is None:
                pub.full = pub.thumb
        return out

    def _run(self, todo: list[tuple[str, str, int]]) -> list[tuple[str, str | None, int, int, str]]:
        if len(todo) < 32 or self.jobs <= 1:
            return [_thumb_job(t) for t in todo]
        with ProcessPoolExecutor(max_workers=self.jobs) as pool:
            return list(pool.map(_thumb_job, todo, chunksize=max(1, len(todo) // (self.jobs * 8))))

    def _publish_full(self, src: Path, sha: str, listing: set[str]) -> str | None:
        suffix = src.suffix.lower() if src.suffix.lower() in PUBLISHED_SUFFIXES else ".png"
        name = f"{check_key(sha)[:2]}/{sha}{suffix}"
        if name in listing:
            self.stats.full_cached += 1
            return f"images/{name}"
        dest = self.site / "images" / name
        if not src.is_file():
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            if self.mode == "symlink":
                os.symlink(src.resolve(), tmp)
            else:
                try:
                    os.link(src, tmp)
                except OSError:
                    shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            self.stats.missing.append(f"{src}: cannot publish ({e})")
            return None
        self.stats.full_copied += 1
        return self._url(dest)


def verify_recorded_hashes(runs: Iterable[Any], cache_path: Path) -> None:
    """Check that every sample's file still has the sha256 its run recorded. A replaced file is never
    shown under the old record: the sample is marked missing and the run lists the problem. Files are
    hashed again only when their size or mtime changed since the last build (`cache_path`)."""
    import json

    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.is_file() else {}
    except ValueError:
        cache = {}
    fresh: dict[str, list[Any]] = {}
    for run in runs:
        for smp in run.samples:
            if not smp.sha256 or not smp.image.is_file():
                continue
            st = smp.image.stat()
            key = str(smp.image.resolve())
            hit = cache.get(key)
            sha = hit[2] if hit and hit[:2] == [st.st_size, st.st_mtime_ns] else file_sha256(smp.image)
            fresh[key] = [st.st_size, st.st_mtime_ns, sha]
            if sha != smp.sha256:
                run.problems.append(f"{smp.image}: the file changed since the run recorded it (sha256 {sha[:12]}..., "
                                    f"recorded {smp.sha256[:12]}...); not shown, its scores belong to the old image")
                smp.sha256 = missing_key(smp.image)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(fresh), encoding="utf-8")
    os.replace(tmp, cache_path)
