"""Config composition and validation: every mistake is a ConfigError that names the key,
the valid choices and the closest match, raised before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf
from vision_helpers import write_cifar, write_tinyimagenet

from clframe.config import CONFIG_DIR, compose, group_options, validate
from clframe.data.datasets.mnist import T10K_DEFAULT
from clframe.errors import ConfigError
from clframe.run.runner import build

TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "reset_optimizer",
              "num_threads")


def config_error(overrides: list[str]) -> str:
    """The message of the ConfigError that composing and validating ``overrides`` raises."""
    with pytest.raises(ConfigError) as e:
        validate(compose(overrides))
    return str(e.value)


# -- unknown keys and options ------------------------------------------------------------

def test_unknown_train_key_names_it_lists_valid_keys_and_suggests():
    msg = config_error(["train.lrr=0.1"])
    assert "'train.lrr'" in msg
    assert "Did you mean 'lr'?" in msg
    for key in TRAIN_KEYS:
        assert key in msg


def test_unknown_component_key_says_how_to_add_it():
    msg = config_error(["backbone.widht=3"])
    assert "'backbone.widht'" in msg
    assert "hidden" in msg and "dropout" in msg
    assert "+backbone.widht=" in msg


def test_unknown_top_level_key():
    msg = config_error(["sed=1"])
    assert "'sed'" in msg and "Did you mean 'seed'?" in msg
    assert "experiment_name" in msg


def test_unknown_strategy_param_suggests_the_real_one():
    msg = config_error(["strategy=ewc", "strategies.ewc.ewc_lamda=3"])
    assert "strategies.ewc.ewc_lamda" in msg
    assert "Did you mean 'ewc_lambda'?" in msg
    assert "fisher_batch_size" in msg  # the valid keys are listed


def test_added_unknown_strategy_param_is_caught_by_the_signature_check():
    # '+key=' gets past the override check; the constructor signature still rejects it
    msg = config_error(["strategy=ewc", "+strategies.ewc.ewc_lamda=3"])
    assert "ewc_lamda" in msg and "Did you mean 'ewc_lambda'?" in msg
    assert "Valid keys: ewc_lambda, mode, gamma" in msg


def test_unknown_group_option_lists_options_and_suggests():
    msg = config_error(["strategy=ewcc"])
    assert "Unknown strategy option 'ewcc'" in msg
    assert "Did you mean 'ewc'?" in msg
    assert all(name in msg.split("Valid: ")[1] for name in ("ewc", "naive", "replay"))


def test_unknown_option_inside_a_list_of_strategies():
    msg = config_error(["strategy=[naive,replya]"])
    assert "'replya'" in msg and "Did you mean 'replay'?" in msg


def test_unknown_experiment_lists_the_shipped_ones():
    msg = config_error(["experiment=split_digit"])
    assert "Did you mean 'split_digits'?" in msg
    for name in group_options("experiment"):
        assert name in msg


def test_unknown_registry_name_lists_valid_backbones_and_suggests():
    msg = config_error(["backbone.name=mlpp"])
    assert "Unknown backbone 'mlpp'" in msg
    assert "Did you mean 'mlp'?" in msg
    # every registered one
    assert "Valid: fast_weights, gru, lstm, mlp, resnet18, resnet32, srwm, tau_rnn, timm." in msg


def test_missing_component_name():
    cfg = {"scenario": {"name": "split"}, "backbone": {"hidden": [8]}, "head": {"name": "linear"}}
    with pytest.raises(ConfigError,
                       match=r"'backbone.name' is missing: which backbone\? Valid: fast_weights, gru, lstm, mlp"):
        validate(cfg)


# -- wrong types ---------------------------------------------------------------------------

def test_wrong_type_in_a_run_section_names_key_and_type():
    msg = config_error(["train.epochs=abc"])
    assert "'train.epochs' must be int" in msg
    assert "'abc'" in msg


def test_wrong_type_in_a_strategy_param_names_key_and_type():
    msg = config_error(["strategy=replay", "strategies.replay.mem_size=big"])
    assert "'strategies.replay.mem_size' must be int" in msg
    assert "'big'" in msg


def test_wrong_literal_names_the_choices():
    msg = config_error(["train.optimizer=adma"])
    assert "'train.optimizer' must be one of 'sgd', 'adam', 'adamw'" in msg


def test_bool_is_not_an_int():
    msg = config_error(["train.epochs=true"])
    assert "'train.epochs' must be int (>= 1), got True (bool)" in msg


def test_int_is_accepted_where_a_float_is_expected():
    assert validate(compose(["train.lr=1"]))["train"]["lr"] == 1


def test_all_errors_are_reported_at_once():
    msg = config_error(["train.epochs=abc", "backbone.dropout=lots", "eval.batch_size=1.5"])
    assert msg.startswith("Invalid config:")
    assert "'train.epochs' must be int" in msg
    assert "'backbone.dropout' must be float" in msg
    assert "'eval.batch_size' must be int" in msg


def test_bad_override_syntax_is_a_config_error():
    with pytest.raises(ConfigError, match="Cannot parse overrides"):
        compose(["train.lr=[1,"])


# -- strategies composition -------------------------------------------------------------------

def test_list_of_strategies_composes_each_with_its_own_settings():
    c = validate(compose(["strategy=[replay,ewc]"]))
    assert list(c["strategies"]) == ["replay", "ewc"]
    assert c["strategies"]["replay"]["mem_size"] == 200
    assert c["strategies"]["ewc"]["ewc_lambda"] == 100.0
    assert "mem_size" not in c["strategies"]["ewc"]
    assert "ewc_lambda" not in c["strategies"]["replay"]


def test_override_of_one_strategy_leaves_the_other_alone():
    base = validate(compose(["strategy=[replay,ewc]"]))["strategies"]
    c = validate(compose(["strategy=[replay,ewc]", "strategies.ewc.ewc_lambda=5"]))["strategies"]
    assert c["ewc"]["ewc_lambda"] == 5
    assert c["replay"] == base["replay"]
    assert {k: v for k, v in c["ewc"].items() if k != "ewc_lambda"} == {
        k: v for k, v in base["ewc"].items() if k != "ewc_lambda"}


def test_empty_strategy_list_means_no_strategies():
    assert validate(compose(["strategy=[]"]))["strategies"] == {}


def test_seed_interpolates_into_scenario_and_strategies():
    c = validate(compose(["seed=7", "strategy=replay"]))
    assert c["seed"] == 7
    assert c["scenario"]["seed"] == 7
    assert c["strategies"]["replay"]["seed"] == 7


# -- experiments ------------------------------------------------------------------------------

def test_experiment_sets_its_values():
    c = validate(compose(["experiment=split_digits"]))
    assert c["experiment_name"] == "split_digits"
    assert c["train"]["epochs"] == 10
    assert c["scenario"]["name"] == "split"


def test_command_line_wins_over_the_experiment():
    c = validate(compose(["experiment=split_digits", "strategy=replay", "train.epochs=2"]))
    assert c["experiment_name"] == "split_digits"
    assert list(c["strategies"]) == ["replay"]
    assert c["train"]["epochs"] == 2
    # quickstart itself picks replay; the command line still decides
    c = validate(compose(["experiment=quickstart", "strategy=naive"]))
    assert c["experiment_name"] == "quickstart"
    assert list(c["strategies"]) == ["naive"]
    assert list(validate(compose(["experiment=quickstart"]))["strategies"]) == ["replay"]


def test_extra_config_directory_on_the_search_path(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nexperiment_name: mine\n")
    c = validate(compose([f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine"]))
    assert c["experiment_name"] == "mine"


def test_task_incremental_experiment_uses_multihead():
    c = validate(compose(["experiment=split_digits_til"]))
    assert c["head"]["name"] == "multihead"
    assert c["scenario"]["task_incremental"] is True


# -- every shipped YAML -----------------------------------------------------------------------

EXPERIMENTS = group_options("experiment")
DEFAULT_NAME = {"scenario": "split", "backbone": "mlp", "head": "linear"}
GROUP_CHOICES = [(g, o) for g in ("scenario", "backbone", "head", "strategy") for o in group_options(g)]


def test_the_shipped_groups_are_found():
    assert {"split_digits", "quickstart"} <= set(EXPERIMENTS)
    assert {("scenario", "avalanche"), ("head", "multihead"), ("strategy", "ewc")} <= set(GROUP_CHOICES)
    assert CONFIG_DIR.is_dir()


# the vision experiments' datasets, written small in their real on-disk formats
IMAGE_WRITERS = {"cifar10": lambda root: write_cifar(root, "cifar10", 2, 1),
                 "cifar100": lambda root: write_cifar(root, "cifar100", 2, 1),
                 "tinyimagenet": write_tinyimagenet}


def expected_experiences(sc: dict, default: int | None) -> int | None:
    """How many experiences the scenario settings ``sc`` make."""
    if "n_permutations" in sc:  # drift streams: one segment per event, plus the first
        return 1 + sc["n_permutations"] + sc["n_prior_shifts"]
    return sc.get("n_experiences", sc.get("n_tasks", sc.get("n_segments", default)))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_validates_and_builds(name, tmp_path):
    cfg = compose([f"experiment={name}"])
    c = validate(cfg)
    assert c["experiment_name"] == name
    if c["scenario"].get("dataset") == "mnist_t10k" and not c["scenario"].get("data_root") \
            and not Path(T10K_DEFAULT).is_dir():
        pytest.skip(f"{name} reads the real MNIST test set, not at {T10K_DEFAULT}")
    dataset = c["scenario"].get("dataset")
    if dataset in IMAGE_WRITERS:  # the vision benchmarks: small files in the real format, written here
        IMAGE_WRITERS[dataset](tmp_path)
        cfg = compose([f"experiment={name}", f"scenario.data_root={tmp_path}"])
    built = build(cfg)
    sc = c["scenario"]
    levels = sc["n_max"] - sc["n_min"] + 1 if "n_max" in sc else None  # a curriculum: one experience per N
    assert len(built.scenario.stream) == expected_experiences(sc, levels)
    assert sum(p.numel() for p in built.module.parameters()) > 0


def _name_is_missing(group: str, option: str) -> bool:
    """True for template options such as ``backbone/custom.yaml`` (``name: ???``)."""
    path = CONFIG_DIR / group / f"{option}.yaml"
    return path.is_file() and OmegaConf.is_missing(OmegaConf.load(path), "name")


@pytest.mark.parametrize(("group", "option"), GROUP_CHOICES, ids=[f"{g}={o}" for g, o in GROUP_CHOICES])
def test_every_group_option_validates(group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("head", "multihead"):
        overrides.append("scenario.task_incremental=true")
    if (group, option) in (("scenario", "fewshot_sequences"), ("scenario", "drifting_labels")):
        overrides += ["backbone=gru", "backbone.readout=every"]  # labels at every step: a per-step readout
    if group != "strategy" and _name_is_missing(group, option):
        # a template for the user's own component: says what to set, and works once it is set
        with pytest.raises(ConfigError, match=rf"'{group}.name' is missing"):
            validate(compose(overrides))
        overrides.append(f"{group}.name={DEFAULT_NAME[group]}")
    cfg = compose(overrides)
    c = validate(cfg)
    if group == "strategy":
        assert list(c["strategies"]) == [option]
    else:
        assert c[group]["name"] in (option, DEFAULT_NAME[group])
    if group == "scenario" and c["scenario"]["name"] != "avalanche":  # its default downloads MNIST
        built = build(cfg)
        sc = c["scenario"]
        levels = sc["n_max"] - sc["n_min"] + 1 if "n_max" in sc else 5  # a curriculum: one experience per N
        assert len(built.scenario.stream) == expected_experiences(sc, levels)


# -- validate() output ------------------------------------------------------------------------

def test_validate_fills_defaults_and_returns_plain_dicts():
    cfg = {
        "seed": 3,
        "scenario": {"name": "split"},
        "backbone": {"name": "mlp"},
        "head": {"name": "linear"},
        "strategies": {"naive": None},
        "train": {"epochs": 4},
    }
    c = validate(cfg)
    assert type(c) is dict
    assert c["train"] == {"epochs": 4, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.0,
                          "nesterov": False, "weight_decay": 0.0, "clip_norm": None, "reset_optimizer": False,
                          "freeze_backbone": False, "num_threads": None, "augment": True, "channels_last": False,
                          "compile": False}
    assert c["trainer"] == {"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1,
                            "engine": "auto", "split_across_ranks": True, "precision": "32-true"}
    assert c["checkpoint"] == {"enabled": True, "every": 500, "at_experience_end": True, "keep": 2}
    assert c["resume"] is None and c["resume_trust"] is False
    assert c["eval"] == {"batch_size": 256, "gap_window": 100, "lca_beta": 10, "budget": None,
                         "metric": "final_avg_acc"}
    assert c["monitors"] == {}  # a whole config given as a dict names its monitors itself
    assert c["logger"] == {"wandb": False, "project": "clframe", "entity": None, "group": None, "job_type": None,
                           "tags": [], "console": "wrap", "progress": True, "log_every": 50}
    assert c["strategies"] == {"naive": {}}
    assert cfg["train"] == {"epochs": 4}  # the input is not modified


def test_validate_of_a_composed_config_is_resolved_and_drops_hydra():
    cfg = compose([])
    assert isinstance(cfg, DictConfig)
    c = validate(cfg)
    assert type(c) is dict and type(c["scenario"]) is dict and type(c["backbone"]["hidden"]) is list
    assert "hydra" not in c
    assert isinstance(c["scenario"]["seed"], int)  # ${seed} resolved
    assert set(c) == {"seed", "experiment_name", "resume", "resume_trust", "scenario", "backbone", "head", "hypernet",
                      "strategies", "monitors", "train", "trainer", "eval", "logger", "checkpoint"}


def test_null_group_choice_says_what_to_do_instead():
    with pytest.raises(ConfigError, match=r"strategy=\[\]"):
        compose(["strategy=null"])


def test_run_directory_names_join_the_strategy_keys():
    from omegaconf import OmegaConf

    import clframe.config  # noqa: F401  (registers the resolver)

    cfg = OmegaConf.create({"strategies": {"replay": {}, "ewc": {}}, "none": {}, "a": "${clf_names:${strategies}}",
                            "b": "${clf_names:${none}}"})
    assert (cfg.a, cfg.b) == ("replay+ewc", "none")


# -- renamed keys and ranges ---------------------------------------------------------------

@pytest.mark.parametrize("old,new", [("train.accelerator", "trainer.accelerator"), ("train.engine", "trainer.engine"),
                                     ("train.devices", "trainer.devices")])
def test_a_key_renamed_since_an_older_version_names_its_new_name(old, new):
    value = "fabric" if old.endswith("engine") else "cpu" if old.endswith("accelerator") else 1
    msg = config_error([f"{old}={value}"])  # on the command line
    assert f"'{old}' was renamed to '{new}' in clframe 0.2" in msg and f"{new}={value}" in msg
    cfg = OmegaConf.to_container(compose([]))  # in an old config file
    section, leaf = old.split(".")
    cfg[section][leaf] = value
    with pytest.raises(ConfigError, match=f"'{old}' was renamed to '{new}'.*write trainer: {{{leaf}: "):
        validate(cfg)


@pytest.mark.parametrize("value", [0, -5])
def test_continual_every_must_be_positive_and_enabled_false_turns_it_off(value):
    msg = config_error([f"monitors.continual.every={value}"])
    assert f"'monitors.continual.every' must be >= 1, got {value}" in msg
    assert validate(compose(["monitors.continual.enabled=false"]))["monitors"]["continual"]["enabled"] is False


@pytest.mark.parametrize("old, value, new", [
    ("eval.every", "null", "monitors.continual.enabled=false"), ("eval.every", "5", "monitors.continual.every=5"),
    ("eval.plasticity", "true", "monitors.plasticity.enabled=true"),
    ("eval.online_window", "25", "monitors.online.window=25")])
def test_the_eval_keys_of_clframe_0_2_name_their_monitor(old, value, new):
    msg = config_error([f"{old}={value}"])
    assert f"'{old}" in msg and "in clframe 0.3" in msg and f"write {new};" in msg


def test_the_baseline_table_builds_the_cumulative_stream_only_for_cumulative():
    # one sweep makes the whole table: strategy=cumulative brings its stream (experience i = 0..i's data)
    assert compose(["experiment=baselines_split_mnist", "strategy=cumulative"]).scenario.cumulative is True
    assert compose(["experiment=baselines_split_mnist", "strategy=replay"]).scenario.cumulative is False
    assert compose(["experiment=baselines_split_mnist", "strategy=replay", "scenario.cumulative=true"]
                   ).scenario.cumulative is True
