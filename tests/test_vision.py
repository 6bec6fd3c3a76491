"""The vision benchmarks: CIFAR read from its real on-disk format, uint8 images normalised in the model and
augmented per sample on the device (replayed samples too), mixed precision with every strategy,
channels_last, and class-incremental runs end to end."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from strategy_helpers import at, interrupted_and_resumed
from vision_helpers import write_cifar

from clframe.config import compose, validate
from clframe.config.registry import STRATEGIES
from clframe.core.hooks import Plugin
from clframe.data.augment import ImageAugment
from clframe.data.datasets import load_dataset
from clframe.errors import ConfigError, DatasetNotFoundError
from clframe.models.preprocess import Normalize
from clframe.run.runner import build, fit


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10", per_class_train=24, per_class_test=6)
    write_cifar(root, "cifar100", per_class_train=2, per_class_test=1)
    return root


RESNET = ("backbone=resnet18", "backbone.nf=4")
MLP = ("backbone=mlp", "backbone.hidden=[32]")  # fast, and every strategy's hooks run (CBP needs Linear-act-Linear)


def cifar_run(root, *overrides: str, backbone: tuple[str, ...] = RESNET) -> list[str]:
    """A small class-incremental Split CIFAR-10 run (5 x 2) on the synthetic files under ``root``."""
    return ["scenario=split", "scenario.dataset=cifar10", f"scenario.data_root={root}", "scenario.n_experiences=5",
            *backbone, "train.batch_size=16", "train.lr=0.05", "logger.progress=false",
            "checkpoint.enabled=false", "monitors.continual.every=20", *overrides]


# -- datasets -------------------------------------------------------------------------------------------
def test_cifar10_reads_the_python_batches_as_uint8_images(cifar_root):
    ds = load_dataset("cifar10", str(cifar_root))
    assert ds.x_train.shape == (240, 3, 32, 32) and ds.x_test.shape == (60, 3, 32, 32)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert sorted(ds.y_train.unique().tolist()) == list(range(10)) and ds.n_classes == 10
    assert ds.image.mean == (0.4914, 0.4822, 0.4465) and ds.image.padding == 4 and ds.image.flip
    # the row layout of the archive: 1024 red, then green, then blue values of a 32x32 image
    raw = pickle.load(open(cifar_root / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="bytes")
    assert torch.equal(ds.x_train[0], torch.from_numpy(np.asarray(raw[b"data"][0]).reshape(3, 32, 32)))
    # also when data_root is the archive's folder itself
    assert len(load_dataset("cifar10", str(cifar_root / "cifar-10-batches-py")).y_test) == 60


def test_cifar100_uses_the_fine_labels(cifar_root):
    ds = load_dataset("cifar100", str(cifar_root))
    assert ds.n_classes == 100 and ds.y_train.max() == 99 and ds.x_train.shape[1:] == (3, 32, 32)


def test_split_cifar10_has_five_experiences_of_two_classes_in_the_official_order(cifar_root):
    built = build(compose(cifar_run(cifar_root)))
    exps = built.scenario.stream
    assert [e.classes_in_this_experience for e in exps] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert all(set(e.train.y.tolist()) == set(e.classes_in_this_experience) for e in exps)
    assert built.scenario.image is not None and exps[0].train.x.dtype == torch.uint8


class Payload:
    """What a malicious batch would run when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_batch_that_would_build_anything_but_arrays_is_refused_and_nothing_runs(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", 1, 1)
    marker = tmp_path / "ran"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Payload(str(marker)), b"labels": [0]}, f, protocol=2)
    with pytest.raises(ConfigError, match="data_batch_3.*nothing in it was run"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


def test_missing_cifar_says_where_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("cifar100", str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and "cifar-100-python.tar.gz" in msg and "scenario.download=true" in msg


def test_uint8_images_through_a_scenario_that_does_not_keep_their_recipe_are_refused(cifar_root):
    with pytest.raises(ConfigError, match="uint8.*scenario=split"):
        build(compose(["scenario=permuted", "scenario.dataset=cifar10", f"scenario.data_root={cifar_root}",
                       "logger.progress=false"]))


# -- augmentation and normalisation -------------------------------------------------------------------
def test_augmentation_draws_a_crop_and_flip_per_sample_and_keeps_uint8():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    out = ImageAugment(padding=2, flip=True)(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    views = set()
    for b in range(len(x)):  # each sample is one crop of its padded image, maybe flipped
        crops = {(i, j): padded[b, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5)}
        match = [(i, j, f) for (i, j), c in crops.items() for f in (0, 1)
                 if torch.equal(out[b], c.flip(-1) if f else c)]
        assert match, f"sample {b} is not a crop of its padded image"
        views.add(match[0])
    assert len(views) > 10  # drawn per sample, not one draw for the batch
    torch.manual_seed(0)
    assert torch.equal(ImageAugment(padding=2, flip=True)(x), out)  # the run's seed fixes the draws


def test_flip_alone_flips_about_half_of_the_samples():
    x = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    out = ImageAugment(padding=0, flip=True)(x)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) and not torch.equal(o, i) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped | kept).all() and 150 < int(flipped.sum()) < 250


def test_normalize_matches_torchvision_to_tensor_and_normalize():
    from torchvision.transforms.v2 import functional as TF

    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615)
    ref = TF.normalize(x.float() / 255, list(mean), list(std))
    assert torch.allclose(Normalize(mean, std)(x), ref, atol=1e-5)
    assert Normalize(mean, std, channels_last=True)(x).is_contiguous(memory_format=torch.channels_last)


# -- training ----------------------------------------------------------------------------------------------
def final_accuracies(root, strategy: str, *overrides: str) -> list[float]:
    built = build(compose(cifar_run(root, f"strategy={strategy}", "train.epochs=8", *overrides)))
    fit(built)
    return built.module.acc_matrix[-1]


def test_class_incremental_replay_trains_end_to_end_and_beats_naive(cifar_root):
    naive = final_accuracies(cifar_root, "naive")
    replay = final_accuracies(cifar_root, "replay", "strategies.replay.mem_size=100")
    assert naive[-1] > 0.8  # the last experience is learnt ...
    assert max(naive[:-1]) < 0.2  # ... and the earlier ones forgotten without replay
    assert sum(replay) / 5 > sum(naive) / 5 + 0.15, (replay, naive)


class Inputs(Plugin):
    """Records what the model was fed at each step (the batch after augmentation)."""

    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def before_optimizer_step(self, ctx) -> None:
        self.batches.append((ctx.batch.x.clone(), ctx.batch.raw.clone()))


def test_replayed_samples_are_stored_raw_and_augmented_afresh_with_the_stream(cifar_root):
    built = build(compose(cifar_run(cifar_root, "strategy=der", "train.epochs=1", "strategies.der.mem_size=50")))
    probe = Inputs()
    built.module.set_plugins([probe])
    fit(built)
    x_new, raw = probe.batches[-1]
    assert len(x_new) == 32  # 16 from the stream + 16 replayed, augmented together
    assert x_new.dtype == raw.dtype == torch.uint8 and not torch.equal(x_new, raw)
    stored = built.module.strategies["der"].buffer.x[:50]
    train = torch.cat([e.train.x for e in built.scenario.stream])
    # the buffer holds the dataset's images as they are, not augmented views
    assert stored.dtype == torch.uint8
    assert all((train == s).flatten(1).all(1).any() for s in stored)


def test_an_augmented_run_resumes_exactly(cifar_root, tmp_path):
    overrides = [*cifar_run(cifar_root, "strategy=derpp", "train.epochs=1", "strategies.derpp.mem_size=40"),
                 "checkpoint.enabled=true", "checkpoint.every=10", "scenario.n_experiences=2", "backbone.nf=2"]
    interrupted_and_resumed(overrides, tmp_path, at(0.5))


SPECIAL = {"cumulative": ["scenario.cumulative=true"], "hnet_reg": ["hypernet=hnet_mlp"]}


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_mixed_precision_works_with_every_strategy(cifar_root, strategy, precision):
    built = build(compose([*cifar_run(cifar_root, f"strategy={strategy}", f"trainer.precision={precision}",
                                      "scenario.n_experiences=2", "train.epochs=2", backbone=MLP),
                           *SPECIAL.get(strategy, [])]))
    fit(built)
    losses = [v for row in built.module.loss_log for k, v in row.items() if k.startswith("loss/")]
    assert losses and all(math.isfinite(v) for v in losses)
    # the weights and every tensor a strategy keeps stay float32
    assert all(p.dtype == torch.float32 for p in built.module.parameters())
    state = built.module.strategies[next(iter(built.module.strategies))].state_dict()
    floats = [v for v in torch.utils._pytree.tree_leaves(state) if torch.is_tensor(v) and v.is_floating_point()]
    assert all(v.dtype == torch.float32 for v in floats), {v.dtype for v in floats}


class Grads(Plugin):
    def __init__(self) -> None:
        self.norms: list[float] = []

    def before_optimizer_step(self, ctx) -> None:
        self.norms.append(float(torch.cat([p.grad.flatten() for p in ctx.module.parameters()
                                           if p.grad is not None]).norm()))


def test_float16_loss_scaling_is_undone_before_strategies_read_the_gradients(cifar_root):
    norms = {}
    for precision in ("32-true", "16-mixed"):
        built = build(compose(cifar_run(cifar_root, "strategy=naive", f"trainer.precision={precision}",
                                        "train.epochs=1", "scenario.n_experiences=1", backbone=MLP)))
        probe = Grads()
        built.module.set_plugins([probe])
        fit(built)
        norms[precision] = probe.norms
    # float16 steps whose gradients overflowed at the first, large scales reach the strategies as zeros
    scaled = [(a, b) for a, b in zip(norms["32-true"], norms["16-mixed"]) if b > 0]
    assert scaled, norms
    a, b = scaled[0]  # the first step taken: the same weights in both runs, so the same gradient up to float16
    assert abs(b / a - 1) < 0.1, (a, b)


def test_channels_last_lays_out_the_backbone_and_its_inputs(cifar_root):
    built = build(compose(cifar_run(cifar_root, "train.channels_last=true", "train.epochs=1",
                                    "scenario.n_experiences=1")))
    assert built.module.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    fit(built)
    assert all(math.isfinite(a) for a in built.module.acc_matrix[-1])


@pytest.mark.slow
def test_a_compiled_backbone_trains(cifar_root):
    built = build(compose(cifar_run(cifar_root, "train.compile=true", "train.epochs=1", "scenario.n_experiences=2")))
    fit(built)
    assert len(built.module.acc_matrix) == 2


def test_the_experiments_ship_each_strategy_s_learning_rate(cifar_root):
    lr = {s: compose(["experiment=split_cifar10", f"strategy={s}"]).train.lr for s in ("replay", "derpp", "ewc")}
    assert lr == {"replay": 0.1, "derpp": 0.03, "ewc": 0.03}
    assert compose(["experiment=split_cifar10", "strategy=replay", "train.lr=0.05"]).train.lr == 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_data_stays_on_the_device_and_bf16_channels_last_trains(cifar_root):
    built = build(compose(cifar_run(cifar_root, "trainer.accelerator=gpu", "trainer.precision=bf16-mixed",
                                    "train.channels_last=true", "strategy=derpp", "train.epochs=2")))
    assert built.scenario.stream[0].train.x.is_cuda and built.scenario.stream[0].train.x.dtype == torch.uint8
    x = built.scenario.stream[0].train.x[:8]
    assert ImageAugment()(x).is_cuda
    fit(built)
    assert all(math.isfinite(a) for a in built.module.acc_matrix[-1])


def folder_dataset(root) -> None:
    """An image_folder tree of PNGs: 4 learnable classes, 16x16."""
    import torchvision.io as tio
    from vision_helpers import class_images

    for split, per_class, seed in (("train", 12, 0), ("test", 4, 1)):
        x, y = class_images(4, per_class, size=16, seed=seed)
        for i, (img, label) in enumerate(zip(x, y)):
            path = root / split / f"class_{label}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            tio.write_file(str(path), tio.encode_png(torch.from_numpy(img)))


@pytest.mark.parametrize("dataset", ["tinyimagenet", "image_folder"])
def test_decoded_image_datasets_train_class_incrementally_with_replay(tmp_path, dataset):
    if dataset == "tinyimagenet":
        from vision_helpers import write_tinyimagenet

        write_tinyimagenet(tmp_path, n_classes=4, per_class_train=12, per_class_val=4, size=16)
    else:
        folder_dataset(tmp_path)
    built = build(compose(["scenario=split", f"scenario.dataset={dataset}", f"scenario.data_root={tmp_path}",
                           "scenario.n_experiences=2", *RESNET, "strategy=replay", "strategies.replay.mem_size=20",
                           "train.epochs=6", "train.batch_size=8", "logger.progress=false",
                           "checkpoint.enabled=false"]))
    x = built.scenario.stream[0].train.x
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 16, 16) and built.module.augment is not None
    fit(built)
    assert built.module.strategies["replay"].buffer.x.dtype == torch.uint8
    assert min(built.module.acc_matrix[-1]) > 0.5  # both experiences' classes are told apart at the end


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_the_vision_experiments_take_every_strategy(strategy, cifar_root):
    overrides = ["experiment=split_cifar10", f"strategy={strategy}", f"scenario.data_root={cifar_root}"]
    if strategy == "hnet_reg":
        overrides.append("hypernet=hnet_mlp")  # a hypernetwork's regulariser: it needs one
    c = validate(compose(overrides))
    assert c["scenario"]["cumulative"] == (strategy == "cumulative")
