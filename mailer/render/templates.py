"""The template environment: Jinja's sandbox over templates/, strict about undefined names."""

from __future__ import annotations

from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_SUFFIXES = (".html", ".txt")


def template_environment(templates_dir: Path) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=FileSystemLoader(templates_dir),
        autoescape=lambda name: name is not None and name.endswith(".html"),
        undefined=StrictUndefined,
    )


def syntax_problem(error: TemplateSyntaxError, templates_dir: Path, fallback: str) -> str:
    """`templates/welcome/2.html:14: unexpected '}'`, the way an editor wants it."""
    name = error.name or fallback
    return f"{templates_dir / name if error.name else name}:{error.lineno}: {error.message}"
