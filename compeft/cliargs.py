"""The one argparse helper of every ``compeft`` command: a parser that raises one-line usage errors (exit
code 2) instead of exiting, and flags generated from a configuration dataclass (``compeft.config``), so a
new option is one field: its help text, choices and type come from the field."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from compeft.config import field_types
from compeft.errors import OptionError


class UsageError(OptionError):
    """Bad command-line usage (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so usage errors are one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def floats(text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers (ranges are the configuration's to check)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def flag(name: str) -> str:
    """The command-line flag of a field."""
    return "--" + name.replace("_", "-")


def _plain(annotation: Any) -> Any:
    """The annotation without ``| None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def _shown(value: Any) -> str:
    return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else str(value)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: Iterable[str] = (),
                         defaults: Mapping[str, Any] | None = None, required: Iterable[str] = ()) -> list[str]:
    """One flag per field of the configuration class ``cls`` (except ``skip``); returns the fields added.

    ``defaults`` replaces a field's default on this command (None: the option was not given); fields without a
    default, and those in ``required``, are required."""
    hints, defaults, required = field_types(cls), dict(defaults or {}), set(required)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = _plain(hints[f.name])
        options: dict[str, Any] = {"dest": f.name, "help": f.metadata["help"]}
        if typing.get_origin(kind) is tuple:
            options.update(type=floats, metavar="X,Y,...")
        else:
            options["type"] = kind
        if f.metadata.get("choices"):
            options["choices"] = f.metadata["choices"]
        default = defaults.get(f.name, f.default)
        if default is dataclasses.MISSING or f.name in required:
            options["required"] = True
        else:
            options["default"] = default
            if default is not None:
                options["help"] += f" (default {_shown(default)})"
        parser.add_argument(flag(f.name), **options)
        added.append(f.name)
    return added


def config_from_args(cls: type, args: argparse.Namespace, names: Iterable[str], **overrides: Any):
    """The configuration object of the parsed flags ``names`` (values None fall back to the field default);
    an invalid value is an OptionError naming its flag."""
    values = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    values.update(overrides)
    try:
        return cls(**values)
    except OptionError as err:
        message = str(err)
        if err.field and message.startswith(err.field):
            raise OptionError(flag(err.field) + message[len(err.field):], err.field) from err
        raise
