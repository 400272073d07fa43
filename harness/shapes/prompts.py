"""The `shapes` suite: GenEval-style prompts over this world's shape classes, in GenEval's format.

Records have GenEval's keys and meaning (`tag`, `include`, optional `exclude`, `prompt`; see
djghosh13/geneval `prompts/create_prompts.py`), with the same six tags, phrasing, articles and plurals,
the same colour list, counts 2-4 with an `exclude` clause of count N+1, and position clauses
`position: [relation, 0]` meaning "this object is `relation` the object of include clause 0". So
GenEval's `judge`, Flow-GRPO's `reward` and `summarize` read them unchanged.

What differs from GenEval's generator, and why:

- GenEval draws each tag's prompts with replacement and then drops duplicates, so a tag can end up
  short and the set depends on the order of draws. Here each tag's space of distinct records is
  enumerated in a fixed order and `n_per_tag` of them are drawn *without* replacement from a
  per-tag generator seeded by (seed, tag). Records are therefore distinct, a tag's prompts do not
  change when another tag's `n_per_tag` does, and a tag smaller than `n_per_tag` (single_object has
  only one prompt per shape) is included whole, as GenEval does with its 80 classes.
- There is no "person" class to exclude from colour prompts.

Held-out split (`split=`): training and evaluation prompts are disjoint *by construction*, not by
sampling. `is_heldout(record)` holds out whole combinations, so an evaluation prompt tests a
combination the policy never trained on: two of the six shapes alone (single_object), five of the 15
unordered shape pairs (two_object and position, every relation), one count per shape (counting), 12 of
the 60 (shape, colour) pairs (colors; color_attr when either object uses one). The rules are index
arithmetic on `SHAPES`/`COLOURS`, so every tag keeps records on both sides.

Validation split, for tuning hyperparameters without touching the held-out side: `is_validation`
carves whole combinations out of the *training* side by the same kind of rule (one shape alone, two
shape pairs, three (shape, count) pairs, six (shape, colour) pairs). `split="validation"` draws from
them, `split="fit"` from the training side without them, so fit, validation and held-out prompts are
pairwise disjoint by combination; `split="train"` (fit + validation) is unchanged.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from paintbench.harness.shapes.codebook import COLOURS, SHAPES

TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""GenEval's tags, in GenEval's order."""

POSITIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five")
COUNTS: tuple[int, ...] = (2, 3, 4)

DEFAULT_SEED = 43
"""GenEval's own prompt seed."""

DEFAULT_N_PER_TAG = 50


def with_article(name: str) -> str:
    """GenEval's article rule: "an" before a vowel letter, else "a"."""
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def make_plural(name: str) -> str:
    """GenEval's plural rule: "es" after a final "s", else "s"."""
    return f"{name}es" if name.endswith("s") else f"{name}s"


def _single_object(shapes: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"tag": "single_object", "include": [{"class": s, "count": 1}], "prompt": f"a photo of {with_article(s)}"}
        for s in shapes
    ]


def _two_object(shapes: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {
            "tag": "two_object",
            "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
            "prompt": f"a photo of {with_article(a)} and {with_article(b)}",
        }
        for a in shapes for b in shapes if a != b
    ]


def _counting(shapes: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {
            "tag": "counting",
            "include": [{"class": s, "count": n}],
            "exclude": [{"class": s, "count": n + 1}],
            "prompt": f"a photo of {NUMBERS[n]} {make_plural(s)}",
        }
        for s in shapes for n in COUNTS
    ]


def _colors(shapes: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {
            "tag": "colors",
            "include": [{"class": s, "count": 1, "color": c}],
            "prompt": f"a photo of {with_article(c)} {s}",
        }
        for s in shapes for c in COLOURS
    ]


def _position(shapes: Sequence[str]) -> list[dict[str, Any]]:
    # GenEval's layout: clause 0 is the reference object B, clause 1 is A with position [rel, 0];
    # the prompt reads "a photo of a A rel a B".
    return [
        {
            "tag": "position",
            "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}],
            "prompt": f"a photo of {with_article(a)} {rel} {with_article(b)}",
        }
        for a in shapes for b in shapes if a != b for rel in POSITIONS
    ]


def _color_attr(shapes: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {
            "tag": "color_attr",
            "include": [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}],
            "prompt": f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}",
        }
        for a in shapes for b in shapes if a != b for ca in COLOURS for cb in COLOURS if ca != cb
    ]


_SPACES = {
    "single_object": _single_object,
    "two_object": _two_object,
    "counting": _counting,
    "colors": _colors,
    "position": _position,
    "color_attr": _color_attr,
}


def all_records(tag: str, shapes: Sequence[str] = SHAPES) -> list[dict[str, Any]]:
    """Every distinct record of `tag`, in a fixed enumeration order."""
    try:
        return _SPACES[tag](shapes)
    except KeyError:
        raise ValueError(f"unknown tag {tag!r}; tags are {TAGS}") from None


SPLITS: tuple[str, ...] = ("train", "heldout", "fit", "validation")
"""`train` = every record that is not held out = `fit` + `validation` (see the module docstring)."""


def _pair_heldout(a: str, b: str) -> bool:
    return (SHAPES.index(a) + SHAPES.index(b)) % 4 == 1


def _colour_heldout(shape: str, colour: str) -> bool:
    return (SHAPES.index(shape) + COLOURS.index(colour)) % 5 == 0


def is_heldout(record: dict[str, Any]) -> bool:
    """Whether a record belongs to the held-out (evaluation) split: it uses a held-out shape (alone),
    shape pair, (shape, count) or (shape, colour) combination (see the module docstring)."""
    tag, inc = record["tag"], record["include"]
    if tag == "single_object":
        return SHAPES.index(inc[0]["class"]) % 3 == 1
    if tag in ("two_object", "position"):
        return _pair_heldout(inc[0]["class"], inc[1]["class"])
    if tag == "counting":
        return (SHAPES.index(inc[0]["class"]) + int(inc[0]["count"])) % 3 == 0
    if tag in ("colors", "color_attr"):
        return any(_colour_heldout(c["class"], c["color"]) for c in inc)
    raise ValueError(f"unknown tag {tag!r}; tags are {TAGS}")


def _pair_validation(a: str, b: str) -> bool:
    i, j = sorted((SHAPES.index(a), SHAPES.index(b)))
    return (i + j) % 4 == 3 and i % 2 == 0


def _colour_validation(shape: str, colour: str) -> bool:
    c = COLOURS.index(colour)
    return (SHAPES.index(shape) + c) % 5 == 2 and c % 2 == 0


def is_validation(record: dict[str, Any]) -> bool:
    """Whether a training-side record belongs to the validation split (never true of a held-out one):
    it uses a validation shape (alone), shape pair, (shape, count) or (shape, colour) combination."""
    if is_heldout(record):
        return False
    tag, inc = record["tag"], record["include"]
    if tag == "single_object":
        return SHAPES.index(inc[0]["class"]) == 3
    if tag in ("two_object", "position"):
        return _pair_validation(inc[0]["class"], inc[1]["class"])
    if tag == "counting":
        i = SHAPES.index(inc[0]["class"])
        return (i + int(inc[0]["count"])) % 3 == 1 and i % 2 == 0
    if tag in ("colors", "color_attr"):
        return any(_colour_validation(c["class"], c["color"]) for c in inc)
    raise ValueError(f"unknown tag {tag!r}; tags are {TAGS}")


def in_split(record: dict[str, Any], split: str) -> bool:
    """Whether `record` lies on side `split` of the prompts (one of `SPLITS`)."""
    if split == "heldout":
        return is_heldout(record)
    if split == "train":
        return not is_heldout(record)
    if split == "validation":
        return is_validation(record)
    if split == "fit":
        return not is_heldout(record) and not is_validation(record)
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def make_prompts(
    seed: int = DEFAULT_SEED,
    n_per_tag: int | dict[str, int] = DEFAULT_N_PER_TAG,
    *,
    tags: Iterable[str] = TAGS,
    split: str | None = None,
) -> list[dict[str, Any]]:
    """The shapes suite: up to `n_per_tag` distinct records per tag (all of a smaller tag), grouped by
    tag in `tags` order, each tag drawn without replacement by its own generator seeded by
    (seed, tag). Deterministic: the same arguments give the same list on any machine.

    `n_per_tag` may be a dict {tag: n} (missing tags get `DEFAULT_N_PER_TAG`). `split` (one of `SPLITS`:
    train, heldout, fit, validation) draws from that side only; None draws from every record.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    out: list[dict[str, Any]] = []
    for tag in tags:
        n = n_per_tag.get(tag, DEFAULT_N_PER_TAG) if isinstance(n_per_tag, dict) else n_per_tag
        if n < 0:
            raise ValueError(f"n_per_tag must be >= 0, got {n} for {tag}")
        space = all_records(tag)
        if split is not None:
            space = [r for r in space if in_split(r, split)]
        rng = np.random.default_rng([seed, zlib.crc32(tag.encode())])
        chosen = rng.permutation(len(space))[: min(n, len(space))]
        out.extend(space[i] for i in chosen)
    return out


def write_metadata_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> Path:
    """Write records one JSON object per line (GenEval's `evaluation_metadata.jsonl` layout)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    return path


def read_metadata_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a metadata JSONL file back (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
