"""evaluate_many: exact accuracy and loss, independent of the evaluation batch size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clframe.data.stream import TensorData
from clframe.evaluation.evaluate import evaluate_many


class Oracle:
    """Predicts the class written in x[:, 0], with logit 2 against 0 for the rest; records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.grad_enabled: list[bool] = []

    def __call__(self, x, t):
        self.batches.append(len(x))
        self.grad_enabled.append(torch.is_grad_enabled())
        return 2.0 * F.one_hot(x[:, 0].long(), 5).float()


def dataset(pred: list[int], y: list[int]) -> TensorData:
    x = torch.tensor(pred).float().view(-1, 1).repeat(1, 3)
    return TensorData(x, torch.tensor(y, dtype=torch.long), torch.zeros(len(y), dtype=torch.long))


def expected_loss(pred, y):
    logits = 2.0 * F.one_hot(torch.tensor(pred), 5).float()
    return F.cross_entropy(logits, torch.tensor(y)).item()


DATA = [
    ([0, 1, 2, 3, 4, 0, 1], [0, 1, 2, 0, 0, 0, 0]),  # 4 of 7
    ([1, 1, 1], [1, 1, 1]),  # all right
    ([2, 3], [4, 4]),  # all wrong
]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 1000])
def test_exact_accuracy_and_loss_for_any_batch_size(batch_size):
    model = Oracle()
    accs, losses = evaluate_many(model, [dataset(p, y) for p, y in DATA], batch_size=batch_size)
    assert accs == pytest.approx([4 / 7, 1.0, 0.0])
    assert losses == pytest.approx([expected_loss(p, y) for p, y in DATA], rel=1e-6)
    assert max(model.batches) <= batch_size
    assert sum(model.batches) == sum(len(y) for _, y in DATA)
    assert not any(model.grad_enabled)


def test_large_dataset_batch_size_one_equals_one_batch():
    g = torch.Generator().manual_seed(0)
    pred, y = torch.randint(0, 5, (257,), generator=g).tolist(), torch.randint(0, 5, (257,), generator=g).tolist()
    d = dataset(pred, y)
    a1, l1 = evaluate_many(Oracle(), [d], batch_size=1)
    a2, l2 = evaluate_many(Oracle(), [d], batch_size=1000)
    exact = sum(p == t for p, t in zip(pred, y)) / 257
    assert a1[0] == pytest.approx(exact) and a2[0] == pytest.approx(exact)
    assert l1[0] == pytest.approx(l2[0], rel=1e-5)


def test_model_sees_task_labels():
    seen = []

    def model(x, t):
        seen.append(t.clone())
        return torch.zeros(len(x), 3)

    d = TensorData(torch.zeros(4, 2), torch.zeros(4).long(), torch.tensor([2, 2, 2, 2]))
    evaluate_many(model, [d], batch_size=3)
    assert torch.cat(seen).tolist() == [2, 2, 2, 2]


def test_no_datasets_and_empty_dataset():
    assert evaluate_many(Oracle(), []) == ([], [])
    accs, losses = evaluate_many(Oracle(), [dataset([], []), dataset([1], [1])])
    assert accs == pytest.approx([0.0, 1.0])
    assert losses[0] == 0.0
