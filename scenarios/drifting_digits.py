"""Drifting digits: one boundary-free stream over a real dataset whose label map and class prior
change at random, unmarked times (class-conditional drift)."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Gt
from clframe.scenarios._common import symmetric_inputs, tensor_data
from torch import Tensor

from clframe.config.registry import SCENARIOS, ParamError
from clframe.data.datasets import load_dataset
from clframe.data.stream import Experience, Scenario, Stream


def event_times(n_samples: int, n_events: int, min_gap: int, g: torch.Generator) -> Tensor:
    """``n_events`` increasing steps in ``(0, n_samples)``, uniform over every placement with at least
    ``min_gap`` (>= 1) samples between two events and between an event and the stream's start or end.

    Stars and bars: the gaps beyond ``min_gap`` are a composition of the slack ``n_samples -
    (n_events + 1) min_gap``, and compositions map one-to-one to ``n_events`` distinct positions
    among ``slack + n_events``, so a sorted draw without replacement is exactly uniform.
    """
    if n_events == 0:
        return torch.zeros(0, dtype=torch.long)
    slack = n_samples - (n_events + 1) * min_gap
    picks = torch.randperm(slack + n_events, generator=g)[:n_events].sort().values
    return picks - torch.arange(n_events) + torch.arange(1, n_events + 1) * min_gap


def _dirichlet(alpha: float, n: int, g: torch.Generator) -> Tensor:
    # torch's Dirichlet takes no generator: draw it under a seed from g, the global RNG left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
        return torch.distributions.Dirichlet(torch.full((n,), float(alpha))).sample()


def _new_permutation(mapping: Tensor, g: torch.Generator) -> Tensor:
    """``p o mapping`` for a fresh random permutation ``p`` that is not the identity, so that the
    label map always changes (with two or more classes)."""
    n = len(mapping)
    p = torch.randperm(n, generator=g)
    while n > 1 and torch.equal(p, torch.arange(n)):  # rare: probability 1 / n!
        p = torch.randperm(n, generator=g)
    return p[mapping]


@SCENARIOS.register("drifting_digits")
def drifting_digits(
    dataset: str = "digits",
    n_samples: Annotated[int, Ge(1)] = 20000,
    n_permutations: Annotated[int, Ge(0)] = 3,
    n_prior_shifts: Annotated[int, Ge(0)] = 3,
    dirichlet_alpha: Annotated[float, Gt(0)] = 1.0,
    min_gap: Annotated[int, Ge(1)] = 1000,
    symmetric: bool = True,
    eval_samples: int | None = None,
    seed: int = 0,
    data_root: str | None = None,
    download: bool = False,
) -> Scenario:
    """A stream of ``n_samples`` training examples with class-conditional drift. It starts with a
    uniform class prior and the identity label map; at ``n_permutations`` random times the label
    map is composed with a fresh random permutation (``y -> p(map(y))``), at ``n_prior_shifts``
    others the class prior is redrawn from ``Dirichlet(dirichlet_alpha)``. Event times are distinct
    and uniform, at least ``min_gap`` samples apart and from the stream's ends; which events are
    permutations is random.

    The stream is cut at every event: each segment is one experience (task label 0, all classes)
    whose training samples are in time order (an ordered, boundary-free stream): classes drawn
    i.i.d. from the segment's prior, each a random training example of its class, labelled through
    the segment's label map. Its eval data is the test split (the first ``eval_samples``) labelled
    through the same map; the prior is not applied to eval. ``info``: ``label_map`` (LongTensor,
    ``map[y]`` is the label of class ``y``), ``class_prior`` (FloatTensor over the dataset's classes,
    before the label map; classes without training examples get 0), ``event`` (``start``,
    ``permutation`` or ``prior_shift``) and ``start_step`` (the segment's first step in the stream).

    Args:
        dataset: dataset name, e.g. ``digits`` or ``mnist1d`` (default ``digits``).
        n_samples: length of the stream, in training samples (default 20000).
        n_permutations: label-permutation events (default 3).
        n_prior_shifts: class-prior-shift events (default 3).
        dirichlet_alpha: concentration of the Dirichlet the new priors are drawn from; small values
            give skewed priors (default 1.0).
        min_gap: minimum samples between two events and between an event and the stream's start or
            end, >= 1; at most ``n_samples / (n_permutations + n_prior_shifts + 1)`` (default 1000).
        symmetric: inputs mapped to [-1, 1] (default True).
        eval_samples: eval samples per experience, the first of the test split; None for all of it
            (default None).
        seed: seed of the events, priors, permutations and sample order (default 0).
        data_root: dataset directory (default: the dataset's own).
        download: allow downloading a missing dataset (default False).
    """
    if dirichlet_alpha <= 0:
        raise ParamError("dirichlet_alpha", f"must be > 0, got {dirichlet_alpha}", "It is a Dirichlet concentration.")
    if eval_samples is not None and eval_samples < 1:
        raise ParamError("eval_samples", f"must be >= 1 or null (the whole test split), got {eval_samples}")
    n_events = n_permutations + n_prior_shifts
    if n_events and (n_events + 1) * min_gap > n_samples:  # with no events there is nothing to space
        raise ParamError(
            "min_gap", f"must be <= n_samples / (n_permutations + n_prior_shifts + 1) = {n_samples // (n_events + 1)}"
            f" for n_samples={n_samples} and {n_events} events, got {min_gap}",
            "The events need min_gap samples between each other and from the stream's start and end: lower "
            "min_gap or the number of events, or raise n_samples.")
    ds = load_dataset(dataset, data_root, download)
    ds = symmetric_inputs(ds) if symmetric else ds
    n_classes = ds.n_classes
    g = torch.Generator().manual_seed(seed)
    times = event_times(n_samples, n_events, min_gap, g).tolist()
    kinds = ["prior_shift"] * n_events
    for k in torch.randperm(n_events, generator=g)[:n_permutations].tolist():
        kinds[k] = "permutation"

    # training examples grouped by class: the j-th example of class c is order[first[c] + j]
    counts = torch.bincount(ds.y_train, minlength=n_classes)
    order = torch.argsort(ds.y_train, stable=True)
    first = counts.cumsum(0) - counts
    present = (counts > 0).float()  # a class without training examples cannot be drawn

    def prior_of(p: Tensor) -> Tensor:
        p = p * present
        return p / p.sum()

    x_eval = ds.x_test[:eval_samples] if eval_samples is not None else ds.x_test
    y_eval = ds.y_test[: len(x_eval)]
    mapping, prior = torch.arange(n_classes), prior_of(torch.ones(n_classes))
    bounds = [0, *times, n_samples]
    exps = []
    for i, (start, end, event) in enumerate(zip(bounds[:-1], bounds[1:], ["start", *kinds])):
        if event == "permutation":
            mapping = _new_permutation(mapping, g)
        elif event == "prior_shift":
            prior = prior_of(_dirichlet(dirichlet_alpha, n_classes, g))
        cls = torch.multinomial(prior, end - start, replacement=True, generator=g)
        offset = (torch.rand(end - start, generator=g, dtype=torch.float64) * counts[cls]).long()
        idx = order[first[cls] + offset.minimum(counts[cls] - 1)]  # the min guards against rounding up to count
        exps.append(Experience(i, tensor_data(ds.x_train[idx], mapping[ds.y_train[idx]], 0),
                               tensor_data(x_eval, mapping[y_eval], 0), list(range(n_classes)),
                               info={"label_map": mapping, "class_prior": prior.float(), "event": event,
                                     "start_step": start}))
    return Scenario(Stream(exps, boundary_free=True, ordered=True), n_classes=n_classes,
                    input_shape=tuple(ds.x_train.shape[1:]),
                    name=f"drifting-{dataset} ({n_samples} samples, {n_permutations} permutations, "
                         f"{n_prior_shifts} prior shifts)")
