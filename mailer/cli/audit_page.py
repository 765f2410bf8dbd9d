"""The compliance report as one HTML file: inline CSS, no script, no fetched resource, so it
opens offline and can be attached to a ticket. It shows the data of `audit report --json`,
number for number.

The template is a string here rather than a file beside the module so that it ships inside
any install of the package without a package-data rule.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, StrictUndefined

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Consent compliance report</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #17663a; font-weight: 600; } .bad { color: #a4161a; font-weight: 600; }
code { font-size: .85em; word-break: break-all; }
</style>
</head>
<body>
<h1>Consent compliance report</h1>
<p>Period: {{ period.since or "the beginning" }} to {{ period.until or "now" }}.
Generated {{ generated_at }}.</p>

<h2>Ledger</h2>
{% if ledger.intact %}
<p class="ok">Intact: {{ ledger.entries }} entries.</p>
{% else %}
<p class="bad">Broken:</p>
<ul>{% for problem in ledger.problems %}<li class="bad">{{ problem }}</li>{% endfor %}</ul>
{% endif %}
<p>Head hash <code>{{ ledger.head_hash }}</code>.</p>
{% set checkpoint = ledger.checkpoint %}
{% if checkpoint %}
<p>Latest checkpoint: {{ checkpoint.file }} of {{ checkpoint.at }}, {{ checkpoint.entries }}
entries, head <code>{{ checkpoint.head }}</code>:
{% if checkpoint.problem %}<span class="bad">not held: {{ checkpoint.problem }}</span>
{% else %}<span class="ok">held</span>{% endif %}.</p>
{% else %}
<p>Latest checkpoint: no checkpoint.</p>
{% endif %}

<h2>Messages sent</h2>
<p>{{ sends.sent }} messages sent;
<span class="{{ 'bad' if sends.without_valid_consent else 'ok' }}">
{{ sends.without_valid_consent }} without valid consent</span>.</p>
{% if sends.problems %}
<table><tr><th>message</th><th>campaign / step</th><th>sent</th><th>problem</th></tr>
{% for p in sends.problems %}
<tr><td><code>{{ p.message_id or p.outbox_id }}</code></td><td>{{ p.campaign }} / {{ p.step }}</td>
<td>{{ p.sent_at }}</td><td class="bad">{{ p.problem }}</td></tr>
{% endfor %}</table>
{% endif %}

<h2>Consents by list, source and status ({{ 'at ' ~ consents_at if consents_at else 'now' }})</h2>
<table><tr><th>list</th><th>source</th><th>status</th><th>contacts</th></tr>
{% for c in consents %}
<tr><td>{{ c.list }}</td><td>{{ c.source }}</td><td>{{ c.status }}</td>
<td class="n">{{ c.contacts }}</td></tr>
{% endfor %}</table>

<h2>Ledger entries recorded in the period</h2>
<table><tr><th>list</th><th>action</th><th>source</th><th>entries</th></tr>
{% for e in ledger_entries %}
<tr><td>{{ e.list }}</td><td>{{ e.action }}</td><td>{{ e.source }}</td>
<td class="n">{{ e.entries }}</td></tr>
{% endfor %}</table>

<h2>Withdrawals and how fast they took effect</h2>
<p>{{ withdrawals | length }} withdrawals;
<span class="{{ 'bad' if withdrawals_with_messages_after else 'ok' }}">
{{ withdrawals_with_messages_after }} followed by a message</span>.</p>
<table><tr><th>entry</th><th>list</th><th>source</th><th>recorded</th>
<th>last message before</th><th>seconds between</th><th>messages after</th></tr>
{% for w in withdrawals %}
<tr><td class="n">{{ w.entry }}</td><td>{{ w.list }}</td><td>{{ w.source }}</td>
<td>{{ w.recorded_at }}</td><td>{{ w.last_sent_before or "-" }}</td>
{% set gap = w.seconds_from_last_message %}
<td class="n">{{ gap if gap is not none else "-" }}</td>
<td class="n {{ 'bad' if w.messages_after else 'ok' }}">{{ w.messages_after }}</td></tr>
{% endfor %}</table>

<h2>Erasures</h2>
<table><tr><th>entry</th><th>requested</th><th>recorded</th><th>reference</th></tr>
{% for e in erasures %}
<tr><td class="n">{{ e.entry }}</td><td>{{ e.occurred_at }}</td><td>{{ e.recorded_at }}</td>
<td>{{ e.reference or "-" }}</td></tr>
{% endfor %}</table>

<h2>Bounces and complaints</h2>
<table><tr><th>sent</th><th>complaints</th><th>hard bounces</th><th>verdict</th></tr>
<tr><td class="n">{{ deliverability.sent }}</td><td class="n">{{ deliverability.complaints }}</td>
<td class="n">{{ deliverability.hard_bounces }}</td>
<td class="{{ 'ok' if deliverability.status == 'ok' else 'bad' }}">
{{ deliverability.status }}: {{ deliverability.verdict }}</td></tr>
</table>
</body>
</html>
"""

_environment = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                           lstrip_blocks=True)  # fmt: skip


def render_report(data: dict[str, Any]) -> str:
    """The report as HTML; values are escaped (a list or campaign name is a marketer's text)."""
    return _environment.from_string(TEMPLATE).render(**data)
