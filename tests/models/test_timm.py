"""The timm backbone: features and out_features, the registry, weights from .safetensors and .pt files
(equal outputs, classifier dropped, input conv adapted, pickled objects refused unrun, mismatches named),
the errors for a bad model name, a missing file and a download where downloads are off, and a run end
to end. Only timm's tiny test models, built without weights: nothing is downloaded."""

from __future__ import annotations

import socket

import pytest
import timm
import torch
from safetensors.torch import save_file

from clframe.config import compose
from clframe.config.registry import BACKBONES, ParamError
from clframe.data.offline import offline
from clframe.errors import ConfigError
from clframe.models.backbones.timm import TimmBackbone
from clframe.run.runner import build, fit


def source_model(name: str, in_chans: int = 3) -> torch.nn.Module:
    """A timm model with its 10-class classifier, as a user's trained or downloaded one."""
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10, in_chans=in_chans).eval()


def features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.mark.parametrize(("name", "shape", "size"), [("test_resnet", (3, 32, 32), 96), ("test_vit", (3, 32, 32), 64),
                                                     ("test_efficientnet", (1, 8, 8), 256)])
def test_pooled_features_and_out_features(name, shape, size):
    net = TimmBackbone(shape, model=name)
    out = net(torch.randn(2, *shape))
    assert net.out_features == size and out.shape == (2, size) and torch.isfinite(out).all()
    assert net(torch.randn(2, *shape).flatten(1)).shape == (2, size)  # flat inputs are reshaped
    out.sum().backward()
    assert net.data_config["mean"] and net.data_config["std"]  # timm's normalisation, exposed, not applied


def test_out_features_is_the_pooled_size_where_it_differs_from_num_features():
    net = TimmBackbone((3, 16, 16), model="test_mambaout")  # a pre-logits layer after the pooling
    assert net.net.num_features == 64 and net.out_features == 256 == net(torch.randn(1, 3, 16, 16)).shape[1]


def test_registered_and_built_through_the_registry():
    assert "timm" in BACKBONES.names()
    net = BACKBONES.build("timm", {"model": "test_resnet", "drop_rate": 0.1}, input_shape=(3, 32, 32))
    assert isinstance(net, TimmBackbone) and net.net.drop_rate == 0.1
    assert net.net.get_classifier().__class__ is torch.nn.Identity


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_weights_from_a_file_give_the_source_models_features(tmp_path, name, suffix):
    src = source_model(name)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    assert any(k.startswith(("fc.", "head.")) for k in state)  # the classifier is in the file
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    net = TimmBackbone((3, 32, 32), model=name, weights=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), features(src, x))
    assert not torch.equal(TimmBackbone((3, 32, 32), model=name).eval()(x), net(x))  # not the random init


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_a_state_dict_nested_in_a_checkpoint_loads(tmp_path, key):
    src = source_model("test_resnet")
    torch.save({key: src.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    net = TimmBackbone((3, 16, 16), model="test_resnet", weights=str(tmp_path / "ckpt.pth")).eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(net(x).detach(), features(src, x))


def test_rgb_weights_are_adapted_to_one_channel_images(tmp_path):
    src = source_model("test_resnet")
    torch.save(src.state_dict(), tmp_path / "rgb.pt")
    net = TimmBackbone((1, 8, 8), model="test_resnet", weights=str(tmp_path / "rgb.pt")).eval()
    first = src.pretrained_cfg["first_conv"] + ".weight"
    assert torch.equal(net.net.state_dict()[first], src.state_dict()[first].sum(1, keepdim=True))
    # a grey image is an RGB image with three equal channels
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(net(x).detach(), features(src, x.expand(-1, 3, -1, -1)), atol=1e-5)


class Payload:
    ran = False

    def __reduce__(self):
        return (_run_payload, ())


def _run_payload():
    Payload.ran = True
    return {}


def test_a_pickled_object_is_refused_and_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"conv1.0.weight": torch.zeros(1), "x": Payload()}, path)
    Payload.ran = False
    with pytest.raises(ParamError, match=r"Python objects that only full unpickling.*nothing in it was run"):
        TimmBackbone((3, 16, 16), model="test_resnet", weights=str(path))
    assert not Payload.ran
    with pytest.raises(ConfigError, match=r"'backbone.weights' is .*evil.pt.*refused and nothing in it was run"):
        BACKBONES.build("timm", {"model": "test_resnet", "weights": str(path)}, input_shape=(3, 16, 16))
    assert not Payload.ran


def test_weights_of_another_model_are_refused_with_the_keys(tmp_path):
    torch.save(source_model("test_efficientnet").state_dict(), tmp_path / "other.pt")
    with pytest.raises(ParamError, match=r"do not fit timm model 'test_resnet' \(shapes differ: bn1\.weight \(24,\) "
                                         r"\(model: \(32,\)\).*missing: conv1\.0\.weight.*\(and 80 more\); "
                                         r"unexpected: conv_stem\.weight"):
        TimmBackbone((3, 16, 16), model="test_resnet", weights=str(tmp_path / "other.pt"))


def test_strict_false_loads_what_matches_and_refuses_shape_mismatches(tmp_path):
    src = source_model("test_resnet")
    state = src.state_dict()
    part = {k: v for k, v in state.items() if k.startswith("conv1.")}
    torch.save({**part, "extra.weight": torch.zeros(2)}, tmp_path / "part.pt")
    net = TimmBackbone((3, 16, 16), model="test_resnet", weights=str(tmp_path / "part.pt"), strict=False)
    assert all(torch.equal(net.net.state_dict()[k], v) for k, v in part.items())
    with pytest.raises(ParamError, match="missing: "):
        TimmBackbone((3, 16, 16), model="test_resnet", weights=str(tmp_path / "part.pt"))
    key = next(iter(part))
    torch.save({key: torch.zeros(3, 3)}, tmp_path / "bad.pt")
    with pytest.raises(ParamError, match=rf"shapes differ: {key} \(3, 3\)"):
        TimmBackbone((3, 16, 16), model="test_resnet", weights=str(tmp_path / "bad.pt"), strict=False)


def test_a_bad_model_name_names_the_close_matches():
    with pytest.raises(ConfigError, match=r"'backbone.model' is 'resnt18', which is not a timm model\. "
                                          r"Did you mean resnet18"):
        BACKBONES.build("timm", {"model": "resnt18"}, input_shape=(3, 32, 32))


def test_a_model_that_cannot_take_the_image_size_is_refused_at_build():
    with pytest.raises(ConfigError, match=r"'backbone.model' is 'test_vit', which cannot take the scenario's 1x8x8"):
        BACKBONES.build("timm", {"model": "test_vit"}, input_shape=(1, 8, 8))


def test_a_missing_weights_file_names_the_path_and_where_to_get_weights(tmp_path):
    path = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(ConfigError, match=rf"'backbone.weights' is .*{path} does not exist.*"
                                          r"huggingface.co/timm/test_resnet"):
        BACKBONES.build("timm", {"model": "test_resnet", "weights": str(path)}, input_shape=(3, 16, 16))


def test_non_image_inputs_and_weights_with_pretrained_are_refused():
    with pytest.raises(ConfigError, match="timm backbone needs image inputs"):
        BACKBONES.build("timm", {"model": "test_resnet"}, input_shape=(64,))
    with pytest.raises(ConfigError, match="'backbone.pretrained' is true and 'weights' is set too"):
        BACKBONES.build("timm", {"model": "test_resnet", "weights": "w.pt", "pretrained": True},
                        input_shape=(3, 16, 16))


@pytest.fixture
def no_connections(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_pretrained_where_downloads_are_off_is_refused_without_touching_the_network(no_connections):
    with offline(), pytest.raises(ConfigError, match=r"'backbone.pretrained' is true.*downloading is off"):
        BACKBONES.build("timm", {"model": "test_resnet", "pretrained": True}, input_shape=(3, 16, 16))


def test_a_failed_download_is_a_one_line_error(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub.\nmore")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", unreachable)
    with pytest.raises(ConfigError, match=r"could not be downloaded \(An error happened while trying to locate the "
                                          r"file on the Hub\)") as e:
        BACKBONES.build("timm", {"model": "test_resnet", "pretrained": True}, input_shape=(3, 16, 16))
    assert "\n" not in str(e.value)


def test_a_run_trains_end_to_end_on_split_digits():
    built = build(compose(["scenario=split", "scenario.dataset=digits", "scenario.n_experiences=2", "backbone=timm",
                           "backbone.model=test_efficientnet", "train.epochs=1", "logger.progress=false"]))
    assert built.scenario.input_shape == (1, 8, 8)
    net = built.module.model.backbone
    assert isinstance(net, TimmBackbone) and net.out_features == 256
    before = [p.detach().clone() for p in net.parameters()]
    fit(built)
    acc = built.module.acc_matrix
    assert len(acc) == 2 and all(len(row) == 2 for row in acc)
    assert all(0.0 <= a <= 1.0 for row in acc for a in row)
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_a_one_sample_batch_trains_where_the_map_is_1x1():
    # the last batch of an epoch of split digits holds one sample, and 8x8 is 1x1 after the model's strides
    torch.manual_seed(0)
    net = TimmBackbone((1, 8, 8), model="test_resnet").train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    out = net(torch.randn(1, 1, 8, 8))
    out.sum().backward()
    assert out.shape == (1, 96) and torch.isfinite(out).all() and all(m.training for m in bns)
    changed = [not torch.equal(b, m.running_mean) for b, m in zip(before, bns)]
    # the first BatchNorm (a larger map) normalises by the batch, the last (1x1) does not
    assert changed[0] and not changed[-1]
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 96)
