"""What every benchmark does at the end: print where the numbers came from and save them.

``--json FILE`` writes one benchmark's result; ``--results FILE`` merges it, under the benchmark's
name, into the shared results file that ``make bench`` collects (bench/results.json).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import sys


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit(143), so the ``with`` blocks of a benchmark that started services
    stop them: Triton runs in its own process group and would otherwise outlive the benchmark."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def add_output_options(parser) -> None:
    parser.add_argument("--json", help="write this benchmark's result here")
    parser.add_argument("--results", help="merge the result into this shared results file")


def save(result: dict, path: str | None = None, name: str | None = None, results: str | None = None) -> dict:
    result.setdefault("machine", machine())
    result.setdefault("recorded", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    if path:
        with open(path, "w") as handle:
            json.dump(result, handle, indent=2)
    if results and name:
        os.makedirs(os.path.dirname(os.path.abspath(results)), exist_ok=True)
        merged = {}
        if os.path.exists(results):
            with open(results) as handle:
                merged = json.load(handle)
        merged[name] = result
        tmp = results + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(merged, handle, indent=2)
        os.replace(tmp, results)
    return result
