"""Arguments checked where they enter the library, as the command line checks its options at parse time:
a config dataclass's fields when it is made (`check_fields`, from each one's `__post_init__`), a library
call's arguments when it is called (`checked`, on the five calls of api.py). A value is checked against
its annotation: its type (a bool is True or False, never "no"; an int is a whole number; a float a
finite number; a path a str or os.PathLike; a tuple or list of them) and, for `Annotated[T, Within(...)]`
or `Annotated[str, OneOf(...)]`, its range or choices. A wrong one is one ArgumentError naming the
argument, its value and what it takes (STAMP's pydantic fields validate on construction; these are
their plain-dataclass form).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import numbers
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from hist2rna_tf.errors import ArgumentError


@dataclass(frozen=True)
class Within:
    """A numeric range: [low, high], either end open (excluded) or absent (None)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {low}"
        if self.low is None:
            return f"{'below' if self.high_open else 'at most'} {high}"
        if not (self.low_open or self.high_open):
            return f"{low} to {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _number(value) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else f"{value}"


@dataclass(frozen=True)
class OneOf:
    """A text taking one of `choices`."""

    choices: tuple[str, ...]

    def admits(self, value) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))


def at_least(low: float) -> Within:
    return Within(low)


def above(low: float) -> Within:
    return Within(low, low_open=True)


# The annotations the configs and calls share.
PositiveInt = Annotated[int, at_least(1)]
Count = Annotated[int, at_least(0)]
PositiveFloat = Annotated[float, above(0)]
OpenFraction = Annotated[float, Within(0, 1, low_open=True, high_open=True)]
Fraction = Annotated[float, Within(0, 1, low_open=True)]
PathLike = Annotated[str | Path, "a path (str or pathlib.Path)"]  # any os.PathLike passes as a Path


def takes(annotation) -> str:
    """What an annotation admits, in words (an Annotated's text, where it has one)."""
    described = next((e for e in typing.get_args(annotation)[1:] if isinstance(e, str)), None) \
        if typing.get_origin(annotation) is Annotated else None
    if described:
        return described
    annotation, limits = unwrapped(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(takes(arg) for arg in args))
    shown = _NAMES.get(annotation) or (f"a {annotation.__name__}" if isinstance(annotation, type) else str(annotation))
    if origin in (tuple, list):
        element = args[0] if args else Any
        shown = f"a {origin.__name__} of {_plural(takes(element))}"
    elif origin is dict:
        shown = "a dict"
    if isinstance(limits, OneOf):
        return str(limits)
    return f"{shown} {limits}" if limits is not None else shown


_NAMES = {bool: "True or False", int: "a whole number", float: "a finite number", str: "text", Path: "a path",
          type(None): "None", Any: "anything"}


def _plural(words: str) -> str:
    return {"text": "text", "a path": "paths", "a whole number": "whole numbers",
            "a finite number": "finite numbers"}.get(words, words)


def unwrapped(annotation):
    """(the type, its Within/OneOf or None) of an annotation, Annotated or not."""
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
        limits = next((e for e in extras if isinstance(e, (Within, OneOf))), None)
        return base, limits
    return annotation, None


def fits(annotation, value) -> bool:
    """Whether `value` is of `annotation`'s type and within its range."""
    annotation, limits = unwrapped(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(fits(arg, value) for arg in args)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        element = args[0] if args else Any
        return all(fits(element, v) for v in value)
    if origin is dict:
        values = args[1] if args else Any
        return isinstance(value, dict) and all(fits(values, v) for v in value.values())
    if not _of_type(annotation, value):
        return False
    return limits is None or limits.admits(value)


def _of_type(kind, value) -> bool:
    if kind is Any:
        return True
    if kind is bool:
        return isinstance(value, (bool, _numpy_bool()))
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if kind is Path:
        return isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes)
    if kind is type(None):
        return value is None
    return isinstance(value, kind) if isinstance(kind, type) else True


def _numpy_bool():
    import numpy as np

    return np.bool_


def refusal(owner: str, name: str, value, annotation) -> ArgumentError:
    """The one error of an argument that does not fit: its owner, name, value, and what it takes."""
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    hint = ""
    sequence = [a for a in _alternatives(annotation) if typing.get_origin(a) in (tuple, list)]
    if isinstance(value, (str, Path)) and sequence:
        one = (value,) if typing.get_origin(sequence[0]) is tuple else [value]
        hint = f"; for one: {name}={one!r}"
    configs = [a for a in _alternatives(annotation) if dataclasses.is_dataclass(a)]
    if isinstance(value, dict) and configs:
        hint = f"; make one: {name}={configs[0].__name__}({', '.join(f'{k}={v!r}' for k, v in value.items())})"
    return ArgumentError(f"{owner}({name}={shown}): takes {takes(annotation)}{hint}.")


def check(owner: str, name: str, annotation, value) -> None:
    if not fits(annotation, value):
        raise refusal(owner, name, value, annotation)


@functools.lru_cache(maxsize=None)
def _hints(kind) -> dict:
    return typing.get_type_hints(kind, include_extras=True)


def check_fields(instance) -> None:
    """Each field of a dataclass instance checked against its annotation (a list given for a tuple field
    is kept as the tuple the field holds); the first that does not fit is an ArgumentError."""
    hints = _hints(type(instance))
    owner = type(instance).__name__
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        annotation = hints[field.name]
        if isinstance(value, list) and _wants_tuple(annotation):
            value = tuple(value)  # the tuple the field holds
            object.__setattr__(instance, field.name, value)
        elif isinstance(value, os.PathLike) and not fits(annotation, value) and fits(annotation, os.fspath(value)):
            value = os.fspath(value)  # a path given where the field keeps its text
            object.__setattr__(instance, field.name, value)
        check(owner, field.name, annotation, value)


def _alternatives(annotation) -> list:
    """The types an annotation admits (a Union's members, each unwrapped of Annotated)."""
    base = unwrapped(annotation)[0]
    members = typing.get_args(base) if typing.get_origin(base) in (typing.Union, types.UnionType) else (base,)
    return [unwrapped(a)[0] for a in members]


def _wants_tuple(annotation) -> bool:
    return any(typing.get_origin(a) is tuple for a in _alternatives(annotation))


def check_keywords(owner: str, kind: type, values: dict, own: tuple[str, ...]) -> None:
    """`values` (a call's **keywords) checked as fields of dataclass `kind`, in the name of `owner`: an
    unknown name, or a value that does not fit its field, is an ArgumentError (`own`: the call's own
    arguments, for the message)."""
    hints = _hints(kind)
    names = [f.name for f in dataclasses.fields(kind) if f.name not in own]
    for name, value in values.items():
        if name not in names:
            close = difflib.get_close_matches(name, [*own, *names], n=1)
            meant = f" (did you mean {close[0]}?)" if close else ""
            raise ArgumentError(f"{owner}({name}=...): no such argument{meant}; {owner} takes {', '.join(own)} and "
                                f"{', '.join(names)}.")
        check(owner, name, hints[name], value)  # a list for a tuple fits: the dataclass keeps it as one


def checked(function):
    """`function` with each argument checked against its parameter's annotation before it runs (its
    **keywords are the function's own to check)."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentError(f"{function.__name__}(): {exc}; see help(hist2rna_tf.{function.__name__}).") from None
        hints = _hints(function)
        for name, value in bound.arguments.items():
            parameter = signature.parameters[name]
            if parameter.kind is not parameter.VAR_KEYWORD and name in hints:
                check(function.__name__, name, hints[name], value)
        return function(*args, **kwargs)

    return call
