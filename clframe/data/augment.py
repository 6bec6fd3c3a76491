"""Batched image augmentation on the device: a random crop with zero padding and a horizontal flip,
drawn per sample, in one gather.

Why not torchvision.transforms.v2: given a batch tensor it draws one crop and one flip for the whole
batch (a [B, C, H, W] tensor is one image with leading dimensions), while every CL recipe augments each
sample on its own (torchvision's ``RandomCrop(padding=4)`` + ``RandomHorizontalFlip`` per sample in a
DataLoader). Per-sample parameters are one ``randint`` each, and the crop and the flip together are one
index computation, so the images stay uint8 (4x less memory traffic than floats) until the model
normalises them. Draws come from the device's default generator, which the run seeds and checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clframe.data.datasets import ImageRecipe


class ImageAugment(nn.Module):
    """Random crop (the image's own size, after zero padding) and horizontal flip, per sample.

    Args:
        padding: pixels of zeros added on each side before cropping; 0: no crop (default 4).
        flip: flip each sample horizontally with probability 1/2 (default True).
    """

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        super().__init__()
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding, self.flip = padding, flip

    @classmethod
    def from_recipe(cls, recipe: ImageRecipe) -> ImageAugment:
        """The augmentation of a dataset's ``ImageRecipe``."""
        return cls(recipe.padding, recipe.flip)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [B, C, H, W] (any dtype) augmented; a new tensor, ``x`` is left as it is."""
        if not (self.padding or self.flip) or len(x) == 0:
            return x
        b, _, h, w = x.shape
        p, dev = self.padding, x.device
        src = F.pad(x, (p, p, p, p)) if p else x
        di = torch.randint(0, 2 * p + 1, (b, 1), device=dev)
        dj = torch.randint(0, 2 * p + 1, (b, 1), device=dev)
        rows = di + torch.arange(h, device=dev)  # [B, H]
        cols = torch.arange(w, device=dev).expand(b, w)
        if self.flip:
            flipped = torch.rand(b, 1, device=dev) < 0.5
            cols = torch.where(flipped, w - 1 - cols, cols)
        cols = cols + dj  # [B, W]
        # one gather: sample b's pixel (i, j) comes from src[b, :, rows[b, i], cols[b, j]]
        flat = (rows[:, :, None] * src.shape[-1] + cols[:, None, :]).reshape(b, 1, h * w)
        out = src.reshape(b, src.shape[1], -1).gather(2, flat.expand(b, src.shape[1], h * w))
        return out.reshape(b, -1, h, w)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, flip={self.flip}"
