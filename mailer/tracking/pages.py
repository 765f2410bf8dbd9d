"""The pages a person sees: plain HTML forms that work without JavaScript, labelled buttons,
dark text on white (contrast well above WCAG AA), one column that fits a phone."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from starlette.responses import HTMLResponse

STATUS_WORDS = {"confirmed": "subscribed", "granted": "subscribed", "pending": "waiting for your "
                "confirmation", "withdrawn": "unsubscribed", "none": "not subscribed"}  # fmt: skip

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font: 17px/1.5 system-ui, sans-serif; color: #1a1a1a; background: #fff;
       max-width: 34rem; margin: 2rem auto; padding: 0 1rem; }}
button {{ font: inherit; padding: .6rem 1rem; border: 2px solid #1a1a1a; border-radius: 6px;
         background: #fff; color: #1a1a1a; cursor: pointer; }}
button.main {{ background: #1a1a1a; color: #fff; }}
button:focus {{ outline: 3px solid #0b57d0; outline-offset: 2px; }}
table {{ width: 100%; border-collapse: collapse; margin: 1rem 0; }}
th, td {{ text-align: left; padding: .5rem .25rem; border-bottom: 1px solid #ccc; }}
.sr {{ position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }}
</style></head>
<body><main>
{body}
</main></body></html>
"""


def page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status_code,
                        headers={"Cache-Control": "no-store"})  # fmt: skip


def not_found_page() -> HTMLResponse:
    return page("Link not found", "<h1>This link does not work</h1><p>It may have been copied "
                "incompletely. Nothing was changed.</p>", status_code=404)  # fmt: skip


def _lists_table(action: str, subscriber: Mapping[str, Any], titles: Mapping[str, str]) -> str:
    rows = []
    for name, status in subscriber["lists"]:
        title, button = escape(titles.get(name, name)), ""
        if status in ("confirmed", "granted", "pending"):
            button = (f'<button type="submit" name="action" value="leave:{escape(name)}" '
                      f'aria-label="Leave {title}">Leave</button>')  # fmt: skip
        elif not subscriber["suppressed"]:
            verb = "Rejoin" if status == "withdrawn" else "Join"
            button = (f'<button type="submit" name="action" value="join:{escape(name)}" '
                      f'aria-label="{verb} {title}">{verb}</button>')  # fmt: skip
        words = escape(STATUS_WORDS.get(status, status))
        rows.append(f"<tr><td>{title}</td><td>{words}</td><td>{button}</td></tr>")
    return (f'<form method="post" action="{escape(action)}"><table><caption>Your lists'
            "</caption><tr><th scope=col>List</th><th scope=col>Status</th><th scope=col>"
            '<span class="sr">Change</span></th></tr>' + "".join(rows) + "</table></form>")


def preferences_page(action: str, subscriber: Mapping[str, Any], titles: Mapping[str, str],
                     said: str | None = None) -> HTMLResponse:  # fmt: skip
    """The unsubscribe button for the message's list, every list with its status, and
    "everything"; `said`: what the last request did, announced to screen readers too."""
    email = escape(subscriber["email"])
    heading = "Done" if said else "Your email preferences"
    body = [f"<h1>{heading}</h1>"]
    if said:
        body.append(f'<p role="status">{escape(said)}</p>')
    body.append(f"<p>Preferences for <strong>{email}</strong>.</p>")
    if subscriber["suppressed"]:
        body.append("<p>You are unsubscribed from everything: we send you nothing.</p>")
    else:
        if subscriber["list"]:
            title = escape(titles.get(subscriber["list"], subscriber["list"]))
            body.append(f'<form method="post" action="{escape(action)}">'
                        f'<button class="main" type="submit" name="action" value="unsubscribe">'
                        f"Unsubscribe from {title}</button></form>")  # fmt: skip
        body.append(_lists_table(action, subscriber, titles))
        body.append(f'<form method="post" action="{escape(action)}"><button type="submit" '
                    'name="action" value="all">Unsubscribe from everything</button></form>')
    return page("Email preferences", "\n".join(body))


def done_page(action: str, subscriber: Mapping[str, Any], titles: Mapping[str, str],
              left: list[str] | None) -> HTMLResponse:  # fmt: skip
    if left is None:
        said = "You are unsubscribed from everything. We will not email you again."
    else:
        said = "You are unsubscribed from " + ", ".join(titles.get(n, n) for n in left) + "."
    return preferences_page(action, subscriber, titles, said)
