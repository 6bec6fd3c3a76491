"""Parameter ranges declared beside the parameter (``Annotated[float, Ge(0)]``) are enforced
before anything is built: a value just outside a bound is a ConfigError naming its config key."""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from importlib.metadata import entry_points
from typing import Annotated, Any, Union

import annotated_types as at
import pytest

from clframe.config import compose, validate
from clframe.config.registry import REGISTRIES, check_params, signature_params
from clframe.errors import ConfigError

# bound class -> its attribute and the side of the bound a value falls outside on
_BOUNDS = {at.Ge: ("ge", -1), at.Gt: ("gt", 0), at.Le: ("le", 1), at.Lt: ("lt", 0)}


def _builtins() -> list[tuple[str, str, Any]]:
    """``(kind, name, constructor)`` of every component shipped with clframe (no plug-in entry points)."""
    out = []
    for kind, reg in REGISTRIES.items():
        plugins = {ep.name for ep in entry_points(group=reg.group)}
        for name in reg.names():
            if name in plugins:
                continue
            fn = reg.get(name)
            if getattr(fn, "__module__", "").startswith(reg.package + "."):
                out.append((kind, name, fn))
    return out


def _bounded(tp: Any) -> tuple[type, list[Any], bool] | None:
    """``(base type, numeric bounds, inside a list)`` of the bounded arm of annotation ``tp``, or None."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        meta = [m for g in args[1:] for m in (g if isinstance(g, at.GroupedMetadata) else [g])]
        bounds = [m for m in meta if type(m) in _BOUNDS]
        return (args[0], bounds, False) if bounds else None
    if origin in (Union, types.UnionType):
        return next((b for a in args if (b := _bounded(a)) is not None), None)
    if origin in (list, tuple, collections.abc.Sequence) and len(args) == 1:
        inner = _bounded(args[0])
        return None if inner is None else (inner[0], inner[1], True)
    return None


def _outside(base: type, bound: Any) -> int | float:
    """The value of type ``base`` closest to ``bound`` that breaks it."""
    attr, side = _BOUNDS[type(bound)]
    b = getattr(bound, attr)
    if base is int:
        return {"ge": math.ceil(b) - 1, "gt": math.floor(b), "le": math.floor(b) + 1, "lt": math.ceil(b)}[attr]
    return math.nextafter(float(b), side * math.inf) if side else float(b)


def _cases() -> list[Any]:
    cases = []
    for kind, name, fn in _builtins():
        for param, p in signature_params(fn, REGISTRIES[kind].provided).items():
            if (found := _bounded(p.annotation)) is not None:
                cases.append(pytest.param(kind, name, param, found, id=f"{kind}:{name}:{param}"))
    return cases


CASES = _cases()


def _defaults(kind: str, fn: Any) -> dict[str, Any]:
    params = signature_params(fn, REGISTRIES[kind].provided)
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize(("kind", "name", "param", "found"), CASES)
def test_a_value_just_outside_a_bound_is_rejected_and_the_default_passes(kind, name, param, found):
    reg = REGISTRIES[kind]
    fn, prefix = reg.get(name), reg.config_key(name)
    defaults = _defaults(kind, fn)
    check_params(prefix, name, fn, defaults, reg.provided)  # the defaults are inside every bound
    base, bounds, in_list = found
    key = f"'{prefix}.{param}[0]'" if in_list else f"'{prefix}.{param}'"
    bad_values = [_outside(base, b) for b in bounds] + ([math.nan] if base is float else [])
    for bad in bad_values:
        with pytest.raises(ConfigError) as e:
            check_params(prefix, name, fn, {**defaults, param: [bad] if in_list else bad}, reg.provided)
        assert key in str(e.value), f"{param}={bad!r}: {e.value}"


def test_the_guard_sees_the_bounds_of_the_builtins():
    ids = {c.id for c in CASES}
    assert {"strategy:ewc:ewc_lambda", "backbone:mlp:hidden", "head:kalman:noise_var",
            "scenario:parity:threshold", "hypernet:hnet_mlp:chunk_size"} <= ids


@pytest.mark.parametrize(("kind", "name"), [pytest.param(k, n, id=f"{k}:{n}") for k, n, _ in _builtins()])
def test_every_builtin_signature_resolves(kind, name):
    # an unresolvable annotation (e.g. Ge imported under TYPE_CHECKING) silently drops every check
    fn = REGISTRIES[kind].get(name)
    typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn, include_extras=True)


# -- end to end, through the composed config ----------------------------------------------

def _config_error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        validate(compose(overrides))
    return str(e.value)


def test_a_negative_ewc_lambda_names_its_key():
    assert "'strategies.ewc.ewc_lambda' must be >= 0, got -100" in _config_error(
        ["strategy=ewc", "strategies.ewc.ewc_lambda=-100"])


def test_a_zero_width_layer_names_its_element():
    assert "'backbone.hidden[0]' must be >= 1, got 0" in _config_error(["backbone.hidden=[0]"])


def test_a_negative_learning_rate_names_its_key():
    assert "'train.lr' must be >= 0, got -0.1" in _config_error(["train.lr=-0.1"])


def test_the_defaults_and_in_range_values_validate():
    validate(compose(["strategy=ewc", "strategies.ewc.ewc_lambda=0", "backbone.hidden=[1]", "train.lr=0"]))
