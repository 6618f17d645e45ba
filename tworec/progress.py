"""Progress lines: where they go (``terminal``), and a small indicator for long steps whose work
happens in other processes (Beam workers)."""
from __future__ import annotations

import itertools
import sys
import threading
import time
from contextlib import contextmanager


_terminal = None  # set by the command line while it sends fd 2 (library noise) to a log file


def terminal():
    """Where progress lines go: the user's terminal, also while the command line redirects fd 2."""
    return _terminal or sys.stderr


def set_terminal(stream) -> None:
    """Called by the command line (cli/quiet.py): ``stream`` reaches the terminal; None resets."""
    global _terminal
    _terminal = stream


@contextmanager
def spinner(label: str, stream=None, interval: float = 0.5):
    """Shows ``label`` with elapsed seconds while the block runs (every 10 s when not a terminal)."""
    stream = stream or terminal()
    tty = stream.isatty()
    done = threading.Event()
    started = time.time()

    def run():
        for frame in itertools.cycle("|/-\\"):
            if done.wait(interval if tty else 10.0):
                return
            elapsed = time.time() - started
            if tty:
                stream.write(f"\r{frame} {label} {elapsed:5.0f}s")
            else:
                stream.write(f"{label} … {elapsed:.0f}s\n")
            stream.flush()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    outcome = "failed after"
    try:
        yield
        outcome = "done in"
    finally:
        done.set()
        thread.join()
        status = f"{label} {outcome} {time.time() - started:.1f}s"
        stream.write(("\r" + status + " " * 10 + "\n") if tty else status + "\n")
        stream.flush()
