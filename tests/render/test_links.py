from __future__ import annotations

from mailer.render import links
from mailer.render.links import LinkTable

BASE = "https://t.example"
DOCUMENT = (
    '<a href="https://shop.example/a?x=1&amp;y=2">A</a>'
    "<a class=x href='https://shop.example/b'>B</a>"
    "<a href=https://shop.example/c>C</a>"
    '<a href="mailto:hi@example.com">mail</a>'
    '<a data-notrack href="https://shop.example/private">private</a>'
    f'<a href="{BASE}/u/token">unsubscribe</a>'
    '<A HREF = " https://shop.example/a?x=1&amp;y=2 ">again</A>'
)


def rewritten(document: str) -> tuple[str, list[str]]:
    table = LinkTable(BASE, lambda index: f"{BASE}/c/{index}?a&b")
    return table.rewrite_html(document), table.targets


def test_links_are_rewritten_the_same_when_their_tags_were_seen_before() -> None:
    links._hrefs.clear()
    first = rewritten(DOCUMENT)
    assert first == (
        f'<a href="{BASE}/c/0?a&amp;b">A</a>'
        f"<a class=x href='{BASE}/c/1?a&amp;b'>B</a>"
        f'<a href="{BASE}/c/2?a&amp;b">C</a>'
        '<a href="mailto:hi@example.com">mail</a>'
        '<a data-notrack href="https://shop.example/private">private</a>'
        f'<a href="{BASE}/u/token">unsubscribe</a>'
        f'<A HREF = "{BASE}/c/0?a&amp;b">again</A>',
        ["https://shop.example/a?x=1&y=2", "https://shop.example/b", "https://shop.example/c"],
    )
    assert rewritten(DOCUMENT) == first  # every tag now read from what was kept


def test_the_tags_kept_are_bounded() -> None:
    many = "".join(
        f'<a href="https://shop.example/{n}">{n}</a>' for n in range(links.HREFS_KEPT + 5)
    )
    document, targets = rewritten(many)
    assert len(targets) == links.HREFS_KEPT + 5 and document.count(f'"{BASE}/c/') == len(targets)
    assert len(links._hrefs) <= links.HREFS_KEPT
