"""Any ``timm`` model as a feature extractor, its weights read from a local file: the route to
continual learning from pre-trained models. Nothing is downloaded unless ``pretrained=true`` asks."""

from __future__ import annotations

import difflib
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clframe.config.registry import BACKBONES, ParamError
from clframe.data.offline import downloads_allowed
from clframe.models.backbones.resnet import as_images, image_shape

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _how_to_get(model: str) -> str:
    return (f"Download model.safetensors (or pytorch_model.bin) of '{model}' from its Hugging Face page "
            f"https://huggingface.co/timm/{model} (the page lists the pretrained tags, e.g. timm/{model}.<tag>) "
            f"on a machine with internet and set backbone.weights to the file, or let timm download it here "
            f"with backbone.pretrained=true.")


def _short(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(list(keys)[:n])
    return shown + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300].rstrip(". ")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a weights file, without unpickling objects: ``.safetensors`` through
    ``safetensors.torch.load_file``, ``.pt``/``.pth``/``.bin`` through ``torch.load(weights_only=True)``;
    a state dict nested under ``state_dict`` or ``model`` is taken out, and a ``module.`` prefix on every
    key (a DistributedDataParallel save) is removed. Raises ``ParamError`` for ``weights`` otherwise."""
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ParamError("weights", f"is {str(path)!r}, a file ending in {path.suffix or 'no suffix'!r}",
                         f"Give a {', '.join(WEIGHT_SUFFIXES)} file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))  # torch's first line advises weights_only=False
        raise ParamError(
            "weights", f"is {str(path)!r}, which holds Python objects that only full unpickling can rebuild "
                       f"({(detail.group(1).strip() if detail else _first_line(e))[:200]})",
            "It was refused and nothing in it was run: clframe reads weights with torch.load(weights_only=True), "
            "because unpickling can run arbitrary code. Save only the state dict (torch.save(model.state_dict(), "
            "path)) or use the model's .safetensors file.") from None
    except Exception as e:  # a damaged or foreign file: whatever safetensors or torch.load raise
        raise ParamError("weights", f"is {str(path)!r}, which cannot be read as weights ({_first_line(e)})",
                         "Check that the file is complete and is a state dict.") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ParamError("weights", f"is {str(path)!r}, which is not a state dict (name -> tensor), nor holds "
                                    "one under 'state_dict' or 'model'",
                         "Save the model's state_dict().")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _one_value_per_channel(module: nn.Module, args: tuple[Any, ...]) -> None:
    # a forward pre-hook of each BatchNorm: a training batch with one value per channel (one sample of a
    # 1x1 map, e.g. the last batch of an epoch on 8x8 digits) has no variance to normalise by, and
    # BatchNorm raises; it is normalised by the running statistics instead (left as they are), as
    # clframe's own ResNets do (clframe.models.backbones.resnet.BatchNorm2d)
    x = args[0] if args else None
    if module.training and torch.is_tensor(x) and x.dim() >= 2 and x.numel() == x.shape[1]:
        module.training = False
        module._clframe_one_value = True  # type: ignore[assignment]


def _restore_training(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
    if getattr(module, "_clframe_one_value", False):
        module.training = True
        module._clframe_one_value = False  # type: ignore[assignment]


@BACKBONES.register("timm")
class TimmBackbone(nn.Module):
    """A ``timm`` model (``timm.create_model(model, num_classes=0, in_chans=C)``) as a feature extractor:
    the forward pass gives its pooled features ``[B, out_features]``, without its classifier (the
    continual-learning head replaces it). The first conv takes the ``C`` channels of the scenario's
    images. A training batch that gives a BatchNorm one value per channel (one sample of a 1x1 map) is
    normalised by the running statistics instead of raising, as in clframe's ResNets. ``clframe`` never
    downloads weights unless ``pretrained=true``.

    Local weights (``weights``) are a timm state dict, e.g. ``model.safetensors`` or ``pytorch_model.bin``
    from the model's Hugging Face page ``timm/<model>``: read without unpickling objects (a ``.pt`` that
    needs unpickling is refused, nothing in it run), taken from under ``state_dict``/``model`` if nested,
    stripped of the original classifier (``fc.*``, ``head.*``, ...: ``pretrained_cfg['classifier']``),
    and with the first conv's RGB weights adapted to ``C`` channels as timm does (summed for 1 channel).
    A ViT's position embedding is not resampled: its weights load at the image size they were trained at.

    ``data_config`` holds the model's pretrained preprocessing (``mean``, ``std``, ``input_size``,
    ``interpolation``, ``crop_pct``: ``timm.data.resolve_data_config``) for reference; it is not applied,
    since the scenario normalises with its dataset's statistics.

    Args:
        input_shape: shape of one sample, ``[C, H, W]`` (supplied by the scenario).
        model: a timm model name, e.g. ``resnet18``, ``vit_tiny_patch16_224``, ``convnext_atto``
            (``timm.list_models()``), optionally with a pretrained tag, ``resnet18.a1_in1k``, which picks
            the weights ``pretrained=true`` downloads (default ``resnet18``).
        weights: a local weights file, ``.safetensors``, ``.pt``, ``.pth`` or ``.bin`` (default None:
            timm's random init).
        pretrained: download timm's pretrained weights from the Hugging Face Hub into its cache
            (``~/.cache/huggingface``); refused where downloads are off (``clframe validate``) and together
            with ``weights`` (default false).
        strict: the ``weights`` file must give exactly the model's parameters and buffers (besides the
            classifier); false loads what matches by name and leaves the rest at random init, though a
            shape mismatch is an error either way (default true).
        drop_rate: dropout before the (removed) classifier, i.e. on the features (default 0.0).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        model: str = "resnet18",
        weights: str | None = None,
        pretrained: bool = False,
        strict: bool = True,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        import timm  # ~1.5 s: only when the backbone is built

        self.input_shape = image_shape(input_shape, "timm")
        self.model_name = model
        if not timm.is_model(model):
            close = difflib.get_close_matches(model, timm.list_models(), n=5, cutoff=0.6)
            raise ParamError("model", f"is {model!r}, which is not a timm model",
                             (f"Did you mean {', '.join(close)}? " if close else "")
                             + "`python -c \"import timm; print(timm.list_models('*resnet*'))\"` lists the names.")
        if not 0.0 <= drop_rate < 1.0:
            raise ParamError("drop_rate", f"must be in [0, 1), got {drop_rate}")
        if weights is not None and pretrained:
            raise ParamError("pretrained", "is true and 'weights' is set too",
                             "Use one: weights=<local file>, or pretrained=true to download.")
        if pretrained and not downloads_allowed():
            raise ParamError("pretrained", f"is true, which downloads the weights of {model!r}, but downloading is "
                                           "off here (`clframe validate` never downloads; `clframe run` does)",
                             _how_to_get(model))
        kwargs = dict(num_classes=0, in_chans=self.input_shape[0], drop_rate=drop_rate)
        if pretrained:
            self.net = self._download(timm, model, kwargs)
        else:
            self.net = timm.create_model(model, pretrained=False, **kwargs)
        if weights is not None:
            self.load_weights(weights, strict)
        for m in self.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_one_value_per_channel)
                m.register_forward_hook(_restore_training)
        self.out_features = self._feature_size()
        self.data_config: dict[str, Any] = dict(timm.data.resolve_data_config({}, model=self.net))

    @staticmethod
    def _download(timm: Any, model: str, kwargs: dict[str, Any]) -> nn.Module:
        try:
            return timm.create_model(model, pretrained=True, **kwargs)
        except (OSError, RuntimeError, ValueError) as e:  # Hugging Face Hub's errors are OSErrors
            raise ParamError("pretrained", f"is true, but the pretrained weights of {model!r} could not be "
                                           f"downloaded ({_first_line(e)})", _how_to_get(model)) from None

    def _classifier_prefixes(self) -> tuple[str, ...]:
        names = self.net.pretrained_cfg.get("classifier") or ()
        return (names,) if isinstance(names, str) else tuple(names)

    def load_weights(self, weights: str, strict: bool = True) -> None:
        """Load a local weights file into the model (see the class docstring)."""
        from timm.models import adapt_input_conv

        path = Path(weights).expanduser()
        if not path.is_file():
            where = "is a directory" if path.is_dir() else "does not exist"
            raise ParamError("weights", f"is {weights!r}, but {path.absolute()} {where}", _how_to_get(self.model_name))
        state = read_state_dict(path)
        own = self.net.state_dict()
        # the original classifier (the CL head replaces it): keys under its name the feature model lacks
        prefixes = tuple(p + "." for p in self._classifier_prefixes())
        state = {k: v for k, v in state.items() if k in own or not k.startswith(prefixes)}
        first = self.net.pretrained_cfg.get("first_conv") or ()
        for name in (first,) if isinstance(first, str) else first:
            key, c = f"{name}.weight", self.input_shape[0]
            if key in state and key in own and state[key].dim() == 4 and state[key].shape != own[key].shape \
                    and state[key].shape[1] == self.net.pretrained_cfg.get("input_size", (3,))[0]:
                state[key] = adapt_input_conv(c, state[key], base_chans=state[key].shape[1])
        wrong = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in state.items()
                 if k in own and v.shape != own[k].shape]
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if wrong or (strict and (missing or unexpected)):
            problems = ([f"shapes differ: {_short(wrong, 3)}"] if wrong else []) + (
                [f"missing: {_short(missing)}"] if strict and missing else []) + (
                [f"unexpected: {_short(unexpected)}"] if strict and unexpected else [])
            raise ParamError(
                "weights", f"is {weights!r}, whose tensors do not fit timm model {self.model_name!r} "
                           f"({'; '.join(problems)})",
                "Use the weights of this very model (timm's names, e.g. from https://huggingface.co/timm/"
                f"{self.model_name}), or backbone.strict=false to load those that match by name.")
        self.net.load_state_dict(state, strict=False)

    def _feature_size(self) -> int:
        """The size of the pooled features, from one forward pass of a blank image of the scenario's
        shape, which also finds inputs the model cannot take (a ViT's fixed size or patch multiple)."""
        training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                out = self.net(torch.zeros(1, *self.input_shape))
        except (RuntimeError, ValueError, AssertionError) as e:
            raise ParamError("model", f"is {self.model_name!r}, which cannot take the scenario's "
                                      f"{'x'.join(map(str, self.input_shape))} images ({_first_line(e)})",
                             "Pick a model for this image size (a CNN takes most sizes) or a scenario with "
                             "larger images.") from None
        finally:
            self.net.train(training)
        return int(out.shape[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(as_images(x, self.input_shape))  # [B, out_features]
