"""Stopping a listener on a signal, whichever thread the kernel hands the signal to."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A SIGTERM delivered to a thread other than the main one (signal.pthread_kill picks it): the
# main thread must still stop. `threading.Event.wait()` never returned here; `sleep_until` does.
SCRIPT = textwrap.dedent("""
    import signal, threading, time
    from mailer.listening import sleep_until

    stopping, parked = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    worker = threading.Thread(target=parked.wait, daemon=True)  # like aiosmtpd's thread
    worker.start()
    def send() -> None:  # slept, not a timed wait: libfaketime (make test-future) stretches those
        time.sleep(0.3)
        signal.pthread_kill(worker.ident, signal.SIGTERM)
    threading.Thread(target=send).start()
    sleep_until(stopping)
    print("stopped")
""")


def test_a_sigterm_taken_by_another_thread_still_stops_the_main_thread() -> None:
    finished = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == "stopped\n"
