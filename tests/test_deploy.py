"""deploy/: the systemd units and the docker-compose file an operator copies. Each unit parses,
names a mailer command that exists with options it takes, and stops the way mailer stops; the
compose file is checked by `docker compose config` where Docker is, and started for a smoke test
only where images can be pulled (skipped, with the reason, within seconds otherwise)."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailer.cli import cli

DEPLOY = Path(__file__).parent.parent / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED = "/opt/mailer/bin/mailer"  # where the units expect the venv's mailer
COMPOSE = DEPLOY / "docker-compose.yml"


def unit(path: Path) -> configparser.ConfigParser:
    # strict=False: systemd allows a key more than once (the last one wins, or they add up).
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read(path)
    return parser


def test_there_is_a_unit_for_each_long_running_command() -> None:
    assert [path.name for path in UNITS] == [
        "mailer-inbound.service", "mailer-run.service", "mailer-serve.service"]  # fmt: skip


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.name)
def test_a_unit_starts_an_existing_mailer_command_with_options_it_takes(path: Path) -> None:
    argv = shlex.split(unit(path)["Service"]["ExecStart"])
    assert argv[0] == INSTALLED
    command = argv[1]
    assert command == path.stem.removeprefix("mailer-")
    # --help after the unit's options: click refuses an option the command does not take.
    result = CliRunner().invoke(cli, [*argv[1:], "--help"], prog_name="mailer")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: mailer {command} ")


@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.name)
def test_a_unit_runs_hardened_as_mailer_and_stops_mailer_gracefully(path: Path) -> None:
    service = unit(path)["Service"]
    assert service["User"] == "mailer"
    assert service["WorkingDirectory"] == "/srv/mailer"
    assert service["EnvironmentFile"] == "/etc/mailer/mailer.env"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    # SIGTERM to the main process only: its render and event-writer processes outlive its flush.
    assert service["KillMode"] == "mixed"
    # Long enough for an SMTP transaction in flight (smtp.timeout, 30 s by default) to finish.
    stop = int(service["TimeoutStopSec"])
    assert stop >= (60 if path.stem == "mailer-run" else 30)
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/srv/mailer/.mailer"
    assert service["PrivateTmp"] == "yes"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")  # fmt: skip
@pytest.mark.parametrize("path", UNITS, ids=lambda path: path.name)
def test_systemd_accepts_the_unit(path: Path, tmp_path: Path) -> None:
    # verify wants ExecStart's file to exist: point it at this venv's mailer.
    mailer = Path(sys.executable).with_name("mailer")
    copy = tmp_path / path.name
    copy.write_text(path.read_text().replace(INSTALLED, str(mailer)))
    found = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (found.returncode, found.stderr) == (0, ""), found.stderr


MAILER_SERVICES = {"upgrade": "db", "run-1": "run", "run-2": "run", "serve": "serve"}
SECRETS = {"POSTGRES_PASSWORD": "compose-smoke-password",
           "MAILER_SECRET_KEY": "compose-smoke-secret-key-0123456789abcdef",
           "MAILER_SMTP__HOST": "relay.invalid"}  # fmt: skip


def compose_file() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # installed with uvicorn[standard], not mailer's own
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_starts_postgresql_the_upgrade_two_daemons_and_the_endpoint() -> None:
    services = compose_file()["services"]
    assert set(services) == {"postgres", *MAILER_SERVICES}
    for name, command in MAILER_SERVICES.items():
        service = services[name]
        assert service["command"][0] == command, name
        result = CliRunner().invoke(cli, [*service["command"], "--help"], prog_name="mailer")
        assert result.exit_code == 0, (name, result.output)
        assert service["volumes"] == ["${MAILER_PROJECT:-..}:/srv/mailer"]
        assert service["init"] is True  # SIGTERM reaches mailer, render processes are reaped
        environment = service["environment"]
        assert "@postgres:5432/" in environment["MAILER_DATABASE_URL"]
        # Secrets only from the environment: compose refuses to start without them.
        assert "${POSTGRES_PASSWORD:?" in environment["MAILER_DATABASE_URL"]
        assert environment["MAILER_SECRET_KEY"].startswith("${MAILER_SECRET_KEY:?")
    assert services["upgrade"]["command"] == ["db", "upgrade"]
    for daemon in ("run-1", "run-2", "serve"):
        assert services[daemon]["depends_on"] == {
            "upgrade": {"condition": "service_completed_successfully"}}  # fmt: skip
    assert services["run-1"]["stop_grace_period"] == "90s"


def docker_compose_works() -> str | None:
    """Why `docker compose` cannot be used here, or None."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    try:
        version = subprocess.run(["docker", "compose", "version"], capture_output=True,
                                 text=True, timeout=10)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "`docker compose version` did not answer within 10 s"
    if version.returncode != 0:
        return "docker compose is not available (no compose plugin)"
    return None


def test_docker_compose_accepts_the_file() -> None:
    if (why := docker_compose_works()) is not None:
        pytest.skip(why)
    found = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, **SECRETS})  # fmt: skip
    assert (found.returncode, found.stderr) == (0, ""), found.stderr


REGISTRY = ("registry-1.docker.io", 443)


def images_can_be_pulled() -> str | None:
    """Why the smoke test cannot run here (within seconds), or None."""
    if (why := docker_compose_works()) is not None:
        return why
    daemon = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                            capture_output=True, text=True, timeout=10)  # fmt: skip
    if daemon.returncode != 0:
        return "the Docker daemon is not running"
    try:
        socket.create_connection(REGISTRY, timeout=3).close()
    except OSError as error:
        return f"Docker Hub ({REGISTRY[0]}) is unreachable, images cannot be pulled: {error}"
    return None


@pytest.fixture
def compose_project(tmp_path: Path) -> Iterator[list[str]]:
    """The compose file up, over a starter project, under a project name of its own; taken
    down with its volume afterwards."""
    if (why := images_can_be_pulled()) is not None:
        pytest.skip(why)
    project = tmp_path / "acme"
    result = CliRunner().invoke(cli, ["new", str(project)])
    assert result.exit_code == 0, result.output
    for path in [project, *project.rglob("*")]:  # the containers' user mailer writes .mailer/
        path.chmod(0o777 if path.is_dir() else 0o666)
    compose = ["docker", "compose", "-f", str(COMPOSE), "-p", f"mailer-smoke-{tmp_path.name}"[:60]]
    environment = {**os.environ, **SECRETS, "MAILER_PROJECT": str(project)}
    try:
        # Built and run once: the schema, the DKIM key and the sealed ledger, as an operator would.
        init = subprocess.run([*compose, "run", "--rm", "--build", "upgrade", "init"],
                              capture_output=True, text=True, timeout=900,
                              env=environment)  # fmt: skip
        assert init.returncode == 0, init.stderr
        up = subprocess.run([*compose, "up", "-d"], capture_output=True, text=True, timeout=300,
                            env=environment)  # fmt: skip
        assert up.returncode == 0, up.stderr
        yield compose
    finally:
        subprocess.run([*compose, "down", "-v", "--timeout", "30"], capture_output=True,
                       timeout=300, env=environment)  # fmt: skip


def healthz(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            body: dict[str, Any] = json.loads(answer.read())
            return body
    except OSError:
        return None


def test_compose_smoke_two_daemons_and_the_endpoint_answer(compose_project: list[str]) -> None:
    answers: dict[int, dict[str, Any] | None] = {}
    for _ in range(240):  # a bounded poll: the images start, each daemon binds its port
        answers = {port: healthz(port) for port in (8025, 8026, 8027)}
        if all(answers.values()):
            break
        time.sleep(0.5)
    assert all(answers.values()), answers
    # The relay (relay.invalid) may be failing, which is degraded, never down.
    assert {answer["status"] for answer in answers.values() if answer} <= {"ok", "degraded"}
