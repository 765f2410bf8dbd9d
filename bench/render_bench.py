"""Benchmark: the per-message CPU cost of turning (campaign, step, contact) into signed bytes.

DESIGN.md budgets delivery at "at least half of what Postfix's own `smtp-source` pushes into
`smtp-sink`" for personalised, DKIM-signed, tracked messages. Before any SMTP is involved, each
message costs CPU in `mailer.render.message.MessageRenderer.render`; this script measures that
cost on one core and splits it into the three stages of the pipeline, in the same run over the
same messages, so the one to optimise first is plain:

1. render: the Jinja template (sandboxed, per-locale variant), the subject, CSS inlining,
   click-tracking link rewriting and the open pixel, the plain-text part, the tokens.
2. MIME: writing the headers and the quoted-printable text and HTML alternatives as bytes
   (`mailer.render.mime`).
3. DKIM: `mailer.render.dkim.sign_fields` over those bytes and the header fields the MIME
   build wrote (relaxed/relaxed, `cryptography`; dkimpy only verifies a sample here, as an
   independent check).

How each is timed: in CPU time of this process (`time.process_time_ns`), so that other work on
the machine does not count (wall-clock time on a shared machine doubled some stages). The
renderer is built without a DKIM key, so `render()` returns the unsigned bytes and its time
is stages 1 + 2. Stage 2 alone is timed by calling the renderer's own MIME helper (`_mime`)
again with the rendered subject, HTML and text; stage 1 is the difference. Stage 3 is
`dkim.sign_fields` on the unsigned bytes and the MIME build's header fields, with the same
`DkimKey` a signing renderer would hold: that call is the last thing `render()` does when it
has a key, so 1 + 2 + 3 is the full pipeline.
Every message is a distinct contact (names with accents, four languages, Italian readers
getting welcome/1.it.html, several time zones, attributes).

The settings are the example `settings.toml` at the repository root; the DKIM key is generated in
memory. Peak RSS is printed before and after the timed loop: contacts are generated lazily and
nothing rendered is kept, so the two should be close however many messages there are.

    .venv/bin/python bench/render_bench.py [--contacts 50000]
        [--algorithm rsa-sha256|ed25519-sha256] [--all-steps] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import random
import resource
import sys
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import get_args

import dkim as dkimpy  # type: ignore[import-untyped]  # dkimpy ships no type information

from mailer.clock import FrozenClock
from mailer.config import Settings, Step, load_settings
from mailer.contacts.model import Contact
from mailer.render import dkim
from mailer.render.message import MessageRenderer
from mailer.tokens import sign as sign_token

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "settings.toml"
SECRET_KEY = "mailer-bench-render-secret-0123456789abc"  # 40 characters, like a real one
CAMPAIGN = "welcome"
SELECTOR = "bench"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PROFILE_MESSAGES = 2_000
WARM_UP_MESSAGES = 200

FIRST_NAMES = [
    "Anna", "Luca", "Sofia", "Marco", "Emma", "Noah", "Olivia", "Liam", "Mia", "Lucas",
    "Chloé", "José", "Zoë", "Mateo", "Hannah", "Jonas", "Léa", "Giulia", "Jürgen", "Aisha",
    "Françoise", "Björn", "Niccolò", "Renée", "Małgorzata", "Søren", None,
]  # fmt: skip
LAST_NAMES = [
    "Rossi", "Smith", "Müller", "García", "Dubois", "Johnson", "Bianchi", "Silva", "Novak",
    "Kowalski", "O'Brien", "Nguyen", "Schmidt", "Martin", "Fernández", "Jensen", "Ricci",
    "Lefèvre", "Größer", "D'Angelo", None,
]  # fmt: skip
DOMAINS = [
    "gmail.com", "yahoo.com", "outlook.com", "gmx.de", "libero.it", "orange.fr", "web.de",
    "proton.me", "acme-corp.com", "northwind.io", "contoso.co.uk", "tiscali.it", "free.fr",
]  # fmt: skip
IDN_DOMAINS = ["müller-post.de", "café-crème.fr", "città.it"]
LOCALES_AND_ZONES = [
    ("en", "America/New_York"), ("en_GB", "Europe/London"), ("en", "America/Los_Angeles"),
    ("it", "Europe/Rome"), ("it_IT", "Europe/Rome"), ("de", "Europe/Berlin"),
    ("de", "Europe/Vienna"), ("fr", "Europe/Paris"), ("fr", "America/Montreal"), (None, None),
]  # fmt: skip
ROASTS = ["espresso", "filter", "decaf", "light", "dark"]
TAG_SETS = [("newsletter",), ("newsletter", "vip"), ("customer", "newsletter"), ()]


# -- the input ---------------------------------------------------------------------------------


def ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def fake_contacts(count: int, seed: int = 42) -> Iterator[Contact]:
    """`count` distinct contacts, made one at a time (never a list held in memory)."""
    pick = random.Random(seed)
    for number in range(count):
        first, last = pick.choice(FIRST_NAMES), pick.choice(LAST_NAMES)
        local = ".".join(part for part in (first, last) if part).lower().replace("'", "")
        # Local parts are folded to ASCII, as almost all real addresses are; one address in a
        # hundred has an internationalised domain instead, so the IDNA path is exercised too.
        local = ascii_fold(local) or "subscriber"
        domain = pick.choice(IDN_DOMAINS if number % 100 == 99 else DOMAINS)
        locale, zone = pick.choice(LOCALES_AND_ZONES)
        attributes: dict[str, object] = {
            "orders": pick.randint(0, 12),
            "signed_up_at": date(2024, 1, 1) + timedelta(days=pick.randint(0, 500)),
        }
        if pick.random() < 0.6:
            attributes["favourite_roast"] = pick.choice(ROASTS)
        yield Contact(
            email=f"{local}.{number}@{domain}",  # the number keeps addresses distinct
            first_name=first, last_name=last, timezone=zone, locale=locale,
            attributes=attributes, tags=pick.choice(TAG_SETS), id=number + 1,
        )  # fmt: skip


# -- the pipeline --------------------------------------------------------------------------------


@dataclass
class Totals:
    """Nanoseconds spent per stage, summed over `messages`, and the bytes produced."""

    messages: int = 0
    render_and_mime_ns: int = 0
    mime_ns: int = 0
    dkim_ns: int = 0
    signed_bytes: int = 0
    unsigned_bytes: int = 0
    italian: int = 0

    def per_message_us(self, nanoseconds: int) -> float:
        return nanoseconds / self.messages / 1_000

    @property
    def render_ns(self) -> int:
        return self.render_and_mime_ns - self.mime_ns

    @property
    def pipeline_ns(self) -> int:
        return self.render_and_mime_ns + self.dkim_ns


def bench_dkim_key(settings: Settings, algorithm: dkim.Algorithm) -> tuple[dkim.DkimKey, str]:
    private_key, record = dkim.generate_key(algorithm)
    return dkim.DkimKey(settings.sender.domain, SELECTOR, algorithm, private_key), record


def steps_for(settings: Settings, all_steps: bool) -> list[Step]:
    steps = settings.campaigns[CAMPAIGN].messages()
    return steps if all_steps else steps[:1]


def render_one(
    renderer: MessageRenderer, key: dkim.DkimKey, step: Step, contact: Contact, message_key: str,
    totals: Totals,
) -> bytes:  # fmt: skip
    """Run the three stages for one message, add their times to `totals`, return signed bytes."""
    started = time.process_time_ns()
    now = renderer.clock.now()
    rendered = renderer.render(CAMPAIGN, step, contact, message_key, now=now)
    rendered_at = time.process_time_ns()
    # Stage 2 again, alone, on the same inputs render() passed to it.
    campaign = renderer.settings.campaigns[CAMPAIGN]
    unsubscribe = sign_token(renderer.keys, "unsubscribe", message_key)
    mime_started = time.process_time_ns()
    unsigned = renderer._mime(CAMPAIGN, campaign, step, contact, message_key,
                              rendered.message_id, rendered.subject, unsubscribe, rendered.html,
                              rendered.text, now)  # fmt: skip
    mime_done = time.process_time_ns()
    signed = dkim.sign_fields(unsigned.data, unsigned.fields, key)
    signed_at = time.process_time_ns()

    totals.messages += 1
    totals.render_and_mime_ns += rendered_at - started
    totals.mime_ns += mime_done - mime_started
    totals.dkim_ns += signed_at - mime_done
    totals.unsigned_bytes += len(rendered.data)
    totals.signed_bytes += len(signed)
    totals.italian += 'lang="it"' in rendered.html
    # The same message as render() built (the MIME boundary is derived from the message key).
    assert unsigned.data == rendered.data, "the timed MIME build differs from render()'s"
    return signed


def run_messages(
    renderer: MessageRenderer, key: dkim.DkimKey, steps: list[Step], contacts: Iterator[Contact],
    first_key: int = 0,
) -> tuple[Totals, bytes | None]:  # fmt: skip
    """Render, build and sign one message per contact, round-robin over `steps`."""
    totals, first = Totals(), None
    for number, (contact, step) in enumerate(zip(contacts, itertools.cycle(steps)), first_key):
        signed = render_one(renderer, key, step, contact, str(number), totals)
        if first is None:
            first = signed
    return totals, first


def verify_signature(message: bytes, record: str) -> bool:
    """Check the signature as a receiver would, with the TXT record served from memory."""

    def txt(name: bytes, timeout: int = 5) -> bytes:
        return record.encode("ascii")

    return bool(dkimpy.verify(message, dnsfunc=txt))


# -- the report ----------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def report(totals: Totals, algorithm: str, wall_seconds: float) -> None:
    pipeline = totals.pipeline_ns
    rows = [
        ("render (Jinja, subject, CSS inline, links, text)", totals.render_ns),
        ("MIME build + serialise", totals.mime_ns),
        (f"DKIM sign ({algorithm})", totals.dkim_ns),
    ]
    print(f"\n{'stage':<50} {'µs/message':>11} {'share':>7}")
    for name, nanoseconds in rows:
        print(
            f"{name:<50} {totals.per_message_us(nanoseconds):>11,.1f} "
            f"{nanoseconds / pipeline:>7.1%}"
        )
    print(f"{'full pipeline (render + MIME + DKIM)':<50} "
          f"{totals.per_message_us(pipeline):>11,.1f} {1:>7.1%}")  # fmt: skip
    print(f"\nfull pipeline on one core: {totals.messages / (pipeline / 1e9):,.0f} messages/s")
    print(
        f"render + MIME without DKIM: "
        f"{totals.messages / (totals.render_and_mime_ns / 1e9):,.0f} messages/s"
    )
    print(
        f"mean message size: {totals.signed_bytes / totals.messages:,.0f} bytes signed "
        f"({totals.unsigned_bytes / totals.messages:,.0f} before the DKIM-Signature header)"
    )
    print(
        f"wall time of the loop: {wall_seconds:.1f} s (includes making the contacts and the "
        "second, timed MIME build)"
    )


def inlining_saved(settings: Settings, steps: list[Step], count: int, block: int = 500) -> None:
    """render() with CSS inlined once per template (the default) against inlining every
    message whole, on the same contacts, in alternating blocks (this machine's load drifts)."""
    renderers = {
        cached: MessageRenderer(settings, settings.secret(), FrozenClock(NOW),
                                cache_inlining=cached)
        for cached in (True, False)
    }  # fmt: skip
    spent = dict.fromkeys(renderers, 0)
    contacts = list(fake_contacts(count, seed=11))
    for renderer in renderers.values():  # warm-up: templates compiled, skeletons inlined
        for number, contact in enumerate(contacts[:WARM_UP_MESSAGES]):
            renderer.render(CAMPAIGN, steps[number % len(steps)], contact, f"w{number}")
    # Which renderer goes first alternates too: the lines and links a message shares with the
    # one the other renderer just made for the same contact are found in the MIME and link
    # caches (render/mime.py, render/links.py), so the second of a pair is a little cheaper.
    for start in range(0, count, block):
        pairs = list(renderers.items())
        for cached, renderer in pairs if start // block % 2 else reversed(pairs):
            began = time.process_time_ns()
            for number in range(start, min(start + block, count)):
                step = steps[number % len(steps)]
                renderer.render(CAMPAIGN, step, contacts[number], f"c{number}")
            spent[cached] += time.process_time_ns() - began
    each, once = spent[False] / count / 1_000, spent[True] / count / 1_000
    cache = renderers[True].inline_cache
    assert cache is not None
    hits, misses = sum(cache.hits.values()), sum(cache.misses.values())
    print(f"\nCSS inlining, render() without DKIM over the same {count:,} contacts: inlined for "
          f"each message {each:,.1f} µs, once per template {once:,.1f} µs: "
          f"{each - once:,.1f} µs a message saved ({hits:,} from the cache, {misses} "
          "skeletons inlined)")  # fmt: skip


def profile(renderer: MessageRenderer, key: dkim.DkimKey, steps: list[Step]) -> None:
    """A cProfile of render() + dkim.sign over fresh contacts, top 15 by cumulative time."""
    profiler = cProfile.Profile()
    contacts = fake_contacts(PROFILE_MESSAGES, seed=7)
    profiler.enable()
    for number, (contact, step) in enumerate(zip(contacts, itertools.cycle(steps))):
        rendered = renderer.render(CAMPAIGN, step, contact, f"profile-{number}")
        dkim.sign(rendered.data, key)
    profiler.disable()
    print(f"\ntop 15 functions by cumulative time ({PROFILE_MESSAGES:,} messages, render() + "
          "dkim.sign, under cProfile: slower than a plain run):")  # fmt: skip
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(15)


# -- the run -------------------------------------------------------------------------------------


def run(count: int, algorithm: dkim.Algorithm, all_steps: bool, with_profile: bool) -> None:
    settings = load_settings(SETTINGS, environ={"MAILER_SECRET_KEY": SECRET_KEY})
    key, record = bench_dkim_key(settings, algorithm)
    steps = steps_for(settings, all_steps)
    # The renderer is built once, as the daemon builds it once per process: templates are
    # compiled once (auto_reload off) and the token keys derived once. It is built without a
    # DKIM key so render() returns the unsigned bytes; `key` (generated and checked once) is
    # what dkim.sign gets, exactly as render() would pass it if the renderer held it.
    renderer = MessageRenderer(settings, settings.secret(), FrozenClock(NOW), dkim_key=None)
    print(
        f"{count:,} contacts, campaign '{CAMPAIGN}' step(s) "
        f"{', '.join(step.name for step in steps)}, DKIM {algorithm} as "
        f"{SELECTOR}._domainkey.{key.domain}"
    )

    # Warm-up (not counted): the first use of each template variant loads and compiles it.
    _, sample = run_messages(renderer, key, steps, fake_contacts(WARM_UP_MESSAGES, seed=1),
                             first_key=10**9)  # fmt: skip
    assert sample is not None
    print(f"DKIM signature of a sample message verifies: {verify_signature(sample, record)}")

    rss_before = peak_rss_mib()
    started = time.perf_counter()
    totals, _ = run_messages(renderer, key, steps, fake_contacts(count))
    wall_seconds = time.perf_counter() - started
    rss_after = peak_rss_mib()
    print(f"Italian variant (welcome/*.it.html) rendered for {totals.italian:,} of "
          f"{totals.messages:,} messages")  # fmt: skip
    report(totals, algorithm, wall_seconds)
    print(
        f"peak RSS before the timed loop: {rss_before:.1f} MiB, after: {rss_after:.1f} MiB "
        f"(+{rss_after - rss_before:.1f} MiB)"
    )
    inlining_saved(settings, steps, min(count, 20_000))
    if with_profile:
        profile(renderer, key, steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--contacts", type=int, default=50_000, help="messages to render")
    parser.add_argument(
        "--algorithm", choices=get_args(dkim.Algorithm), default="rsa-sha256",
        help="DKIM signing algorithm (key generated in memory)",
    )  # fmt: skip
    parser.add_argument(
        "--all-steps", action="store_true",
        help="round-robin over every step of the welcome sequence (default: step 0 only)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help=f"afterwards, cProfile {PROFILE_MESSAGES:,} messages and print the top 15",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.contacts < 1:
        parser.error("--contacts must be at least 1")
    run(args.contacts, args.algorithm, args.all_steps, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
