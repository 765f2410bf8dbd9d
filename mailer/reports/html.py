"""The campaign report as one HTML page: inline CSS and inline SVG charts, no script and no
fetched resource, so the file opens offline and `/reports` serves the same page.

Every number is an element that names what it is (`data-campaign`, `data-step`,
`data-variant`, `data-metric`, and `data-value` holding the number exactly as `mailer report
--json` gives it), so a test, or a script, can read the page back and compare. The totals of a
campaign have an empty `data-step`, the totals of a step an empty `data-variant`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, StrictUndefined

from mailer.reports.charts import funnel_chart, percent, timeline_chart, variants_chart
from mailer.reports.decisions import run_time, winner_first

COUNTS = {
    "queued": "queued", "sent": "sent", "failed": "failed", "skipped": "skipped",
    "delivered": "delivered", "hard_bounces": "hard bounces", "soft_bounces": "soft bounces",
    "unique_opens": "unique opens", "total_opens": "total opens",
    "unique_clicks": "unique clicks", "total_clicks": "total clicks",
    "machine_opens": "machine opens", "machine_clicks": "machine clicks",
    "unsubscribes": "unsub&shy;scribes", "complaints": "com&shy;plaints",
    "conversions": "con&shy;versions", "survey_answers": "survey answers",
}  # fmt: skip
RATES = {
    "delivery": "delivery", "open": "open", "click_through": "click-through",
    "click_to_open": "click-to-open", "unsubscribe": "unsubscribe", "complaint": "complaint",
    "bounce": "bounce",
}  # fmt: skip
FUNNEL = ("entered", "active", "completed", "converted", "exited")
TIMELINE = ("opens", "clicks", "machine_opens", "machine_clicks")
AB_METRICS = ("opens", "clicks", "conversions")
COMPARISON = ("rate", "baseline_rate", "difference", "ci_low", "ci_high", "p_value", "confident")
FLAG_WORDS = {"low": "▼ low", "high": "▲ high"}

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Campaign report</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 84rem;
       padding: 0 1rem; color: #222; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .3rem; } h2 { font-size: 1.25rem; margin: 2.2rem 0 .4rem;
border-top: 2px solid #222; padding-top: .8rem; } h3 { font-size: 1rem; margin: 1.4rem 0 .3rem; }
h2 small { font-weight: normal; color: #555; font-size: .85rem; }
.meta { color: #555; margin: 0; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem 2rem; }
figure { margin: 0; flex: 1 1 28rem; max-width: 40rem; }
figcaption { font-weight: 600; margin-bottom: .2rem; }
figure svg { width: 100%; height: auto; display: block; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .3rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .45rem; text-align: right;
         vertical-align: top; }
th { font-size: .8rem; font-weight: 600; color: #444; vertical-align: bottom; }
th:first-child, td:first-child { text-align: left; }
td { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.counts { font-size: .92em; }
tr.campaign td { font-weight: 600; background: #f4f4f4; }
tr.variant td:first-child { padding-left: 1.6rem; color: #444; }
.of { color: #777; font-size: .8em; display: block; }
.flag { background: #fde2e1; color: #8a1414; font-weight: 600; font-size: .8em;
        padding: 0 .25rem; border-radius: 3px; }
.verdict { font-weight: 600; }
.verdict.won { color: #17663a; }
.none { color: #666; }
details { margin: .6rem 0; } summary { cursor: pointer; font-weight: 600; }
</style>
</head>
<body>
{% macro number(c, s, v, metric, value, text=none, cls="n", day="") -%}
<span class="{{ cls }}" data-campaign="{{ c }}" data-step="{{ s }}" data-variant="{{ v }}" \
{% if day %}data-date="{{ day }}" {% endif %}data-metric="{{ metric }}" \
data-value="{{ value | json }}">\
{{ value if text is none else text }}</span>
{%- endmacro %}
{% macro rate(c, s, v, name, r) -%}
{{ number(c, s, v, "rates." ~ name ~ ".value", r.value, r.value | percent) }}
<span class="of">{{ number(c, s, v, "rates." ~ name ~ ".numerator", r.numerator) }} / \
{{ number(c, s, v, "rates." ~ name ~ ".denominator", r.denominator) }}</span>
{{ number(c, s, v, "rates." ~ name ~ ".flag", r.flag, flag_words.get(r.flag, ""), \
"flag" if r.flag else "noflag") }}
{%- endmacro %}
<header>
<h1>Campaign report</h1>
<p class="meta">Period: {{ report.since or "the beginning" }} to {{ report.until or "now" }}.
Generated {{ report.generated_at }}.
{% if report.include_machine %}Machine opens and clicks (security scanners, privacy proxies)
are included.{% else %}People's opens and clicks only; machine ones are counted apart.{% endif %}
</p>
</header>
{% for c in campaigns %}
{% set name = c.data.name %}
<section class="campaign" data-campaign="{{ name }}">
<h2>{{ name }} <small>{{ c.data.kind }}
{%- if c.data.list %} to {{ c.data.list }}{% endif %}</small></h2>
<div class="charts">
{% if c.funnel_svg %}
<figure data-chart="funnel"><figcaption>Funnel: contacts who entered, reached each step,
converted</figcaption>{{ c.funnel_svg | safe }}</figure>
{% endif %}
{% if c.timeline_svg %}
<figure data-chart="timeline"><figcaption>Opens and clicks per day (UTC)</figcaption>
{{ c.timeline_svg | safe }}</figure>
{% else %}
<p class="none">No opens or clicks in this period.</p>
{% endif %}
</div>

<h3>Rates</h3>
<div class="scroll"><table class="rates">
<thead><tr><th>step</th>{% for label in rates.values() %}<th>{{ label }}</th>{% endfor %}</tr>
</thead><tbody>
{% for row in c.rows %}
<tr class="{{ row.level }}"><td>{{ row.label }}</td>
{% for key in rates %}<td>{{ rate(name, row.step, row.variant, key, row.metrics.rates[key]) }}</td>
{% endfor %}</tr>
{% endfor %}
</tbody></table></div>

<h3>Counts</h3>
<div class="scroll"><table class="counts">
<thead><tr><th>step</th>{% for label in counts.values() %}<th>{{ label | safe }}</th>
{% endfor %}</tr></thead><tbody>
{% for row in c.rows %}
<tr class="{{ row.level }}"><td>{{ row.label }}</td>
{% for key in counts %}<td>{{ number(name, row.step, row.variant, key, row.metrics[key]) }}</td>
{% endfor %}</tr>
{% endfor %}
</tbody></table></div>

{% for test in c.ab_tests %}
<h3>A/B test: {{ test.step }}</h3>
<div class="charts">
<figure data-chart="variants"><figcaption>Variants of {{ test.step }} side by side
</figcaption>{{ test.svg | safe }}</figure>
<div>
{% for metric, ab in test.ab.items() %}
<p>On {{ metric }}: {{ number(name, test.step, "", "ab." ~ metric ~ ".verdict", ab.verdict,
                              cls="verdict won" if ab.winner else "verdict") }}</p>
{% endfor %}
</div>
</div>
<div class="scroll"><table class="ab">
<thead><tr><th>metric</th><th>variant</th><th>against</th><th>rate</th><th>baseline rate</th>
<th>difference</th><th>95% interval</th><th>p-value</th><th>confident</th></tr></thead><tbody>
{% for metric, ab in test.ab.items() %}{% for cmp in ab.comparisons %}
{% set m = "ab." ~ metric ~ "." %}
<tr><td>{{ metric }}</td><td>{{ cmp.variant }}</td><td>{{ cmp.against }}</td>
<td>{{ number(name, test.step, cmp.variant, m ~ "rate", cmp.rate, cmp.rate | percent) }}</td>
<td>{{ number(name, test.step, cmp.variant, m ~ "baseline_rate", cmp.baseline_rate,
              cmp.baseline_rate | percent) }}</td>
<td>{{ number(name, test.step, cmp.variant, m ~ "difference", cmp.difference,
              cmp.difference | points) }}</td>
<td>{{ number(name, test.step, cmp.variant, m ~ "ci_low", cmp.ci_low, cmp.ci_low | points) }}
to {{ number(name, test.step, cmp.variant, m ~ "ci_high", cmp.ci_high, cmp.ci_high | points) }}
</td>
<td>{{ number(name, test.step, cmp.variant, m ~ "p_value", cmp.p_value,
              "–" if cmp.p_value is none else "%.3f" | format(cmp.p_value)) }}</td>
<td>{{ number(name, test.step, cmp.variant, m ~ "confident", cmp.confident,
              "yes" if cmp.confident else "no") }}</td></tr>
{% endfor %}{% endfor %}
</tbody></table></div>
{% endfor %}

{% if c.data.get("ab_decisions") %}
<h3>A/B test winners</h3>
<div class="scroll"><table class="ab-decisions">
<thead><tr><th>broadcast at</th><th>decided at</th><th>by people's</th><th>winner</th>
<th>why</th><th>people / test messages sent</th><th>sent the winner</th></tr></thead><tbody>
{% for d in c.data.ab_decisions %}
<tr data-campaign="{{ name }}" data-send-at="{{ d.send_at }}"><td>{{ d.send_at | run_time }}</td>
<td>{{ d.decided_at }}</td><td>{{ d.decide_by }}</td><td>{{ d.winner }}</td>
<td>{{ d.reason }}</td>
<td>{% for v, successes, trials in d | winner_first %}{{ v }} {{ successes }} / {{ trials }}\
{{ ", " if not loop.last }}{% endfor %}</td><td>{{ d.rest_queued }}</td></tr>
{% endfor %}
</tbody></table></div>
{% endif %}

{% set funnel = c.data.funnel %}
{% if funnel %}
<h3>Funnel</h3>
<div class="scroll"><table class="funnel">
<thead><tr>{% for key in funnel_keys %}<th>{{ key }}</th>{% endfor %}
<th>median hours to convert</th></tr></thead>
<tbody><tr>{% for key in funnel_keys %}
<td>{{ number(name, "", "", "funnel." ~ key, funnel[key]) }}</td>{% endfor %}
<td>{{ number(name, "", "", "funnel.median_hours_to_convert", funnel.median_hours_to_convert,
              funnel.median_hours_to_convert | hours) }}</td></tr></tbody>
</table>
<table class="funnel-steps">
<thead><tr><th>step</th><th>reached</th><th>median hours from entry</th></tr></thead><tbody>
{% for step in funnel.steps %}
<tr><td>{{ step.name }}</td><td>{{ number(name, step.name, "", "funnel.reached", step.reached) }}
</td><td>{{ number(name, step.name, "", "funnel.median_hours_from_entry",
                   step.median_hours_from_entry, step.median_hours_from_entry | hours) }}</td>
</tr>
{% endfor %}
</tbody></table></div>
{% endif %}

{% if c.data.timeline %}
<details><summary>Opens and clicks by day</summary>
<div class="scroll"><table class="timeline">
<thead><tr><th>day (UTC)</th>{% for key in timeline_keys %}<th>{{ key | replace("_", " ") }}</th>
{% endfor %}</tr></thead><tbody>
{% for day in c.data.timeline %}
<tr><td>{{ day.date }}</td>{% for key in timeline_keys %}
<td>{{ number(name, "", "", "timeline." ~ key, day[key], day=day.date) }}</td>{% endfor %}</tr>
{% endfor %}
</tbody></table></div>
</details>
{% endif %}
</section>
{% else %}
<p class="none">No campaigns in this report.</p>
{% endfor %}
</body>
</html>
"""


@dataclass(frozen=True)
class Row:
    """One line of a campaign's tables: the campaign's totals, a step's, or a variant's."""

    label: str
    step: str
    variant: str
    level: str  # campaign, step or variant
    metrics: dict[str, Any]


def _points(value: float | None) -> str:
    """A difference of two rates, in percentage points."""
    return "–" if value is None else f"{value * 100:+.1f} pts"


def _hours(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


_environment = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                           lstrip_blocks=True)  # fmt: skip
_environment.filters.update(json=json.dumps, percent=percent, points=_points, hours=_hours,
                            run_time=run_time, winner_first=winner_first)  # fmt: skip
_template = _environment.from_string(TEMPLATE)


def rows(campaign: dict[str, Any]) -> list[Row]:
    """The campaign's totals, then each step, then its variants when it has more than one (a
    step's only variant is the step itself)."""
    found = [Row("all steps", "", "", "campaign", campaign["totals"])]
    for step in campaign["steps"]:
        found.append(Row(step["name"], step["name"], "", "step", step["totals"]))
        if len(step["variants"]) > 1:
            found += [Row(f"variant {v['name']}", step["name"], v["name"], "variant", v)
                      for v in step["variants"]]  # fmt: skip
    return found


def _campaign(campaign: dict[str, Any], include_machine: bool) -> dict[str, Any]:
    funnel = campaign.get("funnel")
    tested = [step for step in campaign["steps"] if step["ab"] and len(step["variants"]) > 1]
    tests = [{"step": step["name"], "ab": {k: v for k, v in step["ab"].items() if v},
              "svg": variants_chart(step["variants"])} for step in tested]  # fmt: skip
    return {
        "data": campaign,
        "rows": rows(campaign),
        "funnel_svg": funnel_chart(funnel) if funnel else "",
        "timeline_svg": timeline_chart(campaign["timeline"], include_machine)
        if campaign["timeline"] else "",
        "ab_tests": tests,
    }  # fmt: skip


def render_report(report: dict[str, Any]) -> str:
    """The report (the data of `mailer report --json`) as one self-contained HTML page."""
    include_machine = bool(report.get("include_machine"))
    return _template.render(
        report=report,
        campaigns=[_campaign(c, include_machine) for c in report["campaigns"]],
        rates=RATES, counts=COUNTS, flag_words=FLAG_WORDS,
        funnel_keys=FUNNEL, timeline_keys=TIMELINE,
    )  # fmt: skip
