"""`mailer check`: everything a campaign needs, checked before anything is sent.

Settings were validated on load; here: every referenced template exists and compiles, every
subject compiles, and every list file can be read. Rows an import would reject are reported as
warnings (the import skips them and keeps the rest), or as errors with `strict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from jinja2 import TemplateNotFound, TemplateSyntaxError

from mailer.config import Settings
from mailer.contacts.csvfile import CsvReader
from mailer.contacts.rows import RowError, map_columns, parse_row
from mailer.errors import InputFileError
from mailer.render.templates import TEMPLATE_SUFFIXES, syntax_problem, template_environment


@dataclass(frozen=True)
class Problem:
    severity: Literal["error", "warning"]
    message: str  # starts with file:line where there is one


@dataclass
class CheckReport:
    problems: list[Problem]
    templates: int = 0
    list_rows: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]


def check_project(settings: Settings, now: datetime, strict: bool = False) -> CheckReport:
    report = CheckReport(problems=[])
    _check_templates(settings, report)
    for name, contact_list in settings.lists.items():
        if contact_list.file is not None:
            _check_list_file(settings, name, settings.path(contact_list.file), now, strict, report)
    return report


def _check_templates(settings: Settings, report: CheckReport) -> None:
    templates_dir = settings.path(settings.templates_dir)
    environment = template_environment(templates_dir)
    display_dir = settings.templates_dir
    if templates_dir.is_dir():
        for path in sorted(templates_dir.rglob("*")):
            if path.suffix in TEMPLATE_SUFFIXES:
                name = path.relative_to(templates_dir).as_posix()
                try:
                    environment.get_template(name)
                    report.templates += 1
                except TemplateSyntaxError as error:
                    report.problems.append(
                        Problem("error", syntax_problem(error, display_dir, name))
                    )
                except TemplateNotFound as error:  # an {% extends %} or {% include %} target
                    report.problems.append(
                        Problem("error", f"{display_dir / name}: includes missing '{error.name}'")
                    )
    for where, template, subject in _messages(settings):
        if not (templates_dir / f"{template}.html").is_file():
            report.problems.append(Problem(
                "error", f"{settings.source}: {where}.template: {display_dir}/{template}.html "
                "does not exist",
            ))  # fmt: skip
        try:
            environment.from_string(subject)
        except TemplateSyntaxError as error:
            report.problems.append(
                Problem("error", f"{settings.source}: {where}.subject: {error.message}")
            )


def _messages(settings: Settings) -> list[tuple[str, str, str]]:
    """(where in settings, template, subject) of every message the campaigns can send."""
    found = []
    for name, campaign in settings.campaigns.items():
        if campaign.template is not None and campaign.subject is not None:
            found.append((f"campaigns.{name}", campaign.template, campaign.subject))
        for index, step in enumerate(campaign.steps):
            found.append((f"campaigns.{name}.steps[{index}]", step.template, step.subject))
    return found


def _check_list_file(
    settings: Settings, name: str, path: Path, now: datetime, strict: bool, report: CheckReport
) -> None:
    shown = path.relative_to(settings.root) if path.is_relative_to(settings.root) else path
    try:
        with CsvReader(path, shown=shown) as reader:
            targets = map_columns(reader.header, settings.lists[name].columns, str(shown))
            for row in reader.rows():
                report.list_rows += 1
                try:
                    if row.problem:
                        raise RowError(row.problem)
                    parse_row(row.fields, targets, settings.attributes, now)
                except RowError as error:
                    severity: Literal["error", "warning"] = "error" if strict else "warning"
                    report.problems.append(Problem(severity, f"{shown}:{row.line}: {error}"))
    except InputFileError as error:
        report.problems.append(Problem("error", str(error)))
