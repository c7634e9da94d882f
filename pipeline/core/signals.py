"""Signals as a flag: SIGTERM and Ctrl-C set an event that a loop checks between its steps."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def stop_flag_on_signals() -> Iterator[threading.Event]:
    """While the block runs, SIGTERM and Ctrl-C set the event instead of raising; the previous
    handlers come back after it. For loops that an exception must not cut short mid-call (a py4j
    command, a Kafka delivery callback halfway through its count)."""
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
