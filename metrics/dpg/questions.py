"""DPG-Bench question tables: the CSV reader, with or without the official reader's quirks.

The official scorer (TencentQQGYLab/ELLA `dpg_bench/compute_dpg_bench.py`, `prepare_dpg_data`) reads
`dpg_bench.csv` with pandas and builds one question table per `item_id`. Its behaviour has several
surprises that change scores (see the package docstring). `load_questions(..., official_quirks=True)`
reproduces them on purpose, so that official-mode numbers match the official script; with
`official_quirks=False` the same situations are reported as errors instead of silently changing
the benchmark.

This module uses only the standard library: pandas' type inference, which the official reader
depends on, is emulated for the two columns where it matters (`item_id`, `dependency`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from paintbench.errors import InputError

COLUMNS = (
    "item_id",
    "text",
    "keywords",
    "proposition_id",
    "dependency",
    "category_broad",
    "category_detailed",
    "tuple",
    "question_natural_language",
)

# pandas' default `na_values` (pandas._libs.parsers.STR_NA_VALUES): cells that read_csv turns into NaN.
_PANDAS_NA = frozenset(
    {
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    }
)  # fmt: skip
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf(?:inity)?", re.IGNORECASE)

# What the official code raises when an image name has no question table (`None['qid2tuple']`).
NO_TABLE_ERROR = ("TypeError", "'NoneType' object is not subscriptable")


class DPGError(InputError):
    """A DPG-Bench table, answer set or item that cannot be scored as asked.

    `official_type`/`official_message` say what the official script raises in the same situation
    (e.g. `KeyError`/`1` for a missing parent), when it raises at all; paintbench reports instead of
    silently skipping.
    """

    def __init__(
        self, message: str, *, official_type: str | None = None, official_message: str | None = None
    ):
        super().__init__(message)
        self.official_type = official_type
        self.official_message = official_message


def l2_category(tuple_text: str) -> str:
    """L2 category exactly as the official code derives it: tuple text before its first `(`, trimmed.

    So `global - (style)` gives `global -`, and `attribute-color (x)` gives `attribute-color`, a
    different key from `attribute - color` (the official script keeps them apart)."""
    return tuple_text.split("(")[0].strip()


def l1_category(l2: str) -> str:
    """L1 category exactly as the official code derives it: the L2 name before its first `-`, trimmed."""
    return l2.split("-")[0].strip()


@dataclass(frozen=True)
class Question:
    """One row of a DPG question table.

    `dependency` is the parsed `dependency` cell in its listed order (0 = root marker, kept because the
    official loop walks the list in order); `parents` drops the zeros. `l2`/`l1` come from the `tuple`
    text as in the official code; `category_broad`/`category_detailed` are the CSV columns, which the
    official scorer never reads. `line` is the CSV line number where the row starts (header = line 1).
    """

    item_id: str
    proposition_id: int
    question: str
    dependency: tuple[int, ...]
    tuple: str | None
    category_broad: str = ""
    category_detailed: str = ""
    keywords: str = ""
    prompt: str = ""
    line: int = 0
    dependency_text: str = ""

    @property
    def parents(self) -> tuple[int, ...]:
        return tuple(p for p in self.dependency if p != 0)

    @property
    def l2(self) -> str:
        if self.tuple is None:
            raise DPGError(
                f"item {self.item_id!r}: proposition {self.proposition_id} (CSV line {self.line}) has no tuple,"
                " so it has no category",
                official_type="AttributeError",
                official_message="'float' object has no attribute 'split'",
            )
        return l2_category(self.tuple)

    @property
    def l1(self) -> str:
        return l1_category(self.l2)


class QuestionTables(dict[str, list[Question]]):
    """`{item_id: [Question, ...]}` in table order, plus what the reader did on the way.

    `notes` lists every row the reader dropped or replaced (official quirks) so nothing disappears
    unrecorded. `unmatchable` is set when, under official quirks, no image can ever be matched to a
    table (all-numeric `item_id` column: pandas reads it as numbers, the image key is a string).
    """

    def __init__(self, *args, official_quirks: bool = True, source: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.official_quirks = official_quirks
        self.source = source
        self.notes: list[str] = []
        self.unmatchable: str | None = None

    def lookup_error(self, item_id: str) -> DPGError | None:
        """Why `item_id`'s answers cannot be scored against these tables, or None if they can."""
        if self.unmatchable is not None:
            return DPGError(
                f"item {item_id!r}: {self.unmatchable}",
                official_type=NO_TABLE_ERROR[0],
                official_message=NO_TABLE_ERROR[1],
            )
        if self.official_quirks and "." in item_id:
            return DPGError(
                f"item {item_id!r}: the official scorer keys images by the file name up to the first '.',"
                " so an item id containing '.' never matches its table",
                official_type=NO_TABLE_ERROR[0],
                official_message=NO_TABLE_ERROR[1],
            )
        if item_id not in self:
            return DPGError(
                f"item {item_id!r} has no question table in {self.source or 'the CSV'}",
                official_type=NO_TABLE_ERROR[0],
                official_message=NO_TABLE_ERROR[1],
            )
        return None


@dataclass
class _Row:
    line: int
    cells: dict[str, str] = field(default_factory=dict)


def _read_rows(path: Path) -> list[_Row]:
    """CSV records with the line each starts on; blank lines are skipped (as pandas does)."""
    import io

    from paintbench.files import read_text

    rows: list[_Row] = []
    with io.StringIO(read_text(path, "prompts"), newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise DPGError(f"{path}: empty file") from None
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DPGError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)})")
        start = reader.line_num + 1
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record:
                continue
            if len(record) > len(header):
                raise DPGError(f"{path}, line {line}: {len(record)} fields, header has {len(header)}")
            record = record + [""] * (len(header) - len(record))
            rows.append(_Row(line, dict(zip(header, record, strict=True))))
    return rows


def _pandas_kind(cells: Iterable[str]) -> str:
    """The dtype pandas.read_csv would give a column: 'int', 'float' or 'object' (text)."""
    kind = "int"
    for cell in cells:
        if cell in _PANDAS_NA:
            kind = "float"
            continue
        s = cell.strip()
        if _INT_RE.fullmatch(s):
            continue
        if _FLOAT_RE.fullmatch(s):
            kind = "float"
            continue
        return "object"
    return kind


def parse_dependency(cell: str) -> tuple[int, ...]:
    """`"3, 5"` → (3, 5); `"0"` → (0,). Comma-separated, each part trimmed, read as an integer
    (the official rule). Raises ValueError on anything else."""
    return tuple(int(part.strip()) for part in cell.split(","))


def _question(item_id: str, pid: int, deps: tuple[int, ...], row: _Row, tuple_text: str | None) -> Question:
    c = row.cells
    return Question(
        item_id=item_id,
        proposition_id=pid,
        question=c["question_natural_language"],
        dependency=deps,
        tuple=tuple_text,
        category_broad=c["category_broad"],
        category_detailed=c["category_detailed"],
        keywords=c["keywords"],
        prompt=c["text"],
        line=row.line,
        dependency_text=c["dependency"],
    )


def _crash(path: Path, row: _Row, etype: str, emsg: str, why: str) -> DPGError:
    return DPGError(
        f"{path}, line {row.line}: the official reader stops here with {etype}: {emsg} ({why})",
        official_type=etype,
        official_message=emsg,
    )


def _load_official(path: Path, rows: list[_Row]) -> QuestionTables:
    """Replay `prepare_dpg_data` row by row (see the module and package docstrings)."""
    tables = QuestionTables(official_quirks=True, source=str(path))
    id_kind = _pandas_kind(r.cells["item_id"] for r in rows)
    dep_kind = _pandas_kind(r.cells["dependency"] for r in rows)
    pid_kind = _pandas_kind(r.cells["proposition_id"] for r in rows)
    if id_kind != "object" and rows:
        tables.unmatchable = (
            "every item_id in the CSV is numeric, so the official reader (pandas) holds them as numbers"
            " while image names are text: no image matches a table (quirk D7)"
        )
    building: dict[str, dict[int, Question]] = {}
    blocks: dict[str, list[int]] = {}  # item -> lines of its current table, for restart notes
    previous: str | None = None
    for i, row in enumerate(rows):
        c = row.cells
        if i == 0:
            tables.notes.append(
                f"line {row.line}: first data row (item {c['item_id']!r}, proposition {c['proposition_id']})"
                " discarded, as the official reader always does (quirk D1)"
            )
            continue
        # qid = int(line.proposition_id)
        raw_pid = c["proposition_id"]
        try:
            if pid_kind == "object":
                if raw_pid in _PANDAS_NA:
                    raise ValueError("cannot convert float NaN to integer")
                pid = int(raw_pid)
            else:
                if raw_pid in _PANDAS_NA:
                    raise ValueError("cannot convert float NaN to integer")
                pid = int(float(raw_pid))
        except ValueError as e:
            raise _crash(path, row, "ValueError", str(e), "proposition_id is not an integer") from None
        # line.dependency.split(',') then int(d.strip())
        raw_dep = c["dependency"]
        if dep_kind != "object" or raw_dep in _PANDAS_NA:
            py_type = "int" if dep_kind == "int" else "float"
            why = (
                "no dependency cell holds a comma, so pandas reads the column as numbers"
                if dep_kind != "object"
                else "empty dependency cell (pandas NaN)"
            )
            raise _crash(path, row, "AttributeError", f"'{py_type}' object has no attribute 'split'", why)
        try:
            deps = parse_dependency(raw_dep)
        except ValueError as e:
            raise _crash(path, row, "ValueError", str(e), "dependency part is not an integer") from None
        item = c["item_id"]
        if id_kind == "object" and item in _PANDAS_NA:
            tables.notes.append(f"line {row.line}: empty item_id (pandas NaN); no image can match this row")
            previous = None
            continue
        tuple_text = None if c["tuple"] in _PANDAS_NA else c["tuple"]
        q = _question(item, pid, deps, row, tuple_text)
        if item == previous:
            table = building[item]
            if pid in table:
                tables.notes.append(
                    f"line {row.line}: item {item!r} repeats proposition {pid} (first at line {table[pid].line});"
                    " the later row replaces it in the earlier position (quirk D6)"
                )
            table[pid] = q
            blocks[item].append(row.line)
        else:
            if item in building:
                tables.notes.append(
                    f"line {row.line}: item {item!r} reappears after other items; its earlier rows (lines "
                    f"{_ranges(blocks[item])}) are discarded and its table restarts (quirk D6)"
                )
            building[item] = {pid: q}
            blocks[item] = [row.line]
        # category = line.question_natural_language.split('(')... (crashes on an empty cell)
        if c["question_natural_language"] in _PANDAS_NA:
            raise _crash(
                path, row, "AttributeError", "'float' object has no attribute 'split'", "empty question cell"
            )
        previous = item
    for item, table in building.items():
        tables[item] = list(table.values())
    return tables


def _load_strict(path: Path, rows: list[_Row]) -> QuestionTables:
    """Every row kept; anything ambiguous is an error naming its CSV lines."""
    tables = QuestionTables(official_quirks=False, source=str(path))
    problems: list[str] = []
    building: dict[str, dict[int, Question]] = {}
    blocks: dict[str, list[list[int]]] = {}
    previous: str | None = None
    for row in rows:
        c = row.cells
        item = c["item_id"].strip()
        if not item:
            problems.append(f"line {row.line}: empty item_id")
            continue
        try:
            pid = int(c["proposition_id"].strip())
        except ValueError:
            problems.append(f"line {row.line}: proposition_id {c['proposition_id']!r} is not an integer")
            continue
        try:
            deps = parse_dependency(c["dependency"])
        except ValueError:
            problems.append(
                f"line {row.line}: dependency {c['dependency']!r} is not a comma-separated list of integers"
            )
            continue
        if not c["question_natural_language"].strip():
            problems.append(f"line {row.line}: empty question")
            continue
        if not c["tuple"].strip():
            problems.append(f"line {row.line}: empty tuple (no category)")
            continue
        q = _question(item, pid, deps, row, c["tuple"])
        if item != previous:
            blocks.setdefault(item, []).append([])
        blocks[item][-1].append(row.line)
        table = building.setdefault(item, {})
        if pid in table:
            problems.append(
                f"line {row.line}: item {item!r} repeats proposition {pid} (first at line {table[pid].line})"
            )
        else:
            table[pid] = q
        previous = item
    for item, item_blocks in blocks.items():
        if len(item_blocks) > 1:
            where = "; ".join(f"lines {_ranges(b)}" for b in item_blocks)
            problems.append(
                f"item {item!r} is split into {len(item_blocks)} separate blocks of rows: {where}"
            )
    if problems:
        raise DPGError(f"{path}: invalid question table:\n  " + "\n  ".join(problems))
    for item, table in building.items():
        tables[item] = list(table.values())
    return tables


def _ranges(lines: list[int]) -> str:
    """[3, 4, 5, 9] → '3-5, 9'."""
    out: list[str] = []
    start = prev = None
    for n in lines:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = n
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(out)


def load_questions(csv_path: str | Path, official_quirks: bool = True) -> QuestionTables:
    """Read a DPG-Bench question CSV into `{item_id: [Question, ...]}` (table order).

    Item ids are kept as the CSV text, so `45` matches an image named `45.png`.

    `official_quirks=True` replays the official reader: data row 0 is discarded; an item whose rows
    come back after another item's starts a fresh table (earlier rows lost); a repeated
    proposition_id replaces the earlier question in its position; an all-numeric item_id column makes
    every table unmatchable (`QuestionTables.unmatchable`); inputs on which the official reader
    crashes (dependency column with no comma anywhere, empty dependency/question cells, a
    non-integer proposition_id) raise DPGError carrying the official exception. Every dropped or
    replaced row is recorded in `.notes`.

    `official_quirks=False` keeps every row and raises DPGError, naming CSV line numbers, for a split
    item, a duplicated proposition_id or an unreadable cell.
    """
    path = Path(csv_path)
    rows = _read_rows(path)
    return _load_official(path, rows) if official_quirks else _load_strict(path, rows)
