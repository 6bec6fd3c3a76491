"""Registries for backbones, heads, strategies, scenarios and datasets.

A component is registered three ways, and all three are looked up by ``get``:

- the ``@BACKBONES.register("mlp")`` decorator, in any module of the built-in
  package (every module of the package is imported on first lookup, so adding a
  component is one new file);
- an entry point in the group ``clframe.<kind>s`` of an installed package;
- a dotted path in the config, ``my_pkg.nets:TinyNet`` (or ``my_pkg.nets.TinyNet``).

The constructor signature is the schema: its keyword arguments (minus the ones the
framework supplies, such as a backbone's ``input_shape``) are what the config may set.
A constructor that rejects a value raises ``ParamError`` (or any ``ValueError``);
``Registry.build`` turns it into a ``ConfigError`` that names the config key.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from clframe.config.typecheck import matches, type_name, violations
from clframe.errors import ConfigError, did_you_mean, unknown

# callables asked before a dotted path is imported (clframe.config.trust adds its policy): each may raise
IMPORT_CHECKS: list[Callable[[str], None]] = []


class ParamError(ConfigError):
    """A component's constructor rejects the value of one of its own parameters.

    ``Registry.build`` reports it under the full config key, e.g.
    ``ParamError("mem_size", "must be >= 1, got 0", "Set it to ...")`` from the strategy
    under ``strategies.replay`` becomes ``'strategies.replay.mem_size' must be >= 1, got 0.
    Set it to ...``. Raised outside ``build`` it reads ``'mem_size' must be >= 1, got 0. ...``.

    Args:
        param: the constructor parameter (the last part of the config key).
        problem: what is wrong, as a clause that follows the key (no final period).
        fix: how to fix it, one or more sentences (default none).
    """

    def __init__(self, param: str, problem: str, fix: str = "") -> None:
        self.param, self.problem, self.fix = param, problem, fix
        super().__init__(self.message(param))

    def message(self, key: str) -> str:
        """The error text with ``key`` as the name of the parameter."""
        return f"'{key}' {self.problem}." + (f" {self.fix}" if self.fix else "")


class Registry:
    """Name -> constructor table for one kind of component.

    Args:
        kind: singular name used in messages and config keys, e.g. ``"backbone"``.
        package: dotted name of the package whose modules hold the built-ins.
        provided: constructor arguments the framework passes itself (not configurable).
        plural: plural of ``kind``, which names the entry-point group ``clframe.<plural>``
            (default ``kind + "s"``).
        key: where a component's settings sit in the run config, ``{name}`` standing for
            its name, e.g. ``"strategies.{name}"`` (default ``kind``).
    """

    def __init__(self, kind: str, package: str, provided: tuple[str, ...] = (), plural: str | None = None,
                 key: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self.provided = provided
        self.plural = plural or f"{kind}s"
        self.group = f"clframe.{self.plural}"
        self.key = key or kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register the decorated class or function under ``name``."""

        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            self._items[name] = obj
            obj.registry_name = name  # type: ignore[attr-defined]
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        for ep in entry_points(group=self.group):
            self._items.setdefault(ep.name, _LazyEntryPoint(ep))

    def names(self) -> list[str]:
        """All registered names (built-in and entry points), sorted."""
        self._load()
        return sorted(self._items)

    def get(self, name: str) -> Callable[..., Any]:
        """Return the constructor for ``name``, a registered name or a dotted path."""
        self._load()
        if name in self._items:
            obj = self._items[name]
            if isinstance(obj, _LazyEntryPoint):
                obj = self._items[name] = obj.load(self.kind)
            return obj
        if ":" in name or "." in name:
            return import_dotted(name, self.kind)
        raise unknown(self.kind, name, self._items)

    def params(self, name: str) -> dict[str, inspect.Parameter]:
        """The configurable parameters of ``name`` with their annotations resolved."""
        return signature_params(self.get(name), self.provided)

    def config_key(self, name: str) -> str:
        """The config key of the settings of component ``name`` by default (``key`` with ``{name}``
        filled in), e.g. ``head`` or ``strategies.replay``."""
        return self.key.format(name=name)

    def build(self, name: str, params: dict[str, Any], *, config_key: str | None = None, **provided: Any) -> Any:
        """Validate ``params`` against the signature of ``name`` and construct it.

        A ``ValueError`` the constructor raises (a value it rejects) becomes a ``ConfigError``
        naming the component and ``config_key``; a ``ParamError`` names ``config_key.<param>``.

        Args:
            name: a registered name or a dotted path.
            params: the configurable keyword arguments.
            config_key: where ``params`` sit in the run config, for messages (default
                ``config_key(name)``, e.g. ``strategies.replay``).
            **provided: the arguments the framework supplies (e.g. a head's ``n_classes``).
        """
        fn = self.get(name)
        key = config_key or self.config_key(name)
        check_params(self.kind if key == self.kind else key, name, fn, params, self.provided)
        try:
            return fn(**provided, **params)
        except ParamError as e:
            raise ConfigError(e.message(f"{key}.{e.param}")) from e
        except ConfigError:
            raise
        except ValueError as e:
            reason = str(e).rstrip(". ") or type(e).__name__
            raise ConfigError(
                f"{self.kind} '{name}' cannot be built from the settings under '{key}': {reason}. "
                f"Change them under '{key}' (`clframe list` shows its parameters and their defaults)."
            ) from e


def boundaries_problem(value: Any) -> str | None:
    """What is wrong with a ``scenario.boundaries`` value, or None when it is ``known`` or ``hidden``."""
    if value in ("known", "hidden"):
        return None
    return (f"'scenario.boundaries' must be 'known' (strategies get the experience boundaries) or 'hidden' "
            f"(they do not: task-free training), got {value!r}.")


class ScenarioRegistry(Registry):
    """The scenarios' registry: every scenario also takes ``boundaries`` (``known``, the default, or
    ``hidden``: the built stream gives strategies no experience events, ``Stream.boundary_free``),
    ``validation`` (a fraction of each experience's training data held out and scored on instead of the
    test data) and ``first_experiences`` (only the stream's first experiences) (``clframe.data.holdout``)."""

    def build(self, name: str, params: dict[str, Any], *, config_key: str | None = None, **provided: Any) -> Any:
        from clframe.data.holdout import first_experiences, hold_out, holdout_problem

        params = dict(params)
        boundaries = params.pop("boundaries", "known")
        validation, first = params.pop("validation", 0.0), params.pop("first_experiences", None)
        for problem in (boundaries_problem(boundaries), holdout_problem(validation, first)):
            if problem is not None:
                raise ConfigError(problem)
        scenario = super().build(name, params, config_key=config_key, **provided)
        if boundaries == "hidden":  # evaluation still knows the experiences
            scenario.stream.boundary_free = True
        if first is not None:
            first_experiences(scenario, first)
        return hold_out(scenario, validation)


class _LazyEntryPoint:
    def __init__(self, ep: Any) -> None:
        self.ep = ep

    def load(self, kind: str) -> Callable[..., Any]:
        try:
            return self.ep.load()
        except Exception as e:  # a broken plug-in should say which one it is
            raise ConfigError(f"Entry point '{self.ep.name}' ({self.ep.value}) for {kind}s failed to load: {e}") from e


def import_dotted(path: str, kind: str = "component") -> Callable[..., Any]:
    """Import ``pkg.mod:Name`` or ``pkg.mod.Name`` and return the attribute. Refused (with
    ``clframe.config.trust.UntrustedConfigError``) while a config read from a file is being built and the
    user did not give ``path`` themselves."""
    for check in IMPORT_CHECKS:
        check(path)
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{kind} '{path}': cannot import module '{module_name}' ({e}).") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise ConfigError(
            f"{kind} '{path}': module '{module_name}' has no attribute '{attr}'.{did_you_mean(attr, names)}"
        ) from e


def signature_params(fn: Callable[..., Any], provided: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``fn`` (a class or function) with resolved annotations."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target, include_extras=True)  # keeps Annotated bounds
    except Exception:  # unresolvable annotations: fall back to no type checking
        hints = {}
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in provided or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
    return out


def _accepts(fn: Callable[..., Any], arg: str) -> bool:
    """True if ``fn`` (a class or function) can be called with keyword argument ``arg``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): let the call decide
        return True
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def check_params(
    kind: str, name: str, fn: Callable[..., Any], params: dict[str, Any], provided: tuple[str, ...] = ()
) -> None:
    """Raise ``ConfigError`` if ``params`` does not fit the signature of ``fn``.

    Names the unknown key with the valid keys and the closest match, a missing
    required key, or a value of the wrong type with the expected type.
    """
    schema = signature_params(fn, provided)
    errors = []
    missing = [a for a in provided if not _accepts(fn, a)]
    if missing:
        args = ", ".join(missing)
        errors.append(f"{kind} '{name}' must accept {'the argument' if len(missing) == 1 else 'the arguments'} {args}, "
                      f"which clframe passes to every {kind.split('.')[0]}; add {args} to the signature of "
                      f"{getattr(fn, '__qualname__', name)}.")
    for key, value in params.items():
        if key not in schema:
            valid = ", ".join(schema) or "(none)"
            hint = did_you_mean(key, schema)
            errors.append(f"Unknown key '{kind}.{key}' for {kind} '{name}'.{hint} Valid keys: {valid}.")
            continue
        ann = schema[key].annotation
        if ann is not inspect.Parameter.empty and not matches(value, ann):
            errors.append(f"'{kind}.{key}' must be {type_name(ann)}, got {value!r} ({type(value).__name__}).")
        elif ann is not inspect.Parameter.empty:
            errors += violations(value, ann, f"{kind}.{key}")
    for key, p in schema.items():
        if p.default is inspect.Parameter.empty and key not in params:
            ann = "" if p.annotation is inspect.Parameter.empty else f" ({type_name(p.annotation)})"
            errors.append(f"{kind} '{name}' needs '{kind}.{key}'{ann}.")
    if errors:
        raise ConfigError("\n".join(errors))


BACKBONES = Registry("backbone", "clframe.models.backbones", provided=("input_shape",))
HEADS = Registry("head", "clframe.models.heads", provided=("in_features", "n_classes", "n_tasks"))
STRATEGIES = Registry("strategy", "clframe.strategies", plural="strategies", key="strategies.{name}")
SCENARIOS = ScenarioRegistry("scenario", "clframe.scenarios")
DATASETS = Registry("dataset", "clframe.data.datasets")
HYPERNETS = Registry("hypernet", "clframe.models.hypernets", provided=("target", "n_tasks", "n_classes"))
MONITORS = Registry("monitor", "clframe.monitors", key="monitors.{name}")
REGISTRIES = {r.kind: r for r in (BACKBONES, HEADS, STRATEGIES, SCENARIOS, DATASETS, HYPERNETS, MONITORS)}
