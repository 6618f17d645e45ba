"""What every saved artifact shares: a JSON description that names its kind and format version.

Each artifact (a trained retrieval model, the index, the ranker with its tables, a gateway
version, eval results, event log segments) has one class that owns its files: their names are that
class's constants, and its ``save``/``load`` are the only code that writes and reads them. Their
JSON description goes through ``write_description`` / ``read_description`` here, so a folder written
by another format version is refused on load with one line that says what to re-run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tworec.errors import UserError


class ArtifactError(UserError, RuntimeError):
    """An artifact is missing, incomplete or of another format version; the message says how to fix it."""


def write_description(path: str | Path, kind: str, version: int, payload: dict) -> None:
    """``payload`` plus ``{"format": {"kind": kind, "version": version}}``, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"format": {"kind": kind, "version": version}, **payload}, indent=2))
    os.replace(tmp, path)


def read_description(path: str | Path, kind: str, version: int, remedy: str) -> dict:
    """The payload ``write_description`` wrote, or ArtifactError naming ``remedy`` (the command that
    writes a current one) when the file is missing or of another kind or version."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path.parent} is not a {kind} (no {path.name}): {remedy}")
    try:
        described = json.loads(path.read_text())
    except ValueError as err:
        raise ArtifactError(f"{path} is not valid JSON ({err}): {remedy}") from None
    found = described.get("format") if isinstance(described, dict) else None
    if not isinstance(found, dict) or found.get("kind") != kind or found.get("version") != version:
        raise ArtifactError(f"{path.parent} holds {_describe(found)}; this tworec reads {kind} format {version}: "
                            f"{remedy}")
    return {k: v for k, v in described.items() if k != "format"}


def _describe(found) -> str:
    if not isinstance(found, dict):
        return "no format version (written before formats were versioned)"
    return f"{found.get('kind')} format {found.get('version')}"


def describes(path: str | Path, kind: str) -> bool:
    """Whether ``path`` holds a complete description of ``kind`` (any version): what a resumable
    pipeline checks to skip a finished stage."""
    try:
        described = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(described, dict) and (described.get("format") or {}).get("kind") == kind


class DescribedFolder:
    """Base of the artifact classes whose folder holds a description file: ``KIND``,
    ``VERSION``, ``REMEDY`` (the command that writes a current one) and ``DESCRIPTION`` (its file
    name) are set by each subclass."""

    KIND: str
    VERSION: int
    REMEDY: str
    DESCRIPTION: str

    @classmethod
    def exists(cls, path) -> bool:
        """Whether ``path`` holds a complete artifact of this kind (any format version)."""
        return describes(Path(path) / cls.DESCRIPTION, cls.KIND)

    @classmethod
    def describe(cls, path, payload: dict) -> None:
        """Writes the description, last: it marks the folder complete."""
        write_description(Path(path) / cls.DESCRIPTION, cls.KIND, cls.VERSION, payload)

    @classmethod
    def described(cls, path) -> dict:
        """The description's payload, or ArtifactError when it is missing or of another version."""
        return read_description(Path(path) / cls.DESCRIPTION, cls.KIND, cls.VERSION, cls.REMEDY)
