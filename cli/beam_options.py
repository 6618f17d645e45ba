"""Which of a command's leftover options are Beam pipeline options.

A Beam job (``tworec data``, ``pipeline``, ``export-embeddings``) hands Beam the options it does
not know itself, e.g. ``--runner=DataflowRunner --project=...``. Only options some Beam
``PipelineOptions`` class declares pass; anything else is an error that names the closest valid
option, never silently handed to Beam (where it would mean nothing).
"""
from __future__ import annotations

import functools

from tworec.settings import closest


@functools.lru_cache(maxsize=1)
def _beam_parser():
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    seen, pending = set(), list(PipelineOptions.__subclasses__())
    while pending:  # every options class, subclasses of subclasses too
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending += cls.__subclasses__()
        try:
            cls._add_argparse_args(parser)
        except Exception:  # noqa: BLE001 - a class re-declaring another's option: its own are already in
            pass
    return parser


def beam_option_names() -> list:
    return [s for action in _beam_parser()._actions for s in action.option_strings if s.startswith("--")]


def unknown_options(extra, own_flags) -> list:
    """[(option, suggestion)] for each of ``extra`` that is no Beam option; ``own_flags`` are the
    command's own, offered as suggestions too."""
    _, unknown = _beam_parser().parse_known_args(list(extra))
    candidates = list(own_flags) + beam_option_names()
    return [(option, closest(option.split("=")[0], candidates)) for option in unknown if option.startswith("-")] + \
        [(value, " (a value with no option before it)") for value in unknown if not value.startswith("-")]
