"""GenEval's per-image rules and Flow-GRPO's GenEval reward, as pure functions of detector output.

The official evaluator (djghosh13/geneval `evaluation/evaluate_images.py`) and Flow-GRPO's reward server
(yifan123/reward-server `reward_server/gen_eval.py`) both run a Mask2Former detector and a CLIP colour
classifier, then apply a few lines of rules to the result. Those rules decide the benchmark number, so
they live here apart from any model code: the caller hands in the *raw* detections of one image
(`Detection`s per class name, in detector order, before any thresholding) and a colour oracle
`colour_of(class_name, detection) -> colour`; everything else happens here and reproduces the official
code's results exactly, quirks included (see /work/shared/fixtures/README.md section 4 for the list).

Numeric type: the official detector returns float32 arrays and the official code compares them with
Python floats, which NumPy does in float32. So a score of 0.300000005 is *not* above 0.3 there. We cast
scores and thresholds to float32 before comparing, and do the box geometry in float32 too, whatever
precision the caller's detector produced; `GenEvalOptions.score_dtype="float64"` exists only to show
which results depend on that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

COLORS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
)
"""The colour classifier's labels, in the official order (the order colour reasons list them in)."""

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
"""The four relations `relative_position` can report, in the order its checks run."""

TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@dataclass(frozen=True)
class GenEvalOptions:
    """The evaluator's tunables, with the official defaults (`--options key=value` in GenEval).

    `nms_threshold` 1.0 disables the greedy NMS, as officially; any smaller value runs it with the
    official "+1 pixel" IoU. `score_dtype` is the precision scores are compared in: "float32" matches
    the official detector output; "float64" is a what-if, not a supported benchmark setting.
    """

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    nms_threshold: float = 1.0
    position_threshold: float = 0.1
    score_dtype: Literal["float32", "float64"] = "float32"

    def confidence_threshold(self, tag: str) -> float:
        """One threshold for *every* class of the image, chosen by the prompt's tag (quirk G2)."""
        return self.counting_threshold if tag == "counting" else self.threshold


DEFAULT_OPTIONS = GenEvalOptions()


@dataclass(eq=False)
class Detection:
    """One raw detection: `box` = (x1, y1, x2, y2) in pixels (origin top-left, y down), the detector's
    `score`, and optionally the instance `mask` (bool, H×W) that the colour classifier composites on grey.

    Equality and hashing are by identity, so a detection can key a dict (e.g. a colour cache).
    """

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = None


ColourOf = Callable[[str, Detection], str]
Kept = dict[str, list[Detection]]


@dataclass(frozen=True)
class Verdict:
    """GenEval's per-image result: `correct` and `reason` exactly as in its `results.jsonl`.

    `reasons` holds the individual messages (joined by "\\n" into `reason`); `kept` the filtered,
    ranked detections per class that the rules saw (GenEval's `details`).
    """

    correct: bool
    reason: str
    reasons: tuple[str, ...] = ()
    kept: Mapping[str, list[Detection]] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardResult:
    """Flow-GRPO's reward for one image: `score` (mean of the partial-credit `terms`, the RL reward;
    unbounded below), `strict` (the server's `strict_correct`) and its `reason` string."""

    score: float
    strict: bool
    reason: str
    terms: tuple[float, ...] = ()


# --------------------------------------------------------------------------------------------- filtering


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU with the official "+1 pixel" area convention, `(x2 - x1 + 1) * (y2 - y1 + 1)`.

    Only used by the NMS branch, which the default `nms_threshold` of 1.0 switches off.
    """

    def area(b: Sequence[float]) -> float:
        return max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0)

    a = [float(v) for v in np.asarray(box_a[:4], dtype=np.float32)]
    b = [float(v) for v in np.asarray(box_b[:4], dtype=np.float32)]
    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def select_indices(
    scores: Sequence[float],
    threshold: float,
    *,
    max_objects: int = 16,
    boxes: Sequence[Sequence[float]] | None = None,
    nms_threshold: float = 1.0,
    score_dtype: Literal["float32", "float64"] = "float32",
) -> list[int]:
    """Indices of the detections of one class that survive, best first.

    Official order of operations: rank by descending score, keep those strictly above `threshold`
    (compared in `score_dtype`), cut to `max_objects` *before* NMS, then (only when `nms_threshold` < 1)
    greedy NMS that drops any later box whose IoU with a kept one is not below `nms_threshold`.

    Ties: the official `np.argsort(s)[::-1]` is not a stable descending sort, and its tie order depends
    on the NumPy build: up to 16 *all-equal* scores come out later-input-first (quirk G7), but with
    several tied groups even short arrays can come out otherwise (seen with NumPy 2.4 on x86). We
    always put the later input first among equal scores (a stable ascending sort, reversed), which
    matches the documented case and is the same on any NumPy. Real detector scores rarely tie.
    """
    dtype = np.float32 if score_dtype == "float32" else np.float64
    s = np.asarray(scores, dtype=dtype).reshape(-1)
    order = np.argsort(s, kind="stable")[::-1]
    order = order[s[order] > dtype(threshold)]
    ranked = [int(i) for i in order[:max_objects]]
    if nms_threshold >= 1:
        return ranked
    if boxes is None:
        raise ValueError("NMS (nms_threshold < 1) needs the boxes")
    kept: list[int] = []
    while ranked:
        best = ranked.pop(0)
        kept.append(best)
        ranked = [i for i in ranked if box_iou(boxes[best], boxes[i]) < nms_threshold]
    return kept


def filter_detections(
    metadata: Mapping[str, Any],
    detections: Mapping[str, Sequence[Detection]],
    options: GenEvalOptions | None = None,
) -> Kept:
    """The official "detected" dict: per class, the kept detections in rank order (the same objects
    that were passed in). Classes with nothing kept are left out, as officially.

    The threshold is 0.9 for every class when the tag is "counting", else 0.3 (defaults).
    """
    opts = options or DEFAULT_OPTIONS
    threshold = opts.confidence_threshold(metadata["tag"])
    kept: Kept = {}
    for name, dets in detections.items():
        if not dets:
            continue
        idx = select_indices(
            [d.score for d in dets],
            threshold,
            max_objects=opts.max_objects,
            boxes=[d.box for d in dets],
            nms_threshold=opts.nms_threshold,
            score_dtype=opts.score_dtype,
        )
        if idx:
            kept[name] = [dets[i] for i in idx]
    return kept


# --------------------------------------------------------------------------------------------- geometry


def relative_position(a_box: Sequence[float], b_box: Sequence[float], threshold: float = 0.1) -> set[str]:
    """Where box A lies relative to box B: a subset of `RELATIONS` (y grows downward, "above" = smaller y).

    Per axis, the centre offset is shrunk towards zero by `threshold * (size_A + size_B)`; if what is
    left is under 1e-3 on both axes the boxes are "too close" and the set is empty. Otherwise the shrunk
    offset is divided by the norm of the *unshrunk* offset and a relation holds when its component is
    beyond ±0.5 (strictly). Done in float32, as the official code does on the detector's float32 rows.
    """
    corners = np.asarray([list(a_box[:4]), list(b_box[:4])], dtype=np.float32).reshape(2, 2, 2)
    centre_a, centre_b = corners.mean(axis=-2)
    size_a, size_b = np.abs(np.diff(corners, axis=-2))[..., 0, :]
    offset = centre_a - centre_b
    shrunk = np.maximum(np.abs(offset) - np.float32(threshold) * (size_a + size_b), np.float32(0))
    shrunk = shrunk * np.sign(offset)
    if np.all(np.abs(shrunk) < np.float32(1e-3)):
        return set()
    dx, dy = shrunk / np.linalg.norm(offset)
    rels: set[str] = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


def format_relations(rels: set[str] | frozenset[str]) -> str:
    """The relation list of a failed position reason. Officially it is Python set order, which varies
    between processes (quirk G5); we print `RELATIONS` order so reasons are reproducible."""
    return " and ".join(r for r in RELATIONS if r in rels)


# --------------------------------------------------------------------------------------------- messages


def _colour_message(clause: Mapping[str, Any], colours: list[str]) -> str:
    want = clause["color"]
    present = ", ".join(f"{colours.count(c)} {c}" for c in COLORS if c in colours)
    return (
        f"expected {want} {clause['class']}>={clause['count']}, found {colours.count(want)} {want}; and "
        + present
    )


def _target(groups: list[list[Detection] | None], k: int) -> list[Detection] | None:
    if not 0 <= k < len(groups):
        raise ValueError(f"position clause refers to include clause {k}, which is not an earlier clause")
    return groups[k]


# --------------------------------------------------------------------------------------------- GenEval


def judge_kept(
    metadata: Mapping[str, Any],
    kept: Mapping[str, list[Detection]],
    colour_of: ColourOf,
    options: GenEvalOptions | None = None,
) -> Verdict:
    """GenEval's verdict from already-filtered detections (`filter_detections`' output).

    Include clauses look at the top-`count` kept detections only (quirk G4): colour needs every one
    of them to have the colour; position needs every (object, target) pair to hold the relation, the
    target being the objects matched by the referenced clause, and fails with "no target" when that
    clause failed (quirk G6). Later clauses run after a failure, so reasons accumulate. Exclude clauses
    count *all* kept detections (at most `max_objects`, quirk G3).
    """
    opts = options or DEFAULT_OPTIONS
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = list(kept.get(name, []))[:count]
        matched = True
        if len(found) < count:
            matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in clause:
                colours = [colour_of(name, d) for d in found]
                if colours.count(clause["color"]) < count:
                    matched = False
                    reasons.append(_colour_message(clause, colours))
            if "position" in clause and matched:
                relation, k = clause["position"]
                target = _target(groups, k)
                if target is None:
                    matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    matched = _all_pairs_hold(found, target, relation, opts, name, reasons)
        groups.append(found if matched else None)
    for clause in metadata.get("exclude", []):
        n = len(kept.get(clause["class"], []))
        if n >= clause["count"]:
            reasons.append(f"expected {clause['class']}<{clause['count']}, found {n}")
    return Verdict(correct=not reasons, reason="\n".join(reasons), reasons=tuple(reasons), kept=dict(kept))


def _all_pairs_hold(
    found: list[Detection],
    target: list[Detection],
    relation: str,
    opts: GenEvalOptions,
    name: str,
    reasons: list[str],
) -> bool:
    """Check (object, target) pairs in order; at the first failing pair record its reason and stop."""
    for obj in found:
        for tgt in target:
            rels = relative_position(obj.box, tgt.box, opts.position_threshold)
            if relation not in rels:
                reasons.append(f"expected {name} {relation} target, found {format_relations(rels)} target")
                return False
    return True


def judge(
    metadata: Mapping[str, Any],
    detections: Mapping[str, Sequence[Detection]],
    colour_of: ColourOf,
    *,
    options: GenEvalOptions | None = None,
) -> Verdict:
    """GenEval's per-image verdict from the raw detections of one image.

    `metadata` is one official record (`tag`, `include`, optional `exclude`, `prompt`); `detections`
    maps class name → raw detections in any order; `colour_of(class_name, detection)` is asked only for
    the detections a colour clause checks. `Verdict.reason` is the official text, except that a failed
    position check lists a two-relation set in a fixed order instead of Python's set order.
    """
    opts = options or DEFAULT_OPTIONS
    return judge_kept(metadata, filter_detections(metadata, detections, opts), colour_of, opts)


# --------------------------------------------------------------------------------------------- Flow-GRPO


def reward_kept(
    metadata: Mapping[str, Any],
    kept: Mapping[str, list[Detection]],
    colour_of: ColourOf,
    *,
    position_quirk: bool = True,
    options: GenEvalOptions | None = None,
) -> RewardResult:
    """Flow-GRPO's GenEval reward from already-filtered detections; see `reward`."""
    opts = options or DEFAULT_OPTIONS
    terms: list[float] = []
    reasons: list[str] = []
    strict = True
    groups: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        name, n = clause["class"], clause["count"]
        found = list(kept.get(name, []))  # every kept detection, not the top n (quirk R1)
        k = len(found)
        terms.append(1 - abs(n - k) / n)
        matched = True
        if k != n:
            strict = matched = False
            reasons.append(f"expected {name}=={n}, found {k}")
            if "color" in clause or "position" in clause:
                terms.append(0.0)
        else:
            if "color" in clause:
                colours = [colour_of(name, d) for d in found]
                c = colours.count(clause["color"])
                terms.append(1 - abs(n - c) / n)
                if c != n:
                    strict = matched = False
                    reasons.append(_colour_message(clause, colours))
            if "position" in clause and matched:
                relation, idx = clause["position"]
                target = _target(groups, idx)
                if target is None:
                    strict = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                    terms.append(0.0)
                else:
                    matched = _all_pairs_hold(found, target, relation, opts, name, reasons)
                    if not matched:
                        strict = False
                        terms.append(0.0)
                    if matched or position_quirk:
                        terms.append(1.0)  # officially appended even after a failed pair (quirk R3)
        groups.append(found if matched else None)
    score = sum(terms) / len(terms) if terms else 0.0
    return RewardResult(score=float(score), strict=strict, reason="\n".join(reasons), terms=tuple(terms))


def reward(
    metadata: Mapping[str, Any],
    detections: Mapping[str, Sequence[Detection]],
    colour_of: ColourOf,
    *,
    position_quirk: bool = True,
    options: GenEvalOptions | None = None,
) -> RewardResult:
    """Flow-GRPO's partial-credit GenEval reward (yifan123/reward-server) from raw detections.

    Same filtering as GenEval, but each include clause uses *all* kept detections of its class and
    needs an exact count: it adds `1 - |count - kept| / count` (negative when kept > 2·count), then for
    a colour clause `1 - |count - right colour| / count`, and for a position clause 0 on a missing
    target or failed pair and 1 otherwise. Exclude clauses are ignored. `score` is the mean.

    `position_quirk=True` (the default) reproduces Flow-GRPO exactly: after a failed pair it appends 0
    *and then* 1, so one wrong relation with everything else right scores 0.75 rather than 2/3. This
    default is deliberate: it is the reward Flow-GRPO's published runs trained on, and the one the
    fixtures hold. Pass `position_quirk=False` for the corrected reward (the 1 only when all pairs hold).
    """
    opts = options or DEFAULT_OPTIONS
    return reward_kept(
        metadata,
        filter_detections(metadata, detections, opts),
        colour_of,
        position_quirk=position_quirk,
        options=opts,
    )
