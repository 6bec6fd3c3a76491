import pytest
import torch

from clframe.config.registry import HYPERNETS
from clframe.errors import ConfigError
from clframe.models.backbones.mlp import MLP
from clframe.models.heads.linear import LinearHead
from clframe.models.hypernets.base import mip_encode
from clframe.models.model import Model


def build(name="hnet_mlp", n_tasks=3, **params):
    torch.manual_seed(0)
    model = Model(MLP((6,), hidden=(5,)), LinearHead(5, 4))
    return HYPERNETS.build(name, params, target=model, n_tasks=n_tasks, n_classes=4)


@pytest.mark.parametrize("name,params", [("hnet_mlp", {"chunk_size": 7}), ("hnet_mlp", {}),
                                         ("hnet_rnn", {"chunk_size": 7, "cell": "gru"}),
                                         ("hnet_rnn", {"chunk_size": 7, "cell": "lstm", "straddle": True})])
def test_generating_several_tasks_in_one_call_equals_one_call_each(name, params):
    hn = build(name, **params)
    tasks = torch.tensor([2, 0, 1])
    together = hn.generate(tasks)
    assert together.shape == (3, hn.n_params)
    for i, k in enumerate(tasks):
        torch.testing.assert_close(together[i], hn.generate(k.view(1))[0])


def test_training_forward_uses_the_task_weights_once_per_batch_and_marks_the_task_trained():
    hn = build(chunk_size=7).train()
    x = torch.randn(8, 6)
    out = hn(x, torch.full((8,), 1))
    w = hn.generate(torch.tensor([1]))[0]
    torch.testing.assert_close(out, hn.target(w, x, torch.full((8,), 1)))
    assert hn.trained.tolist() == [False, True, False]


def test_training_batch_with_two_task_labels_is_refused():
    hn = build().train()
    with pytest.raises(RuntimeError, match="one task label"):
        hn(torch.randn(4, 6), torch.tensor([0, 0, 1, 1]))


def test_evaluation_batch_may_mix_task_labels():
    hn = build().eval()
    x, t = torch.randn(6, 6), torch.tensor([0, 1, 2, 0, 1, 2])
    out = hn(x, t)
    for k in range(3):
        sel = t == k
        torch.testing.assert_close(out[sel], hn.target(hn.generate(torch.tensor([k]))[0], x[sel], t[sel]))


def test_only_the_active_task_embedding_gets_a_gradient():
    hn = build().train()
    hn.set_active_task(1)
    hn(torch.randn(4, 6), torch.full((4,), 1)).sum().backward()
    grads = [p.grad for p in hn.task_embs]
    assert grads[0] is None and grads[2] is None and grads[1].abs().sum() > 0


def test_outputs_are_masked_to_the_task_classes():
    hn = build().eval()
    hn.set_task_classes(0, [0, 1])
    hn.set_task_classes(1, [2, 3])
    out = hn(torch.randn(2, 6), torch.tensor([0, 1]))
    assert out[0].argmax() in (0, 1) and out[1].argmax() in (2, 3)
    assert out[0, 2:].max() < -1e30 and out[1, :2].max() < -1e30


def test_entropy_inference_picks_the_confident_task():
    hn = build(task_inference="entropy").eval()
    hn.set_task_classes(0, [0, 1])
    hn.set_task_classes(1, [2, 3])
    hn.trained[:2] = True
    with torch.no_grad():
        # task 1's generated head is made very confident: large output weights
        hn.task_embs[0].zero_()
        hn.task_embs[1].fill_(3.0)
    x = torch.randn(16, 6)
    given = torch.zeros(16, dtype=torch.long)
    outs = [hn.target(w, x, given) for w in hn.generate(torch.tensor([0, 1]))]
    ent = torch.stack([torch.special.entr(o[:, cls].softmax(-1)).sum(-1) for o, cls in zip(outs, ([0, 1], [2, 3]))])
    inferred = hn.infer_tasks(x, given)
    assert torch.equal(inferred, ent.argmin(0))
    out = hn(x, given)  # the labels are ignored: each sample is scored by its inferred task's head
    picked = out.argmax(1)
    assert torch.equal(picked >= 2, inferred == 1)


def test_entropy_inference_uses_given_labels_before_any_training():
    hn = build(task_inference="entropy").eval()
    t = torch.tensor([2, 1])
    assert torch.equal(hn.infer_tasks(torch.randn(2, 6), t), t)


def test_mip_encoding_has_constant_norm_and_the_output_starts_near_the_targets_init():
    e = torch.randn(10, 4) * 5
    assert torch.allclose(mip_encode(e).norm(dim=-1), torch.full((10,), 2.0))
    hn = build(mip=True, chunk_size=7)
    theta0 = hn.target.theta0()
    w = hn.generate(torch.tensor([0]))[0]
    assert hn.core.theta0 is not None and torch.equal(hn.core.theta0.detach(), theta0)
    assert w.shape == theta0.shape
    with torch.no_grad():  # residual output: with a silent generator the weights are the init exactly
        hn.core.generator.net[-1].weight.zero_()
    torch.testing.assert_close(hn.generate(torch.tensor([0, 2])), theta0.expand(2, -1))


def test_mip_makes_the_output_scale_independent_of_the_embedding_scale():
    hn = build(mip=True, chunk_size=7)
    with torch.no_grad():
        hn.task_embs[0].mul_(100.0)
        hn.task_embs[1].mul_(0.01)
    w = hn.generate(torch.tensor([0, 1]))
    theta0 = hn.target.theta0()
    ratio = (w[0] - theta0).norm() / (w[1] - theta0).norm()
    assert 0.2 < ratio < 5  # without MIP the first would be ~10^4 times the second


def test_rnn_growth_keeps_the_function_exactly():
    hn = build("hnet_rnn", chunk_size=7, hidden_size=6)
    tasks = torch.tensor([0, 1, 2])
    before = hn.generate(tasks).detach()
    hn.core.generator.grow(5)
    assert hn.core.generator.hidden_size == 11 and hn.core.generator.rnn.weight_hh_l0.shape[1] == 11
    torch.testing.assert_close(hn.generate(tasks), before, rtol=0, atol=1e-6)


def test_a_grown_rnn_hypernetwork_loads_into_a_fresh_one():
    hn = build("hnet_rnn", chunk_size=7, hidden_size=6, cell="gru")
    hn.core.generator.grow(3)
    fresh = build("hnet_rnn", chunk_size=7, hidden_size=6, cell="gru")
    fresh.load_state_dict(hn.state_dict())
    tasks = torch.tensor([0, 2])
    torch.testing.assert_close(fresh.generate(tasks), hn.generate(tasks))


def test_bad_sizes_name_the_key():
    with pytest.raises(ConfigError, match="hypernet.chunk_size"):
        build(chunk_size=0)
    with pytest.raises(ConfigError, match="Valid keys"):
        build(hidden_units=3)


def test_xavier_init_scales_each_target_tensors_rows_by_its_own_fan_out():
    hn = build(init="xavier", hidden=(10,))
    last = hn.core.generator.net[-1]
    sizes = hn.target.sizes  # [30, 5, 20, 4]: the 6x5 weight, its bias, the 5x4 weight, its bias
    for rows, n in zip(last.weight.split(sizes), sizes):
        assert rows.abs().max() <= (6 / (10 + n)) ** 0.5
    assert last.weight.split(sizes)[1].abs().max() > (6 / (10 + sum(sizes))) ** 0.5  # wider than one big layer
    assert all(float(m.bias.abs().sum()) == 0 for m in hn.core.generator.net if isinstance(m, torch.nn.Linear))


def test_task_embeddings_can_start_at_zero():
    hn = build(task_emb_init="zero")
    assert all(float(p.abs().sum()) == 0 for p in hn.task_embs)
