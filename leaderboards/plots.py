"""Plots as inline SVG strings: no JavaScript, no network, readable in any browser and when printed.

Pure functions from numbers to markup. Every piece of text that reaches the SVG (run names, metric
keys, categories: untrusted) goes through `markupsafe.escape`, so the returned `Markup` can be placed in
an autoescaped template as is. Coordinates are rounded to 0.1 px to keep pages small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

from paintbench.leaderboards.model import is_number

# Okabe–Ito: distinguishable with the common colour-vision deficiencies
# Okabe-Ito (colour-blind safe); the sky blue comes after black so the first six lines hold one blue only
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#000000", "#56B4E9", "#F0E442")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'
MAX_POINTS = 800


def nice_ticks(lo: float, hi: float, n: int = 5, *, integer: bool = False) -> list[float]:
    """About `n` round tick values (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi]; whole numbers only with
    `integer` (training steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4f}".rstrip("0").rstrip(".")


def fmt_ticks(ticks: Sequence[float]) -> list[str]:
    """Tick labels that are all different: `fmt_tick`'s short form, with more significant digits where
    it would print two ticks alike (a learning rate between 1.0e-3 and 1.1e-3 printed '0.001' five times)."""
    labels = [fmt_tick(t) for t in ticks]
    tol = abs(ticks[1] - ticks[0]) * 1e-6 if len(ticks) > 1 else 0.0

    def exact(ls: list[str]) -> bool:   # distinct, and each label reads back as its tick
        return len(set(ls)) == len(ls) and all(abs(float(lab) - t) <= tol for lab, t in zip(ls, ticks, strict=True))

    digits = 2
    while not exact(labels) and digits < 12:
        digits += 1
        labels = ["0" if t == 0 else f"{t:.{digits}g}" for t in ticks]
    return labels


def _padded(lo: float, hi: float) -> tuple[float, float]:
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _thin(points: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return list(points)
    stride = math.ceil(len(points) / limit)
    kept = list(points[::stride])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


SMOOTHING = 0.6
"""Default weight of the training report's exponential moving average (TensorBoard's default is 0.6)."""


def ema(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: a debiased exponential moving average (the first values are not pulled
    toward 0). `weight` 0 returns the values unchanged. The site's slider recomputes the same on the
    drawn coordinates (an affine map of the values, which the average commutes with)."""
    out, last = [], 0.0
    for i, v in enumerate(values, start=1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** i) if weight else v)
    return out


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, title: str, x_label: str = "step",
               y_label: str = "", width: int = 560, height: int = 240, legend: bool | None = None,
               bands: Sequence[Sequence[tuple[float, float, float]]] | None = None, smooth: bool = False) -> Markup:
    """One line per (label, [(x, y), ...]); non-finite points are dropped. The legend shows when there is
    more than one line, or when asked (a grouped chart whose one line the title does not name).
    `bands` (one list per series, [(x, low, high), ...]) shades a band around each line (e.g. ± 1 SD
    over seeds) in the line's colour. `smooth` draws each line faint with its moving average (`ema`) on
    top, as TensorBoard does (the page's slider sets the weight)."""
    band_of = {str(label): [(x, lo, hi) for x, lo, hi in (bands[i] if bands else [])
                            if is_number(x) and is_number(lo) and is_number(hi)]
               for i, (label, _) in enumerate(series)}
    clean = [(str(label), _thin([(x, y) for x, y in pts if is_number(x) and is_number(y)])) for label, pts in series]
    clean = [(label, pts) for label, pts in clean if pts]
    left, right, top, bottom = 56, 12, 26, 34
    show_legend = len(clean) > 1 if legend is None else (legend and bool(clean))
    legend_h = 14 * len(clean) if show_legend else 0
    height += legend_h
    pw, ph = width - left - right, height - top - bottom - legend_h
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{escape(title)}" {FONT}>', f"<title>{escape(title)}</title>",
           f'<text x="{left}" y="16" font-size="13" font-weight="600">{escape(title)}</text>']
    if not clean:
        out.append(f'<text x="{left}" y="{top + ph / 2:.0f}" fill="#666">no data</text></svg>')
        return Markup("".join(out))
    xs = [x for _, pts in clean for x, _ in pts]
    ys = [y for _, pts in clean for _, y in pts] + [v for b in band_of.values() for _, lo, hi in b for v in (lo, hi)]
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = _padded(min(ys), max(ys))

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>')
    yt = nice_ticks(y0, y1)
    for t, text in zip(yt, fmt_ticks(yt), strict=True):
        y = py(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{_f(y)}" y2="{_f(y)}" stroke="#eee"/>'
                   f'<text x="{left - 4}" y="{_f(y + 4)}" text-anchor="end" fill="#444">{text}</text>')
    integer_x = all(float(x).is_integer() for x in xs)
    xt = nice_ticks(x0, x1, 6, integer=integer_x)
    for t, text in zip(xt, fmt_ticks(xt), strict=True):
        x = px(t)
        out.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#999"/>'
                   f'<text x="{_f(x)}" y="{top + ph + 15}" text-anchor="middle" fill="#444">{text}</text>')
    out.append(f'<text x="{left + pw / 2:.0f}" y="{top + ph + 29}" text-anchor="middle" fill="#444">'
               f"{escape(x_label)}</text>")
    if y_label:
        out.append(f'<text x="12" y="{top + ph / 2:.0f}" transform="rotate(-90 12 {top + ph / 2:.0f})" '
                   f'text-anchor="middle" fill="#444">{escape(y_label)}</text>')
    for i, (label, pts) in enumerate(clean):
        colour = PALETTE[i % len(PALETTE)]
        out.append(f'<g class="series" data-label="{escape(label)}"><title>{escape(label)}</title>')
        band = band_of.get(label) or []
        if len(band) > 1:
            ring = [(px(x), py(hi)) for x, _, hi in band] + [(px(x), py(lo)) for x, lo, _ in reversed(band)]
            out.append(f'<polygon class="band" fill="{colour}" fill-opacity="0.10" stroke="none" '
                       f'points="{" ".join(f"{_f(a)},{_f(b)}" for a, b in ring)}"/>')
        if len(pts) == 1:
            out.append(f'<circle cx="{_f(px(pts[0][0]))}" cy="{_f(py(pts[0][1]))}" r="3" fill="{colour}"/>')
        elif smooth and len(pts) > 2:
            coords = " ".join(f"{_f(px(x))},{_f(py(y))}" for x, y in pts)
            smoothed = " ".join(f"{_f(px(x))},{_f(py(y))}" for (x, _), y in zip(pts, ema([y for _, y in pts]), strict=True))
            out.append(f'<polyline class="raw" fill="none" stroke="{colour}" stroke-width="1" stroke-opacity="0.3" '
                       f'points="{coords}"/><polyline class="smooth" fill="none" stroke="{colour}" stroke-width="1.8" '
                       f'points="{smoothed}"/>')
        else:
            coords = " ".join(f"{_f(px(x))},{_f(py(y))}" for x, y in pts)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{coords}"/>')
        out.append("</g>")
        if legend_h:   # a legend entry shows or hides its line (site.js), so overlapping bands can be read
            ly = top + ph + 44 + 14 * i
            out.append(f'<g class="legend-item" data-label="{escape(label)}" role="button" tabindex="0">'
                       f'<title>show or hide {escape(label)}</title>'
                       f'<rect x="{left}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>'
                       f'<text x="{left + 14}" y="{ly + 1}">{escape(label)}</text></g>')
    out.append("</svg>")
    return Markup("".join(out))


def _row_chart_frame(labels: Sequence[str], title: str, width: int, row_h: int, top: int,
                     bottom: int) -> tuple[float, int, float, list[str]]:
    """The frame of a chart with one labelled row per item: (label width, height, plot width, the
    opening SVG elements with the title)."""
    label_w = min(220, 12 + 6.5 * max((len(lab) for lab in labels), default=4))
    height = top + bottom + row_h * max(1, len(labels))
    pw = width - label_w - 64 - 12   # 64: the value column at the right
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{escape(title)}" {FONT}>', f"<title>{escape(title)}</title>",
           f'<text x="4" y="16" font-size="13" font-weight="600">{escape(title)}</text>']
    return label_w, height, pw, out


def interval_plot(items: Sequence[tuple[str, float | None, float | None, float | None, str | None]], *,
                  title: str, scale: float = 1.0, decimals: int = 2, zero: float | None = None,
                  bars: bool = False, width: int = 560) -> Markup:
    """One row per (label, value, low, high, mark): a dot (or a bar) with its interval.

    `zero` draws a reference line (0 for differences). `mark` "leader" draws the dot filled dark,
    "tied" hollow: the same marks as the tables."""
    rows = [(str(lab), v, lo, hi, mark) for lab, v, lo, hi, mark in items]
    row_h, top, bottom = 20, 26, 24
    label_w, height, pw, out = _row_chart_frame([r[0] for r in rows], title, width, row_h, top, bottom)
    nums = [x * scale for _, v, lo, hi, _ in rows for x in (v, lo, hi) if is_number(x)]
    if zero is not None:
        nums.append(zero * scale)
    if bars:
        nums.append(0.0)
    if not nums:
        out.append(f'<text x="4" y="{top + 12}" fill="#666">no data</text></svg>')
        return Markup("".join(out))
    v0, v1 = _padded(min(nums), max(nums))

    def px(v: float) -> float:
        return label_w + (v * scale - v0) / (v1 - v0) * pw

    for t in nice_ticks(v0, v1):
        x = label_w + (t - v0) / (v1 - v0) * pw
        out.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{top - 4}" y2="{height - bottom}" stroke="#eee"/>'
                   f'<text x="{_f(x)}" y="{height - bottom + 14}" text-anchor="middle" fill="#444">{fmt_tick(t)}</text>')
    if zero is not None:
        x = px(zero)
        out.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{top - 4}" y2="{height - bottom}" stroke="#888" '
                   'stroke-dasharray="3 3"/>')
    for i, (label, v, lo, hi, mark) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        out.append(f'<g class="row"><title>{escape(label)}</title>'
                   f'<text x="{label_w - 6}" y="{_f(y + 4)}" text-anchor="end">{escape(_clip(label, 34))}</text>')
        colour = PALETTE[0]
        if is_number(v) and bars:
            x_base, x_v = px(0.0), px(v)
            out.append(f'<rect x="{_f(min(x_base, x_v))}" y="{_f(y - 6)}" width="{_f(abs(x_v - x_base))}" '
                       f'height="12" fill="{colour}" opacity="0.55"/>')
        if is_number(lo) and is_number(hi):
            out.append(f'<line x1="{_f(px(lo))}" x2="{_f(px(hi))}" y1="{_f(y)}" y2="{_f(y)}" stroke="#333"/>'
                       f'<line x1="{_f(px(lo))}" x2="{_f(px(lo))}" y1="{_f(y - 4)}" y2="{_f(y + 4)}" stroke="#333"/>'
                       f'<line x1="{_f(px(hi))}" x2="{_f(px(hi))}" y1="{_f(y - 4)}" y2="{_f(y + 4)}" stroke="#333"/>')
        if is_number(v):
            fill = "#fff" if mark == "tied" else ("#222" if mark == "leader" else colour)
            out.append(f'<circle cx="{_f(px(v))}" cy="{_f(y)}" r="4" fill="{fill}" stroke="#222"/>'
                       f'<text x="{width - 8}" y="{_f(y + 4)}" text-anchor="end">{v * scale:.{decimals}f}</text>')
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))


def strip_plot(items: Sequence[tuple[str, Sequence[float]]], *, title: str, decimals: int = 3,
               width: int = 560) -> Markup:
    """One row per (label, values): every value as a hollow dot (e.g. one per seed) and their mean as a
    bar, so a reader sees the spread and the outliers behind a mean ± SD."""
    rows = [(str(lab), [v for v in vals if is_number(v)]) for lab, vals in items]
    row_h, top, bottom = 22, 26, 24
    label_w, height, pw, out = _row_chart_frame([r[0] for r in rows], title, width, row_h, top, bottom)
    nums = [v for _, vals in rows for v in vals]
    if not nums:
        out.append(f'<text x="4" y="{top + 12}" fill="#666">no data</text></svg>')
        return Markup("".join(out))
    v0, v1 = _padded(min(nums), max(nums))

    def px(v: float) -> float:
        return label_w + (v - v0) / (v1 - v0) * pw

    for t in nice_ticks(v0, v1):
        out.append(f'<line x1="{_f(px(t))}" x2="{_f(px(t))}" y1="{top - 4}" y2="{height - bottom}" stroke="#eee"/>'
                   f'<text x="{_f(px(t))}" y="{height - bottom + 14}" text-anchor="middle" fill="#444">{fmt_tick(t)}</text>')
    for i, (label, vals) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        colour = PALETTE[i % len(PALETTE)]
        out.append(f'<g class="row" data-label="{escape(label)}"><title>{escape(label)}</title>'
                   f'<text x="{label_w - 6}" y="{_f(y + 4)}" text-anchor="end">{escape(_clip(label, 34))}</text>')
        for v in vals:
            out.append(f'<circle class="point" cx="{_f(px(v))}" cy="{_f(y)}" r="3.5" fill="none" stroke="{colour}" '
                       f'stroke-width="1.4"><title>{v:.{decimals}f}</title></circle>')
        if vals:
            m = sum(vals) / len(vals)
            out.append(f'<line x1="{_f(px(m))}" x2="{_f(px(m))}" y1="{_f(y - 8)}" y2="{_f(y + 8)}" stroke="#222" '
                       f'stroke-width="2"/><text x="{width - 8}" y="{_f(y + 4)}" text-anchor="end">{m:.{decimals}f}</text>')
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


#: prefixes whose two-part keys share a unit and read best on one chart (time/rollout_s, time/update_s, ...)
SHARED_UNIT_PREFIXES = ("time",)
#: chart order of a training report: rewards first, then the policy-update health signals
PRIORITY = ("reward", "kl", "clip_frac", "guard", "objects", "entropy", "frac_zero_std", "adv", "loss", "ratio", "stage", "eval")


def chart_groups(keys: Sequence[str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Group logged keys into charts: [(title, [(key, series label)])].

    `prefix/<name>/<stat>` keys share a chart per (prefix, stat), one line per name: `reward/hps/mean`
    and `reward/clip/mean` (and `reward/mean`, as "all") on one chart; `stage/global/kl` and
    `stage/refine/kl` on another. Plain keys (`kl`, `clip_frac`) and other two-part keys get a chart
    each, except prefixes in SHARED_UNIT_PREFIXES, whose keys share one chart."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    order: dict[tuple[str, str], int] = {}

    def add(gk: tuple[str, str], key: str, label: str) -> None:
        order.setdefault(gk, len(order))
        groups.setdefault(gk, []).append((key, label))

    three = {(k.split("/")[0], k.split("/")[-1]) for k in keys if k.count("/") >= 2}
    for k in keys:
        parts = k.split("/")
        if len(parts) >= 3:
            add((parts[0], parts[-1]), k, "/".join(parts[1:-1]))
        elif len(parts) == 2 and tuple(parts) in three:
            add((parts[0], parts[1]), k, "all")
        elif len(parts) == 2 and parts[0] in SHARED_UNIT_PREFIXES:
            add((parts[0], ""), k, parts[1])
        else:
            add((k, "\0"), k, k)

    def title(gk: tuple[str, str]) -> str:
        p, stat = gk
        if stat == "\0":
            return p
        if stat == "":
            return f"{p}/*"
        return f"{p}/*/{stat}"

    def rank(gk: tuple[str, str]) -> tuple[int, int]:
        head = gk[0].split("/")[0]
        return (PRIORITY.index(head) if head in PRIORITY else len(PRIORITY), order[gk])

    # within a chart, "all" first, then names in first-seen order
    return [(title(gk), sorted(groups[gk], key=lambda kl: kl[1] != "all")) for gk in sorted(groups, key=rank)]
