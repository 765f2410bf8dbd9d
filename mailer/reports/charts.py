"""The report's charts as inline SVG, drawn by matplotlib: the sequence funnel, opens and clicks
per day, and the variants of a step side by side. Only the object API (Figure and the SVG
canvas), never pyplot's global figures, so that requests in threads do not share a figure.

Text in the charts (step and variant names) is the marketer's: matplotlib writes it as escaped
XML text, and mathtext is off, so `$x$` or `<script>` stays the characters typed.
"""

from __future__ import annotations

import io
import math
import re
import threading
from collections.abc import Sequence
from datetime import date, timedelta
from itertools import count
from typing import Any

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Text as <text> elements, not glyph outlines: a chart is a few kilobytes, and its words can be
# selected and found. Set once at import, before any thread draws.
matplotlib.rcParams["svg.fonttype"] = "none"

INK, MUTED = "#222222", "#777777"
OPENS, CLICKS, CONVERTED = "#2b6cb0", "#c05621", "#2f855a"
VARIANT_COLOURS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280")
RATES_SHOWN = (("open", "open"), ("click_through", "click-through"),
               ("click_to_open", "click-to-open"))  # fmt: skip

# matplotlib's font cache is per thread, but its text layout keeps other shared caches: one
# chart is drawn at a time (a chart takes milliseconds).
_drawing = threading.Lock()
_numbering = count(1)


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    figure.patch.set_alpha(0)
    return figure


def _plain(axes: Any) -> None:
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(colors=INK, labelsize=9)


def _svg(figure: Figure) -> str:
    """The figure as an <svg> element to place in HTML: no XML prolog, no metadata, and ids
    unique in the page (each chart's ids get their own prefix)."""
    buffer = io.StringIO()
    with _drawing:
        FigureCanvasSVG(figure)  # the figure draws on the SVG canvas, no GUI backend
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    prefix = f"chart{next(_numbering)}-"
    text = re.sub(r'\bid="', f'id="{prefix}', text)
    text = re.sub(r"url\(#", f"url(#{prefix}", text)
    return re.sub(r'href="#', f'href="#{prefix}', text)


def funnel_chart(funnel: dict[str, Any]) -> str:
    """Entered, then how many reached each step, then converted: one bar each, top to bottom."""
    labels = ["entered", *(f"reached {step['name']}" for step in funnel["steps"]), "converted"]
    values = [funnel["entered"], *(step["reached"] for step in funnel["steps"]),
              funnel["converted"]]  # fmt: skip
    colours = [MUTED, *([OPENS] * len(funnel["steps"])), CONVERTED]
    figure = _figure(6.4, 0.9 + 0.32 * len(labels))
    axes = figure.add_subplot()
    positions = range(len(labels))
    bars = axes.barh(positions, values, color=colours, height=0.65)
    axes.bar_label(bars, labels=[str(v) for v in values], padding=3, fontsize=9, color=INK)
    axes.set_yticks(list(positions), labels=labels, parse_math=False)
    axes.invert_yaxis()
    axes.set_xlim(0, max(1, *values) * 1.12)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("contacts", fontsize=9, color=INK)
    _plain(axes)
    return _svg(figure)


def timeline_chart(days: Sequence[dict[str, Any]], include_machine: bool) -> str:
    """People's opens and clicks per UTC day as bars side by side; machine ones lighter, when
    asked for. A day without a bar had no event."""
    first = date.fromisoformat(days[0]["date"])
    places = [(date.fromisoformat(day["date"]) - first).days for day in days]  # days from first
    figure = _figure(6.4, 2.4)
    axes = figure.add_subplot()
    series = [("opens", OPENS, 1.0), ("clicks", CLICKS, 1.0)]
    if include_machine:
        series += [("machine_opens", OPENS, 0.35), ("machine_clicks", CLICKS, 0.35)]
    width = 0.8 / len(series)
    for index, (key, colour, alpha) in enumerate(series):
        offset = (index - (len(series) - 1) / 2) * width
        axes.bar([x + offset for x in places], [day[key] for day in days], width, color=colour,
                 alpha=alpha, label=key.replace("_", " "))  # fmt: skip
    span = places[-1]
    ticks = list(range(0, span + 1, max(1, math.ceil((span + 1) / 8))))
    axes.set_xticks(ticks, labels=[f"{first + timedelta(days=t):%d %b}" for t in ticks])
    margin = 0.6 + max(0.0, (2 - span) / 2)  # a day or two alone stand in the middle
    axes.set_xlim(-margin, span + margin)
    top = max([1, *(day[key] for day in days for key, _, _ in series)])
    axes.set_ylim(0, top * 1.2)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    _plain(axes)
    return _svg(figure)


def variants_chart(variants: Sequence[dict[str, Any]]) -> str:
    """Each variant's open, click-through and click-to-open rates, side by side."""
    figure = _figure(6.4, 2.4)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(variants))
    for index, variant in enumerate(variants):
        values = [(variant["rates"][key]["value"] or 0) * 100 for key, _ in RATES_SHOWN]
        offsets = [group + (index - (len(variants) - 1) / 2) * width
                   for group in range(len(RATES_SHOWN))]  # fmt: skip
        bars = axes.bar(offsets, values, width * 0.92, label=variant["name"],
                        color=VARIANT_COLOURS[index % len(VARIANT_COLOURS)])  # fmt: skip
        texts = [percent(variant["rates"][key]["value"]) for key, _ in RATES_SHOWN]
        axes.bar_label(bars, labels=texts, padding=2, fontsize=8, color=INK)
    axes.set_xticks(range(len(RATES_SHOWN)), labels=[name for _, name in RATES_SHOWN])
    top = max([1.0, *((v["rates"][key]["value"] or 0) * 100 for v in variants
                      for key, _ in RATES_SHOWN)])  # fmt: skip
    axes.set_ylim(0, top * 1.2)
    axes.set_ylabel("%", fontsize=9, color=INK)
    legend = axes.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1, 1),
                         title="variant", title_fontsize=8)  # fmt: skip
    for text in legend.get_texts():
        text.set_parse_math(False)
    _plain(axes)
    return _svg(figure)


def percent(value: float | None) -> str:
    """12.5%, 0.25% below one percent, a dash when there is nothing to divide by."""
    if value is None:
        return "–"
    share = value * 100
    return f"{share:.2f}%" if 0 < share < 1 else f"{share:.1f}%"
