"""Heads: the multihead classifies among its task's classes only."""

from __future__ import annotations

import torch

from clframe.config import compose
from clframe.models.heads.linear import LinearHead, MultiHead
from clframe.run.runner import build


def test_multihead_picks_the_head_of_each_sample_and_masks_other_classes():
    torch.manual_seed(0)
    head = MultiHead(in_features=4, n_classes=6, n_tasks=3)
    head.set_task_classes(0, [0, 1])
    head.set_task_classes(2, [4, 5])
    h, t = torch.randn(5, 4), torch.tensor([0, 2, 2, 0, 1])
    out = head(h, t)
    assert out[0].argmax() in (0, 1) and out[1].argmax() in (4, 5)
    # task 1 was never restricted: all its classes stay open
    assert torch.isfinite(out[4]).all() and out[4].min() > -1e30
    # unmasked logits equal that task's own linear map
    w = head.weight.view(3, 6, 4)[2]
    b = head.bias.view(3, 6)[2]
    assert torch.allclose(out[1, 4:], (h[1] @ w.T + b)[4:])


def test_multihead_on_a_class_incremental_stream_opens_every_class_of_the_shared_task():
    built = build(compose(["head=multihead", "scenario.n_experiences=5", "backbone.hidden=[8]"]))
    assert built.module.head.class_mask.shape == (1, 10)
    assert built.module.head.class_mask.all()


def test_task_incremental_multihead_masks_follow_the_experiences():
    built = build(compose(["experiment=split_digits_til", "backbone.hidden=[8]"]))
    mask = built.module.head.class_mask
    for e in built.scenario.stream:
        assert mask[e.task_label].nonzero().flatten().tolist() == e.classes_in_this_experience


def test_linear_head_ignores_task_labels():
    head = LinearHead(in_features=3, n_classes=4)
    h = torch.randn(2, 3)
    assert torch.equal(head(h, torch.tensor([0, 1])), head(h, torch.tensor([5, 7])))


def test_multihead_with_several_task_labels_per_sample_gives_one_output_per_head():
    torch.manual_seed(0)
    head = MultiHead(in_features=4, n_classes=6, n_tasks=3)
    head.set_task_classes(0, [0, 1])
    head.set_task_classes(1, [2, 3])
    h, t = torch.randn(5, 4), torch.tensor([[0, 1, 2], [2, 2, 0], [1, 0, 1], [0, 0, 0], [2, 1, 0]])
    out = head(h, t)
    assert out.shape == (5, 3, 6)
    for k in range(3):
        assert torch.equal(out[:, k], head(h, t[:, k]))
