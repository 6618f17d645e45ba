"""Keeping TensorFlow's and Beam's start-up noise out of the terminal.

Without ``--verbose`` a command's file descriptor 2 (what C++ libraries, Python warnings and the
Beam worker processes write to) goes to a log file for the command's duration; the command's own
progress and summaries still reach the terminal, through ``tworec.progress.terminal()``. When a
command fails, the log's last lines are shown with its path.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

from tworec.progress import set_terminal


def before_imports(verbose: bool) -> None:
    """Settings that must precede the first TensorFlow import."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ INFO, WARNING and ERROR lines (CUDA probing)
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")


class NoiseLog:
    """The file fd 2 goes to; removed at the end unless ``keep`` is set (or the block failed)."""

    def __init__(self, path: str | None):
        self.path = path
        self.keep = False


@contextlib.contextmanager
def quiet(verbose: bool, command: str):
    """Runs the block with fd 2 in a log file unless ``verbose``; yields its NoiseLog."""
    if verbose:
        yield NoiseLog(None)
        return
    handle, path = tempfile.mkstemp(prefix=f"tworec-{command}-", suffix=".log")
    log = NoiseLog(path)
    saved = os.dup(2)
    sys.stderr.flush()
    os.dup2(handle, 2)
    os.close(handle)
    stream = os.fdopen(os.dup(saved), "w", buffering=1)
    set_terminal(stream)
    logging.captureWarnings(True)
    failed = True
    try:
        yield log
        failed = False
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        set_terminal(None)
        stream.close()
        if failed:
            tail = _tail(path)
            if tail:
                print(f"(the last lines of {path}:)\n{tail}", file=sys.stderr)
        elif not log.keep:
            os.unlink(path)


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:]).rstrip()
    except OSError:
        return ""
