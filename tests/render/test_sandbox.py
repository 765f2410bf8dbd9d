"""Templates are written by marketers, not trusted as code: the known Jinja escapes fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.render.message import MessageRenderer, RenderError
from tests.render.conftest import ADA

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ contact.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch PWNED').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ ''.__class__.mro() }}",
    "{{ '{0.__class__.__mro__}'.format(contact) }}",
    "{{ '{email.__class__.__mro__}'.format_map(contact) }}",
    "{{ contact.attributes.items.__self__.__class__ }}",
    "{% set x = namespace() %}{{ x.__init__.__globals__ }}",
    "{{ range.__call__.__self__ }}",
    "{{ config }}{{ request }}",
    "{{ sender.name.__class__.__base__.__subclasses__() }}",
]


@pytest.mark.parametrize("escape", ESCAPES)
def test_known_escapes_fail_and_run_nothing(
    renderer: MessageRenderer, templates: Path, escape: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (templates / "welcome" / "1.html").write_text(f"<p>{escape}</p>")
    renderer.environment.cache.clear() if renderer.environment.cache else None
    with pytest.raises(RenderError) as caught:
        renderer.render("welcome", renderer.settings.campaigns["welcome"].steps[0], ADA, "1")
    assert str(caught.value).startswith("templates/welcome/1.html:1: ")
    assert not (tmp_path / "PWNED").exists()
