"""Every table of the site as CSV, JSON and LaTeX, from the same `Table` the page shows.

- CSV and LaTeX carry the displayed scale (GenEval 0–1, DPG and HPS x 100), so a pasted table matches the
  page; CSV keeps full precision, LaTeX rounds to the page's decimals. JSON carries both the displayed
  `value` and the stored `raw` value, plus each column's `scale`.
- Confidence intervals become `<label> CI low` / `<label> CI high` columns; leader and tie marks become a
  `<label> vs leader` column (CSV/JSON) or bold (leader) and underline (tied) in LaTeX.
- Text is untrusted: CSV cells that a spreadsheet would run as a formula (leading `=`, `+`, `-`, `@`,
  tab, CR) get a leading apostrophe; LaTeX special characters are escaped.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from paintbench.leaderboards.model import is_number
from paintbench.leaderboards.tables import Column, Table

FORMATS = ("csv", "json", "tex")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "\n": " ", "\r": " "}


def _columns(table: Table) -> list[Column]:
    return [c for c in table.columns if c.kind != "provenance"]


def _has_marks(table: Table, col: Column) -> bool:
    return any(r.cells.get(col.key) and r.cells[col.key].mark in ("leader", "tied") for r in table.rows)


def _scaled(col: Column, v: Any) -> Any:
    if col.kind == "number" and is_number(v):
        return v * col.scale
    if col.kind == "rank" and is_number(v):
        return int(v)
    return v


def csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas in untrusted text (OWASP CSV injection)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(table: Table) -> str:
    cols = _columns(table)
    marked = {c.key for c in cols if _has_marks(table, c)}
    header: list[str] = []
    for c in cols:
        header.append(c.label)
        if c.ci:
            header += [f"{c.label} CI low", f"{c.label} CI high"]
        if c.key in marked:
            header.append(f"{c.label} vs leader")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_safe(h) for h in header])
    for row in table.rows:
        line: list[Any] = []
        for c in cols:
            cell = row.cells.get(c.key)
            v = _scaled(c, cell.value if cell else None)
            line.append(csv_safe(str(v)) if isinstance(v, str) else ("" if v is None else repr(v)))
            if c.ci:
                for b in (cell.low if cell else None, cell.high if cell else None):
                    line.append(repr(b * c.scale) if is_number(b) else "")
            if c.key in marked:
                line.append(cell.mark if cell and cell.mark in ("leader", "tied") else "")
        w.writerow(line)
    return buf.getvalue()


def to_json(table: Table) -> str:
    cols = _columns(table)
    rows = []
    for row in table.rows:
        out: dict[str, Any] = {}
        for c in cols:
            cell = row.cells.get(c.key)
            if cell is None:
                continue
            entry: dict[str, Any] = {"value": _scaled(c, cell.value), "raw": cell.value}
            if c.ci:
                entry["ci"] = [b * c.scale if is_number(b) else None for b in (cell.low, cell.high)]
            if cell.mark:
                entry["mark"] = cell.mark
            if cell.note:
                entry["note"] = cell.note
            out[c.key] = entry
        if row.provenance is not None:
            out["provenance"] = dict(row.provenance)
        rows.append(out)
    doc = {"id": table.id, "title": table.title, "caption": table.caption, "notes": table.notes,
           "columns": [{"key": c.key, "label": c.label, "kind": c.kind, "scale": c.scale, "decimals": c.decimals,
                        "ci": c.ci} for c in cols],
           "rows": rows}
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    cols = _columns(table)
    spec = "".join("r" if c.kind in ("number", "rank") else "l" for c in cols)
    lines = [f"% {latex_escape(table.title)} (paintbench); needs \\usepackage{{booktabs}}",
             "% bold: leader; underlined: statistically tied with the leader (see the site for the rule)",
             f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c.label) for c in cols) + r" \\", r"\midrule"]
    for row in table.rows:
        cells = []
        for c in cols:
            cell = row.cells.get(c.key)
            if cell is None:
                cells.append("")
                continue
            text = latex_escape(c.fmt(cell.value))
            if c.kind == "number" and not is_number(cell.value):
                text = "--"
            if c.ci and is_number(cell.low) and is_number(cell.high):
                text += f" {{\\scriptsize [{cell.low * c.scale:.{c.decimals}f}, {cell.high * c.scale:.{c.decimals}f}]}}"
            if cell.mark == "leader":
                text = f"\\textbf{{{text}}}"
            elif cell.mark == "tied":
                text = f"\\underline{{{text}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_exports(table: Table, folder: Path) -> dict[str, str]:
    """Write the three files; returns {format: path relative to the site root}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for fmt, render in (("csv", to_csv), ("json", to_json), ("tex", to_latex)):
        path = folder / f"{table.id}.{fmt}"
        data = render(table)
        if not path.exists() or path.read_text(encoding="utf-8") != data:
            path.write_text(data, encoding="utf-8")
        out[fmt] = f"{folder.name}/{path.name}"
    return out
