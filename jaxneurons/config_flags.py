"""absl flags generated from a frozen config dataclass: one source of truth for every default.

A study or component declares its settings once, as a frozen dataclass whose defaults are the paper's values;
launchers and commands derive their flags from it instead of re-declaring them::

    @dataclasses.dataclass(frozen=True)
    class HeadsConfig:
        layer: int = -1
        thresholds: tuple[float, ...] = (0.0, 0.0, 0.0)
        normalize: str = field_help("raw", "raw | zscore", choices=("raw", "zscore"))

    define_config_flags(HeadsConfig)                 # --layer, --thresholds, --normalize (defaults from the class)
    config = config_from_flags(HeadsConfig)          # the dataclass, with the values given on the command line

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``X | None`` of those (an empty string on the
command line means ``None``), ``tuple[T, ...]`` / ``list[T]`` (comma lists) and nested config dataclasses
(their fields become ``PREFIX_NAME`` flags). Help text comes from ``field_help`` metadata; a field without it
is described by its name. Fields listed in ``skip`` get no flag (the caller sets them).

Flags are registered as key flags of the program's main module, so ``--help`` lists them with their defaults.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Iterable
from typing import Any

from absl import flags

_HELP = "help"
_CHOICES = "choices"


def field_help(default: Any, help: str, *, choices: Iterable[str] | None = None) -> Any:
    """A dataclass field with a default and the help text of its flag (and allowed values for a str)."""
    metadata = {_HELP: help}
    if choices is not None:
        metadata[_CHOICES] = tuple(choices)
    if isinstance(default, list | dict | set):
        raise TypeError("use an immutable default (tuple) for a frozen config field")
    return dataclasses.field(default=default, metadata=metadata)


def _caller_module(depth: int = 2) -> str:
    name = sys._getframe(depth).f_globals.get("__name__", "__main__")
    return sys.argv[0] if name == "__main__" else name


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _sequence_item(tp: Any) -> Any | None:
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if not args:
            return str
        if len(set(args)) != 1:
            raise TypeError(f"sequence fields must hold one type, got {tp}")
        return args[0]
    return None


def _resolved_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"config field {f.name!r} has no default; set it through skip=... and the caller")


def _help(f: dataclasses.Field, default: Any) -> str:
    text = f.metadata.get(_HELP, f.name.replace("_", " "))
    return text


def define_config_flags(
    cls: type,
    *,
    prefix: str = "",
    skip: Iterable[str] = (),
    defaults: Any | None = None,
    flag_values: flags.FlagValues = flags.FLAGS,
    module_name: str | None = None,
) -> list[str]:
    """Define one absl flag per field of ``cls`` (recursively for nested configs); returns the flag names.

    ``defaults`` (an instance of ``cls``) overrides the class defaults, e.g. a launcher's smaller corpus; the
    values still come from one place, the instance the caller passes.
    """
    module_name = module_name or _caller_module()
    skip = set(skip)
    names: list[str] = []
    for f, tp in _resolved_fields(cls):
        if f.name in skip:
            continue
        name = f"{prefix}{f.name}"
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        inner, optional = _unwrap_optional(tp)
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            names += define_config_flags(inner, prefix=f"{name}_", defaults=default, flag_values=flag_values,
                                         module_name=module_name)
            continue
        help_ = _help(f, default)
        kw = {"flag_values": flag_values, "module_name": module_name}
        item = _sequence_item(inner)
        if item is not None:
            value = None if default is None else [str(v) for v in default]
            flags.DEFINE_list(name, value, help_, **kw)
        elif inner is bool:
            flags.DEFINE_bool(name, default, help_, **kw)
        elif optional:
            # Optional scalars are strings on the command line: '' (the default when None) means None.
            flags.DEFINE_string(name, "" if default is None else str(default), help_ + " (empty: none)", **kw)
        elif inner is int:
            flags.DEFINE_integer(name, default, help_, **kw)
        elif inner is float:
            flags.DEFINE_float(name, default, help_, **kw)
        elif inner is str and _CHOICES in f.metadata:
            flags.DEFINE_enum(name, default, list(f.metadata[_CHOICES]), help_, **kw)
        elif inner is str:
            flags.DEFINE_string(name, default, help_, **kw)
        else:
            raise TypeError(f"config field {cls.__name__}.{f.name}: unsupported type {tp} for a flag")
        names.append(name)
    return names


def _convert(value: Any, tp: Any, name: str) -> Any:
    if tp is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"--{name}: expected a boolean, got {value!r}")
    try:
        return tp(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--{name}: cannot read {value!r} as {tp.__name__}") from e


def config_from_flags(
    cls: type,
    *,
    prefix: str = "",
    skip: Iterable[str] = (),
    flag_values: flags.FlagValues = flags.FLAGS,
    **overrides: Any,
) -> Any:
    """The ``cls`` instance described by the flags ``define_config_flags(cls, prefix=prefix)`` defined.

    ``overrides`` set fields directly (those in ``skip``, typically). The dataclass's own ``__post_init__``
    validates the result, so a bad value fails with the config's message.
    """
    skip = set(skip)
    values: dict[str, Any] = {}
    for f, tp in _resolved_fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
            continue
        if f.name in skip:
            continue
        name = f"{prefix}{f.name}"
        inner, optional = _unwrap_optional(tp)
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            values[f.name] = config_from_flags(inner, prefix=f"{name}_", flag_values=flag_values)
            continue
        raw = flag_values[name].value
        item = _sequence_item(inner)
        if item is not None:
            if raw is None:
                values[f.name] = None
            else:
                seq = [_convert(v, item, name) for v in raw]
                values[f.name] = tuple(seq) if typing.get_origin(inner) is tuple else seq
        elif optional and inner is not bool:
            values[f.name] = None if raw in ("", None) else _convert(raw, inner, name)
        else:
            values[f.name] = raw
    return cls(**values)


def register_as_key_flags(module_names: Iterable[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Make the flags defined by ``module_names`` key flags of the main program, so ``--help`` shows them.

    absl's ``--help`` lists only the main module's key flags; commands run through ``jaxneurons COMMAND``
    define theirs in ``jaxneurons.commands.*``.
    """
    main = sys.argv[0]
    for module in module_names:
        for flag in flag_values.get_key_flags_for_module(module):
            flag_values.register_key_flag_for_module(main, flag)
