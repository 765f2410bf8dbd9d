"""The HTML report (reports/html.py): every number of the report in the page, named by its
data-* attributes; charts as inline SVG that parse; marketers' names shown as text, never
as markup; nothing fetched; empty reports render."""

from __future__ import annotations

import copy
import re
import threading
import xml.etree.ElementTree as ET
from typing import Any

from mailer.reports.html import render_report
from tests.reports.page_numbers import page_numbers, report_numbers
from tests.reports.sample_report import renamed, sample_report

SVG = "{http://www.w3.org/2000/svg}"
SCRIPT = "<script>alert(1)</script>"


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(match) for match in re.findall(r"<svg\b.*?</svg>", html, re.DOTALL)]


def charts(html: str) -> list[str]:
    return re.findall(r'data-chart="(\w+)"', html)


def test_every_number_of_the_report_is_in_the_page_with_its_data_attributes() -> None:
    report = sample_report()
    found = page_numbers(render_report(report))
    keys = [key for key, _, _ in found]
    assert len(keys) == len(set(keys)), "a number shown twice under one name"
    assert {key: value for key, value, _ in found} == report_numbers(report)
    shown = {key: text for key, _, text in found}
    assert shown[("welcome", "hello", "B", "unique_clicks", "")] == "14"
    assert shown[("welcome", "", "", "sent", "")] == "227"
    assert shown[("welcome", "hello", "A", "rates.open.value", "")] == "40.7%"
    assert shown[("welcome", "hello", "A", "rates.open.denominator", "")] == "59"
    assert shown[("spring_launch", "", "", "rates.complaint.value", "")] == "0.51%"
    assert shown[("welcome", "our-story", "", "funnel.median_hours_from_entry", "")] == "72.5"
    assert shown[("welcome", "", "", "timeline.clicks", "2026-11-21")] == "12"
    for key, value, text in found:  # counts are shown as they are
        if isinstance(value, int) and not isinstance(value, bool):
            assert text == str(value), key


def test_flags_stand_beside_the_rates_outside_the_ranges() -> None:
    html = render_report(sample_report())
    flags = {key: text for key, value, text in page_numbers(html) if key[3].endswith(".flag")
             and value is not None}  # fmt: skip
    assert flags == {
        ("spring_launch", step, "", f"rates.{rate}.flag", ""): text
        for step in ("", "broadcast")
        for rate, text in (("open", "▼ low"), ("complaint", "▲ high"))
    }


def test_the_ab_verdicts_are_shown() -> None:
    html = render_report(sample_report())
    assert "B wins on clicks, 98% confident</span>" in html
    assert "no winner yet: about 420 more recipients per variant needed</span>" in html
    assert "On conversions" not in html  # no comparison for it: nothing to say


def test_charts_are_inline_svg_that_parses_and_nothing_is_fetched() -> None:
    html = render_report(sample_report())
    assert charts(html) == ["funnel", "timeline", "variants", "timeline"]
    drawn = svgs(html)
    assert len(drawn) == 4
    for svg in drawn:
        assert svg.tag == f"{SVG}svg"
        assert float(svg.get("width", "0pt").removesuffix("pt")) > 0
        assert svg.findall(f".//{SVG}path")  # something is drawn
        assert not svg.findall(f".//{SVG}image")
    funnel_words = {t.text for t in drawn[0].iter(f"{SVG}text")}
    assert {"entered", "reached hello", "reached our-story", "converted", "119"} <= funnel_words
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "ids repeat between charts"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert len(html) < 250_000


def test_a_step_named_like_markup_is_shown_as_text_in_tables_and_charts() -> None:
    html = render_report(renamed(sample_report(), f'x"><b>{SCRIPT}', SCRIPT))
    assert "<script" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    keys = {key for key, _, _ in page_numbers(html)}
    assert (f'x"><b>{SCRIPT}', SCRIPT, "B", "unique_clicks", "") in keys
    texts = [t.text for svg in svgs(html) for t in svg.iter(f"{SVG}text")]
    assert f"reached {SCRIPT}" in texts  # escaped in the SVG source, the same words parsed


def test_names_that_look_like_math_are_drawn_as_typed() -> None:
    html = render_report(renamed(sample_report(), "welcome", "$x^2$ a_b {c}"))
    texts = [t.text for svg in svgs(html) for t in svg.iter(f"{SVG}text")]
    assert "reached $x^2$ a_b {c}" in texts


def test_a_report_without_campaigns_renders() -> None:
    report: dict[str, Any] = {
        "generated_at": "2026-11-23T10:00:00+00:00", "since": "2026-11-01T00:00:00+00:00",
        "until": None, "include_machine": True, "campaigns": [],
    }  # fmt: skip
    html = render_report(report)
    assert "No campaigns in this report." in html
    assert "2026-11-01T00:00:00+00:00" in html and not svgs(html)


def zeroed(value: Any) -> Any:
    if isinstance(value, dict):
        if "numerator" in value:
            return {"value": None, "numerator": 0, "denominator": 0, "flag": None}
        return {key: zeroed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [zeroed(item) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 0 if isinstance(value, int) else None
    return value


def test_a_campaign_of_zeros_renders_with_dashes_for_rates() -> None:
    report = sample_report()
    report["campaigns"] = [zeroed(c) for c in report["campaigns"]]
    for campaign in report["campaigns"]:
        campaign["timeline"] = []
    html = render_report(report)
    found = page_numbers(html)
    assert {key: value for key, value, _ in found} == report_numbers(report)
    rates = {text for key, _, text in found if key[3].endswith(".value")}
    assert rates == {"–"}
    assert charts(html) == ["funnel", "variants"]  # no timeline to draw
    assert html.count("No opens or clicks in this period.") == 2
    for svg in svgs(html):
        assert svg.findall(f".//{SVG}path")


def test_machine_lines_are_drawn_only_when_machine_events_are_included() -> None:
    report = sample_report()
    people = render_report(report)
    report["include_machine"] = True
    both = render_report(report)
    assert "machine opens" not in " ".join(t.text or "" for s in svgs(people)
                                           for t in s.iter(f"{SVG}text"))  # fmt: skip
    assert "machine opens" in " ".join(t.text or "" for s in svgs(both)
                                       for t in s.iter(f"{SVG}text"))  # fmt: skip


def test_pages_render_in_threads_at_once() -> None:
    report = sample_report()
    expected = report_numbers(report)
    results: list[dict[Any, Any]] = []

    def render() -> None:
        found = page_numbers(render_report(copy.deepcopy(report)))
        results.append({key: value for key, value, _ in found})

    threads = [threading.Thread(target=render) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4
