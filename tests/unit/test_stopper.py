"""Stopper: the stop request of serving processes and supervisors.

A supervisor's main loop waits on it while SIGTERMs arrive; the handler must
never take a lock the interrupted wait may hold (a ``threading.Event`` set
from a handler can deadlock the loop for good).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from palm.serve.stopper import Stopper

LOOP = """
import signal
from palm.serve.stopper import Stopper
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what on_signals gives back: later ones do nothing
stopper = Stopper()
with stopper.on_signals():
    print("waiting", flush=True)
    while not stopper.wait(0.001):
        pass
stopper.close()
print("stopped", flush=True)
"""


def test_wait_times_out_without_a_stop_and_returns_at_once_after_one() -> None:
    stopper = Stopper()
    try:
        started = time.monotonic()
        assert stopper.wait(0.05) is False
        assert time.monotonic() - started >= 0.04
        stopper.stop()
        started = time.monotonic()
        assert stopper.wait(10) is True
        assert stopper.wait(10) is True  # a stop stays
        assert time.monotonic() - started < 1
    finally:
        stopper.close()


def test_a_stop_from_another_thread_ends_a_wait() -> None:
    stopper = Stopper()
    try:
        threading.Timer(0.05, stopper.stop).start()
        started = time.monotonic()
        assert stopper.wait(10) is True
        assert time.monotonic() - started < 5
    finally:
        stopper.close()


def test_a_loop_waiting_on_it_stops_under_a_burst_of_sigterms() -> None:
    """Many SIGTERMs while the loop waits in short steps: it stops every time (a loop
    on a ``threading.Event`` set by the handler hung in about 1 burst of 10 here)."""
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "waiting"
            for _ in range(200):
                if child.poll() is not None:
                    break
                child.send_signal(signal.SIGTERM)
            out, _ = child.communicate(timeout=10)
            assert child.returncode == 0, out
            assert "stopped" in out
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
