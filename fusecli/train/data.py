"""Training data: gray crops of the images of one or more dataset folders.

Images enter through :func:`fusecli.io.read_image` and :func:`fusecli.color.split_luma`, the same
two functions inference uses, so a network is trained on exactly the luminance it fuses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..color import split_luma
from ..errors import ConfigError
from ..io import list_images, read_image


def collect_images(roots: Iterable[str | Path], roles: Sequence[str] | None = None) -> list[Path]:
    """Image files of dataset folders.

    A folder with role sub-folders (``ir/``, ``vis/`` ...) contributes the images of the sub-folders
    named in ``roles`` (all sub-folders when ``roles`` is None); a plain folder its own images.

    Raises:
        ConfigError: if no image is found.
    """
    files: list[Path] = []
    for root in map(Path, roots):
        subdirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if subdirs:
            for sub in subdirs:
                if roles is None or sub.name in roles:
                    files += list_images(sub)
        else:
            files += list_images(root)
    if not files:
        raise ConfigError(f"no training images found in {', '.join(map(str, roots))}")
    return files


def load_luma(path: Path) -> torch.Tensor:
    """(1, H, W) float32 luminance in [0, 1] of an image file (BT.601 Y for colour)."""
    image, _ = read_image(path)
    return split_luma(image)[0][0]


class RandomResizedCrops:
    """Random-resized crops (torchvision ``RandomResizedCrop`` semantics) from a list of images.

    Args:
        images: (1, H, W) tensors.
        size: output side.
        scale: range of the crop's area as a fraction of the image's area.
        ratio: range of the crop's aspect ratio.
        generator: the explicit random stream.
    """

    def __init__(self, images: list[torch.Tensor], size: int, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 generator: torch.Generator):
        if not images:
            raise ConfigError("no images to crop from")
        self.images, self.size, self.scale, self.ratio, self.g = images, size, scale, ratio, generator

    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self.g).item()

    def _box(self, h: int, w: int) -> tuple[int, int, int, int]:
        area = h * w
        for _ in range(10):
            target = area * self._uniform(*self.scale)
            aspect = math.exp(self._uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (), generator=self.g))
                left = int(torch.randint(0, w - cw + 1, (), generator=self.g))
                return top, left, ch, cw
        side = min(h, w)  # fallback: central square
        return (h - side) // 2, (w - side) // 2, side, side

    def sample(self) -> torch.Tensor:
        """One (1, size, size) crop."""
        img = self.images[int(torch.randint(0, len(self.images), (), generator=self.g))]
        top, left, ch, cw = self._box(*img.shape[-2:])
        crop = img[None, :, top:top + ch, left:left + cw]
        return F.interpolate(crop, size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=True)[0].clamp(0, 1)

    def batch(self, n: int) -> torch.Tensor:
        """(n, 1, size, size) crops."""
        return torch.stack([self.sample() for _ in range(n)])
