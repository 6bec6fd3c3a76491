"""The four tuning protocols: on which stream and data the trials are scored.

- ``test``: the evaluation stream itself, scored on its test data at the end: what most papers do, the
  optimistic reference (the test data chooses the configuration that is then scored on it).
- ``end``: the evaluation stream, scored at the end on a validation split of each experience's training
  data. The test data is unseen, but the tuning still sees the whole stream, every task included, which
  a learner deployed on a stream never can: optimistic too.
- ``first_task``: only the first experience(s) of the evaluation stream, on their validation split (Lee
  et al. 2024), then the whole stream with the chosen values.
- ``gtep``: another stream (``tune_experiment``), on its validation split, then the evaluation stream
  with the chosen values (Cha & Cho 2024's Generalizable Two-phase Evaluation Protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

from clframe.errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    """How one protocol tunes.

    Args:
        name: its name.
        other_stream: the trials run on ``tune_experiment``, not the evaluation experiment.
        validation: the trials score on a validation split (``scenario.validation``), not the test data.
        first: the trials see only the first ``first_experiences`` experiences.
        summary: one line for the docs and the report.
    """

    name: str
    other_stream: bool
    validation: bool
    first: bool
    summary: str


PROTOCOLS = {
    "test": Protocol("test", False, False, False, "tuned on the evaluation stream's test data (optimistic)"),
    "end": Protocol("end", False, True, False, "tuned on the evaluation stream's validation split, all tasks"),
    "first_task": Protocol("first_task", False, True, True, "tuned on the first experience(s)' validation split"),
    "gtep": Protocol("gtep", True, True, False, "tuned on another stream's validation split (GTEP)"),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ConfigError(f"protocol={name} is not a tuning protocol; valid: {', '.join(PROTOCOLS)}.")
    return PROTOCOLS[name]


def tuning_overrides(p: Protocol, experiment: str, tune_experiment: str | None, validation: float,
                     first_experiences: int) -> list[str]:
    """The overrides that make a trial of protocol ``p``: its stream and what it scores on."""
    if p.other_stream and not tune_experiment:
        raise ConfigError("protocol=gtep tunes on another stream: give tune_experiment=<experiment> (e.g. "
                          "tune_experiment=hpo_split_digits experiment=hpo_split_mnist: two streams with one recipe).")
    out = [f"experiment={tune_experiment if p.other_stream else experiment}"]
    if p.validation:
        out.append(f"scenario.validation={validation}")
    if p.first:
        out.append(f"scenario.first_experiences={first_experiences}")
    return out
