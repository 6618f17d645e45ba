"""Reading raw files line by line with file and line numbers, and turning lines into records."""
from __future__ import annotations

import bz2
import gzip
import zlib
from typing import Callable, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes

from tworec.beam import records
from tworec.beam.validate import Invalid
from tworec.contract import Reject


class Line(NamedTuple):
    origin: str  # "<file name>:<line number>"
    data: bytes  # raw bytes, without the line ending


class DataFileError(ValueError):
    """A file cannot be read at all from some line on (truncated or corrupt compression)."""


def _open(readable: fileio.ReadableFile):
    """Opens a matched file; gzip is decompressed with Python's gzip module, which (unlike Beam's
    CompressedFile) raises on a truncated stream instead of ending it quietly."""
    raw = readable.open(compression_type=CompressionTypes.UNCOMPRESSED)
    if readable.metadata.path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if readable.metadata.path.endswith(".bz2"):
        return bz2.BZ2File(raw, mode="rb")
    return raw


def _read_lines(readable: fileio.ReadableFile, skip_header: bool):
    path = readable.metadata.path
    name = path.rsplit("/", 1)[-1]
    number = 0
    with _open(readable) as handle:
        while True:
            try:
                raw = handle.readline()
            except (EOFError, zlib.error, OSError) as err:
                raise DataFileError(
                    f"{path}: cannot read past line {number}: {err} "
                    "(truncated or corrupt file; re-copy it or remove it from the input)"
                ) from err
            if not raw:
                return
            number += 1
            if number == 1 and skip_header:
                continue
            yield Line(f"{name}:{number}", raw.rstrip(b"\r\n"))


class ReadLines(beam.PTransform):
    """File pattern → one ``Line`` per line of every matching file (compressed files included)."""

    def __init__(self, pattern: str, skip_header: bool = False):
        super().__init__()
        self._pattern = pattern
        self._skip_header = skip_header

    def expand(self, pbegin):
        return (
            pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "Match" >> fileio.MatchAll()
            | "Open" >> fileio.ReadMatches()
            | "Lines" >> beam.FlatMap(_read_lines, self._skip_header)
        )


class _ParseDoFn(beam.DoFn):
    def __init__(self, kind: str, parse: Callable, encoding: str):
        self._kind = kind
        self._parse = parse
        self._encoding = encoding

    def process(self, line: Line):
        def reject(reason, detail, raw, value=None):
            return beam.pvalue.TaggedOutput(
                records.REJECTED, records.Rejection(self._kind, reason.value, line.origin, detail, raw, value)
            )

        try:
            text = line.data.decode(self._encoding)
        except UnicodeDecodeError as err:
            yield reject(Reject.BAD_ENCODING, f"not {self._encoding}: {err.reason}",
                         line.data.decode(self._encoding, errors="replace"))
            return
        if not text.strip():
            yield reject(Reject.EMPTY_LINE, "empty line", text)
            return
        try:
            yield self._parse(text, line.origin)
        except Invalid as err:
            yield reject(err.reason, err.detail, text, err.value)


class ParseLines(beam.PTransform):
    """``Line``s → records via ``parse(text, origin)``; every line that fails (encoding, empty, any
    ``Invalid`` field) becomes exactly one ``Rejection``. Outputs tagged ``valid`` and ``rejected``."""

    def __init__(self, kind: str, parse: Callable, encoding: str = "utf-8"):
        super().__init__()
        self._fn = _ParseDoFn(kind, parse, encoding)

    def expand(self, lines):
        return lines | beam.ParDo(self._fn).with_outputs(records.REJECTED, main=records.VALID)
