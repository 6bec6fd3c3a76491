"""What wandb receives, decoded from the offline ``.wandb`` files (tests/wandb_records.py): the groupable
fields, the accuracy-matrix table, monotonic steps, the console, one wandb folder per sweep, and the
``clframe compare --wandb`` summary run."""

from __future__ import annotations

import json
import shutil

import pytest
from cli_helpers import run_main
from process_helpers import clframe as clframe_cli
from wandb_records import WandbRun, read_runs

import clframe
from clframe.checkpoint.files import list_checkpoints
from clframe.config import compose
from clframe.run.runner import run

pytest.importorskip("wandb")
STEP = "trainer/step"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    yield
    if wandb.run is not None:
        wandb.finish()


def steps(r: WandbRun) -> list[int]:
    """The training step of every history row (every row carries one)."""
    assert all(STEP in row for row in r.history), "a history row without the training step"
    return [row[STEP] for row in r.history]


def table(r: WandbRun, key: str) -> dict:
    """A table the run logged under ``key``, read from its file."""
    (row,) = [h for h in r.history if h.get(f"{key}/_type") == "table-file"]
    return json.loads((r.dir / "files" / row[f"{key}/path"]).read_text())


def test_a_sweep_of_three_strategies_over_two_seeds_is_grouped_for_comparison(tiny, tmp_path):
    # a real `clframe run -m` process: its console is what wandb captures (pytest's capture is in the way in-process)
    sweep = tmp_path / "sweep"
    done = clframe_cli(["run", "-m", "strategy=naive,replay,ewc", "seed=0,1", *tiny, "logger.wandb=true",
                        "logger.log_every=5", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert not list(sweep.glob("*/wandb")), "a job wrote its own wandb folder"
    runs = read_runs(sweep / "wandb")  # one folder: `wandb sync <sweep>/wandb` uploads the sweep
    jobs = [r for r in runs if r.run.job_type != "compare"]
    assert sorted((r.config["strategy"], r.config["seed"]) for r in jobs) == \
        sorted((s, seed) for s in ("naive", "replay", "ewc") for seed in (0, 1))
    for r in jobs:
        strategy, seed = r.config["strategy"], r.config["seed"]
        assert r.config["sweep_id"] == sweep.name
        assert r.config["scenario"] == "split" and r.config["backbone"] == "mlp" and r.config["head"] == "linear"
        assert r.config["clframe_version"] == clframe.__version__ and "git_commit" in r.config
        assert r.config["config"]["seed"] == seed  # and the whole resolved config beside the flat fields
        assert r.run.job_type == strategy and r.run.run_group == f"default/{sweep.name}"
        assert {"default", strategy, "split", "mlp"} <= set(r.run.tags)
        assert r.exit_code == 0
        s = steps(r)
        assert s == sorted(s), f"{strategy}-s{seed}: steps go back: {s}"
        assert any("cont_acc/exp0" in h for h in r.history) and any("loss/task" in h for h in r.history)
        (job,) = sweep.glob(f"*-{strategy}-s{seed}")
        summary = json.loads((job / "summary.json").read_text())
        matrix = table(r, "acc_matrix")
        assert matrix["columns"] == ["trained_through", "exp0", "exp1"]
        assert [row[1:] for row in matrix["data"]] == summary["acc_matrix"]
        assert r.summary["final_avg_acc"] == pytest.approx(summary["final_avg_acc"])
        assert "final_avg_acc" in "".join(r.console)  # the run's report reached wandb's console log
    (cmp,) = [r for r in runs if r.run.job_type == "compare"]
    assert cmp.run.run_group == f"default/{sweep.name}"
    comparison = table(cmp, "comparison")
    assert [row[0] for row in comparison["data"]] == \
        ["strategies=naive", "strategies=replay", "strategies=ewc"]
    assert [row[1] for row in comparison["data"]] == [2, 2, 2]


def test_a_single_run_takes_the_configured_group_job_type_and_tags(tiny, tmp_path):
    run(compose(tiny + ["logger.wandb=true", "strategy=[replay,ewc]", "logger.group=ablation",
                        "logger.job_type=probe", "logger.tags=[mine]"]), tmp_path)
    (r,) = read_runs(tmp_path / "wandb")
    assert r.config["strategy"] == "replay+ewc" and r.config["sweep_id"] is None
    assert r.run.run_group == "ablation" and r.run.job_type == "probe"
    assert {"replay", "ewc", "mine"} <= set(r.run.tags)


def test_the_group_of_a_single_run_is_its_experiment(tiny, tmp_path):
    run(compose(tiny + ["logger.wandb=true", "experiment_name=mine"]), tmp_path)
    (r,) = read_runs(tmp_path / "wandb")
    assert r.run.run_group == "mine" and r.run.job_type == "naive"


def test_a_resumed_run_continues_its_wandb_run_without_going_back(tiny, tmp_path):
    ref = tmp_path / "ref"
    run(compose(tiny + ["logger.wandb=true", "checkpoint.every=7", "checkpoint.keep=10"]), ref)
    copy = tmp_path / "copy"
    shutil.copytree(ref, copy)
    shutil.rmtree(copy / "wandb")
    (first,) = read_runs(ref / "wandb")
    shutil.copytree(first.dir, copy / "wandb" / first.dir.name)  # the run's own wandb files, as at the crash
    for step, path in list_checkpoints(copy):
        if step > 14:
            path.unlink()
    (copy / "summary.json").unlink()
    run(compose(tiny + ["logger.wandb=true", f"resume={copy}"]), tmp_path / "unused")
    before, after = read_runs(copy / "wandb")
    assert before.run.run_id == after.run.run_id == first.run.run_id
    s = steps(after)
    assert s == sorted(s) and s[0] >= 14, f"the resumed run logs again before its checkpoint: {s}"


def test_a_failed_run_closes_its_wandb_run_so_the_next_gets_its_own(tiny, tmp_path, monkeypatch):
    from clframe.run import runner

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "fit", boom)
    with pytest.raises(RuntimeError, match="boom"):
        run(compose(tiny + ["logger.wandb=true"]), tmp_path / "a")
    monkeypatch.undo()
    run(compose(tiny + ["logger.wandb=true"]), tmp_path / "b")
    (failed,), (ok,) = read_runs(tmp_path / "a" / "wandb"), read_runs(tmp_path / "b" / "wandb")
    assert failed.exit_code == 1 and ok.exit_code == 0 and failed.run.run_id != ok.run.run_id


def test_points_go_out_in_step_order_and_a_late_one_is_named(tmp_path):
    from clframe.run.wandb_log import WandbRun as Sink

    sink = Sink(tmp_path, _plain(["logger.wandb=true"]))
    sink.log({"b": 1.0}, 5)
    sink.log({"a": 1.0}, 3)
    sink.log({"c": 2.0}, 5)  # the same step, other keys: one history row
    sink.release()
    with pytest.warns(UserWarning, match=r"wandb: late at step 1 reached the logger after step 5"):
        sink.log({"late": 0.0}, 1)
        sink.release()
    sink.finish(0)
    (r,) = read_runs(tmp_path / "wandb")
    assert [(h[STEP], sorted(k for k in h if not k.startswith("_") and k != STEP)) for h in r.history] == \
        [(3, ["a"]), (5, ["b", "c"]), (1, ["late"])]


def _plain(overrides: list[str]) -> dict:
    from clframe.config import validate

    return validate(compose(overrides))


def test_compare_logs_one_summary_run(tiny, tmp_path, capsys):
    for s in ("naive", "replay"):
        run(compose(tiny + [f"strategy={s}"]), tmp_path / "runs" / s)
    code, out, err = run_main(["compare", str(tmp_path / "runs"), "--wandb"], capsys)
    assert code == 0, err
    (r,) = read_runs(tmp_path / "runs" / "wandb")
    assert r.run.job_type == "compare" and r.run.run_group == "default"
    assert [row[0] for row in table(r, "comparison")["data"]] == ["strategies=naive", "strategies=replay"]
    assert any(h.get("plots/comparison/_type") == "image-file" for h in r.history)
