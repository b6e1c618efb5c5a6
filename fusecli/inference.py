"""The inference core: device choice, padding, tiling, the colour pipeline and file-to-file fusion.

Tensor contract: images are float32 tensors (B, C, H, W) with values in [0, 1]; models fuse
luminance, (B, 1, H, W) in and out. Colour is handled here and only here (with
:mod:`fusecli.color`): the colour source's luminance (full-range BT.601 Y) is fused and its Cb/Cr
are put back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .color import merge_luma, split_luma
from .errors import ConfigError, DeviceError, ImageReadError, ShapeError
from .io import read_image, write_image
from .tiling import tiled

__all__ = ["resolve_device", "fuse_tensors", "fuse_images", "fuse_files", "stretch", "FuseResult"]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        DeviceError: for an unknown spec or a CUDA device that is not there.
    """
    if isinstance(spec, torch.device):
        return spec
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: no CUDA GPU is available here; use --device cpu or auto")
        index = spec.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise DeviceError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(spec)
    raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _run(model: nn.Module, sources: list[torch.Tensor]) -> torch.Tensor:
    """Run the model once on (B, 1, h, w) sources: pad to its multiple, crop back."""
    h, w = sources[0].shape[-2:]
    multiple = getattr(model, "pad_multiple", 1)
    out = model(*[_pad_to_multiple(s, multiple) for s in sources])
    return out[..., :h, :w]


def fuse_tensors(
    model: nn.Module,
    sources: Sequence[torch.Tensor],
    *,
    tile: int = 0,
    overlap: int = 32,
) -> torch.Tensor:
    """Fuse luminance tensors with ``model``.

    Args:
        model: a registered model in eval mode (see :mod:`fusecli.models`).
        sources: (B, 1, H, W) float32 tensors in [0, 1], one per ``model.inputs`` role, in that order.
        tile: process in tiles of this side (0: whole image at once).
        overlap: overlap of neighbouring tiles, blended linearly.

    Returns:
        The fused (B, 1, H, W) tensor in [0, 1], on the model's device.

    Raises:
        ShapeError: wrong number of sources, mismatched shapes, or an image smaller than the model's
            minimum size.
        DeviceError: the device ran out of memory.
    """
    roles = getattr(model, "inputs", ())
    if roles and len(sources) != len(roles):
        raise ShapeError(f"this model fuses {len(roles)} images ({', '.join(roles)}), got {len(sources)}")
    shape = sources[0].shape
    for s in sources:
        if s.dim() != 4 or s.shape[1] != 1:
            raise ShapeError(f"sources must be (B, 1, H, W) luminance tensors, got {tuple(s.shape)}")
        if s.shape != shape:
            raise ShapeError(f"sources differ in shape: {tuple(shape)} vs {tuple(s.shape)}")
    min_size = getattr(model, "min_size", 1)
    if min(shape[-2:]) < min_size:
        raise ShapeError(f"image is {shape[-1]}x{shape[-2]} pixels; this model needs at least "
                         f"{min_size}x{min_size}")
    device = next(model.parameters()).device
    sources = [s.to(device=device, dtype=torch.float32) for s in sources]
    try:
        with torch.inference_mode():
            if tile and (shape[-1] > tile or shape[-2] > tile):
                if tile < min_size:
                    raise ShapeError(f"--tile {tile} is smaller than this model's minimum size {min_size}")
                # a model without a (finite) receptive radius gets `overlap` pixels of context
                context = getattr(model, "receptive_radius", None)
                context = overlap if context is None else context
                out = tiled(lambda ts: _run(model, ts), sources, tile=tile, overlap=overlap, context=context)
            else:
                out = _run(model, sources)
            out = out.clamp(0, 1)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "allocate memory" not in str(exc):
            raise
        raise DeviceError(f"out of memory on {device} fusing a {shape[-1]}x{shape[-2]} image: "
                          "use --tile 512 (or smaller), or --device cpu") from exc
    return out


def fuse_images(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    *,
    gray: bool = False,
    tile: int = 0,
    overlap: int = 32,
) -> torch.Tensor:
    """Fuse full images (gray or colour) with the colour pipeline.

    Each image's luminance (BT.601 Y for colour, the image itself for gray) is fused. If any
    source is colour and ``gray`` is False, the chroma (Cb, Cr) of the colour source is put back:
    the visible-role source's when it is colour (IR + visible), else the first colour source's
    (e.g. MRI + pseudo-colour PET). Otherwise the output is gray.

    Args:
        model: a registered model.
        images: (B, C, H, W) tensors in [0, 1], C = 1 or 3, in the order of ``model.inputs``.
        gray: force a gray (1-channel) output.
        tile, overlap: see :func:`fuse_tensors`.

    Returns:
        (B, 3, H, W) colour or (B, 1, H, W) gray tensor in [0, 1].
    """
    split = [split_luma(im) for im in images]
    chroma = None
    if not gray:
        roles = list(getattr(model, "inputs", ()))
        order = list(range(len(images)))
        if "vis" in roles:
            vis = roles.index("vis")
            order = [vis] + [i for i in order if i != vis]
        chroma = next((split[i][1] for i in order if split[i][1] is not None), None)
    fused = fuse_tensors(model, [y for y, _ in split], tile=tile, overlap=overlap)
    return merge_luma(fused, None if chroma is None else chroma.to(fused.device))


def stretch(image: torch.Tensor, low: float = 0.005, high: float = 0.995) -> torch.Tensor:
    """Map the ``low``..``high`` quantiles of ``image`` linearly onto [0, 1] (clipping outside).

    For raw thermal frames (14/16-bit counts that fill a small part of the 16-bit range).
    Args: image (B, C, H, W) in [0, 1]. Returns the same shape; a constant image comes back unchanged.
    """
    flat = image.flatten(1).float()
    qs = torch.quantile(flat, torch.tensor([low, high], device=image.device), dim=1)
    lo, hi = qs[0].view(-1, 1, 1, 1), qs[1].view(-1, 1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, ((image - lo) / span.clamp_min(1e-12)).clamp(0, 1), image)


@dataclass(frozen=True)
class FuseResult:
    """What :func:`fuse_files` did."""

    output: Path
    width: int
    height: int
    channels: int
    seconds: float


def fuse_files(
    model: nn.Module,
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    gray: bool = False,
    bit_depth: int = 8,
    tile: int = 0,
    overlap: int = 32,
    stretch_16bit: bool = False,
) -> FuseResult:
    """Read the source images, fuse them, and write the result atomically.

    Args:
        model: a registered model.
        inputs: image paths in the order of ``model.inputs`` (e.g. infrared, visible).
        output: output path; the extension picks the format (.png, .jpg, .tif, .bmp).
        gray: force a gray output.
        bit_depth: 8 or 16 (PNG and TIFF only).
        tile, overlap: see :func:`fuse_tensors`.
        stretch_16bit: apply :func:`stretch` to 16-bit sources (raw thermal counts); 8-bit
            sources are used as they are.

    Raises:
        ImageReadError, ImageWriteError, ShapeError, DeviceError.
    """
    if bit_depth not in (8, 16):
        raise ConfigError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    roles = getattr(model, "inputs", ())
    if roles and len(inputs) != len(roles):
        raise ShapeError(f"this model fuses {len(roles)} images ({', '.join(roles)}), got {len(inputs)}")
    if not inputs:
        raise ImageReadError("no input images given")
    start = time.perf_counter()
    loaded = [read_image(p) for p in inputs]
    sizes = {(info.width, info.height) for _, info in loaded}
    if len(sizes) > 1:
        listing = ", ".join(f"{Path(p).name} {info.width}x{info.height}" for p, (_, info) in zip(inputs, loaded))
        raise ShapeError(f"input images differ in size ({listing}); register or resize them first")
    images = [stretch(t) if stretch_16bit and info.bit_depth == 16 else t for t, info in loaded]
    fused = fuse_images(model, images, gray=gray, tile=tile, overlap=overlap)
    path = write_image(output, fused.cpu(), bit_depth=bit_depth, protect=inputs)
    _, channels, height, width = fused.shape
    return FuseResult(Path(path), width, height, channels, time.perf_counter() - start)
