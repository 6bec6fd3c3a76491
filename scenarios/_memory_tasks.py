"""N-parity and N-delayed-match-to-sample sequences and their curricula (Khajehabdollahi, Zeraati
et al., ICLR 2024; reference code LevinaLab/rnn_timescale_public).

A sequence is ``T`` random bits; the label depends on its last ``N`` bits: parity, their sum mod 2
(bits Bernoulli(p), p ~ U(0, 1) per sequence); DMS, whether bit ``T - N + 1`` equals bit ``T``
(p = 1/2). Lengths are uniform in ``[N_max + 2, 4 N_max + 2)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from clframe.config.registry import ParamError
from clframe.core.objectives import IGNORE
from clframe.data.batch import Batch
from clframe.data.curriculum import Curriculum
from clframe.data.sequences import with_lengths
from clframe.data.stream import Experience, Scenario, Stream, TensorData

CURRICULA = ("single", "multi", "sliding")


def _last_bits(bits: Tensor, lengths: Tensor, back: int) -> Tensor:
    """The bit ``back`` steps before each sequence's last one (0: the last bit) [B]."""
    return bits.gather(1, (lengths - 1 - back).unsqueeze(1)).squeeze(1)


def parity_labels(bits: Tensor, lengths: Tensor, n: int) -> Tensor:
    """Sum of the last ``n`` valid bits mod 2 [B] (int64)."""
    c = torch.nn.functional.pad(bits.cumsum(1), (1, 0))  # c[:, i] = sum of the first i bits
    last = c.gather(1, lengths.unsqueeze(1)) - c.gather(1, (lengths - n).unsqueeze(1))
    return last.squeeze(1).long() % 2


def dms_labels(bits: Tensor, lengths: Tensor, n: int) -> Tensor:
    """1 where bit ``T - n + 1`` equals the last bit ``T`` [B] (int64)."""
    return (_last_bits(bits, lengths, n - 1) == _last_bits(bits, lengths, 0)).long()


TASKS: dict[str, tuple[Callable[[Tensor, Tensor, int], Tensor], bool]] = {
    # name -> (labels, whether p ~ U(0, 1) per sequence; else p = 1/2)
    "parity": (parity_labels, True),
    "dms": (dms_labels, False),
}


def sample_sequences(
    task: str, batch_size: int, n_max: int, steps: int, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Random bits [B, steps] (zero after each length) and lengths [B] uniform in ``[n_max + 2, 4 n_max + 2)``."""
    _, random_p = TASKS[task]
    lengths = torch.randint(n_max + 2, 4 * n_max + 2, (batch_size,), generator=generator, device=device)
    p = torch.rand(batch_size, 1, generator=generator, device=device) if random_p else torch.full(
        (batch_size, 1), 0.5, device=device)
    bits = (torch.rand(batch_size, steps, generator=generator, device=device) < p).float()
    bits = bits * (torch.arange(steps, device=device) < lengths.unsqueeze(1))
    return bits, lengths


class MemoryCurriculum(Curriculum):
    """N = ``n_min`` .. ``n_max``, one level each.

    Args:
        task: ``parity`` or ``dms``.
        ns: the N of each level.
        kind: ``single``: one head, trained on the current N; ``multi``: a head per N, all heads so
            far trained on the summed loss; ``sliding``: a head per N, the last ``window`` trained.
        window: heads trained at once by ``sliding``.
        length_n: ``final``: lengths from the last level's N for every level; ``level``: from the
            largest N trained at the level (the reference code).
        threshold, max_steps_per_level: see ``Curriculum``.
    """

    def __init__(self, task: str, ns: list[int], kind: str, window: int, length_n: str, threshold: float,
                 max_steps_per_level: int) -> None:
        super().__init__(len(ns), threshold, max_steps_per_level)
        self.task, self.ns, self.kind, self.window, self.length_n = task, ns, kind, window, length_n
        self.steps = 4 * ns[-1] + 1  # the longest sequence of any level

    def trained_heads(self, level: int) -> list[int]:
        """The levels whose heads train at ``level`` (one shared head for ``single``)."""
        if self.kind == "single":
            return [level]
        first = 0 if self.kind == "multi" else max(0, level - self.window + 1)
        return list(range(first, level + 1))

    def criterion_experiences(self, level: int) -> list[int]:
        return self.trained_heads(level)

    def length_for(self, level: int) -> int:
        return self.ns[-1] if self.length_n == "final" else self.ns[level]

    def data(self, level: int, heads: list[int], n: int, g: torch.Generator, device: torch.device) -> TensorData:
        """``n`` sequences of ``level``'s length distribution, repeated once per head in ``heads`` (head-major),
        each copy labelled for that head's N and carrying its task label (0 for ``single``)."""
        bits, lengths = sample_sequences(self.task, n, self.length_for(level), self.steps, g, device)
        x = with_lengths(bits.unsqueeze(-1), lengths)  # [n, T, 2]
        labels = TASKS[self.task][0]
        y = torch.cat([labels(bits, lengths, self.ns[h]) for h in heads])
        t = torch.cat([torch.full((n,), 0 if self.kind == "single" else h, device=device) for h in heads])
        return TensorData(x.repeat(len(heads), 1, 1), y, t)

    def sample(self, level: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Batch:
        """``batch_size`` fresh sequences of ``level``. With a head per level (``multi``, ``sliding``) labels
        and task labels are [B, n_levels], one column per head: the trained heads' labels, ``IGNORE``
        elsewhere; the backbone runs once per sequence, and every batch of the run has the same shape
        (so a replay buffer can hold them)."""
        heads = self.trained_heads(level)
        d = self.data(level, heads, batch_size, generator, device)
        if self.kind == "single":
            return Batch(d.x, d.y, d.t, level)
        y = torch.full((batch_size, self.n_levels), IGNORE, dtype=torch.long, device=device)
        t = torch.zeros((batch_size, self.n_levels), dtype=torch.long, device=device)
        y[:, heads] = d.y.view(len(heads), batch_size).t()
        t[:, heads] = torch.tensor(heads, device=device)
        # a sample's loss is the mean over its K trained heads: weight K / B makes the total the sum over
        # heads of each head's mean loss, as in the reference
        weight = torch.full((batch_size,), len(heads) / batch_size, device=device)
        return Batch(d.x[:batch_size], y, t, level, weight=weight)


def memory_scenario(
    task: str, n_min: int, n_max: int, curriculum: str, window: int, lengths: str, threshold: float,
    max_steps_per_level: int, eval_samples: int, train_samples: int, seed: int,
) -> Scenario:
    """The curriculum scenario of ``task``; the arguments are those of ``scenarios.parity``."""
    if curriculum not in CURRICULA:
        raise ParamError("curriculum", f"must be one of {', '.join(CURRICULA)}, got '{curriculum}'")
    if lengths not in ("final", "level"):
        raise ParamError("lengths", f"must be final or level, got '{lengths}'")
    if not 1 <= n_min <= n_max:
        raise ParamError("n_max", f"must be >= n_min >= 1, got n_min={n_min}, n_max={n_max}")
    for key, value in (("window", window), ("eval_samples", eval_samples), ("train_samples", train_samples),
                       ("max_steps_per_level", max_steps_per_level)):
        if value < 1:
            raise ParamError(key, f"must be >= 1, got {value}")
    if not 0 < threshold <= 1:
        raise ParamError("threshold", f"must be in (0, 1], got {threshold}")
    ns = list(range(n_min, n_max + 1))
    cur = MemoryCurriculum(task, ns, curriculum, window, lengths, threshold, max_steps_per_level)
    g = torch.Generator().manual_seed(seed)
    cpu = torch.device("cpu")
    exps = []
    for i, n in enumerate(ns):
        task_label = 0 if curriculum == "single" else i
        exps.append(Experience(
            index=i,
            # strategies that read an experience's data (EWC's Fisher) get a fixed sample of its head;
            # training batches themselves are drawn fresh by the curriculum
            train=cur.data(i, [i], train_samples, g, cpu),
            eval=cur.data(i, [i], eval_samples, g, cpu),
            classes_in_this_experience=[0, 1],
            task_label=task_label,
            info={"N": n},
        ))
    heads = "one head" if curriculum == "single" else "a head per N"
    return Scenario(Stream(exps), n_classes=2, input_shape=(cur.steps, 2),
                    n_tasks=1 if curriculum == "single" else len(ns),
                    name=f"{task} curriculum N={n_min}..{n_max} ({curriculum}, {heads})", curriculum=cur)



