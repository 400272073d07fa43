"""Untrusted text on a terminal: one line, no control characters, bounded length.

A category, prompt or id comes from a user's file; printed raw, a TAB or LF forges table cells and
output lines and U+202E (right-to-left override) reorders what the reader sees. `printable` escapes
every control, format and line/paragraph-separator character as Python would (`\\t`, `\\n`, `\\u202e`)
and shortens the text to `limit` characters. Every CLI printer passes user text through it. Plumbing:
imports nothing of paintbench.
"""

from __future__ import annotations

import unicodedata
from typing import Any

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(value: Any, limit: int = 120) -> str:
    """`value` as one safe line of at most `limit` characters (an ellipsis marks a cut)."""
    out = []
    for ch in str(value):
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"
