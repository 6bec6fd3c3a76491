"""Curricula: levels advance on the evaluator's scores, one batch later, and resume exactly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from clframe.scenarios._memory_tasks import MemoryCurriculum

from clframe.checkpoint.files import list_checkpoints
from clframe.config import compose
from clframe.config.registry import SCENARIOS
from clframe.data.curriculum import Curriculum, CurriculumIterator
from clframe.errors import ConfigError
from clframe.run.results import TIMING_KEYS
from clframe.run.runner import build, run

# a 2-level parity curriculum (N = 2, 3) a 64-unit tau_rnn solves in a few hundred steps (about 4 s)
PARITY = ["experiment=parity_curriculum", "scenario.n_min=2", "scenario.n_max=3", "backbone.hidden=64",
          "train.batch_size=128", "monitors.continual.every=20", "monitors.continual.subset=300",
          "scenario.eval_samples=300",
          "scenario.max_steps_per_level=600", "scenario.threshold=0.9", "logger.progress=false",
          "checkpoint.every=40", "checkpoint.keep=1000"]


def scores(*values: float) -> torch.Tensor:
    return torch.tensor(values)


def test_a_level_advances_when_its_criterion_passes_and_starts_one_batch_later():
    c = Curriculum(3, threshold=0.9, max_steps_per_level=1000)
    c.observe(100, 0, scores(0.85))
    assert c.level == 0 and c.solved == [None, None, None]
    c.observe(200, 0, scores(0.95))
    assert c.solved[0] == 200 and c.starts == [0, 201]
    # batch 200 is still level 0: Lightning may have fetched it before the decision
    assert [c.level_at(i) for i in (199, 200, 201, 500)] == [0, 0, 1, 1]


def test_evaluations_of_an_earlier_level_are_ignored():
    c = Curriculum(3, threshold=0.9)
    c.observe(200, 0, scores(0.95))
    # the boundary evaluation of level 0 at step 201 arrives with the module still on experience 0
    c.observe(201, 0, scores(0.99, 0.99))
    assert c.level == 1 and c.solved[1] is None


def test_the_last_level_ends_the_run_and_an_unsolved_level_stops_at_its_budget():
    c = Curriculum(2, threshold=0.5, max_steps_per_level=50)
    c.observe(10, 0, scores(0.9))
    c.observe(30, 1, scores(0.1, 0.9))
    assert c.end == 31 and c.done(31) and not c.done(30)
    stuck = Curriculum(2, threshold=0.99, max_steps_per_level=50)
    assert not stuck.done(49) and stuck.done(50)


def test_multi_head_criterion_needs_the_mean_and_the_newest_head():
    c = MemoryCurriculum("parity", [2, 3, 4], "multi", 2, "final", 0.9, 1000)
    c.starts = [0, 10]
    c.observe(20, 1, scores(0.5, 0.99))  # newest fine, the mean is not
    assert c.solved[1] is None
    c.observe(30, 1, scores(0.95, 0.99))
    assert c.solved[1] == 30
    sliding = MemoryCurriculum("parity", [2, 3, 4], "sliding", 2, "final", 0.9, 1000)
    assert sliding.trained_heads(2) == [1, 2] and c.trained_heads(2) == [0, 1, 2]


def test_summary_and_state_round_trip():
    c = Curriculum(3, threshold=0.9)
    c.observe(40, 0, scores(0.95))
    s = c.summary([2, 3, 4])
    assert s["start_step"] == {"2": 0, "3": 41, "4": None} and s["solved_step"]["2"] == 40 and s["reached"] == 2
    assert s["completed"] is False
    d = Curriculum(3, threshold=0.9)
    d.load_state_dict(c.state_dict())
    assert d.summary([2, 3, 4]) == s


def test_iterator_batches_depend_only_on_seed_index_and_level():
    c = MemoryCurriculum("parity", [2, 3], "single", 1, "final", 0.9, 5)
    a = list(CurriculumIterator(c, 4, torch.device("cpu"), seed=3))
    assert len(a) == 5 and all(b.exp == 0 for b in a)
    it = CurriculumIterator(c, 4, torch.device("cpu"), seed=3)
    it.seek(2)
    b = list(it)
    assert len(b) == 3 and all(torch.equal(x.x, y.x) and torch.equal(x.y, y.y) for x, y in zip(a[2:], b))


def test_a_curriculum_needs_the_continual_evaluator_and_task_heads():
    with pytest.raises(ConfigError, match="monitors.continual.enabled=true"):
        build(compose(PARITY + ["monitors.continual.enabled=false"]))
    with pytest.raises(ConfigError, match="head=multihead"):
        build(compose(PARITY + ["scenario.curriculum=multi", "head=linear"]))


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("parity") / "run"
    return run_dir, run(compose(PARITY + ["scenario.curriculum=multi"]), run_dir)


def test_a_parity_run_records_when_each_n_was_solved(parity_run):
    run_dir, summary = parity_run
    cur = summary["curriculum"]
    assert cur["levels"] == [2, 3] and cur["completed"] and cur["reached"] == 3
    assert 0 < cur["solved_step"]["2"] < cur["start_step"]["3"] <= cur["solved_step"]["3"]
    assert summary["steps"] == cur["solved_step"]["3"] + 1
    # the diagnostics recorded tau at each level's end
    assert [r["experience"] for r in summary["diagnostics"]] == [0, 1]
    assert all(len(t[0]) == 64 for t in summary["timescales"].values())
    assert (run_dir / "diagnostics.csv").is_file() and (run_dir / "plots" / "timescales.png").is_file()
    # the accuracy the curriculum saw passed the threshold on both heads
    assert min(summary["acc_matrix"][-1]) > 0.85


def test_a_resumed_curriculum_run_matches_the_uninterrupted_one(parity_run, tmp_path):
    run_dir, summary = parity_run
    steps = [s for s, _ in list_checkpoints(run_dir)]
    # a checkpoint inside the second level, after the switch
    k = max(s for s in steps if summary["curriculum"]["start_step"]["3"] < s < summary["steps"])
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for s, p in list_checkpoints(copy):
        if s > k:
            p.unlink()
    (copy / "summary.json").unlink()
    resumed = run(compose(PARITY + ["scenario.curriculum=multi", f"resume={copy}"]), copy)
    ignore = TIMING_KEYS
    same = {k: v for k, v in summary.items() if k not in ignore}
    assert json.dumps({k: v for k, v in resumed.items() if k not in ignore}, sort_keys=True) == \
        json.dumps(same, sort_keys=True)


@pytest.mark.parametrize("curriculum", ["single", "multi"])
def test_replay_and_ewc_run_on_a_curriculum(curriculum, tmp_path):
    # a multi-head batch has one label column per level at every level, so a replay buffer can hold them
    for strategy in ("replay", "ewc"):
        summary = run(compose(PARITY + [f"scenario.curriculum={curriculum}", f"strategy={strategy}",
                                        "checkpoint.enabled=false"]), tmp_path / strategy)
        assert summary["strategies"] == [strategy] and summary["curriculum"]["solved_step"]["2"] is not None


def test_clframe_ablate_scores_a_finished_run(parity_run, capsys):
    from cli_helpers import run_main

    run_dir, summary = parity_run
    code, out, _ = run_main(["ablate", str(run_dir), "--fractions", "0,1", "--repeats", "1"], capsys)
    assert code == 0 and "written" in out
    result = json.loads((run_dir / "ablation.json").read_text())
    # nothing silenced: the final accuracy-matrix row; everything silenced: one class for every sequence
    assert result["experiences"] == [2, 3] and result["step"] == summary["steps"]
    assert result["mean"][0] == pytest.approx(summary["acc_matrix"][-1], abs=1e-6)
    scenario = SCENARIOS.build("parity", {"n_min": 2, "n_max": 3, "eval_samples": 300})
    for v, e in zip(result["mean"][1], scenario.stream):
        ones = e.eval.y.float().mean().item()
        assert min(abs(v - ones), abs(v - (1 - ones))) < 1e-6
    assert (run_dir / "plots" / "ablation.png").is_file()
    code, _, err = run_main(["ablate", str(run_dir / "nowhere")], capsys)
    assert code != 0 and "not a run directory" in err
