"""Gallery cards: one plain dict per image with everything its card shows (pure, no I/O).

For GenEval-style metrics a card carries the verdict (`details.correct`), the reason and the detected
boxes, which the template draws as an SVG overlay in the original image's pixel coordinates (so it fits
the thumbnail and the full image alike). Boxes come from `details.kept` + `details.colours` (GenEval:
the detections its rules kept, `[x1, y1, x2, y2, score]`) or else `details.detections`
(`{class: [{box, score, colour}]}`, the shapes world). Malformed entries are skipped, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paintbench.leaderboards.layouts import metric_format
from paintbench.leaderboards.model import Run, Sample, TrainLog, is_number
from paintbench.leaderboards.thumbs import Published


def _box(values: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) < 4:
        return None
    x1, y1, x2, y2 = values[:4]
    if not all(is_number(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
        return None
    return float(x1), float(y1), float(x2), float(y2)


def boxes_of(details: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Detected boxes of one image's GenEval-style details: [{x, y, w, h, label, score}]."""
    out: list[dict[str, Any]] = []
    kept = details.get("kept")
    if isinstance(kept, Mapping) and kept:
        colours = details.get("colours") if isinstance(details.get("colours"), Mapping) else {}
        for cls, dets in kept.items():
            cls_colours = colours.get(cls) if isinstance(colours.get(cls), list) else []
            for i, d in enumerate(dets if isinstance(dets, list) else []):
                box = _box(d)
                if box is None:
                    continue
                score = d[4] if len(d) > 4 and is_number(d[4]) else None
                colour = cls_colours[i] if i < len(cls_colours) else None
                out.append(_entry(box, str(cls), colour, score))
        return out
    dets_by_cls = details.get("detections")
    if isinstance(dets_by_cls, Mapping):
        for cls, dets in dets_by_cls.items():
            for d in dets if isinstance(dets, list) else []:
                if not isinstance(d, Mapping):
                    continue
                box = _box(d.get("box"))
                if box is not None:
                    out.append(_entry(box, str(cls), d.get("colour") or d.get("color"), d.get("score")))
    return out


def _short(v: float) -> float | int:
    """0.1 px is finer than any screen shows; whole numbers print without `.0` (pages stay small)."""
    r = round(v, 1)
    return int(r) if r == int(r) else r


def _entry(box: tuple[float, float, float, float], cls: str, colour: Any, score: Any) -> dict[str, Any]:
    x1, y1, x2, y2 = box
    label = f"{colour} {cls}" if isinstance(colour, str) and colour else cls
    return {"x": _short(x1), "y": _short(y1), "w": _short(x2 - x1), "h": _short(y2 - y1), "label": label,
            "score": float(score) if is_number(score) else None}


def score_entry(metric: str, rec: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a card says about one metric: value text, verdict, reason, error."""
    if rec is None:
        return {"metric": metric, "text": "not scored", "value": None, "verdict": None, "reason": "", "error": ""}
    value = rec.get("value")
    details = rec.get("details") if isinstance(rec.get("details"), Mapping) else {}
    scale, decimals = metric_format(metric)
    verdict = details.get("correct") if isinstance(details.get("correct"), bool) else None
    error = str(rec.get("error") or details.get("error") or "")
    text = f"{value * scale:.{decimals}f}" if is_number(value) else "error"
    return {"metric": metric, "text": text, "value": value if is_number(value) else None, "verdict": verdict,
            "reason": str(details.get("reason") or ""), "error": error}


def card(run: Run, s: Sample, published: Mapping[str, Published]) -> dict[str, Any]:
    pub = published.get(s.sha256 or "") or Published(None, None)
    scores = [score_entry(m, s.scores.get(m)) for m in run.metrics]
    boxes: list[dict[str, Any]] = []
    tag = ""
    for m in run.metrics:
        details = (s.scores.get(m) or {}).get("details")
        if isinstance(details, Mapping):
            boxes = boxes or boxes_of(details)
            tag = tag or str(details.get("tag") or "")
    failed = any(e["verdict"] is False or e["value"] is None for e in scores)
    primary = run.primary_metric
    primary_value = next((e["value"] for e in scores if e["metric"] == primary), None)
    font = _short(max(6.0, (max(s.width or 0, s.height or 0) or 256) / 18))
    return {
        "prompt_id": s.prompt_id, "sample_index": s.sample_index, "prompt": s.prompt,
        "category": s.category or "", "tag": tag, "search": s.prompt.lower(), "seed": s.seed,
        "sha": s.sha256 or "", "thumb": pub.thumb, "full": pub.full, "tw": pub.width, "th": pub.height,
        "w": s.width, "h": s.height, "scores": scores, "failed": failed,
        "boxes": place_labels(boxes, s.width, s.height, font) if (s.width and s.height) else [],
        "sort": primary_value if primary_value is not None else "",
        "font": font,
    }


LABEL_CHAR_WIDTH = 0.62   # a label's width per character, in font sizes (system-ui, conservative)


def place_labels(boxes: list[dict[str, Any]], width: float, height: float, font: float) -> list[dict[str, Any]]:
    """Each box with the place of its label (`lx`, `ly`: the text's left and baseline), inside the image
    and overlapping no other label: above the box, else inside its top, else below it, shifted left to
    stay in the image; a label that fits nowhere gets `lx = None` and is only the box's hover title.
    Labels are drawn in the lightbox, not on thumbnails. Pure."""
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for b in boxes:
        w = len(str(b["label"])) * font * LABEL_CHAR_WIDTH
        x = min(max(0.0, float(b["x"]) + 1), max(0.0, width - w))
        spot = None
        if w <= width:
            for base in (float(b["y"]) - 2, float(b["y"]) + font, float(b["y"]) + float(b["h"]) + font):
                top = base - font
                rect = (x, top, x + w, base + 0.2 * font)
                inside = top >= 0 and rect[3] <= height
                clear = all(rect[2] <= q[0] or q[2] <= rect[0] or rect[3] <= q[1] or q[3] <= rect[1] for q in placed)
                if inside and clear:
                    spot = (x, base)
                    placed.append(rect)
                    break
        out.append({**b, "lx": None if spot is None else _short(spot[0]), "ly": None if spot is None else _short(spot[1])})
    return out


def run_cards(run: Run, published: Mapping[str, Published]) -> list[dict[str, Any]]:
    return [card(run, s, published) for s in run.samples]


def train_steps(log: TrainLog, published: Mapping[str, Published], *, max_steps: int = 24,
                max_images: int = 8) -> list[dict[str, Any]]:
    """Sample images over training steps: at most `max_steps` steps (evenly spread, first and last kept),
    `max_images` images each."""
    steps = sorted(log.samples)
    if len(steps) > max_steps:
        idx = sorted({round(i * (len(steps) - 1) / (max_steps - 1)) for i in range(max_steps)})
        steps = [steps[i] for i in idx]
    out = []
    for step in steps:
        items = []
        for smp in log.samples[step][:max_images]:
            pub = published.get(smp.sha256 or "") or Published(None, None)
            comps = ", ".join(f"{k} {v:.3f}" for k, v in smp.components.items())
            items.append({"thumb": pub.thumb, "full": pub.full, "tw": pub.width, "th": pub.height,
                          "prompt": smp.prompt, "reward": smp.reward, "components": comps})
        rewards = [i["reward"] for i in items if is_number(i["reward"])]
        out.append({"step": step, "images": items,
                    "mean": sum(rewards) / len(rewards) if rewards else None})
    return out
