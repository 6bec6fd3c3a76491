"""The monitor protocol: a user's monitor, given by dotted path, receives the run's events, writes its
summary entry and its figure, is switched by ``enabled``, and survives a resume bit-identically; the
built-in monitors that do not apply to a run stay out of it."""

from __future__ import annotations

import json
import shutil

import pytest

from clframe.checkpoint.files import list_checkpoints, load_checkpoint
from clframe.config import compose, validate
from clframe.errors import ConfigError
from clframe.run.results import TIMING_KEYS
from clframe.run.runner import build, run

MONITOR = '''
from pathlib import Path

import torch

from clframe.core.monitor import Monitor


class StepCounter(Monitor):
    """Counts steps and samples, and the steps of the experience ends: the events a user's monitor sees."""

    def __init__(self, label: str = "steps") -> None:
        self.label, self.steps, self.samples, self.ends = label, 0, torch.zeros(()), []

    def on_step_end(self, ctx) -> None:
        self.steps += 1
        self.samples = self.samples + len(ctx.batch)  # on the device: no host sync per step

    def on_boundary_eval(self, module, experience, rows) -> None:
        self.ends.append(module.cl_step)

    def summary(self, module) -> dict:
        return {self.label: {"steps": self.steps, "samples": int(self.samples), "ends": self.ends}}

    def write(self, run_dir: Path, module, title: str) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot(self.ends, range(len(self.ends)), marker="o")
        path = Path(run_dir) / "plots" / f"{self.label}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return [path]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "samples": self.samples, "ends": self.ends}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.samples, self.ends = state["steps"], state["samples"], list(state["ends"])
'''
TINY = ["scenario.n_experiences=2", "backbone.hidden=[16]", "train.epochs=2", "logger.progress=false",
        "train.num_threads=1", "checkpoint.every=9", "checkpoint.keep=100"]
UNCOMPARED = TIMING_KEYS


@pytest.fixture
def user_monitor(user_package) -> str:
    return f"{user_package({'mon.py': MONITOR})}.mon:StepCounter"


def test_a_users_monitor_writes_its_summary_entry_and_figure_and_resumes_bit_identically(user_monitor, tmp_path):
    over = [*TINY, f"+monitors.mine={{name: '{user_monitor}', label: counted}}"]
    ref = run(compose(over), tmp_path / "ref")
    steps = ref["steps"]
    assert ref["counted"] == {"steps": steps, "samples": ref["samples"], "ends": [steps // 2, steps]}
    assert (tmp_path / "ref" / "plots" / "counted.png").is_file()
    # interrupted after step 9 (mid experience 0) and resumed: the same summary, monitor state included
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "ref", copy)
    for step, path in list_checkpoints(copy):
        if step > 9:
            path.unlink()
    (copy / "summary.json").unlink()
    resumed = run(compose([*over, f"resume={copy}"]), tmp_path / "unused")
    assert resumed["resumed_from"].endswith("step-00000009.ckpt")
    assert {k: v for k, v in resumed.items() if k not in UNCOMPARED} == \
           {k: v for k, v in ref.items() if k not in UNCOMPARED}
    mine, theirs = (load_checkpoint(list_checkpoints(d)[-1][1])["monitors"]["mine"] for d in (copy, tmp_path / "ref"))
    assert mine["steps"] == theirs["steps"] and bool((mine["samples"] == theirs["samples"]).all())
    assert json.loads((copy / "summary.json").read_text())["counted"] == ref["counted"]


def test_a_monitor_is_switched_by_enabled(user_monitor, tmp_path):
    mine = f"+monitors.mine={{name: '{user_monitor}', label: counted, enabled: false}}"
    off = run(compose([*TINY, mine]), tmp_path / "off")
    assert "counted" not in off and not (tmp_path / "off" / "plots" / "counted.png").exists()
    assert off["curve_source"] == "continual"
    plain = run(compose([*TINY, "monitors.continual.enabled=false"]), tmp_path / "plain")
    assert plain["curve_source"] == "boundary"  # without the continual evaluator, the boundary evaluations' curve


def test_a_monitors_settings_are_checked_against_its_signature(user_monitor):
    with pytest.raises(ConfigError, match=r"Unknown key 'monitors.mine.lable'.*Did you mean 'label'"):
        validate(compose([f"+monitors.mine={{name: '{user_monitor}', lable: x}}"]))
    with pytest.raises(ConfigError, match=r"'monitors.mine.enabled' must be true or false"):
        validate(compose([f"+monitors.mine={{name: '{user_monitor}', enabled: maybe}}"]))


def test_monitors_that_do_not_apply_stay_out_of_the_run():
    built = build(compose(["scenario.n_experiences=2", "backbone.hidden=[8]", "logger.progress=false"]))
    # an MLP reports no diagnostics, there is no hypernetwork, curriculum, in-context or 1-D regression data
    assert list(built.module.monitors) == ["continual"]
    rnn = build(compose(["scenario=sequential_digits", "scenario.n_experiences=2", "backbone=tau_rnn",
                         "logger.progress=false", "monitors.plasticity.enabled=true"]))
    assert list(rnn.module.monitors) == ["continual", "diagnostics", "plasticity"]
