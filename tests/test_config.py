from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mailer.config import load_settings, parse_quiet_hours
from mailer.errors import SettingsError
from mailer.workspace import create_secret_key

NO_ENV: dict[str, str] = {}


def settings_file(project: Path, replace: str = "", append: str = "") -> Path:
    path = project / "settings.toml"
    text = path.read_text()
    if replace:
        old, new = replace.split(" => ")
        assert old in text
        text = text.replace(old, new)
    path.write_text(text + append)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(path, environ=environ if environ is not None else NO_ENV)
    return str(caught.value).splitlines()


def test_the_project_settings_load_into_typed_models(project: Path) -> None:
    settings = load_settings(project / "settings.toml", environ=NO_ENV)
    assert settings.campaigns["welcome"].steps[1].delay == timedelta(days=2)
    assert settings.lists["newsletter"].double_opt_in is True
    assert settings.root == project.resolve()
    assert settings.resolved_database_url() == f"sqlite:///{project.resolve()}/.mailer/mailer.db"


def test_a_bad_duration_names_its_full_path(project: Path) -> None:
    path = settings_file(project, replace='delay = "2 days" => delay = "2 dayz"')
    assert problems(path) == [
        f'{path}: campaigns.welcome.steps[1].delay: "2 dayz" is not a duration '
        '(write e.g. "30m", "36h", "2 days", "1 week")'
    ]


def test_unknown_keys_and_wrong_types_are_all_reported(project: Path) -> None:
    path = settings_file(project, append="\n[smtp]\nhots = 'x'\nport = 'twenty-five'\n")
    found = problems(path)
    assert f"{path}: smtp.hots: unknown key (expected one of: host, port, tls, " in found[1]
    assert found[0].startswith(f"{path}: smtp.port: 'twenty-five': Input should be")


def test_missing_section_and_bad_reference(project: Path) -> None:
    path = settings_file(project, replace='list = "newsletter" => list = "newsleter"')
    assert problems(path) == [
        f"{path}: campaigns.welcome.list: 'newsleter' is not a list defined under [lists] "
        "(known: leads, newsletter)"
    ]


def test_toml_syntax_errors_say_line_and_column(project: Path) -> None:
    path = settings_file(project, append="\n[broken\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: line ")
    assert "column" in problem


def test_environment_overrides_any_value(project: Path) -> None:
    settings = load_settings(project / "settings.toml", environ={
        "MAILER_SMTP__HOST": "relay.example.net", "MAILER_SMTP__PORT": "587",
        "MAILER_DATABASE_URL": "postgresql+psycopg://db/mailer",
        "MAILER_LISTS__LEADS__TITLE": "Leads from the fair",
        "MAILER_TEST_DATABASE_URL": "ignored", "MAILER_CONFIG": "ignored",
    })  # fmt: skip
    assert (settings.smtp.host, settings.smtp.port) == ("relay.example.net", 587)
    assert settings.resolved_database_url() == "postgresql+psycopg://db/mailer"
    assert settings.lists["leads"].title == "Leads from the fair"


def test_a_variable_that_names_no_setting_is_ignored_with_a_warning(project: Path) -> None:
    warnings: list[str] = []
    settings = load_settings(project / "settings.toml", environ={
        "MAILER_OTHER_TOOL_TOKEN": "abc", "MAILER_SMTP__HOST__NAME": "x", "MAILER_": "",
        "MAILER_SMTP__PORT": "2525",
    }, warn=warnings.append)  # fmt: skip
    assert settings.smtp.port == 2525
    assert warnings == [
        "warning: MAILER_ is not a mailer setting; ignored",
        "warning: MAILER_OTHER_TOOL_TOKEN is not a mailer setting; ignored",
        "warning: MAILER_SMTP__HOST__NAME is not a mailer setting; ignored "
        "(did you mean MAILER_SMTP__HOST?)",
    ]


@pytest.mark.parametrize(("typo", "meant"), [
    ("MAILER_SMTP_HOST", "MAILER_SMTP__HOST"),  # one underscore between levels
    ("MAILER_SMPT__PASSWORD", "MAILER_SMTP__PASSWORD"),
    ("MAILER_SECRETKEY", "MAILER_SECRET_KEY"),
    ("MAILER_DATABASE_URI", "MAILER_DATABASE_URL"),
    ("MAILER_LISTS__LEADS__TITEL", "MAILER_LISTS__LEADS__TITLE"),  # a list of settings.toml
    ("MAILER_CAMPAIGNS__WELCOME__LIST_NAME", "MAILER_CAMPAIGNS__WELCOME__LIST"),
    ("MAILER_DEBUGG", "MAILER_DEBUG"),
])  # fmt: skip
def test_a_near_miss_of_a_setting_warns_with_the_right_spelling(
    project: Path, typo: str, meant: str
) -> None:
    warnings: list[str] = []
    load_settings(project / "settings.toml", environ={typo: "1"}, warn=warnings.append)
    assert warnings == [f"warning: {typo} is not a mailer setting; ignored (did you mean {meant}?)"]


def test_mailers_own_variables_and_every_setting_are_taken_without_a_warning(
    project: Path,
) -> None:
    warnings: list[str] = []
    settings = load_settings(project / "settings.toml", environ={
        "MAILER_CONFIG": "x", "MAILER_DEBUG": "1", "MAILER_NOW": "2026-11-23T10:00Z",
        "MAILER_TEST_DATABASE_URL": "x", "MAILER_DATABASE_URL": "sqlite:///x.db",
        "MAILER_SECRET_KEY": "k" * 40, "MAILER_DKIM__DOMAIN": "acme.example",
        "MAILER_DKIM__SELECTOR": "s1", "MAILER_DKIM__KEY_FILE": "dkim.key",
        "MAILER_ENGINE__QUIET_HOURS": "21:00-08:00", "MAILER_LISTS__LEADS__COLUMNS__NAME": "-",
        "MAILER_CAMPAIGNS__WELCOME__LIST": "leads", "MAILER_LISTS__FAIR__TITLE": "Fair",
        "MAILER_CAMPAIGNS__WELCOME__VARIANTS__B__SUBJECT": "Hi",
    }, warn=warnings.append)  # fmt: skip
    assert warnings == []
    assert settings.dkim is not None and settings.dkim.selector == "s1"
    assert settings.campaigns["welcome"].list_name == "leads"
    assert settings.lists["fair"].title == "Fair"
    assert settings.engine.quiet_hours == "21:00-08:00"


def test_a_bad_environment_value_names_the_variable(project: Path) -> None:
    found = problems(project / "settings.toml", {"MAILER_SMTP__PORT": "99999"})
    assert found[0].endswith("(from MAILER_SMTP__PORT)")
    assert "smtp.port" in found[0]


def test_secrets_may_not_be_written_in_the_file(project: Path) -> None:
    path = settings_file(project, append='\n[smtp]\npassword = "hunter2"\n')
    assert problems(path)[0] == (
        f"{path}: smtp.password: secrets may not be written in settings; use "
        "MAILER_SMTP__PASSWORD or smtp.password_file"
    )
    path = settings_file(project, replace='secret_key_file = ".mailer/secret.key" => '
                         'secret_key = "0123456789012345678901234567890123"')  # fmt: skip
    assert "secret_key: secrets may not be written in settings" in problems(path)[0]


def test_secret_key_from_environment_or_generated_file(project: Path) -> None:
    settings = load_settings(project / "settings.toml", environ=NO_ENV)
    with pytest.raises(SettingsError, match="no secret key: set MAILER_SECRET_KEY, or run"):
        settings.secret()
    created = create_secret_key(settings)
    assert created == project.resolve() / ".mailer" / "secret.key"
    assert created.stat().st_mode & 0o777 == 0o600
    key = settings.secret()
    assert create_secret_key(settings) is None  # never replaced
    assert settings.secret() == key
    from_env = load_settings(project / "settings.toml", environ={"MAILER_SECRET_KEY": "k" * 40})
    assert from_env.secret() == b"k" * 40


def test_tracking_url_must_be_https_except_on_localhost(project: Path) -> None:
    path = settings_file(project, append='\n[tracking]\nbase_url = "http://t.example.com"\n')
    assert "must be an https:// URL" in problems(path)[0]


def test_smtp_password_from_environment_or_named_file(project: Path) -> None:
    settings = load_settings(project / "settings.toml", environ={"MAILER_SMTP__PASSWORD": "pw1"})
    assert settings.smtp_password() == "pw1"
    assert "pw1" not in repr(settings)  # secrets never show in logs or tracebacks
    (project / "smtp.pass").write_text("pw2\n")
    path = settings_file(project, append='\n[smtp]\npassword_file = "smtp.pass"\n')
    assert load_settings(path, environ=NO_ENV).smtp_password() == "pw2"
    (project / "smtp.pass").unlink()
    with pytest.raises(SettingsError, match=r"smtp\.password_file: cannot read"):
        load_settings(path, environ=NO_ENV).smtp_password()


def test_a_bad_sender_address_is_refused(project: Path) -> None:
    path = settings_file(project, replace='email = "news@acme.example" => email = "news@"')
    assert problems(path)[0].startswith(f"{path}: sender.email: 'news@' is not an email address")


def test_secrets_from_the_environment_are_text_even_when_they_look_like_numbers(
    project: Path,
) -> None:
    settings = load_settings(project / "settings.toml", environ={
        "MAILER_TRACKING__EVENTS_TOKEN": "12345678901234567890",
        "MAILER_SMTP__PASSWORD": "true"})  # fmt: skip
    assert settings.tracking.events_token is not None
    assert settings.tracking.events_token.get_secret_value() == "12345678901234567890"
    assert settings.smtp_password() == "true"


def test_a_misspelled_default_timezone_is_refused_before_any_tick(project: Path) -> None:
    path = settings_file(project, replace='database_url = => default_timezone = "Europe/Londn"\n'
                         "database_url =")  # fmt: skip
    assert problems(path) == [
        f'{path}: default_timezone: "Europe/Londn" is not an IANA time zone (e.g. Europe/London, '
        "America/New_York, UTC)"
    ]


@pytest.mark.parametrize(("night", "leaves"), [
    ("21:00-08:00", "08:00-21:00"),
    ("21:00-8:00", "08:00-21:00"),  # 8:00 is 08:00, not a string after "21:00"
    ("00:00-06:00", "06:00-24:00"),  # a night that starts at midnight
    ("22:30-00:00", "00:00-22:30"),
])  # fmt: skip
def test_quiet_hours_are_read_as_times(night: str, leaves: str) -> None:
    assert parse_quiet_hours(night) == leaves


@pytest.mark.parametrize("text", ["13:00-14:00", "08:00-08:00", "9-17", "25:00-06:00"])
def test_quiet_hours_that_are_not_a_night_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="are not quiet hours"):
        parse_quiet_hours(text)


def test_quiet_hours_from_midnight_load(project: Path) -> None:
    path = settings_file(project, append='\n[engine]\nquiet_hours = "00:00-06:00"\n')
    settings = load_settings(path, environ=NO_ENV)
    assert settings.engine.quiet_hours == "00:00-06:00"
