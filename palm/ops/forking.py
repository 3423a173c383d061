"""Children forked from this process, forkserver-style: no new interpreter, no imports.

A palm process started with ``python -m ...`` spends most of its start in the
interpreter and its imports (a few hundred milliseconds each, more on a busy
machine). :func:`fork_main` forks this process instead, after importing what
the child runs once here, and calls the child's ``main(argv)`` in the fork:
the same code a command line would run, started in milliseconds.
:class:`multiprocessing.Pool` starts its workers the same way on Linux.

The child:

* gets ``death_signal`` when this process dies (``PR_SET_PDEATHSIG``; the fork
  happens on a thread that lives as long as the process,
  :func:`palm.ops.processes.on_lasting_thread`);
* runs with ``env`` as its whole environment, the signal handlers a new
  interpreter has, no logging handlers of this process, and ``stdout``
  (a pipe's write end, say) as its standard output when given;
* leaves with :func:`os._exit`: none of this process's ``atexit`` handlers,
  buffered output or finalizers run twice.

It inherits this process's open file descriptors (as a multiprocessing
worker does); a listening socket this process closes later stays open until
the child ends.

:class:`ForkedProcess` is a :class:`subprocess.Popen` for the child (``pid``,
``poll``, ``wait``, ``send_signal``, ``kill``), so whatever stops processes
stops it too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import IO, Any

from palm.ops.processes import die_with_parent, on_lasting_thread

__all__ = ["ForkedProcess", "can_fork", "fork_main"]

#: What a new interpreter starts with for the signals a parent may have changed:
#: the child starts with the same (SIGPIPE ignored, SIGINT raising KeyboardInterrupt).
_SIGNALS: dict[signal.Signals, Any] = {
    signal.SIGINT: signal.default_int_handler,
    signal.SIGTERM: signal.SIG_DFL,
    signal.SIGHUP: signal.SIG_DFL,
    signal.SIGCHLD: signal.SIG_DFL,
    signal.SIGPIPE: signal.SIG_IGN,
}


def can_fork() -> bool:
    """Whether children can be forked here (Linux: with a death signal too)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


class ForkedProcess(subprocess.Popen[Any]):
    """A forked child, reaped and signalled as a :class:`subprocess.Popen` is."""

    def __init__(  # no Popen.__init__: there is nothing to execute
        self, pid: int, args: Sequence[str], stdout: IO[Any] | None = None
    ) -> None:
        self.args = list(args)
        self.pid = pid
        self.returncode: Any = None
        self.stdin = None
        self.stdout = stdout
        self.stderr = None
        self.encoding = None
        self.errors = None
        self.pipesize = -1
        self.text_mode = stdout is not None and not isinstance(stdout, bytes)
        self._sigint_wait_secs = 0.25
        self._closed_child_pipe_fds = True
        self._communication_started = False
        self._waitpid_lock = threading.Lock()
        self._input = None
        self._child_created = True


def fork_main(
    main: Callable[[list[str]], int | None],
    argv: Sequence[str],
    *,
    env: dict[str, str],
    death_signal: int = signal.SIGTERM,
    stdout: int | None = None,
) -> int:
    """Fork a child that runs ``main(argv)`` and exits with its code; the child's PID.

    ``stdout``: a file descriptor the child takes as its standard output (this
    process should close its copy). See the module's documentation.
    """
    hook = die_with_parent(death_signal)
    args = list(argv)

    def fork() -> int:
        for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; it never returns
            _child(main, args, env, hook, stdout)
        return pid

    return on_lasting_thread(fork)


def _child(
    main: Callable[[list[str]], int | None],
    argv: list[str],
    env: dict[str, str],
    hook: Callable[[], None] | None,
    stdout: int | None,
) -> None:  # pragma: no cover - runs in the fork
    code = 1
    try:
        if hook is not None:
            hook()
        for sig, handler in _SIGNALS.items():
            signal.signal(sig, handler)
        os.environ.clear()
        os.environ.update(env)
        if stdout is not None:
            os.dup2(stdout, 1)
            os.close(stdout)
        # this process's sys.stdout may be anything (a test's capture): the fds it is
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        root = logging.getLogger()
        for handler in root.handlers[:]:  # this process's handlers: the child sets its own
            root.removeHandler(handler)
        sys.argv = [sys.argv[0] if sys.argv else "palm", *argv]
        result = main(argv)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code)
