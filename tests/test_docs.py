"""The documentation stays true: the component reference is what ``clframe list --markdown`` prints now,
and the examples of docs/extending.md run."""

from __future__ import annotations

from pathlib import Path

from clframe.cli.info import markdown

ROOT = Path(__file__).resolve().parents[1]


def test_the_component_reference_is_current():
    current = (ROOT / "docs" / "components.md").read_text()
    assert current == markdown(), "docs/components.md is stale: run clframe list --markdown > docs/components.md"


def _examples() -> tuple[dict[str, str], list[str]]:
    """The files (``# my_cl/<name>.py`` as their first line) and the ``clframe run`` commands of
    docs/extending.md."""
    import re

    text = (ROOT / "docs" / "extending.md").read_text()
    files, commands = {}, []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S):
        first = body.splitlines()[0]
        if lang == "python" and first.startswith("# my_cl/"):
            files[first[2:]] = body
        elif lang == "bash" and first.startswith("clframe run"):
            commands.append(first)
    return files, commands


def test_every_example_of_the_extension_guide_runs(tmp_path, monkeypatch, capsys):
    import shlex
    import sys

    from clframe import cli

    files, commands = _examples()
    assert len(files) == 5 and len(commands) == 5  # a strategy, a monitor, a scenario, a backbone, a head
    (tmp_path / "src" / "my_cl").mkdir(parents=True)
    (tmp_path / "src" / "my_cl" / "__init__.py").write_text("")
    for name, body in files.items():
        (tmp_path / "src" / name).write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    import json

    summaries = []
    for i, command in enumerate(commands):
        argv = shlex.split(command)[1:] + ["logger.progress=false", f"hydra.run.dir=run{i}"]
        try:
            cli.main(argv)
        except SystemExit as e:
            raise AssertionError(f"{command} exited {e.code}: {capsys.readouterr().err[-2000:]}") from None
        summaries.append(json.loads((tmp_path / f"run{i}" / "summary.json").read_text()))
    strategy, monitor, scenario, backbone, head = summaries
    assert strategy["final_losses"]["loss/l2_anchor"] > 0
    assert len(monitor["weight_drift"]) == 5 and (tmp_path / "run1" / "plots" / "weight_drift.png").is_file()
    assert len(scenario["acc_matrix"]) == 4 and scenario["scenario"] == "blobs"
    for s in (backbone, head):
        assert s["acc_matrix"][0][0] > 0.5  # learned the first experience
    for name in [m for m in sys.modules if m.startswith("my_cl")]:
        del sys.modules[name]
