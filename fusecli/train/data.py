"""Training data: gray crops of the images of dataset folders, or aligned crops of their pairs.

Images enter through :func:`fusecli.io.read_image` and :func:`fusecli.color.split_luma`, the same
two functions inference uses, so a network is trained on exactly the luminance it fuses.
Auto-encoders (AUIF, CSC-IVF) pool the images of the role folders (:class:`RandomResizedCrops`);
fusion networks trained on the sources (DeRUN) take the pairs that :mod:`fusecli.pairs` matches,
cropped alike on both sides (:class:`PairedCrops`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..color import split_luma
from ..errors import ConfigError
from ..io import list_images, read_image
from ..pairs import Pair, detect_roles, scan_pairs
from .splits import has_fixed_split, select_pairs


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


# --- aligned source pairs (fusion networks trained on the sources themselves, e.g. DeRUN) ----------

@dataclass(frozen=True)
class PairSet:
    """The training pairs taken from one dataset folder.

    Attributes:
        dataset: the dataset folder.
        roles: its role folders in model-input order (e.g. ``("ir", "vis")``, ``("pet", "mri")``).
        pairs: the pairs used (after the split), sorted by stem.
        total: the dataset's complete pairs before the split.
        split: the ``--split`` value applied (``"auto"``, ``"train"``, ``"all"``).
        part: what was used: ``"train"`` (the train part of a fixed split) or ``"all"``.
        unpaired: files without a partner (or with an ambiguous stem), not used.
    """

    dataset: Path
    roles: tuple[str, ...]
    pairs: list[Pair]
    total: int
    split: str
    part: str
    unpaired: int


def collect_pairs(roots: Iterable[str | Path], *, layouts: Sequence[Sequence[str]] | None = None,
                  split: str = "auto") -> list[PairSet]:
    """The aligned pairs of dataset folders, matched by file stem (:func:`fusecli.pairs.scan_pairs`).

    Each dataset's role folders are detected among :data:`fusecli.pairs.LAYOUTS`; their order is
    the model-input order (the intensity source first: ``ir/``, ``pet/``, ``spect/``, ``ct/``; the
    texture source second: ``vis/``, ``mri/``).

    Args:
        roots: dataset folders.
        layouts: the role layouts the recipe trains on (None: any known layout).
        split: ``"auto"``, ``"train"`` or ``"all"``: see :mod:`fusecli.train.splits`.

    Returns:
        One :class:`PairSet` per dataset folder, in the given order.

    Raises:
        ConfigError: a folder has no (or an unsuitable) layout, no pair is left, or the split does
            not apply.
    """
    sets: list[PairSet] = []
    for root in map(Path, roots):
        roles = detect_roles(root)
        if layouts is not None and tuple(roles) not in {tuple(lay) for lay in layouts}:
            accepted = ", ".join("/+".join(lay) + "/" for lay in layouts)
            raise ConfigError(f"'{root}' has the role folders {'/+'.join(roles)}/, which this model does not "
                              f"train on; it trains on {accepted}")
        scan = scan_pairs(root, roles)
        chosen = select_pairs(root, scan.pairs, split)
        if not chosen:
            raise ConfigError(f"no complete pair (same stem in {' and '.join(r + '/' for r in roles)}) "
                              f"to train on in '{root}'")
        part = ("train" if split == "auto" else split) if split != "all" and has_fixed_split(root) else "all"
        unpaired = sum(map(len, scan.unmatched.values())) + sum(map(len, scan.duplicates.values()))
        sets.append(PairSet(root, tuple(roles), chosen, len(scan.pairs), split, part, unpaired))
    if not sets:
        raise ConfigError("no dataset folder given; pass --data FOLDER")
    return sets


def load_pair(pair: Pair) -> tuple[torch.Tensor, ...]:
    """The luminance of each image of ``pair``: (1, H, W) float32 in [0, 1] each, in role order.

    Colour sources (visible, pseudo-colour PET/SPECT) give their BT.601 Y, exactly what inference
    fuses (:func:`load_luma`).

    Raises:
        ImageReadError: an unreadable file. ConfigError: the images of the pair differ in size.
    """
    images = tuple(load_luma(p) for p in pair.paths)
    sizes = {tuple(im.shape[-2:]) for im in images}
    if len(sizes) > 1:
        listing = ", ".join(f"{p.parent.name}/{p.name} {im.shape[-1]}x{im.shape[-2]}"
                            for p, im in zip(pair.paths, images))
        raise ConfigError(f"pair {pair.stem!r} is not aligned: its images differ in size ({listing}); "
                          "register or remove it")
    return images


class PairedCrops:
    """Random aligned crops of source pairs: the same window and the same flip on every side.

    A sample picks a pair uniformly, a ``size`` x ``size`` window uniformly inside it (no
    resizing: the pixels, and their registration, stay as they are) and, with probability 1/2, a
    horizontal flip, and applies them to every image of the pair.

    Args:
        pairs: tuples of (1, H, W) tensors of one size per tuple (one tensor per role).
        size: crop side in pixels.
        flip: random horizontal flips.
        generator: the explicit random stream (its state is saved in ``last.pt``).

    Raises:
        ConfigError: no pairs, images of a pair differ in size, or a pair is smaller than ``size``.
    """

    def __init__(self, pairs: Sequence[tuple[torch.Tensor, ...]], size: int, *, flip: bool = True,
                 generator: torch.Generator, names: Sequence[str] | None = None):
        if not pairs:
            raise ConfigError("no pairs to crop from")
        if size < 1:
            raise ConfigError(f"crop size must be >= 1, got {size}")
        names = list(names) if names is not None else [str(i) for i in range(len(pairs))]
        for name, pair in zip(names, pairs):
            if len({tuple(t.shape) for t in pair}) != 1 or pair[0].dim() != 3:
                raise ConfigError(f"pair {name}: expected (1, H, W) images of one size, got "
                                  f"{', '.join(str(tuple(t.shape)) for t in pair)}")
        small = [f"{n} ({p[0].shape[-1]}x{p[0].shape[-2]})" for n, p in zip(names, pairs)
                 if min(p[0].shape[-2:]) < size]
        if small:
            raise ConfigError(f"{len(small)} training pair(s) smaller than the {size} px crop: {', '.join(small[:5])}; "
                              "use a smaller --crop or remove them")
        self.pairs, self.size, self.flip, self.g = list(pairs), size, flip, generator

    def sample(self) -> tuple[torch.Tensor, ...]:
        """One aligned crop: a tuple of (1, size, size) tensors, one per role."""
        pair = self.pairs[int(torch.randint(0, len(self.pairs), (), generator=self.g))]
        h, w = pair[0].shape[-2:]
        top = int(torch.randint(0, h - self.size + 1, (), generator=self.g))
        left = int(torch.randint(0, w - self.size + 1, (), generator=self.g))
        flip = self.flip and bool(torch.rand((), generator=self.g) < 0.5)
        crops = tuple(t[:, top:top + self.size, left:left + self.size] for t in pair)
        return tuple(c.flip(-1) if flip else c for c in crops)

    def batch(self, n: int) -> tuple[torch.Tensor, ...]:
        """``n`` aligned crops: a tuple of (n, 1, size, size) tensors, one per role."""
        samples = [self.sample() for _ in range(n)]
        return tuple(torch.stack(side).contiguous() for side in zip(*samples))
