"""SIGTERM/SIGINT for the long-running processes (the daemon, the Alertmanager bridge).

The first signal asks for a clean stop; a second ends the process at once, as an operator or a supervisor expects
when a clean stop takes longer than they will wait (a broker that does not answer holds the last commit and the
client's close). The defaults are restored before the line is logged: a signal sent on seeing that line would
otherwise re-enter the handler and be taken for a first one.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import ExitStack
from typing import Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_signals(stack: ExitStack, stop: Callable[[], None], stopping: str) -> None:
    """Handle STOP_SIGNALS until `stack` closes: the first calls `stop()`; `stopping` says in the log what the clean
    stop does. Only in the main thread (Python handles signals there; a threaded caller calls stop() itself)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, frame) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        log.info("signal received signal=%s; %s (send it again to exit at once)", signal.Signals(signum).name,
                 stopping)
        stop()

    for sig in STOP_SIGNALS:
        previous = signal.signal(sig, on_signal)
        stack.callback(signal.signal, sig, previous)
