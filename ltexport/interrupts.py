"""SIGINT, SIGTERM and SIGHUP become an exception, so every `finally`/`except BaseException` that
removes staging runs for them too (Python's default SIGTERM/SIGHUP action kills the process on the
spot, leaving `.OUT.staging-*` behind).

`deferred()` holds a signal back while a few renames must happen together (an output is moved into
place), and raises it right after. An exception raised inside a finalizer (`__del__`, a weakref
callback) is printed and dropped by Python, so a signal that lands there is only recorded, and
`check()` raises it at the next checkpoint (before an output is moved into place, and when the
command ends).
"""

import signal
import threading
from contextlib import contextmanager

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A signal asked ltexport to stop. A KeyboardInterrupt, so `except Exception` does not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_state = threading.local()
_received: list[int] = []  # signals our handlers saw since handled() began


def _raise(signum, frame):
    _received.append(signum)
    pending = getattr(_state, "pending", None)
    if pending is not None:  # inside deferred(): remember the first signal, raise it on exit
        pending.append(signum)
        return
    if not _in_finalizer(frame):
        raise Interrupted(signum)


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code.co_filename.endswith("weakref.py"):
            return True
        frame = frame.f_back
    return False


def arrived() -> bool:
    return bool(_received)


def check() -> None:
    """Raise a signal that arrived but could not be raised where it landed."""
    if _received:
        raise Interrupted(_received[0])


@contextmanager
def handled():
    """Install the handlers for the duration (main thread only; signals the user ignored stay ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    _received.clear()
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current in (signal.SIG_IGN, None) or current is _raise:
            continue
        previous[signum] = signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()


@contextmanager
def deferred():
    """Run the block without being interrupted by our handlers; a signal that arrived meanwhile is raised after."""
    outer = getattr(_state, "pending", None)
    if outer is not None:  # nested: the outermost block raises
        yield
        return
    _state.pending = []
    try:
        yield
    finally:
        pending, _state.pending = _state.pending, None
        if pending:
            raise Interrupted(pending[0])
