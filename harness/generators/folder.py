"""`folder:PATH`: bring your own images.

Layouts, detected from PATH:
- GenEval's official layout: `PATH/<00000>/samples/<k>.png` (+ `metadata.jsonl`, checked against the
  suite's prompt when present);
- a paintbench run directory (or its `images/` folder): `images/<prompt_id>/<k:05d>.png`;
- one image per prompt named by its id, `PATH/<prompt_id>.png` (or .jpg/.jpeg/.webp): DPG-Bench's
  layout of 2×2 grids named by item id;
- a JSONL file of `{"prompt_id": ..., "sample_idx": ..., "path": ...}` (paths relative to the file);
- `layout: listed` (a generator option): the suite's items list their own files (`PromptItem.files`),
  as the suites that `harness.folders` reads from a user's folder do; PATH is then only recorded.

Images are referenced where they are (not copied); the run records their sha256.
"""

from __future__ import annotations

import json
from pathlib import Path

from paintbench.errors import UserError
from paintbench.harness.generators.base import GeneratedImage, Generator, GeneratorError, Request
from paintbench.harness.rundir import legacy_prompt_folder, prompt_folder

FLAT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class FolderGenerator(Generator):
    kind = "folder"
    brings_files = True

    def __init__(self, arg, options, suite, *, device="cpu"):
        super().__init__(arg, options, suite, device=device)
        if not arg:
            raise UserError("folder generator needs a path: --generator folder:DIR")
        self.root = Path(arg).expanduser().resolve()
        if not self.root.exists():
            raise UserError(f"folder generator: {self.root} does not exist")
        layout = self.options.get("layout")
        if layout not in (None, "listed"):
            raise UserError(f"folder generator: unknown layout {layout!r} (detected from the path, or 'listed')")
        self.layout = layout or self._detect()
        self._table: dict[tuple[str, int], Path] = {}
        if self.layout == "jsonl":
            self._table = self._read_table()

    def settings(self):
        return {**super().settings(), "layout": self.layout, "arg": str(self.root)}

    def _detect(self) -> str:
        if self.root.is_file():
            if self.root.suffix != ".jsonl":
                raise UserError(f"folder generator: {self.root} is a file but not a .jsonl table")
            return "jsonl"
        if (self.root / "images").is_dir():
            self.root = self.root / "images"
            return "run"
        if any(p.is_dir() and p.name.isdigit() and (p / "samples").is_dir() for p in self.root.iterdir()):
            return "geneval"
        if any(p.is_file() and p.suffix.lower() in FLAT_SUFFIXES for p in self.root.iterdir()):
            return "flat"
        return "run"

    def _read_table(self) -> dict[tuple[str, int], Path]:
        table = {}
        for lineno, line in enumerate(self.root.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = (str(rec["prompt_id"]), int(rec["sample_idx"]))
                table[key] = (self.root.parent / rec["path"]).resolve()
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise UserError(f"{self.root}:{lineno}: expected {{prompt_id, sample_idx, path}} ({e})") from e
        return table

    def path_for(self, r: Request) -> Path:
        if self.layout == "listed":
            if r.sample_index >= len(r.item.files):
                return self.root / f"<no sample {r.sample_index} listed for {r.item.id}>"
            return Path(r.item.files[r.sample_index])
        if self.layout == "jsonl":
            return self._table.get((r.item.id, r.sample_index), self.root.parent / "<not listed>")
        if self.layout == "flat":
            if r.sample_index != 0:
                raise GeneratorError(f"{self.root}: one image per prompt in this layout, no sample {r.sample_index}")
            for suffix in FLAT_SUFFIXES:
                p = self.root / f"{r.item.id}{suffix}"
                if p.is_file():
                    return p
            return self.root / f"{r.item.id}.png"
        if self.layout == "geneval":
            folder = self.root / r.item.id
            self._check_geneval_metadata(folder, r)
            return folder / "samples" / f"{r.sample_index:05d}.png"
        name = f"{r.sample_index:05d}.png"
        current = self.root / prompt_folder(r.item.id) / name
        legacy = self.root / legacy_prompt_folder(r.item.id) / name
        return current if current.is_file() or not legacy.is_file() else legacy

    def _check_geneval_metadata(self, folder: Path, r: Request) -> None:
        meta = folder / "metadata.jsonl"
        if not meta.exists():
            return
        try:
            rec = json.loads(meta.read_text(encoding="utf-8").strip().splitlines()[0])
        except (json.JSONDecodeError, IndexError) as e:
            raise GeneratorError(f"{meta}: malformed metadata ({e})") from e
        if rec.get("prompt") != r.item.prompt:
            raise GeneratorError(f"{meta}: prompt {rec.get('prompt')!r} does not match the suite's prompt "
                                 f"{r.item.prompt!r} for id {r.item.id}")

    def generate(self, requests: list[Request]) -> list[GeneratedImage]:
        out = []
        for r in requests:
            p = self.path_for(r)
            if not p.is_file():
                raise GeneratorError(f"{p}: no such file (the image of prompt {r.item.id} sample {r.sample_index})")
            out.append(p)
        return out
