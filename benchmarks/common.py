"""What every benchmark does at the end: print where the numbers came from and save them."""
from __future__ import annotations

import json
import os
import platform


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def save(result: dict, path: str | None) -> dict:
    result.setdefault("machine", machine())
    if path:
        with open(path, "w") as handle:
            json.dump(result, handle, indent=2)
    return result
