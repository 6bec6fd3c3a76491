"""Registries: register, look up (by name, module discovery or dotted path), describe and
build components, with parameter checks whose messages name the problem."""

from __future__ import annotations

import collections
import sys
import typing
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pytest
from annotated_types import Ge

from clframe.config.registry import BACKBONES, HEADS, STRATEGIES, ParamError, Registry, import_dotted
from clframe.config.typecheck import matches, type_name
from clframe.errors import ConfigError


def make_widget(input_shape: tuple, depth: int, width: int = 4, act: Literal["relu", "tanh"] = "relu",
                sizes: list[int] | None = None) -> dict[str, Any]:
    """A registrable function: ``input_shape`` is supplied by the framework."""
    return {"input_shape": input_shape, "depth": depth, "width": width, "act": act, "sizes": sizes}


@pytest.fixture
def reg() -> Registry:
    r = Registry("thing", "clframe.models.heads", provided=("input_shape",))
    r.register("widget")(make_widget)
    return r


# -- register / get / names ---------------------------------------------------------------

def test_register_and_get_a_function(reg):
    assert reg.get("widget") is make_widget
    assert make_widget.registry_name == "widget"
    assert "widget" in reg.names()
    assert reg.group == "clframe.things"


def test_register_a_class_in_the_real_strategies_registry():
    from clframe.core.strategy import Strategy

    name = f"test_strategy_{uuid.uuid4().hex[:8]}"

    @STRATEGIES.register(name)
    class Mine(Strategy):
        def __init__(self, alpha: float = 0.5, steps: int = 3) -> None:
            self.alpha, self.steps = alpha, steps

    try:
        assert STRATEGIES.get(name) is Mine
        assert name in STRATEGIES.names()
        assert list(STRATEGIES.params(name)) == ["alpha", "steps"]
        s = STRATEGIES.build(name, {"alpha": 2})
        assert isinstance(s, Mine) and (s.alpha, s.steps) == (2, 3)
        with pytest.raises(ConfigError, match=rf"'strategies\.{name}\.steps' must be int, got 2.5 \(float\)"):
            STRATEGIES.build(name, {"steps": 2.5})
    finally:
        STRATEGIES._items.pop(name)
    assert name not in STRATEGIES.names()


def test_builtins_are_discovered_from_their_package():
    assert "mlp" in BACKBONES.names()
    assert {"linear", "multihead"} <= set(HEADS.names())
    assert {"naive", "ewc", "replay"} <= set(STRATEGIES.names())


def test_every_module_of_the_package_is_imported_on_first_lookup(tmp_path, monkeypatch):
    pkg = f"thing_pkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("from clframe.config.registry import Registry\n"
                                                f"REG = Registry('thing', '{pkg}')\n")
    (tmp_path / pkg / "alpha.py").write_text(f"from {pkg} import REG\n\n@REG.register('alpha')\ndef alpha(n: int = 1):"
                                             f"\n    return n\n")
    (tmp_path / pkg / "_private.py").write_text(f"from {pkg} import REG\nREG.register('hidden')(print)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = __import__(pkg)
        assert module.REG._items == {}  # nothing imported yet
        assert module.REG.names() == ["alpha"]  # alpha.py was imported; _private.py was not
        assert module.REG.build("alpha", {"n": 5}) == 5
    finally:
        for m in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
            del sys.modules[m]


def test_unknown_name_lists_the_valid_ones_and_suggests(reg):
    with pytest.raises(ConfigError) as e:
        reg.get("widgte")
    assert str(e.value) == "Unknown thing 'widgte'. Did you mean 'widget'? Valid: widget."


def test_unknown_name_without_a_close_match(reg):
    with pytest.raises(ConfigError) as e:
        reg.get("zzz")
    assert "Did you mean" not in str(e.value)
    assert "Valid: widget" in str(e.value)


def test_dotted_paths_resolve_with_colon_or_dot(reg):
    assert reg.get("collections:OrderedDict") is collections.OrderedDict
    assert reg.get("collections.OrderedDict") is collections.OrderedDict
    assert reg.get("clframe.config.registry:import_dotted") is import_dotted


# -- params -----------------------------------------------------------------------------------

def test_params_is_the_signature_minus_provided_args(reg):
    params = reg.params("widget")
    assert list(params) == ["depth", "width", "act", "sizes"]
    assert params["width"].default == 4
    assert params["depth"].default is params["depth"].empty
    assert params["width"].annotation is int  # annotations resolved, even under `from __future__ import annotations`
    assert params["sizes"].annotation == (list[int] | None)


def test_params_of_a_class_and_of_a_real_backbone():
    params = BACKBONES.params("mlp")
    assert list(params) == ["hidden", "activation", "dropout", "init"]
    assert params["hidden"].annotation == Sequence[Annotated[int, Ge(1)]]  # each width >= 1
    assert params["dropout"].default == 0.0


def test_varargs_are_not_configurable():
    r = Registry("thing", "clframe.models.heads")
    r.register("f")(lambda a=1, *args, **kwargs: a)
    assert list(r.params("f")) == ["a"]


# -- build --------------------------------------------------------------------------------------

def test_build_passes_params_and_provided_args(reg):
    out = reg.build("widget", {"depth": 2, "sizes": [1, 2]}, input_shape=(1, 8, 8))
    assert out == {"input_shape": (1, 8, 8), "depth": 2, "width": 4, "act": "relu", "sizes": [1, 2]}


def test_build_rejects_an_unknown_key(reg):
    with pytest.raises(ConfigError) as e:
        reg.build("widget", {"depth": 1, "widht": 3}, input_shape=(1,))
    msg = str(e.value)
    assert "Unknown key 'thing.widht' for thing 'widget'." in msg
    assert "Did you mean 'width'?" in msg
    assert "Valid keys: depth, width, act, sizes." in msg


def test_build_rejects_a_provided_arg_as_a_config_key(reg):
    with pytest.raises(ConfigError, match="Unknown key 'thing.input_shape'"):
        reg.build("widget", {"depth": 1, "input_shape": (2,)}, input_shape=(1,))


def test_build_rejects_a_wrong_type(reg):
    with pytest.raises(ConfigError) as e:
        reg.build("widget", {"depth": "two"}, input_shape=(1,))
    assert str(e.value) == "'thing.depth' must be int, got 'two' (str)."


def test_build_rejects_a_literal_outside_its_choices(reg):
    with pytest.raises(ConfigError, match=r"'thing.act' must be one of 'relu', 'tanh', got 'gelu'"):
        reg.build("widget", {"depth": 1, "act": "gelu"}, input_shape=(1,))


def test_build_rejects_a_list_with_wrong_items(reg):
    with pytest.raises(ConfigError, match=r"'thing.sizes' must be list\[int\] \| None"):
        reg.build("widget", {"depth": 1, "sizes": [1, "x"]}, input_shape=(1,))


def test_build_names_a_missing_required_param(reg):
    with pytest.raises(ConfigError) as e:
        reg.build("widget", {}, input_shape=(1,))
    assert str(e.value) == "thing 'widget' needs 'thing.depth' (int)."


def test_missing_unannotated_param_message_has_no_internal_names():
    r = Registry("thing", "clframe.models.heads")
    r.register("f")(lambda n: n)
    with pytest.raises(ConfigError, match="needs 'thing.n'") as e:
        r.build("f", {})
    assert "_empty" not in str(e.value)


def test_build_reports_every_problem(reg):
    with pytest.raises(ConfigError) as e:
        reg.build("widget", {"width": "wide", "colour": 1}, input_shape=(1,))
    lines = str(e.value).splitlines()
    assert len(lines) == 3
    assert any("thing.colour" in line for line in lines)
    assert any("'thing.width' must be int" in line for line in lines)
    assert any("needs 'thing.depth'" in line for line in lines)


def test_build_a_real_backbone_with_checked_params():
    net = BACKBONES.build("mlp", {"hidden": [5, 3]}, input_shape=(1, 2, 2))
    assert net.out_features == 3
    with pytest.raises(ConfigError, match=r"'backbone.hidden' must be Sequence\[int \(>= 1\)\]"):
        BACKBONES.build("mlp", {"hidden": 5}, input_shape=(4,))


def rejecting(input_shape: tuple[int, ...] = (), level: int = 1) -> dict[str, int]:
    """A constructor that rejects a value of its own: ``level`` must be >= 1."""
    if level < 1:
        raise ParamError("level", f"must be >= 1, got {level}", "Set it to 1 or more.")
    if level > 9:
        raise ValueError(f"level {level} is too deep.")
    return {"level": level}


def test_a_param_error_of_the_constructor_names_the_full_config_key(reg):
    reg.register("rejecting")(rejecting)
    with pytest.raises(ConfigError) as e:
        reg.build("rejecting", {"level": 0})
    assert str(e.value) == "'thing.level' must be >= 1, got 0. Set it to 1 or more."
    assert isinstance(e.value.__cause__, ParamError)
    with pytest.raises(ConfigError, match=r"^'strategies\.deep\.level' must be >= 1, got 0\."):
        reg.build("rejecting", {"level": 0}, config_key="strategies.deep")
    with pytest.raises(ConfigError, match=r"^'level' must be >= 1, got 0\. Set it to 1 or more\.$"):
        rejecting(level=0)  # outside a registry it names the parameter alone


def test_a_value_error_of_the_constructor_becomes_a_config_error_naming_the_component(reg):
    reg.register("rejecting")(rejecting)
    with pytest.raises(ConfigError) as e:
        reg.build("rejecting", {"level": 10})
    assert str(e.value) == ("thing 'rejecting' cannot be built from the settings under 'thing': level 10 is too "
                            "deep. Change them under 'thing' (`clframe list` shows its parameters and their "
                            "defaults).")
    assert isinstance(e.value.__cause__, ValueError)


def test_strategies_are_named_by_their_key_under_strategies():
    assert STRATEGIES.config_key("replay") == "strategies.replay"
    assert HEADS.config_key("linear") == "head"
    with pytest.raises(ConfigError, match=r"^'strategies\.replay\.mem_size' must be >= 1, got 0"):
        STRATEGIES.build("replay", {"mem_size": 0})
    with pytest.raises(ConfigError, match=r"^'strategies\.rehearse\.mem_size' must be >= 1, got -3"):
        STRATEGIES.build("replay", {"mem_size": -3}, config_key="strategies.rehearse")


# -- import_dotted ---------------------------------------------------------------------------

def test_import_dotted_names_a_missing_module():
    with pytest.raises(ConfigError) as e:
        import_dotted("no_such_pkg_xyz.nets:TinyNet", "backbone")
    msg = str(e.value)
    assert "backbone 'no_such_pkg_xyz.nets:TinyNet'" in msg
    assert "cannot import module 'no_such_pkg_xyz.nets'" in msg
    assert "No module named 'no_such_pkg_xyz'" in msg


def test_import_dotted_names_a_missing_attribute_and_suggests():
    with pytest.raises(ConfigError) as e:
        import_dotted("clframe.errors:ConfigErorr", "strategy")
    msg = str(e.value)
    assert "strategy 'clframe.errors:ConfigErorr'" in msg
    assert "module 'clframe.errors' has no attribute 'ConfigErorr'" in msg
    assert "Did you mean 'ConfigError'?" in msg


def test_import_dotted_dot_form():
    assert import_dotted("clframe.errors.ConfigError") is ConfigError
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        import_dotted("clframe.errors.Nope")


# -- typecheck ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "tp", "ok"),
    [
        (1, int, True),
        (True, int, False),
        (1.0, int, False),
        ("1", int, False),
        (1, float, True),
        (1.5, float, True),
        (False, float, False),
        (True, bool, True),
        (1, bool, False),
        ("sgd", Literal["sgd", "adam"], True),
        ("sdg", Literal["sgd", "adam"], False),
        ([1, 2], list[int], True),
        ([], list[int], True),
        ([1, "2"], list[int], False),
        ((1, 2), list[int], True),
        ("12", list[int], False),
        (None, int | None, True),
        (3, int | None, True),
        ("3", int | None, False),
        (None, typing.Optional[list[int]], True),  # noqa: UP045 - the spelling users write
        ([1, 2], Sequence[int], True),
        ((1,), Sequence[int], True),
        ("ab", Sequence[int], False),
        ([1.5], Sequence[int], False),
        ((1, "a"), tuple[int, str], True),
        ((1, 2, 3), tuple[int, str], False),
        ((1, 2, 3), tuple[int, ...], True),
        ({"a": 1}, dict[str, int], True),
        ({"a": "b"}, dict[str, int], False),
        ({"a": [1]}, dict[str, Any], True),
        ([1], dict, False),
        (object(), Any, True),
        ("x", str, True),
        (1, str, False),
        (None, None, True),
    ],
)
def test_matches(value, tp, ok):
    assert matches(value, tp) is ok


@pytest.mark.parametrize(
    ("tp", "name"),
    [
        (int, "int"),
        (int | None, "int | None"),
        (list[int] | None, "list[int] | None"),
        (Literal["a", "b"], "one of 'a', 'b'"),
        (Sequence[int], "Sequence[int]"),
        (tuple[int, ...], "tuple[int, ...]"),
        (dict[str, Any], "dict[str, Any]"),
    ],
)
def test_type_name(tp, name):
    assert type_name(tp) == name
