"""A batched random resized crop (and optional horizontal flip): tensor operations over the whole batch,
per-sample random parameters from a seeded generator, no Python loop over samples (SCR's second view)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def as_images(x: Tensor) -> Tensor:
    """``x`` as images [B, C, H, W]: 4-D inputs as they are, 3-D [B, H, W] with one channel, flat [B, D]
    as one ``sqrt(D) x sqrt(D)`` channel when ``D`` is a square (MNIST's 784, digits' 64), else as one row
    [B, 1, 1, D] (the crop then acts along the vector)."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x.unsqueeze(1)
    d = x[0].numel()
    s = math.isqrt(d)
    return x.reshape(len(x), 1, s, s) if s * s == d else x.reshape(len(x), 1, 1, d)


class BatchAugment:
    """A random resized crop of each sample, resampled to its size (bilinear, ``F.affine_grid`` +
    ``F.grid_sample``), and optionally a horizontal flip with probability 1/2. Per sample: the crop's area
    is a fraction ``U(scale, 1)`` of the image's, its aspect ratio log-uniform in [3/4, 4/3] (torchvision's
    ``RandomResizedCrop`` draws; a crop that does not fit is the whole image, torchvision's fallback, but
    without its ten retries first), its position uniform among those inside the image.
    The output has the input's shape and dtype.

    Args:
        scale: the smallest crop area, as a fraction of the image's, in (0, 1] (1: no crop, only a
            flip if ``flip``).
        flip: flip each image horizontally with probability 1/2 (natural images; not for digits).
        seed: seed of the generator, made on the inputs' device at the first call (default 0).
    """

    def __init__(self, scale: float, flip: bool = False, seed: int = 0) -> None:
        self.scale, self.flip, self.seed = scale, flip, seed
        self.gen: torch.Generator | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.gen is None:
            self.gen = torch.Generator(device=x.device).manual_seed(self.seed)
        img = as_images(x)
        b, dev = len(img), img.device
        u = torch.rand(4, b, generator=self.gen, device=dev)
        area = self.scale + (1 - self.scale) * u[0]
        ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1])
        if img.shape[2] == 1:  # one row: crop along the row only
            w, h = area, torch.ones_like(area)
        else:
            w, h = (area * ratio).sqrt(), (area / ratio).sqrt()
            whole = (w > 1) | (h > 1)  # a crop that does not fit: the whole image
            w, h = w.masked_fill(whole, 1.0), h.masked_fill(whole, 1.0)
        cx, cy = (1 - w) * (2 * u[2] - 1), (1 - h) * (2 * u[3] - 1)  # the crop's centre, inside the image
        sx = w
        if self.flip:
            sx = w * torch.where(torch.rand(b, generator=self.gen, device=dev) < 0.5, -1.0, 1.0)
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
        src = img if img.is_floating_point() else img.float()  # uint8 images: resampled as floats, rounded back
        grid = F.affine_grid(theta.to(src.dtype), list(img.shape), align_corners=False)
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if not img.is_floating_point():
            info = torch.iinfo(img.dtype)
            out = out.round_().clamp_(info.min, info.max).to(img.dtype)
        return out.reshape(x.shape)

    def state_dict(self) -> dict:
        return {"rng": None if self.gen is None else self.gen.get_state()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        if state["rng"] is not None:
            self.gen = torch.Generator(device=device)
            self.gen.set_state(state["rng"].cpu())
