"""Settings declared once.

A stage's typed config dataclass is the single source of its settings: each field carries its
default and a one-line reason (``setting``), and everything else is derived from it:

- command-line flags (``add_flags`` / ``from_flags``), ``--name-with-dashes`` per field, nested
  configs (``section``) flattened with their prefix;
- the generic override ``section.field=value`` (``override``), which reaches any field of a
  config tree, e.g. ``retrieval.temperature=0.1`` from ``tworec pipeline --set``;
- saved configs (``to_dict`` / ``from_dict``), as stored beside every trained artifact.

So adding a setting is one edit: a field with its default and help. Nothing here imports more
than the standard library.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import types
import typing

from tworec.errors import UserError


class SettingError(UserError, ValueError):
    """An unknown setting or a value that does not parse; the message says what would fix it."""


def setting(default, help: str, *, choices=None, parse=None, flag: bool = True, required: bool = False):
    """A config field: its default and its one-line help.

    ``choices``: the allowed values (checked by ``check``). ``parse``: text → value, for types
    the annotation alone cannot parse (e.g. ``"0,10"`` → a range). ``flag=False``: no command-line
    flag (the field is still reachable through ``override``). ``required``: the flag must be given
    (a path with no sensible default)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "parse": parse, "flag": flag,
            "required": required}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls, help: str, prefix: str = ""):
    """A nested config (a dataclass of its own), flattened into flags named ``prefix`` + field."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "section": cls, "prefix": prefix})


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _is_section(f: dataclasses.Field) -> bool:
    return "section" in f.metadata


def _unwrap_optional(tp):
    """(inner type, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def parse_value(cls, name: str, text: str):
    """The value of ``cls``'s field ``name`` from its text form (flags and overrides)."""
    f = next(x for x in dataclasses.fields(cls) if x.name == name)
    if f.metadata.get("parse"):
        return f.metadata["parse"](text)
    tp, optional = _unwrap_optional(_hints(cls)[name])
    if optional and text.strip().lower() in ("", "none", "null"):
        return None
    return _parse_typed(tp, text, f"{cls.__name__}.{name}")


def _parse_typed(tp, text: str, where: str):
    try:
        if tp is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if tp in (int, float, str):
            return tp(text)
        if typing.get_origin(tp) is tuple or tp is tuple:
            args = typing.get_args(tp)
            element = args[0] if args else str
            return tuple(_parse_typed(element, part.strip(), where) for part in text.split(",") if part.strip())
    except ValueError:
        raise SettingError(f"{where}: cannot read {text!r} as {getattr(tp, '__name__', tp)}") from None
    raise SettingError(f"{where}: no parser for type {tp}")


def _format(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _dest(prefix: str, name: str) -> str:
    return (prefix + name).replace("-", "_")


def flag_names(cls, prefix: str = "") -> list:
    """Every flag ``add_flags`` derives from ``cls``."""
    out = []
    for f in dataclasses.fields(cls):
        if _is_section(f):
            out += flag_names(f.metadata["section"], prefix + f.metadata["prefix"])
        elif f.metadata.get("flag", True) and "help" in f.metadata:
            out.append(_flag(prefix, f.name))
    return out


def add_flags(parser, cls, prefix: str = "", defaults=None, title: str | None = None):
    """Adds one flag per field of ``cls`` (recursively through sections). ``defaults``: an instance
    whose values become the flags' defaults (``cls()`` when omitted)."""
    defaults = defaults if defaults is not None else cls()
    group = parser.add_argument_group(title) if title else parser
    for f in dataclasses.fields(cls):
        if _is_section(f):
            add_flags(parser, f.metadata["section"], prefix + f.metadata["prefix"], getattr(defaults, f.name),
                      title=f.metadata["help"])
            continue
        if not f.metadata.get("flag", True) or "help" not in f.metadata:
            continue
        value = getattr(defaults, f.name)
        tp, _ = _unwrap_optional(_hints(cls)[f.name])
        help_text = f.metadata["help"]
        common = dict(dest=_dest(prefix, f.name), default=value)
        if f.metadata.get("required"):
            common["required"] = True
        if tp is bool and not f.metadata.get("parse"):
            group.add_argument(_flag(prefix, f.name), action=argparse.BooleanOptionalAction,
                               help=f"{help_text} (default: {value})", **common)
            continue
        choices = f.metadata.get("choices")
        group.add_argument(_flag(prefix, f.name), type=functools.partial(_checked_parse, cls, f.name),
                           metavar=("{" + ",".join(map(str, choices)) + "}") if choices else None,
                           help=f"{help_text} (default: {_format(value) if value is not None else 'none'})",
                           **common)


def _checked_parse(cls, name, text):
    try:
        value = parse_value(cls, name, text)
    except SettingError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    choices = next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("choices")
    if choices and value not in choices:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(str, choices))}")
    return value


def from_flags(cls, namespace, prefix: str = "", base=None):
    """The config ``add_flags(parser, cls, prefix)`` describes, read back from parsed flags;
    fields without a flag keep ``base``'s values (``cls()`` when omitted)."""
    base = base if base is not None else cls()
    values = {}
    for f in dataclasses.fields(cls):
        if _is_section(f):
            values[f.name] = from_flags(f.metadata["section"], namespace, prefix + f.metadata["prefix"],
                                        getattr(base, f.name))
        elif hasattr(namespace, _dest(prefix, f.name)):
            values[f.name] = getattr(namespace, _dest(prefix, f.name))
        else:
            values[f.name] = getattr(base, f.name)
    return cls(**values)


def paths(cls, prefix: str = "") -> list:
    """Every dotted field path of a config tree, e.g. ``retrieval.temperature``."""
    out = []
    for f in dataclasses.fields(cls):
        if _is_section(f):
            out += paths(f.metadata["section"], f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def closest(name: str, candidates) -> str:
    """`` (did you mean X?)`` for the candidate nearest ``name``, or ''."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {match[0]}?)" if match else ""


def override(config, assignment: str):
    """``config`` with one field set from ``path=value`` text (``retrieval.temperature=0.1``)."""
    path, sep, text = assignment.partition("=")
    path = path.strip()
    if not sep:
        raise SettingError(f"--set takes path=value, got {assignment!r}")
    known = paths(type(config))
    if path not in known:
        raise SettingError(f"unknown setting {path!r}{closest(path, known)}")
    return _replace_path(config, path.split("."), text)


def _replace_path(config, parts, text):
    name = parts[0]
    if len(parts) > 1:
        return dataclasses.replace(config, **{name: _replace_path(getattr(config, name), parts[1:], text)})
    value = parse_value(type(config), name, text)
    return dataclasses.replace(config, **{name: value})


def check(config) -> None:
    """Raises SettingError for a field whose value is outside its declared choices."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices and value not in choices:
            raise SettingError(f"{type(config).__name__}.{f.name} must be one of "
                               f"{', '.join(map(str, choices))}, not {value!r}")


def to_dict(config) -> dict:
    """A config tree as plain JSON-ready values (tuples become lists)."""
    return json_ready(dataclasses.asdict(config))


def json_ready(value):
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def from_dict(cls, values: dict):
    """The config ``to_dict`` wrote. Unknown keys are an error: a saved config is read by the
    format version that wrote it."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SettingError(f"{cls.__name__} has no setting {unknown[0]!r}{closest(unknown[0], fields)}")
    out = {}
    for name, value in values.items():
        f = fields[name]
        if _is_section(f):
            out[name] = from_dict(f.metadata["section"], value)
            continue
        tp, _ = _unwrap_optional(_hints(cls)[name])
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = tp(**value)
        elif (typing.get_origin(tp) is tuple or tp is tuple) and isinstance(value, list):
            value = tuple(value)
        out[name] = value
    return cls(**out)
