"""Check plain config values against type annotations, with readable type names.

Ranges are declared once, beside the parameter they constrain, with ``annotated_types``
metadata in ``Annotated``: ``lr: Annotated[float, Ge(0)] = 0.05`` or
``hidden: Sequence[Annotated[int, Ge(1)]] = (256,)``. ``matches`` checks the type and
``violations`` the bounds, so every component and run setting gets them for free.
"""

from __future__ import annotations

import collections.abc
import math
import types
import typing
from typing import Annotated, Any, Literal, Union

import annotated_types as at

_BOUNDS = ((at.Ge, "ge", ">="), (at.Gt, "gt", ">"), (at.Le, "le", "<="), (at.Lt, "lt", "<"))


def _metadata(meta: tuple[Any, ...]) -> list[Any]:
    """The flat list of ``Annotated`` metadata (``Interval`` expands into its bounds)."""
    out: list[Any] = []
    for m in meta:
        out += list(m) if isinstance(m, at.GroupedMetadata) else [m]
    return out


def _describe_bound(m: Any) -> str | None:
    for cls, attr, op in _BOUNDS:
        if isinstance(m, cls):
            return f"{op} {getattr(m, attr)}"
    if isinstance(m, at.MinLen):
        return f"at least {m.min_length} long"
    if isinstance(m, at.MaxLen):
        return f"at most {m.max_length} long"
    return None


def _breaks(value: Any, m: Any) -> bool:
    """True if ``value`` violates bound ``m`` (NaN violates every numeric bound)."""
    for cls, attr, _ in _BOUNDS:
        if isinstance(m, cls) and isinstance(value, int | float) and not isinstance(value, bool):
            bound = getattr(m, attr)
            ok = {"ge": value >= bound, "gt": value > bound, "le": value <= bound, "lt": value < bound}[attr]
            return not ok or (isinstance(value, float) and math.isnan(value))
    if isinstance(m, at.MinLen) and hasattr(value, "__len__"):
        return len(value) < m.min_length
    if isinstance(m, at.MaxLen) and hasattr(value, "__len__"):
        return len(value) > m.max_length
    return False


def violations(value: Any, tp: Any, key: str) -> list[str]:
    """The ``Annotated`` bounds of ``tp`` that ``value`` (which ``matches`` ``tp``) breaks, one sentence
    each naming ``key`` (``key[i]`` for a list element), e.g. ``'train.lr' must be >= 0, got -0.1.``"""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        bad = [d for m in _metadata(args[1:]) if _breaks(value, m) and (d := _describe_bound(m))]
        out = [f"'{key}' must be {' and '.join(bad)}, got {value!r}."] if bad else []
        return out + violations(value, args[0], key)
    if origin in (Union, types.UnionType):
        arm = next((a for a in args if matches(value, a)), None)
        return [] if arm is None else violations(value, arm, key)
    if isinstance(value, list | tuple) and args and (origin in (list, tuple, collections.abc.Sequence)):
        fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
        return [v for i, x in enumerate(value) for v in violations(x, args[i] if fixed else args[0], f"{key}[{i}]")]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return [v for k, x in value.items() for v in violations(x, args[1], f"{key}.{k}")]
    return []


def type_name(tp: Any) -> str:
    """A short human name for an annotation, e.g. ``list[int] | None``."""
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin is Annotated:
        args = typing.get_args(tp)
        bounds = [d for m in _metadata(args[1:]) if (d := _describe_bound(m))]
        return type_name(args[0]) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def matches(value: Any, tp: Any) -> bool:
    """True if ``value`` (a plain Python container, not OmegaConf) fits annotation ``tp``.

    ints are accepted where floats are expected; bools are not accepted as numbers.
    """
    if tp is Any or tp is typing.Any:
        return True
    if tp is type(None) or tp is None:
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        return matches(value, args[0])
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(args) == len(value) and all(matches(v, a) for v, a in zip(value, args))
        return all(matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True
