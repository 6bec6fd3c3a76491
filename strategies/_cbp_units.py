"""The hidden units continual backprop tests and replaces: rows of a Linear, channels of a Conv2d."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

# modules allowed between a Linear unit's activation and the next Linear (they do not mix units)
PASS_THROUGH = (nn.Dropout, nn.AlphaDropout, nn.Identity)
# ... and between a conv channel's activation and the next layer: these act per channel as well
CONV_PASS_THROUGH = PASS_THROUGH + (nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d,
                                   nn.AdaptiveAvgPool2d)


class Unit(NamedTuple):
    """One hidden layer: ``layer``'s output rows (Linear) or channels (Conv2d) are its units, ``act``
    the activation module after it, ``nxt`` the Linear or Conv2d that reads them."""

    name: str
    layer: nn.Linear | nn.Conv2d
    act: nn.Module
    nxt: nn.Linear | nn.Conv2d

    @property
    def size(self) -> int:
        """Number of units (``out_features`` or ``out_channels``)."""
        return self.layer.weight.shape[0]

    def outgoing(self, t: Tensor) -> Tensor:
        """``t`` (``nxt.weight`` or a tensor shaped like it) as a view whose ``[:, c]`` are unit c's outgoing
        weights: ``[out, size, 1]`` for Linear -> Linear, ``[out, C, spatial]`` for Flatten -> Linear (the
        columns of channel c are ``c*spatial:(c+1)*spatial``), the kernel ``[out, C, kh, kw]`` itself for a Conv2d."""
        return t.unflatten(1, (self.size, -1)) if t.dim() == 2 else t


def is_activation(m: nn.Module) -> bool:
    """A parameter-free module from ``torch.nn.modules.activation`` (ReLU, Tanh, GELU, ...)."""
    return type(m).__module__ == "torch.nn.modules.activation" and not any(True for _ in m.parameters())


def find_units(model: nn.Module) -> list[Unit]:
    """A ``Unit`` ``(name, layer, activation, next_layer)`` for every hidden layer of ``model``.

    Walks the leaf modules in registration order (the forward order of an ``nn.Sequential``
    and of backbone-then-head): a Linear, then an activation module, then any dropout or
    identity, then a Linear whose ``in_features`` is the first one's ``out_features`` (e.g. the
    head's); or a Conv2d, then an activation module, then any pooling, dropout or identity, then
    either a Conv2d (``groups=1``) reading its ``out_channels``, or an ``nn.Flatten()`` (any dropout
    or identity after it) and a Linear whose ``in_features`` is a multiple of ``out_channels``.
    Activations applied as functions (``torch.relu(x)``), norm layers between a layer and its
    activation, and skip connections (the leaf order does not show them) are not seen.
    """
    leaves = [(n, m) for n, m in model.named_modules(remove_duplicate=False) if next(m.children(), None) is None]
    mods = [m for _, m in leaves]
    out: list[Unit] = []
    for i, (name, layer) in enumerate(leaves[:-2]):
        act = mods[i + 1]
        if not isinstance(layer, nn.Linear | nn.Conv2d) or not is_activation(act):
            continue
        nxt = _reader(layer, mods, i + 2)
        if nxt is not None:
            if any(act is u.act for u in out):
                raise ValueError(f"continual_backprop: activation module after '{name}' is shared by two layers; "
                                 "give every hidden layer its own activation module")
            out.append(Unit(name, layer, act, nxt))
    return out


def _reader(layer: nn.Linear | nn.Conv2d, mods: list[nn.Module], j: int) -> nn.Linear | nn.Conv2d | None:
    """The layer reading ``layer``'s units, looking from ``mods[j]`` on; None if they are mixed first."""
    n, conv = layer.weight.shape[0], isinstance(layer, nn.Conv2d)
    j = _skip(mods, j, CONV_PASS_THROUGH if conv else PASS_THROUGH)
    m = mods[j] if j < len(mods) else None
    flat = conv and isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim in (-1, 3)
    if flat:
        j = _skip(mods, j + 1, PASS_THROUGH)
    nxt = mods[j] if j < len(mods) else None
    if isinstance(nxt, nn.Linear) and (not conv and nxt.in_features == n or flat and nxt.in_features % n == 0):
        return nxt
    if isinstance(nxt, nn.Conv2d) and conv and not flat and nxt.groups == 1 and nxt.in_channels == n:
        return nxt
    return None


def _skip(mods: list[nn.Module], j: int, kinds: tuple[type[nn.Module], ...]) -> int:
    while j < len(mods) and isinstance(mods[j], kinds):
        j += 1
    return j
