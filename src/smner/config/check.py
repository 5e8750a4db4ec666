"""Checking config values against their dataclass: types from the annotations, ranges from
the field metadata, unknown keys with a suggestion, and errors naming where a value came from
(a file or a ``--set`` item). Knows no particular config; :mod:`smner.config.experiment` declares
them."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, Literal, TypeVar, get_args, get_origin

from smner.errors import SmnerError

T = TypeVar("T")


class ConfigError(SmnerError):
    """A configuration value is unknown, missing, of the wrong type or out of range."""


def bounds(
    low: float | None = None,
    high: float | None = None,
    *,
    high_open: bool = False,
    check: Callable[[Any], str | None] | None = None,
) -> dict[str, Any]:
    """Field metadata: the closed range ``[low, high]`` (``[low, high)`` with ``high_open``)
    and an optional ``check(value) -> problem``, enforced by :func:`field_problem`."""
    return {"low": low, "high": high, "high_open": high_open, "check": check}


def ranged(default: Any, low: float | None, high: float | None = None, **kw: Any) -> Any:
    """A dataclass field with a default and the range :func:`bounds` describes."""
    return field(default=default, metadata=bounds(low, high, **kw))


def field_problem(f: dataclasses.Field, value: Any) -> str | None:
    """Why ``value`` is out of ``f``'s range (see :func:`bounds`), or None if it is not."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    meta = f.metadata
    check = meta.get("check")
    if check is not None and value is not None:
        problem = check(value)
        if problem:
            return f"{value!r}: {problem}" if not isinstance(value, list | dict) else problem
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if low is not None and value < low:
            above = f"at least {low}"
            return f"{value!r} is out of range: expected {above}" + (
                f" and {'below' if meta['high_open'] else 'at most'} {high}"
                if high is not None
                else ""
            )
        if high is not None and (value >= high if meta["high_open"] else value > high):
            bound = f"below {high}" if meta["high_open"] else f"at most {high}"
            return f"{value!r} is out of range: expected {bound}"
    return None


def check_fields(config: Any, section: str) -> None:
    """Raise :class:`ConfigError` naming ``section.key`` for the first field out of range."""
    for f in dataclasses.fields(config):
        problem = field_problem(f, getattr(config, f.name))
        if problem:
            raise ConfigError(f"{section}.{f.name}: {problem}")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


class _Where:
    """Where the values being checked came from: a file (or "config") and ``--set`` items."""

    def __init__(self, source: str | None, origins: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.origins = dict(origins or {})

    def error(self, key: str, problem: str) -> ConfigError:
        """``SOURCE: key: problem``, SOURCE being the ``--set`` item that gave ``key``, if any."""
        origin = self.source
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in self.origins:
                origin = self.origins[".".join(parts[:n])]
                break
        return ConfigError(f"{origin}: {key}: {problem}" if origin else f"{key}: {problem}")


def _join(prefix: str, key: object) -> str:
    """``prefix.key``; a key that is not a plain word is shown quoted (it may hold a newline)."""
    name = key if isinstance(key, str) and key.isprintable() and key.strip() == key else repr(key)
    return f"{prefix}.{name}" if prefix else str(name)


def _check_type(value: Any, annotation: Any, key: str, where: _Where) -> Any:
    """Validate (and gently coerce int -> float) one value against its annotation."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, key, where)
            except ConfigError:
                continue
        names = " or ".join(
            "null" if o is type(None) else getattr(o, "__name__", str(o)) for o in options
        )
        raise where.error(key, f"expected {names}, got {value!r}")
    if origin is Literal:
        if value not in get_args(annotation):
            choices = ", ".join(map(repr, get_args(annotation)))
            raise where.error(key, f"{value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise where.error(key, f"expected a list, got {value!r}")
        (item_type,) = get_args(annotation) or (Any,)
        return [_check_type(v, item_type, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise where.error(key, f"expected a mapping, got {value!r}")
        key_type, value_type = get_args(annotation) or (Any, Any)
        return {
            _check_type(k, key_type, f"{key} (a key)", where): _check_type(
                v, value_type, _join(key, k), where
            )
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(annotation):
        return _from_dict(annotation, value, key, where)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept what Python reads as a number.
        try:
            return float(value)
        except ValueError:
            raise where.error(key, f"expected a number, got {value!r}") from None
    if annotation is bool and not isinstance(value, bool):
        raise where.error(key, f"expected true or false, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise where.error(key, f"expected an integer, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        noun = {int: "an integer", float: "a number", str: "a string"}.get(
            annotation, annotation.__name__
        )
        raise where.error(key, f"expected {noun}, got {value!r}")
    return value


def suggest(name: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, known, n=1) if isinstance(name, str) else []
    return f"did you mean {_join(prefix, close[0])}?" if close else ""


def _from_dict(cls: type[T], data: Any, prefix: str, where: _Where) -> T:
    if not isinstance(data, dict):
        raise where.error(prefix or "config", f"expected a mapping, got {data!r}")
    variant_for = getattr(cls, "variant_for", None)  # a config family (one class per type)
    if variant_for is not None:
        cls, data = variant_for(data, where.error, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in data:
        if name not in fields:
            known = sorted(fields)
            hint = suggest(name, known, prefix) or f"known keys: {', '.join(known)}"
            raise where.error(_join(prefix, name), f"unknown key; {hint}")
    values = {}
    for name, value in data.items():
        key = _join(prefix, name)
        checked = _check_type(value, hints[name], key, where)
        problem = field_problem(fields[name], checked)
        if problem:
            raise where.error(key, problem)
        values[name] = checked
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where.source}: {exc}" if where.source else str(exc)) from None
    except TypeError as exc:
        raise where.error(prefix or "config", str(exc)) from None


def from_dict(
    cls: type[T],
    data: Any,
    where: str = "",
    source: str | None = None,
    origins: Mapping[str, str] | None = None,
) -> T:
    """Build a config dataclass from a mapping; unknown keys, wrong types and values out of
    range are errors naming the key (``where`` is its prefix, e.g. ``model``), the ``source``
    (a file name) and, for keys in ``origins``, the ``--set`` item that gave them."""
    return _from_dict(cls, data, where, _Where(source, origins))
