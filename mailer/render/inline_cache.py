"""CSS inlining once per template, not once per contact, where the result cannot depend on
the contact.

The HTML template is rendered with every `{{ ... }}` value between two private-use markers.
Those values, cut out, leave the *skeleton*: the template's own markup with a numbered
placeholder where each value was. css-inline runs once per distinct skeleton; each message then
puts its own values into the inlined skeleton, written as css-inline itself writes text (the
HTML parser decodes `&#39;`, the serialiser writes `'`).

That is exact only where a value cannot change what css-inline does, so a message is inlined
whole, as before, when any of these holds:
- a value is not plain escaped text (an `{% autoescape false %}` block), is empty, starts with
  whitespace (the HTML parser treats leading whitespace apart in some places), or holds control
  characters or a lone surrogate;
- a placeholder lands inside a `style` attribute or `<style>` (the value would be CSS), a
  `<script>`-like element, a comment, a tag or attribute name, an unquoted attribute, after a
  dangling `&` (a character reference), or in a CDATA section; or it vanishes or repeats;
- the stylesheet has selectors that read attribute values or content (`[...]`, `:empty`,
  `:has`, `:lang`, ...) or loads one by `<link>`;
- the template captures output as a value (`{% set %}` blocks, macros, `{% call %}`,
  `{% filter %}`, `self.block()`): a marker would be counted by `length` or compared.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import css_inline
from jinja2 import Environment, nodes
from jinja2.runtime import Undefined
from markupsafe import Markup

OPEN, CLOSE = "\ue000", "\ue001"  # private use: no template or contact value holds them
_VALUE = re.compile(f"{OPEN}([^{OPEN}{CLOSE}]*){CLOSE}")
_PLACEHOLDER = re.compile(f"{OPEN}(\\d+){CLOSE}")
# What autoescaping writes (and html.escape, for the preheader): entities the parser decodes.
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&#39;": "'", "&#34;": '"',
             "&quot;": '"', "&#x27;": "'"}  # fmt: skip
_PLAIN = re.compile(
    r"(?:[^&<>\"'\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]"
    r"|&(?:amp|lt|gt|quot|#39|#34|#x27);)+"
)
_ENTITY = re.compile("|".join(_ENTITIES))
_TAG = re.compile(r"<!--.*?-->|<[^>\"']*(?:(?:\"[^\"]*\"|'[^']*')[^>\"']*)*>", re.S)
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_ATTRIBUTE = re.compile(r"([^\s=/>]+)\s*=\s*\"([^\"]*)\"")
_RAW = ("style", "script", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext")
_RAW_START = re.compile(r"<(" + "|".join(_RAW) + r")\b", re.I)
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style", re.I | re.S)
_READS_VALUES = re.compile(r"\[|:(?:empty|blank|has|contains|lang|dir|is|where|not|matches)\b",
                           re.I)  # fmt: skip
_CAPTURES = (nodes.AssignBlock, nodes.Macro, nodes.CallBlock, nodes.FilterBlock)
MISSES_BEFORE_GIVING_UP = 32  # a skeleton that differs per contact (e.g. a survey): stop trying
SKELETONS_KEPT_PER_LENGTH = 4


class MarkerInValue(Exception):
    """A value holds a marker character itself: this message renders without markers."""


def mark(value: Any) -> Any:
    """Jinja's `finalize`: a value between the markers, to be escaped as usual."""
    if isinstance(value, (Markup, Undefined)) or hasattr(value, "__html__"):
        return value
    text = str(value)
    if OPEN in text or CLOSE in text:
        raise MarkerInValue
    return f"{OPEN}{text}{CLOSE}"


def unmarked(html: str) -> str:
    """The HTML as rendered without markers."""
    return html.replace(OPEN, "").replace(CLOSE, "")


def captures_output(environment: Environment, name: str, seen: set[str] | None = None) -> bool:
    """Whether template `name`, or one it extends, includes or imports, uses output as a
    value or holds a marker character (a name that is not a constant counts as yes)."""
    seen = set() if seen is None else seen
    if name in seen:
        return False
    seen.add(name)
    assert environment.loader is not None
    source, _, _ = environment.loader.get_source(environment, name)
    if OPEN in source or CLOSE in source:
        return True
    tree = environment.parse(source)
    if any(True for _ in tree.find_all(_CAPTURES)):
        return True
    for call in tree.find_all(nodes.Call):
        target = call.node
        if (isinstance(target, nodes.Getattr) and isinstance(target.node, nodes.Name)
                and target.node.name == "self"):  # fmt: skip
            return True
    for used in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        template = getattr(used, "template", None)
        if not isinstance(template, nodes.Const) or not isinstance(template.value, str):
            return True
        if captures_output(environment, template.value, seen):
            return True
    return False


class Inlined:
    """css-inline's output for one skeleton, cut at its placeholders: `pieces[i]` comes
    before value i; `attribute[i]` says whether value i sits in an attribute or in text."""

    def __init__(self, pieces: list[str], attribute: list[bool]) -> None:
        self.pieces = pieces
        self.attribute = attribute

    def fill(self, values: list[str]) -> str:
        out = [self.pieces[0]]
        for index, value in enumerate(values):
            out.append(_written(value, self.attribute[index]))
            out.append(self.pieces[index + 1])
        return "".join(out)


def _written(escaped: str, attribute: bool) -> str:
    """The value as css-inline writes it: decoded by the HTML parser, then re-escaped.
    (`escaped` is _usable: without "&" it holds no character to decode or re-escape but
    the no-break space.)"""
    if "&" not in escaped:
        return escaped.replace("\xa0", "&nbsp;")
    text = _ENTITY.sub(lambda entity: _ENTITIES[entity.group(0)], escaped)
    text = text.replace("&", "&amp;").replace("\xa0", "&nbsp;")
    if attribute:
        return text.replace('"', "&quot;")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _skeleton(marked: str) -> tuple[str, list[str]]:
    """The marked HTML with each value as its numbered placeholder, and the values. (Cut
    with split, by C: a Python call per value to build the skeleton cost twice as much.)"""
    pieces = _VALUE.split(marked)  # text, value, text, value, ..., text
    values = pieces[1::2]
    while len(_PLACEHOLDERS) < len(values):
        _PLACEHOLDERS.append(f"{OPEN}{len(_PLACEHOLDERS)}{CLOSE}")
    pieces[1::2] = _PLACEHOLDERS[: len(values)]
    return "".join(pieces), values


_PLACEHOLDERS: list[str] = []  # OPEN 0 CLOSE, OPEN 1 CLOSE, ...: made once


def _usable(value: str) -> bool:
    if not value or value[0].isspace():
        return False
    # Printable (no control character, no surrogate) and none of &<>"': plain at a glance.
    # _PLAIN's alternation takes a microsecond for every ten characters.
    if (value.isprintable() and "&" not in value and "<" not in value and ">" not in value
            and '"' not in value and "'" not in value):  # fmt: skip
        return True
    return _PLAIN.fullmatch(value) is not None


def _cut(skeleton: str, count: int) -> Inlined | None:
    """css-inline over `skeleton`, cut at the placeholders; None where that is not exact."""
    if "<![CDATA[" in skeleton or re.search(r"<link\b", skeleton, re.I):
        return None
    if any(_READS_VALUES.search(css) for css in _STYLE.findall(skeleton)):
        return None
    if re.search(f"&[#\\w]*{OPEN}", skeleton) or not _quoted_in_tags(skeleton):
        return None
    inlined = css_inline.inline(skeleton)
    found = [(int(m.group(1)), m.start(), m.end()) for m in _PLACEHOLDER.finditer(inlined)]
    if [index for index, _, _ in found] != list(range(count)):
        return None  # moved, dropped or repeated by the parser
    attribute: list[bool] = []
    tags = [(m.start(), m.end(), m.group(0)) for m in _TAG.finditer(inlined)]
    for _, start, _ in found:
        place = _place(inlined, tags, start)
        if place is None:
            return None
        attribute.append(place)
    pieces, last = [], 0
    for _, start, end in found:
        pieces.append(inlined[last:start])
        last = end
    pieces.append(inlined[last:])
    return Inlined(pieces, attribute)


def _quoted_in_tags(skeleton: str) -> bool:
    """Every placeholder inside a tag of the skeleton is inside a quoted attribute value."""
    for tag in _TAG.finditer(skeleton):
        text = tag.group(0)
        if OPEN in _QUOTED.sub("", text):
            return False
    return True


def _place(inlined: str, tags: list[tuple[int, int, str]], at: int) -> bool | None:
    """True: in an attribute value (not style); False: in text; None: anywhere else."""
    before = [tag for tag in tags if tag[0] <= at]
    if before and before[-1][1] > at:  # inside a tag or comment
        start, _, text = before[-1]
        if text.startswith("<!--"):
            return None
        for attribute in _ATTRIBUTE.finditer(text):
            if attribute.start(2) <= at - start < attribute.end(2):
                return None if attribute.group(1).lower() == "style" else True
        return None
    opened = [tag for tag in before if _RAW_START.match(tag[2])]
    if opened:  # inside a raw-text element unless it was closed since
        name = _RAW_START.match(opened[-1][2]).group(1).lower()  # type: ignore[union-attr]
        closed = [tag for tag in before if tag[2].lower().startswith(f"</{name}")]
        if not closed or closed[-1][0] < opened[-1][0]:
            return None
    return False


class InlineCache:
    """css-inline's work per skeleton, kept for the `size` (template, skeleton length) pairs
    used last, a few skeletons each. A skeleton is found by its template and length, then
    compared: it is a new string of thousands of characters in every message, and hashing it
    for a dictionary cost ten times more than comparing it with the one kept."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.skeletons: OrderedDict[tuple[str, int], list[tuple[str, Inlined | None]]]
        self.skeletons = OrderedDict()
        self.misses: dict[str, int] = {}  # per template, skeletons inlined
        self.hits: dict[str, int] = {}

    def inline(self, marked: str, template: str) -> str:
        """The marked HTML of `template`, CSS inlined and without markers."""
        skeleton, values = _skeleton(marked)
        if marked.count(OPEN) != len(values) or marked.count(CLOSE) != len(values):
            return css_inline.inline(unmarked(marked))  # a marker without its end
        if self.misses.get(template, 0) > MISSES_BEFORE_GIVING_UP > self.hits.get(template, 0):
            return css_inline.inline(unmarked(marked))
        if not all(map(_usable, values)):
            return css_inline.inline(unmarked(marked))
        cut = self._inlined(template, skeleton, len(values))
        if cut is None:
            return css_inline.inline(unmarked(marked))
        return cut.fill(values)

    def _inlined(self, template: str, skeleton: str, count: int) -> Inlined | None:
        """The skeleton inlined and cut, from the cache or made now (None: not exact)."""
        key = (template, len(skeleton))
        kept = self.skeletons.get(key)
        if kept is None:
            kept = self.skeletons[key] = []
            if len(self.skeletons) > self.size:
                self.skeletons.popitem(last=False)
        else:
            self.skeletons.move_to_end(key)
        for known, cut in kept:
            if known == skeleton:
                self.hits[template] = self.hits.get(template, 0) + 1
                return cut
        self.misses[template] = self.misses.get(template, 0) + 1
        cut = _cut(skeleton, count)
        kept.append((skeleton, cut))
        del kept[:-SKELETONS_KEPT_PER_LENGTH]
        return cut
