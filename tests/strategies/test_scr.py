"""SCR: the supervised contrastive loss, the batched augmentation, the batch it trains on, the
nearest-class-mean classifier, that it beats naive online, resume, refusals, and Avalanche's SCR."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from clframe.strategies._augment import BatchAugment
from clframe.strategies.scr import SCR, supcon_loss
from strategy_helpers import Head, inside_second_of_three, interrupted_and_resumed
from torch import nn

from clframe.config import compose
from clframe.core.module import CLModule
from clframe.core.objectives import CLASSIFICATION
from clframe.core.strategy import StepContext
from clframe.data.batch import Batch
from clframe.errors import ConfigError
from clframe.models.model import Model
from clframe.run.runner import build, fit, run

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # avalanche warns about optional dependencies at import
    from avalanche.training.losses import SCRLoss



def test_the_contrastive_loss_is_a_plain_loop_over_anchors_and_positives():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(7, 5), dim=1)
    y = torch.tensor([0, 1, 0, 2, 1, 2, 0])
    tau = 0.3
    total = 0.0
    for i in range(7):
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(7) if a != i)
        pos = [p for p in range(7) if p != i and y[p] == y[i]]
        total += -sum(float(z[i] @ z[p]) / tau - math.log(denom) for p in pos) / len(pos)
    assert supcon_loss(z, y, tau).item() == pytest.approx(total / 7, rel=1e-5)
    # and Avalanche's SCRLoss (SupContrast's code) on the two views, at its base temperature (factor 1)
    views = torch.stack([z[:3], z[3:6]], 1)
    labels = torch.tensor([0, 1, 0])
    ours = supcon_loss(torch.cat([z[:3], z[3:6]]), torch.cat([labels, labels]), 0.07)
    assert ours.item() == pytest.approx(SCRLoss(temperature=0.07)(views, labels).item(), rel=1e-5)


@pytest.mark.parametrize("shape", [(16, 64), (16, 784), (16, 10), (16, 3, 8, 8), (16, 8, 8)])
def test_the_augmentation_keeps_shapes_is_seeded_and_changes_the_inputs(shape):
    x = torch.rand(shape)
    a, b = BatchAugment(0.2, seed=3)(x), BatchAugment(0.2, seed=3)(x)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    assert not torch.equal(a, BatchAugment(0.2, seed=4)(x))
    changed = (a - x).flatten(1).abs().amax(1) > 1e-3
    assert changed.float().mean() > 0.8  # nearly every sample is cropped
    aug = BatchAugment(0.2, seed=3)
    assert not torch.equal(aug(x), aug(x))  # the generator moves on


def test_a_full_crop_is_the_identity_and_a_flip_mirrors():
    x = torch.rand(32, 3, 6, 6)
    assert torch.allclose(BatchAugment(1.0)(x), x, atol=1e-5)
    out = BatchAugment(1.0, flip=True)(x)
    flipped = torch.isclose(out, x.flip(-1), atol=1e-5).flatten(1).all(1)
    same = torch.isclose(out, x, atol=1e-5).flatten(1).all(1)
    assert (flipped | same).all() and flipped.any() and same.any()


def test_a_crop_of_a_digit_is_a_zoom():
    img = torch.zeros(1, 1, 8, 8)
    img[..., 2:6, 2:6] = 1.0  # a centred square
    aug = BatchAugment(0.25, seed=0)
    out = aug(img.expand(64, -1, -1, -1).clone())
    # zoomed in, the square covers more of the image on average (border padding for none: crops stay inside)
    assert out.mean() > img.mean() + 0.05


CLS = SimpleNamespace(objective=CLASSIFICATION)


def batch_of(ids: list[int], exp: int = 1) -> Batch:
    ids_t = torch.tensor(ids)
    return Batch(ids_t.float().view(-1, 1).expand(-1, 16).clone(), ids_t % 4, ids_t // 100, exp)


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net, self.out_features = nn.Linear(16, 8), 8

    def forward(self, x):
        return self.net(x)


def module_with(s: SCR) -> CLModule:
    m = CLModule(Model(Backbone(), Head(nn.Linear(8, 4))), {"scr": s}, [SimpleNamespace(
        classes_in_this_experience=[0, 1, 2, 3], task_label=0)], [10], lr=0.1)
    m.configure_optimizers()
    s.setup(m)
    return m


def test_a_step_contrasts_two_views_of_the_incoming_and_drawn_samples_with_the_task_loss_off():
    s = SCR(mem_size=20, batch_size_mem=6, head_dim=5)
    m = module_with(s)
    first = s.before_forward(batch_of([1, 2, 3]), m)
    assert len(first) == 3 and torch.equal(first.weight, torch.zeros(3))  # nothing to contrast with yet
    assert s.loss_terms(StepContext(m, first, torch.zeros(3, 4), torch.zeros(()), 0, 0)) == {}
    s.buffer.add(*(lambda b: (b.x, b.y, b.t))(batch_of(list(range(100, 130)))))
    out = s.before_forward(batch_of([1, 2, 3, 4]), m)
    assert len(out) == 20 and out.n_new == 4 and torch.equal(out.weight, torch.zeros(20))
    assert out.x[:4, 0].tolist() == [1, 2, 3, 4] and set(out.x[4:10, 0].long().tolist()) <= set(range(100, 130))
    assert torch.equal(out.y[:10], out.y[10:]) and not torch.equal(out.x[:10], out.x[10:])
    logits, loss, _ = m.model.step(out.x, out.y, out.t, out.weight, CLASSIFICATION)
    terms = s.loss_terms(StepContext(m, out, logits, loss, 1, 0))
    z = F.normalize(s.head(m.model.backbone(out.x)), dim=1)  # the backbone's features through the head
    assert terms["scr"].item() == pytest.approx(supcon_loss(z, out.y, 0.07).item(), rel=1e-6) and loss.item() == 0
    assert not m.model.backbone._forward_hooks  # the feature hook is gone after the step
    before = [p.detach().clone() for p in s.head.parameters()]
    terms["scr"].backward()
    s.after_optimizer_step(StepContext(m, out, logits, loss, 1, 0))
    assert all(not torch.equal(a, p) for a, p in zip(before, s.head.parameters()))  # the head trains
    assert s.buffer.seen == 34  # the incoming samples only


def test_evaluation_is_the_nearest_mean_of_the_memorys_normalised_features():
    s = SCR(mem_size=8)
    m = module_with(s)
    assert s.eval_model(m) is None  # an empty memory: the model's own outputs
    torch.manual_seed(0)
    x, y = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 1, 3, 3, 3])
    s.buffer.add(x, y, torch.zeros(8, dtype=torch.long))
    ncm = s.eval_model(m)
    f = F.normalize(m.model.backbone(x), dim=1)
    for c in (0, 1, 3):
        assert torch.allclose(ncm.means[c], F.normalize(f[y == c].mean(0), dim=0), atol=1e-6)
    assert ncm.seen.tolist() == [True, True, False, True]
    q = torch.randn(5, 16)
    logits = ncm(q, torch.zeros(5, dtype=torch.long))
    assert torch.isinf(logits[:, 2]).all()
    fq = F.normalize(m.model.backbone(q), dim=1)
    d = torch.stack([(fq - ncm.means[c]).pow(2).sum(1) for c in (0, 1, 3)], 1)
    assert torch.allclose(logits[:, [0, 1, 3]], -d, atol=1e-5)


# -- in a run ------------------------------------------------------------------------
ONLINE = ["experiment=online_split_digits", "logger.progress=false"]


def test_scr_beats_naive_on_online_split_digits(tmp_path):
    """The experiment's settings (one pass, batch 10, SGD lr 0.1, memory of 200): SCR with its defaults (100
    drawn a step, τ 0.07, crops of 0.2-1 of the area). Final average accuracy, seeds 0, 1, 2: naive 0.191,
    0.180, 0.157; SCR 0.922, 0.923, 0.924 (seed 0: with 10 drawn a step 0.871, without crops 0.933; er_ace
    0.747, replay 0.776 there)."""
    naive = run(compose([*ONLINE, "strategy=naive"]), tmp_path / "naive")
    scr = run(compose([*ONLINE, "strategy=scr"]), tmp_path / "scr")
    assert naive["final_avg_acc"] < 0.25
    assert scr["final_avg_acc"] > 0.85


RESUME = ["scenario.n_experiences=3", "backbone.hidden=[32]", "train.epochs=1", "logger.progress=false",
          "strategy=scr", "strategies.scr.mem_size=50", "strategies.scr.batch_size_mem=20", "backbone.dropout=0.1",
          "train.momentum=0.9", "checkpoint.every=7", "checkpoint.keep=1000"]


def test_resume_is_bit_identical(tmp_path):
    a, b = interrupted_and_resumed(RESUME, tmp_path, inside_second_of_three)
    sa, sb = a["strategies"]["scr"], b["strategies"]["scr"]
    for key in ("x", "y", "t", "rng"):
        assert torch.equal(sa["buffer"][key], sb["buffer"][key]), key
    assert torch.equal(sa["augment"]["rng"], sb["augment"]["rng"])
    for key, v in sa["head"].items():
        assert torch.equal(v, sb["head"][key]), key
    assert sa["opt"]["state"]  # the head's momentum
    for k, st in sa["opt"]["state"].items():
        assert torch.equal(st["momentum_buffer"], sb["opt"]["state"][k]["momentum_buffer"])


def test_a_regression_objective_is_refused():
    with pytest.raises(ConfigError, match="strategy 'scr' pulls together .* objective is regression. Use "
                                          "strategy=replay"):
        fit(build(compose(["experiment=slowly_changing_regression", "strategy=scr", "logger.progress=false"])))


def test_another_replay_method_is_refused(tiny):
    with pytest.raises(ConfigError, match=r"strategy 'scr' replays samples from its own buffer and cannot be "
                                          r"combined with 'replay'"):
        fit(build(compose([*tiny, "strategy=[replay,scr]"])))


@pytest.mark.parametrize(("key", "value", "match"), [
    ("mem_size", 0, r"'strategies.scr.mem_size' must be >= 1, got 0. Set it to a positive size \(default 200\)"),
    ("batch_size_mem", 0, r"'strategies.scr.batch_size_mem' must be >= 1, got 0. .*strategy=naive"),
    ("head_dim", 0, r"'strategies.scr.head_dim' must be >= 1"),
    ("temperature", 0, r"'strategies.scr.temperature' must be > 0, got 0.* \(default 0.07\)"),
    ("crop_scale", 0, r"'strategies.scr.crop_scale' must be in \(0, 1\], got 0.*Use 1 for no crop"),
])
def test_settings_that_cannot_work_are_refused(tiny, key, value, match):
    with pytest.raises(ConfigError, match=match):
        build(compose([*tiny, "strategy=scr", f"strategies.scr.{key}={value}"]))
