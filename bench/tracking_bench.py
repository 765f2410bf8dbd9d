"""Benchmark: the tracking endpoint under wrk, against a bare ASGI app serving the same pixel.

wrk runs (2 threads, --connections connections, --duration seconds, each after 2 s of
warm-up) against:
1. mailer's app (`mailer serve` in a project folder) on the click redirects (/c/TOKEN, 302)
   of --messages sent messages;
2. in --rounds rounds, bench/bare_pixel.py (a raw ASGI callable answering the same 43-byte
   GIF, no recording), then the same mailer server on the open pixels of those messages,
   every request a genuine token, so every request records an open. The machine's speed
   drifts by a fifth from minute to minute: each round's ratio compares two runs a few
   seconds apart, and the budget is judged on their median (and the worst p99).
Both servers run in a subprocess with the same uvicorn configuration (uvloop, httptools, one
worker). It prints requests/s, p99 latency, errors, the CPU time of the server and of its
writer process, and the ratio of mailer's pixel to the bare app (issue 16's budget: at least
0.5, with a p99 under 50 ms); after each of mailer's runs, how much was written during it and
how long the rest took. Then the loss check: the server is stopped with SIGTERM
right after the last pixel run, opens still waiting to be written, and the opens stored are
compared with the pixel responses wrk counted (wrk counts completed requests only, so up to
--connections answered while wrk was stopping may be stored on top).
--profile adds a run per route while py-spy samples the server, and where its time goes.

    make bench-tracking   # installs wrk when missing
    .venv/bin/python bench/tracking_bench.py [--duration 10] [--connections 50] [--rounds 3]
        [--messages 10000] [--database sqlite|postgresql] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import bare_pixel
from databases import database
from postfix import free_port, process_cpu_seconds
from send_bench import START, set_up, write_contacts
from sqlalchemy import Connection, create_engine, func, select

from mailer.clock import FrozenClock
from mailer.config import Settings, load_settings
from mailer.store.rollups import REFETCHES
from mailer.store.tables import event_rollups, events, outbox
from mailer.tokens import sign
from mailer.tracking.serve import configure
from mailer.workspace import Workspace, create_dkim_key

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
BARE = Path(__file__).resolve().parent / "bare_pixel.py"
WRK = "wrk"
HOST = "127.0.0.1"
SECRET = "mailer-bench-tracking-secret-0123456789abcdef"
LINK = "https://shop.example/a"
SENT_AT = START + timedelta(minutes=5)
RATIO, P99_MS = 0.5, 50.0  # issue 16's budget for the pixel
WARM_UP = 2  # seconds of load before each measured run: not measured, its opens are checked
# A person's mail program (Thunderbird): the opens and clicks count as a person's (scored).
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
# Each wrk thread walks the list of paths from its own starting point, one path per request.
LUA = """
local paths = {}
for line in io.lines(%(file)s) do paths[#paths + 1] = line end
wrk.headers["User-Agent"] = %(agent)s
local started = 0
function setup(thread)
  thread:set("first", started * 7919)
  started = started + 1
end
local requests, i = {}, 0
function init(args)
  for k, path in ipairs(paths) do requests[k] = wrk.format("GET", path) end
  i = first %% #requests
end
function request()
  i = i %% #requests + 1
  return requests[i]
end
"""


def project(workdir: Path, url: str) -> tuple[Settings, dict[str, str]]:
    """The example project (settings.toml, templates, a DKIM key) pointed at this run's
    database; and the environment that `mailer serve` needs to read the same settings."""
    shutil.copy(ROOT / "settings.toml", workdir / "settings.toml")
    shutil.copytree(ROOT / "templates", workdir / "templates", dirs_exist_ok=True)
    environ = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": url,
               "MAILER_DKIM__ALGORITHM": "ed25519-sha256"}  # fmt: skip
    settings = load_settings(workdir / "settings.toml", environ=environ)
    create_dkim_key(settings)
    return settings, environ


def sent_messages(settings: Settings, workdir: Path, count: int) -> list[int]:
    """Import `count` contacts, queue their first welcome message, and mark each sent, with
    one tracked link: the outbox ids of the messages."""
    csv = workdir / "contacts.csv"
    write_contacts(csv, count)
    set_up(settings, csv, {})
    workspace = Workspace(settings, FrozenClock(SENT_AT))
    with workspace.engine.begin() as connection:
        ids = list(connection.scalars(select(outbox.c.id).order_by(outbox.c.id).limit(count)))
        connection.execute(outbox.update().where(outbox.c.id.in_(ids))
                           .values(status="sent", sent_at=SENT_AT, attempts=1,
                                   links=json.dumps([LINK])))  # fmt: skip
    workspace.close()
    return ids


def write_script(folder: Path, name: str, paths: list[str]) -> Path:
    """A wrk Lua script that sends GET requests for `paths` in turn."""
    listing = folder / f"{name}.paths"
    listing.write_text("\n".join(paths) + "\n", encoding="ascii")
    script = folder / f"{name}.lua"
    script.write_text(LUA % {"file": json.dumps(str(listing)), "agent": json.dumps(USER_AGENT)})
    return script


@dataclass
class WrkRun:
    requests: int  # completed requests
    seconds: float
    rate: float  # requests/s, as wrk prints it
    p99_ms: float
    bad_status: int  # non-2xx/3xx responses
    socket_errors: dict[str, int]  # connect, read, write, timeout

    @property
    def good(self) -> int:
        return self.requests - self.bad_status - sum(self.socket_errors.values())


UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def run_wrk(url: str, script: Path, duration: int, connections: int) -> WrkRun:
    command = [WRK, "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{duration}s",
               "--latency", "-s", str(script), url]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)", output, re.MULTILINE)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not (done and p99 and rate):
        sys.exit(f"cannot read wrk's output:\n{output}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)  # fmt: skip
    counts = [int(n) for n in errors.groups()] if errors else [0, 0, 0, 0]
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), counts, strict=True))
    return WrkRun(int(done[1]), float(done[2]) * UNITS_MS[done[3]] / 1000, float(rate[1]),
                  float(p99[1]) * UNITS_MS[p99[2]], int(bad[1]) if bad else 0,
                  socket_errors)  # fmt: skip


class Server:
    """A server in a subprocess on HOST:port, its output in a log file, until `stop`."""

    def __init__(self, command: list[str], port: int, ready_path: str, cwd: Path,
                 environ: dict[str, str], log: Path) -> None:  # fmt: skip
        self.port = port
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(command, cwd=cwd, env=os.environ | environ,
                                            stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url(ready_path), timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                sys.exit(f"{' '.join(command)} did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:  # left running by an error: no clean stop to measure
            self.process.kill()
            self.process.wait()

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def helpers_cpu_seconds(self) -> float:
        """CPU time of the processes the server started (mailer's event writer, its
        forkserver): 0 for the bare app."""
        total = 0.0
        for pid in descendants(self.process.pid):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += process_cpu_seconds(pid)
        return total

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url("/metrics"), timeout=30) as answer:
            lines = answer.read().decode().splitlines()
        return {name: float(value) for name, value in
                (line.rsplit(" ", 1) for line in lines if not line.startswith("#"))}  # fmt: skip

    def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit status and the seconds the server took to exit."""
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        return status, time.perf_counter() - started


def measure(name: str, server: Server, script: Path, duration: int, connections: int) -> WrkRun:
    """A wrk run, printed with the CPU time of the server, of wrk and of all else meanwhile."""
    cpu, machine, children = server.cpu_seconds(), busy_seconds(), _children_cpu()
    helpers = server.helpers_cpu_seconds()
    run = run_wrk(server.url(), script, duration, connections)
    cpu, wrk = server.cpu_seconds() - cpu, _children_cpu() - children
    helpers = server.helpers_cpu_seconds() - helpers
    other = busy_seconds() - machine - cpu - helpers - wrk
    errors = ", ".join(f"{kind} {n}" for kind, n in run.socket_errors.items() if n) or "none"
    print(f"{name:<14}{run.rate:>9,.0f} req/s   p99 {run.p99_ms:6.2f} ms   "
          f"non-2xx/3xx {run.bad_status}   socket errors {errors}   "
          f"({run.requests:,} requests in {run.seconds:.1f} s; CPU s: server {cpu:.1f} = "
          f"{cpu * 1e6 / max(run.requests, 1):.0f} µs per request, its writer process "
          f"{helpers:.1f} = {helpers * 1e6 / max(run.requests, 1):.0f} µs, wrk {wrk:.1f}, "
          f"other work {max(other, 0):.1f})", flush=True)  # fmt: skip
    return run


def descendants(pid: int) -> set[int]:
    """The processes started by `pid`, and theirs."""
    found: set[int] = set()
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for number in child.read_text().split():
                found |= {int(number)} | descendants(int(number))
    return found


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since it started (/proc/stat)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the wrk runs waited for so far
    return usage.ru_utime + usage.ru_stime


def backlog(metrics: dict[str, float]) -> float:
    """Opens and clicks the server took but has not written yet (all tokens are genuine): the
    buffer's depth leaves out the batch being written."""
    taken = sum(count for sample, count in metrics.items()
                if sample.startswith("mailer_requests_total{")
                and ('route="/o/' in sample or 'route="/c/' in sample))  # fmt: skip
    return taken - metrics["mailer_events_recorded_total"]


def written(server: Server) -> dict[str, float]:
    """Wait until every open and click the server took is written; its metrics then."""
    started = time.perf_counter()
    while backlog(metrics := server.metrics()) > 0:
        if time.perf_counter() - started > 300:
            sys.exit("the server has not written its opens and clicks after 300 s")
        time.sleep(0.1)
    return metrics


def drain(server: Server, recorded: float) -> None:
    """Print what the run left unwritten and how long the server takes to write it;
    `recorded`: the events it had written before the run. (/metrics answers when the batch
    being written is committed, with figures of the moment the request came.)"""
    started = time.perf_counter()
    metrics = server.metrics()
    during, left = metrics["mailer_events_recorded_total"] - recorded, backlog(metrics)
    written(server)
    print(f"{'':14}recording: {during:,.0f} written during the run, {left:,.0f} not yet at "
          f"its end, all written {time.perf_counter() - started:.1f} s after it")  # fmt: skip


def sampled(name: str, server: Server, script: Path, duration: int, connections: int,
            folder: Path) -> tuple[WrkRun, Path]:  # fmt: skip
    """A run while py-spy samples the server; the run and py-spy's raw output."""
    raw = folder / f"{name.split()[0]}.profile"
    spy = subprocess.Popen([str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid",
                            str(server.process.pid), "--duration", str(max(duration - 2, 1)),
                            "--format", "raw", "-o", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    run = measure(name, server, script, duration, connections)
    spy.wait()
    return run, raw


def summarise(raw: Path) -> None:
    """Own time per function, for the event loop and the worker threads (batch writes, link
    look-ups) apart, and the inclusive time of mailer's functions; in % of all samples."""
    leaves: dict[str, Counter[str]] = {"event loop": Counter(), "worker threads": Counter()}
    inclusive: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame(frame) for frame in stack.split(";")]
        thread = "worker threads" if frames[0].startswith("Thread._bootstrap ") else "event loop"
        leaves[thread][frames[-1]] += int(count)
        inclusive.update(dict.fromkeys({f for f in frames if MAILER.search(f)}, int(count)))
    total = sum(sum(counts.values()) for counts in leaves.values()) or 1
    shares = ", ".join(f"{thread} {100 * c.total() / total:.0f}%" for thread, c in leaves.items())
    print(f"{'':14}py-spy: {total:,} samples of busy threads: {shares}")
    tops = [(f"{thread}, own time", counts) for thread, counts in leaves.items()]
    for title, counts in [*tops, ("mailer's functions, inclusive", inclusive)]:
        print(f"{'':16}{title}:")
        for frame, count in counts.most_common(10):
            print(f"{'':18}{100 * count / total:5.1f}%  {frame}")


# mailer's own frames, less the entry points that every event-loop sample passes through
MAILER = re.compile(r"\(mailer/(?!cli/|__main__|tracking/serve|delivery/worker)")


def _frame(frame: str) -> str:
    """`function (path/to/file.py:12)` -> `function (file.py)`, the path from the package on."""
    name, _, where = frame.partition(" (")
    where = re.sub(r":\d+\)$", ")", where)
    where = re.sub(r".*/(site-packages|python3\.\d+|work/main)/", "", where)
    return f"{name} ({where}"


def stored(url: str) -> Counter[str]:
    """Events by kind, read without waiting for the server's writes (no BEGIN IMMEDIATE)."""
    engine = create_engine(url)
    with engine.connect() as connection:
        kinds = kinds_recorded(connection)
    engine.dispose()
    return kinds


def kinds_recorded(connection: Connection) -> Counter[str]:
    """Events by kind, and under "refetch" the pixels fetched again (counted, not stored)."""
    kinds = Counter(dict(connection.execute(
        select(events.c.kind, func.count()).group_by(events.c.kind)).all()))  # fmt: skip
    refetched = select(func.sum(event_rollups.c.events)).where(event_rollups.c.kind == REFETCHES)
    kinds[REFETCHES] = int(connection.scalar(refetched) or 0)
    return kinds


def check_options(settings: Settings) -> None:
    """Print the uvicorn options; exit when the bare app's differ from `mailer serve`'s."""
    port, workspace = free_port(), Workspace(settings)
    ours, theirs = vars(configure(workspace, HOST, port)), vars(bare_pixel.config(HOST, port))
    workspace.close()
    differ = sorted(key for key in ours if key != "app" and ours[key] != theirs.get(key))
    print("uvicorn: " + ", ".join(f"{key}={value}" for key, value in bare_pixel.OPTIONS.items())
          + f", workers={ours['workers']}, one process each"
          + (f"; DIFFERENT from mailer serve: {differ}" if differ else
             " (the same for both servers: mailer.tracking.serve.configure)"))  # fmt: skip
    if differ:
        sys.exit(1)


def mailer_runs(server: Server, bare: Server, scripts: dict[str, Path], duration: int,
                connections: int, rounds: int, profile_into: Path | None,
                ) -> tuple[dict[str, list[WrkRun]], list[tuple[WrkRun, WrkRun]]]:  # fmt: skip
    """Per route: a warm-up, the measured runs (the pixel's `rounds`, each right after a run
    of the bare app) and, with `profile_into`, a run sampled by py-spy. What a run leaves
    unwritten is written before the next, except after the last: that is for the server's
    shutdown to write. Every run of mailer by route, and the pixel's (bare, mailer) pairs."""
    steps = [(route, profiled) for route in scripts
             for profiled in [False] * (rounds if route == "pixel" else 1)
             + ([True] if profile_into else [])]  # fmt: skip
    runs: dict[str, list[WrkRun]] = {}
    pairs: list[tuple[WrkRun, WrkRun]] = []
    for number, (route, profiled) in enumerate(steps, 1):
        if route not in runs:
            runs[route] = [run_wrk(server.url(), scripts[route], WARM_UP, connections)]
            written(server)
        recorded = server.metrics()["mailer_events_recorded_total"]
        if profile_into and profiled:
            run, raw = sampled(f"{route}, sampled", server, scripts[route], duration,
                               connections, profile_into)  # fmt: skip
        elif route == "pixel":
            floor = measure("bare pixel", bare, scripts[route], duration, connections)
            run = measure(f"mailer {route}", server, scripts[route], duration, connections)
            pairs.append((floor, run))
            print(f"{'':14}this round: mailer / bare = {run.rate / floor.rate:.3f}")
        else:
            run = measure(f"mailer {route}", server, scripts[route], duration, connections)
        runs[route].append(run)
        if number < len(steps):
            drain(server, recorded)
        if profile_into and profiled:
            summarise(raw)
    return runs, pairs


def scripts(settings: Settings, folder: Path, ids: list[int]) -> dict[str, Path]:
    """wrk scripts over the open pixel and the first link of each message."""
    workspace = Workspace(settings)
    keys = workspace.renderer.keys
    workspace.close()
    opens = [f"/o/{sign(keys, 'open', f'm{n}')}.gif" for n in ids]
    clicks = [f"/c/{sign(keys, 'click', f'm{n}', 0)}" for n in ids]
    # Clicks first: the shutdown after the last pixel run writes the opens still waiting.
    return {"click": write_script(folder, "click", clicks),
            "pixel": write_script(folder, "pixel", opens)}  # fmt: skip


def run(kind: str, messages: int, duration: int, connections: int, rounds: int,
        profiling: bool) -> int:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as name, \
            database(kind, Path(name), "tracking") as url:  # fmt: skip
        folder, started = Path(name), time.perf_counter()
        settings, environ = project(folder, url)
        ids = sent_messages(settings, folder, messages)
        wrk = scripts(settings, folder, ids)
        print(f"set-up: {len(ids):,} sent messages on {kind}, one open and one click token "
              f"each, in {time.perf_counter() - started:.1f} s")  # fmt: skip
        check_options(settings)
        busy, _ = busy_seconds(), time.sleep(1)
        print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
              f"{busy_seconds() - busy:.2f} of them busy in the second before the runs; "
              f"wrk: {min(2, connections)} threads, {connections} connections, {duration} s "
              f"per run after {WARM_UP} s of warm-up, user agent {USER_AGENT!r}")  # fmt: skip
        port = free_port()
        command = [str(PYTHON), str(BARE), "--host", HOST, "--port", str(port)]
        with Server(command, port, "/", folder, {}, folder / "bare.log") as bare:
            port = free_port()  # the bare app listens: another port
            command = [str(PYTHON), "-m", "mailer", "serve", "--host", HOST, "--port", str(port)]
            server = Server(command, port, "/healthz", folder, environ, folder / "serve.log")
            with server:
                run_wrk(bare.url(), wrk["pixel"], WARM_UP, connections)
                runs, pairs = mailer_runs(server, bare, wrk, duration, connections, rounds,
                                          folder if profiling else None)  # fmt: skip
                before = stored(url)
                status, seconds = server.stop()
        kinds = stored(url)
    ratios = sorted(run.rate / floor.rate for floor, run in pairs)
    ratio, p99 = statistics.median(ratios), max(run.p99_ms for _, run in pairs)
    verdict = "within" if ratio >= RATIO and p99 < P99_MS else "NOT within"
    print(f"ratio:        mailer pixel / bare pixel = {ratio:.3f}, the median of "
          f"{', '.join(f'{r:.3f}' for r in ratios)}; p99 {p99:.1f} ms at worst ({verdict} "
          f"issue 16's budget: at least {RATIO}, p99 under {P99_MS:.0f} ms)")  # fmt: skip
    good = sum(run.good for run in runs["pixel"])
    got = kinds["open"] + kinds["machine_open"] + kinds[REFETCHES]
    lost = max(good - got, 0)
    print(f"loss check:   SIGTERM right after the last pixel run, {before.total():,} events "
          f"written by then -> exit status {status} after {seconds:.1f} s, the shutdown wrote "
          f"{kinds.total() - before.total():,} more")  # fmt: skip
    print(f"{'':14}opens recorded {got:,} ({kinds['machine_open']:,} stored as machine opens, "
          f"{kinds[REFETCHES]:,} pixels fetched again, counted); "
          f"successful pixel responses wrk counted {good:,}; loss {lost}; stored - wrk's = "
          f"{got - good} (answered while wrk stopped: at most {connections} in each of "
          f"{len(runs['pixel'])} runs, warm-up included); clicks stored "
          f"{kinds['click'] + kinds['machine_click']:,}, redirects wrk counted "
          f"{sum(run.good for run in runs['click']):,}")  # fmt: skip
    return 0 if status == 0 and lost == 0 and got - good <= connections * len(runs["pixel"]) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk's open connections")
    parser.add_argument("--rounds", type=int, default=3,
                        help="pixel runs of the bare app and of mailer, in turn")  # fmt: skip
    parser.add_argument("--messages", type=int, default=10_000, help="distinct message tokens")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="One more run of each route against mailer, sampled by py-spy.",
    )
    options = parser.parse_args(argv)
    if shutil.which(WRK) is None:
        sys.exit("wrk is missing: run `make bench-tracking` (or apt-get install -y wrk)")
    return run(options.database, options.messages, options.duration, options.connections,
               options.rounds, options.profile)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
