"""Sequential few-shot learning: N-way K-shot episodes as sequences with delayed label feedback.

The set-up of Santoro et al. 2016 ("Meta-learning with memory-augmented neural networks") and
Irie et al. 2022 (the self-referential weight matrix paper): a sequence shows ``n_way`` classes,
``shots`` examples each, in random order. The classes are mapped to the labels ``0 .. n_way - 1``
by a permutation drawn anew for every sequence, so the mapping cannot be memorised in the weights:
it has to be learnt in context. At step ``t`` the input is the example ``x_t`` (flattened) and the
one-hot of the correct label of step ``t - 1`` (zeros at ``t = 0``); the target at every step is
the episode label of ``x_t``. Use a per-step readout: ``backbone=gru backbone.readout=every head=linear``.

The stream is class-incremental over episodes: experience ``i`` builds its episodes from its own,
disjoint group of the dataset's classes (training episodes from the dataset's train images,
eval episodes from its test images). ``heldout_classes`` classes are kept out of every
experience; episodes over them (test images) measure in-context learning of classes never
trained on. The framework needs training samples in every experience (``clframe.run.checks``), so
they are not an experience of their own: they are ``experience.info["heldout_eval"]``, the same
``TensorData`` on every experience, for the user's own evaluation (the runner's accuracy matrix
does not include them; ``Scenario.to`` does not move them, they stay on the CPU).

The helpers here (the class pools, ``build_episodes``, ``episode_stream``) are
shared with ``scenarios.drifting_labels``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from annotated_types import Ge
from clframe.scenarios._common import tensor_data
from torch import Tensor

from clframe.config.registry import SCENARIOS, ParamError
from clframe.core.objectives import IGNORE
from clframe.data.datasets import load_dataset
from clframe.data.sequences import with_lengths
from clframe.data.stream import Experience, Scenario, Stream, TensorData
from clframe.monitors.fewshot import shot_index

DATASETS = ("digits", "mnist1d")


@dataclass
class ClassPool:
    """The samples of a few classes, indexed by class.

    Args:
        x: flattened samples [M, F], sorted by class.
        classes: the dataset classes, in pool order.
        counts: samples of each class [C].
        offsets: index in ``x`` of each class's first sample [C].
    """

    x: Tensor
    classes: list[int]
    counts: Tensor
    offsets: Tensor

    @classmethod
    def of(cls, x: Tensor, y: Tensor, classes: list[int]) -> ClassPool:
        """The samples of ``x`` [N, ...] whose label ``y`` [N] is in ``classes``."""
        keep = torch.isin(y, torch.tensor(classes))
        x, y = x[keep].flatten(1), y[keep]
        rank = torch.full((int(y.max()) + 1,), -1, dtype=torch.long)
        rank[torch.tensor(classes)] = torch.arange(len(classes))
        order = rank[y].argsort(stable=True)
        counts = torch.bincount(rank[y], minlength=len(classes))
        return cls(x[order].contiguous(), list(classes), counts, counts.cumsum(0) - counts)

    def __len__(self) -> int:
        return len(self.classes)


@dataclass
class Episodes:
    """Episodes as the scenarios store them, and what they were built from.

    Args:
        x: inputs [N, T, F + n_way + 1]: the example, the one-hot label of the previous step, and
            the valid-step channel (all ones).
        y: targets [N, T]: ``labels``, with ``IGNORE`` on first shots when those are ignored.
        labels: the episode label of every step [N, T] (what the feedback one-hot shows a step later).
        classes: the dataset class of every step [N, T].
        slots: which of its sequence's ``n_way`` classes each step shows [N, T].
    """

    x: Tensor
    y: Tensor
    labels: Tensor
    classes: Tensor
    slots: Tensor

    def data(self) -> TensorData:
        return tensor_data(self.x, self.y, 0)


def build_episodes(pool: ClassPool, slots: Tensor, labels: Tensor, n_way: int, first_shot_ignored: bool,
                   g: torch.Generator) -> Episodes:
    """Fill episodes with examples.

    Each sequence draws ``n_way`` of the pool's classes (uniformly, in random order); slot ``j``
    shows the ``j``-th drawn class. A slot's occurrences show distinct examples of its class, in
    random order (an example recurs only when the slot occurs more often than the class has examples).

    Args:
        pool: the classes to draw from (at least ``n_way``).
        slots: which drawn class each step shows [N, T], in ``[0, n_way)``.
        labels: the label of each step [N, T], in ``[0, n_way)``.
        n_way: classes per sequence.
        first_shot_ignored: label each class's first occurrence in a sequence ``IGNORE``.
        g: the generator every draw comes from.
    """
    n, steps = slots.shape
    chosen = torch.rand(n, len(pool), generator=g).argsort(1)[:, :n_way]  # [N, n_way] pool class indices
    cls = chosen.gather(1, slots)  # [N, T]
    occurrence = shot_index(slots)
    count = pool.counts[cls]
    # per (sequence, slot) a random order of its class's examples: invalid positions sort last
    width = int(pool.counts[chosen].max())
    k = min(int(occurrence.max()) + 1, width)
    keys = torch.rand(n, n_way, width, generator=g)
    keys.masked_fill_(torch.arange(width) >= pool.counts[chosen].unsqueeze(-1), 2.0)
    order = keys.topk(k, dim=-1, largest=False).indices  # [N, n_way, k]
    pos = order.view(n, n_way * k).gather(1, slots * k + occurrence % count)  # [N, T]
    n_features = pool.x.shape[1]
    inputs = torch.zeros(n, steps, n_features + n_way, dtype=pool.x.dtype)
    inputs[..., :n_features] = pool.x[pool.offsets[cls] + pos]  # the examples
    inputs[:, 1:, n_features:].scatter_(-1, labels[:, :-1].unsqueeze(-1), 1.0)  # the label of step t - 1
    x = with_lengths(inputs)
    y = labels.masked_fill(occurrence == 0, IGNORE) if first_shot_ignored else labels.clone()
    return Episodes(x, y, labels, torch.tensor(pool.classes)[cls], slots)


def fewshot_steps(n: int, n_way: int, shots: int, g: torch.Generator) -> Tensor:
    """The slots of ``n`` episodes [n, n_way * shots]: each of ``0 .. n_way - 1`` ``shots`` times, in random order."""
    return torch.arange(n_way).repeat_interleave(shots)[torch.rand(n, n_way * shots, generator=g).argsort(1)]


def check_stream(dataset: str, n_experiences: int, n_way: int, heldout_classes: int, n_train_episodes: int,
                 n_eval_episodes: int) -> list[list[int]]:
    """``ParamError`` for settings that give no stream; else the class groups: one per experience,
    then the held-out classes (the last ``heldout_classes`` classes)."""
    if dataset not in DATASETS:
        raise ParamError("dataset", f"must be one of {', '.join(DATASETS)}, got '{dataset}'")
    n_classes = 10  # both datasets
    if n_way < 2:
        raise ParamError("n_way", f"must be >= 2, got {n_way}", "With one class there is nothing to learn in context.")
    if n_experiences < 1:
        raise ParamError("n_experiences", f"must be >= 1, got {n_experiences}")
    if heldout_classes < 0:
        raise ParamError("heldout_classes", f"must be >= 0, got {heldout_classes}", "0 holds no class out.")
    per_experience = (n_classes - heldout_classes) // n_experiences
    if per_experience < n_way:
        raise ParamError("n_way", f"must be at most the classes of each experience, {per_experience} ({dataset} has "
                         f"{n_classes} classes, {heldout_classes} held out, {n_experiences} experiences), got {n_way}",
                         "Lower n_way, n_experiences or heldout_classes.")
    if 0 < heldout_classes < n_way:
        raise ParamError("heldout_classes", f"must be 0 or at least n_way={n_way}, got {heldout_classes}",
                         "Held-out episodes need n_way held-out classes; 0 holds none out.")
    for key, value in (("n_train_episodes", n_train_episodes), ("n_eval_episodes", n_eval_episodes)):
        if value < 1:
            raise ParamError(key, f"must be >= 1, got {value}", "Every experience needs episodes.")
    classes = torch.arange(n_classes)
    groups = [grp.tolist() for grp in classes[: n_classes - heldout_classes].tensor_split(n_experiences)]
    return groups + [classes[n_classes - heldout_classes:].tolist()]


def episode_stream(
    dataset: str, n_experiences: int, n_way: int, heldout_classes: int, n_train_episodes: int, n_eval_episodes: int,
    first_shot_ignored: bool, seed: int, steps: Callable[[int, torch.Generator], tuple[Tensor, Tensor]], name: str,
) -> Scenario:
    """The stream of ``fewshot_sequences`` with the episodes ``steps`` lays out.

    Args:
        steps: ``(n, g) -> (slots, labels)``, both [n, T] in ``[0, n_way)`` (see ``build_episodes``).
        name: the scenario name.
        the others: those of ``fewshot_sequences``.
    """
    *groups, heldout = check_stream(dataset, n_experiences, n_way, heldout_classes, n_train_episodes,
                                    n_eval_episodes)
    ds = load_dataset(dataset)
    g = torch.Generator().manual_seed(seed)

    def episodes(x: Tensor, y: Tensor, classes: list[int], n: int) -> TensorData:
        return build_episodes(ClassPool.of(x, y, classes), *steps(n, g), n_way, first_shot_ignored, g).data()

    exps = [Experience(
        index=i,
        train=episodes(ds.x_train, ds.y_train, group, n_train_episodes),
        eval=episodes(ds.x_test, ds.y_test, group, n_eval_episodes),
        classes_in_this_experience=list(range(n_way)),  # the head's outputs: the episode labels
        # in_context: the runner reports accuracy against shots (clframe.monitors.fewshot)
        info={"dataset_classes": group, "in_context": True},
    ) for i, group in enumerate(groups)]
    if heldout:
        heldout_eval = episodes(ds.x_test, ds.y_test, heldout, n_eval_episodes)
        for e in exps:
            e.info.update(heldout_classes=heldout, heldout_eval=heldout_eval)
    x = exps[0].train.x
    return Scenario(Stream(exps), n_classes=n_way, input_shape=tuple(x.shape[1:]), name=name)


@SCENARIOS.register("fewshot_sequences")
def fewshot_sequences(
    dataset: Literal["digits", "mnist1d"] = "digits",
    n_experiences: Annotated[int, Ge(1)] = 2,
    n_way: Annotated[int, Ge(2)] = 3,
    shots: Annotated[int, Ge(1)] = 5,
    n_train_episodes: Annotated[int, Ge(1)] = 2000,
    n_eval_episodes: Annotated[int, Ge(1)] = 200,
    heldout_classes: Annotated[int, Ge(0)] = 3,
    first_shot_ignored: bool = True,
    seed: int = 0,
) -> Scenario:
    """N-way K-shot episodes as sequences of ``T = n_way * shots`` steps, learnt in context.

    Inputs are [N, T, F + n_way + 1]: the flattened example (F = 64 for digits, 40 for mnist1d),
    the one-hot of the previous step's label (zeros at step 0) and the valid-step channel (all
    ones); labels [N, T], the episode label at every step; ``n_classes = n_way``. Each sequence
    maps its classes to the labels by its own random permutation. ``shot_index`` numbers the shots.

    The 10 classes are in order 0..9: the last ``heldout_classes`` are held out (their test-image
    episodes are ``experience.info["heldout_eval"]``), the rest are split as evenly as possible into
    ``n_experiences`` disjoint groups (digits defaults: 0-3, 4-6; held out 7-9), each group's classes
    in ``info["dataset_classes"]``.

    Args:
        dataset: ``digits`` or ``mnist1d`` (default ``digits``).
        n_experiences: experiences, over disjoint groups of classes (default 2).
        n_way: classes per episode; at most the classes of every experience (default 3: 10 classes
            hold 5-way episodes only in at most 2 groups, with nothing held out).
        shots: examples of each class per episode (default 5).
        n_train_episodes: training episodes per experience, from the dataset's train images (default 2000).
        n_eval_episodes: eval episodes per experience and held-out episodes, from its test images (default 200).
        heldout_classes: classes in no experience, 0 or at least ``n_way`` (default 3).
        first_shot_ignored: label the first shot of each class ``IGNORE`` (-100, not scored): until its
            label has been shown, a class's label can only be guessed (default True).
        seed: seed of the episodes (default 0).
    """
    check_stream(dataset, n_experiences, n_way, heldout_classes, n_train_episodes, n_eval_episodes)
    if shots < 1 or (first_shot_ignored and shots < 2):
        raise ParamError("shots", f"must be >= {2 if first_shot_ignored else 1}, got {shots}",
                         "With first_shot_ignored=true a class needs a second shot to be scored.")

    def steps(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        slots = fewshot_steps(n, n_way, shots, g)
        return slots, slots  # the random order of the drawn classes is the label permutation

    return episode_stream(dataset, n_experiences, n_way, heldout_classes, n_train_episodes, n_eval_episodes,
                          first_shot_ignored, seed, steps,
                          f"fewshot-{dataset} ({n_way}-way {shots}-shot sequences, {n_experiences} experiences)")
