"""The inference core: device choice, padding, tiling, the colour pipeline and file-to-file fusion.

Tensor contract: images are float32 tensors (B, C, H, W) with values in [0, 1]; models fuse
luminance, (B, 1, H, W) in and out. Colour is handled here and only here (with
:mod:`fusecli.color`): the colour source's luminance (full-range BT.601 Y) is fused and its Cb/Cr
are put back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import numpy as np

from ._arrays import arrays_to_tensors, tensor_to_array
from .color import _quantile, merge_luma, rgb_to_y, split_luma, stretch
from .errors import ConfigError, DeviceError, ImageReadError, ShapeError
from .io import ImageInfo, read_cube, read_image, write_cube, write_image
from .models._contract import device_of, spec_of
from .tiling import pad_to_multiple, tiled

__all__ = ["resolve_device", "resolve_precision", "native_bf16", "PRECISIONS", "fuse_tensors", "fuse_images",
           "fuse_files", "fuse_cube_files", "stretch",
           "FuseResult", "check_source_count", "check_tiling", "prepare_16bit", "AUTO_STRETCH_SPAN"]

#: A 16-bit source whose values (0.5 % to 99.5 % quantiles) span less than this share of 0..65535 is
#: stretched by default (:func:`prepare_16bit`): raw 12/14-bit sensor counts, which look black.
AUTO_STRETCH_SPAN = 0.5


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


#: ``--precision`` values: the dtype the model computes in (outputs are float32 in [0, 1] either way)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively: a CPU with AVX512-BF16 or AMX (as oneDNN
    reports it), a CUDA GPU with bfloat16 support. Elsewhere bf16 is emulated (slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The compute dtype of ``precision`` (``"fp32"``, ``"bf16"`` or ``"fp16"``) on ``device``.

    fp32 is the default and the reference. bf16 and fp16 run the model under ``torch.autocast``
    (convolutions and matrix products in the lower precision, normalisations and reductions in
    float32). bf16 works on any CPU and CUDA GPU with bfloat16 (it is fast only where
    :func:`native_bf16` holds); fp16 needs a CUDA device (on a CPU it would be emulated: use bf16).

    Raises:
        ConfigError: an unknown name, fp16 on a CPU, or bf16 on a CUDA GPU without bfloat16.
    """
    dtype = PRECISIONS.get(str(precision).strip().lower())
    if dtype is None:
        raise ConfigError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if dtype == torch.float16 and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; on the CPU use bf16 (or fp32)")
    if dtype == torch.bfloat16 and device.type == "cuda" and not native_bf16(device):
        raise ConfigError(f"--precision bf16: the GPU {device} has no bfloat16 support; use fp16 or fp32")
    return dtype


def _autocast(device: torch.device, dtype: torch.dtype):
    """``torch.autocast`` to ``dtype`` on ``device`` (nothing for float32)."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_source_count(model: nn.Module, count: int) -> None:
    """Raise ShapeError unless ``model`` fuses ``count`` sources: from its spec's ``min_inputs`` to
    ``max_inputs`` (None: no limit; CSC-MEF: K >= 2 exposures)."""
    spec = spec_of(model)
    roles, low, high = spec.inputs, spec.min_inputs, spec.max_inputs
    if count < low or (high is not None and count > high):
        if high is None:
            raise ShapeError(f"this model fuses {low} or more images ({', '.join(roles)}, ...), got {count}")
        if low == high:
            raise ShapeError(f"this model fuses {low} images ({', '.join(roles)}), got {count}")
        raise ShapeError(f"this model fuses {low} to {high} images, got {count}")


def check_tiling(tile: int, overlap: int) -> None:
    """Raise ConfigError for a negative ``--tile`` or ``--overlap`` (checked before any work; whether
    the tile is larger than the overlap and the model's minimum depends on the model)."""
    if tile < 0:
        raise ConfigError(f"--tile must be 0 (the whole image) or a tile side in pixels, got {tile}")
    if overlap < 0:
        raise ConfigError(f"--overlap must be 0 or more pixels, got {overlap}")


@contextmanager
def _out_of_memory_as_device_error(message: str) -> Iterator[None]:
    """Inside the block, a device out-of-memory error becomes ``DeviceError(message)`` (one line
    for the user); every other error passes unchanged."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "allocate memory" not in str(exc):
            raise
        raise DeviceError(message) from exc


def _run(model: nn.Module, sources: list[torch.Tensor], part=None) -> torch.Tensor:
    """Run the model (or ``part``, one of its methods) once on (B, 1, h, w) sources: pad to its
    multiple, crop back."""
    h, w = sources[0].shape[-2:]
    multiple = spec_of(model).pad_multiple
    out = (part or model)(*[pad_to_multiple(s, multiple) for s in sources])
    return out[..., :h, :w]


def fuse_tensors(
    model: nn.Module,
    sources: Sequence[torch.Tensor],
    *,
    tile: int = 0,
    overlap: int = 32,
    precision: str = "fp32",
) -> torch.Tensor:
    """Fuse luminance tensors with ``model``.

    Args:
        model: a registered model in eval mode (see :mod:`fusecli.models`).
        sources: (B, 1, H, W) float32 tensors in [0, 1], one per role of the model's spec
            (:func:`fusecli.models.spec_of`: ``inputs``), in that order (a model whose spec has
            ``colour="model"`` takes (B, 3, H, W) RGB, and K >= ``min_inputs`` of them).
        tile: process in tiles of this side (0: whole image at once).
        overlap: overlap of neighbouring tiles, blended linearly, for models without a finite
            ``receptive_radius``. A model with one is tiled without overlap, each tile getting that
            many pixels of context, every pixel taken from one tile; its ``forward_pointwise`` head
            (if it splits ``forward`` into ``forward_local`` + ``forward_pointwise``) runs once on
            the assembled image. For AUIF on the CPU this is bit-identical to the untiled output.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the model runs under autocast
            to that dtype (see :func:`resolve_precision`); the result is float32 either way.

    Returns:
        The fused (B, 1, H, W) float32 tensor in [0, 1] ((B, 3, H, W) for ``colour="model"``), on
        the model's device (:func:`fusecli.models.device_of`).

    Raises:
        ShapeError: wrong number of sources, mismatched shapes, or an image smaller than the model's
            minimum size.
        DeviceError: the device ran out of memory.
        ConfigError: an unknown or unsupported ``precision``.
    """
    spec = spec_of(model)
    mode = spec.colour
    if mode == "cube":
        raise ConfigError("this model super-resolves a spectral cube with a guide image: use fuse_cube_files "
                          "(fusecli fuse CUBE GUIDE -o OUT)")
    check_source_count(model, len(sources))
    channels = 3 if mode == "model" else 1
    shape = sources[0].shape
    for s in sources:
        if s.dim() != 4 or s.shape[1] != channels:
            kind = "RGB" if channels == 3 else "luminance"
            raise ShapeError(f"sources must be (B, {channels}, H, W) {kind} tensors, got {tuple(s.shape)}")
        if s.shape != shape:
            raise ShapeError(f"sources differ in shape: {tuple(shape)} vs {tuple(s.shape)}")
    min_size = spec.min_size
    if min(shape[-2:]) < min_size:
        raise ShapeError(f"image is {shape[-1]}x{shape[-2]} pixels; this model needs at least "
                         f"{min_size}x{min_size}")
    device = device_of(model)
    dtype = resolve_precision(precision, device)
    sources = [s.to(device=device, dtype=torch.float32) for s in sources]
    with _out_of_memory_as_device_error(f"out of memory on {device} fusing a {shape[-1]}x{shape[-2]} image: "
                                        "use --tile 512 (or smaller), or --device cpu"):
        with torch.inference_mode(), _autocast(device, dtype):
            if tile and (shape[-1] > tile or shape[-2] > tile):
                if not spec.tileable:
                    raise ConfigError(f"{type(model).__name__} cannot fuse in tiles (its output depends on "
                                      "whole-image statistics); leave out --tile")
                if tile < min_size:
                    raise ShapeError(f"--tile {tile} is smaller than this model's minimum size {min_size}")
                radius = spec.receptive_radius
                if radius is None:  # unbounded context: `overlap` pixels of it, seams blended
                    out = tiled(lambda ts: _run(model, ts), sources, tile=tile, overlap=overlap, context=overlap)
                else:  # exact context: no blending, and a pixel-wise head once on the whole image
                    local = model.forward_local
                    out = tiled(lambda ts: _run(model, ts, local), sources, tile=tile, overlap=0, context=radius)
                    out = out if local is None else model.forward_pointwise(out)
            else:
                out = _run(model, sources)
            out = out.float().clamp(0, 1)  # float32 whatever the precision
    return out


def fuse_images(
    model: nn.Module,
    images: Sequence[torch.Tensor | np.ndarray],
    *,
    gray: bool = False,
    tile: int = 0,
    overlap: int = 32,
    precision: str = "fp32",
) -> torch.Tensor | np.ndarray:
    """Fuse full images (gray or colour) with the colour pipeline.

    Each image's luminance (BT.601 Y for colour, the image itself for gray) is fused. If any
    source is colour and ``gray`` is False, the chroma (Cb, Cr) of the colour source is put back:
    the visible-role source's when it is colour (IR + visible), else the first colour source's
    (e.g. MRI + pseudo-colour PET). Otherwise the output is gray.

    Args:
        model: a registered model.
        images: (B, C, H, W) tensors in [0, 1], C = 1 or 3, in the order of the spec's ``inputs``; or
            NumPy images (H, W) / (H, W, 1 or 3) RGB of uint8, uint16 or float in [0, 1] (as
            :func:`fusecli.io.read_image` scales files: uint8 / 255, uint16 / 65535, no 16-bit
            stretch; see :mod:`fusecli._arrays`).
        gray: force a gray (1-channel) output.
        tile, overlap, precision: see :func:`fuse_tensors` (a ColorNet runs in the same precision).

    A model with a ``colour_step`` (:class:`fusecli.models.ColourStep`: FRUFN / EFRUFN multi-exposure
    weights whose card names a trained ColorNet, Remark 1) gets the chroma of its colour sources from
    it: ColorNet(fused Y, CbCr of source 1, CbCr of source 2), clamped to [0, 1].

    A model whose spec has ``colour="model"`` (CSC-MEF) fuses colour itself: it gets the RGB images (gray
    ones repeated to three channels) and its RGB output is returned as it is (its luminance with
    ``gray``).

    Returns:
        (B, 3, H, W) colour or (B, 1, H, W) gray tensor in [0, 1]; for NumPy sources an (H, W, 3)
        or (H, W) array: float32 in [0, 1] if any source is float, else uint16 if any is uint16,
        else uint8 (rounded as :func:`fusecli.io.write_image` stores them).
    """
    tensors, kind = arrays_to_tensors(images)
    if kind is not None:  # NumPy in, NumPy out: the same call on tensors
        return tensor_to_array(fuse_images(model, tensors, gray=gray, tile=tile, overlap=overlap,
                                           precision=precision).cpu(), kind)
    spec = spec_of(model)
    if spec.colour == "model":
        for im in images:
            if im.dim() != 4 or im.shape[1] not in (1, 3):
                raise ShapeError(f"images must be (B, 1 or 3, H, W) tensors, got {tuple(im.shape)}")
        rgb = [im.expand(-1, 3, -1, -1) if im.shape[1] == 1 else im for im in images]
        fused = fuse_tensors(model, rgb, tile=tile, overlap=overlap, precision=precision)
        return rgb_to_y(fused).clamp(0, 1) if gray else fused
    split = [split_luma(im) for im in images]
    step = model.colour_step
    if step is not None and not gray and len(split) == step.sources and all(c is not None for _, c in split):
        # weights with a learned colour step (FRUFN Remark 1): chroma predicted from the fused
        # luminance and the sources' chroma, instead of copied from one source
        fused = fuse_tensors(model, [y for y, _ in split], tile=tile, overlap=overlap, precision=precision)
        with _out_of_memory_as_device_error(f"out of memory running {step.name} on a {fused.shape[-1]}x"
                                            f"{fused.shape[-2]} image: use --device cpu"):
            with torch.inference_mode(), _autocast(fused.device, resolve_precision(precision, fused.device)):
                chroma = step(fused, [c for _, c in split])
        return merge_luma(fused, chroma)
    chroma = None
    if not gray:
        roles = list(spec.inputs)
        order = list(range(len(images)))
        if "vis" in roles:
            vis = roles.index("vis")
            order = [vis] + [i for i in order if i != vis]
        chroma = next((split[i][1] for i in order if split[i][1] is not None), None)
    fused = fuse_tensors(model, [y for y, _ in split], tile=tile, overlap=overlap, precision=precision)
    return merge_luma(fused, None if chroma is None else chroma.to(fused.device))


def prepare_16bit(image: torch.Tensor, info: ImageInfo, stretch_16bit: bool | None = None
                  ) -> tuple[torch.Tensor, str | None]:
    """Stretch a 16-bit source to the full range when asked, or by default when it needs it.

    Rule (``stretch_16bit=None``, the default): a 16-bit source whose 0.5 % and 99.5 % quantiles
    span less than :data:`AUTO_STRETCH_SPAN` of 0..65535 (and more than nothing) is stretched with
    :func:`stretch` (those quantiles to 0 and 1): raw 12/14-bit thermal or medical counts in a
    16-bit file would otherwise be fused as a nearly black image. ``True``: every 16-bit source is
    stretched; ``False``: none. 8-bit sources are never changed.

    Args:
        image: a (1, C, H, W) float32 tensor in [0, 1], as :func:`fusecli.io.read_image` returns it.
        info: its :class:`fusecli.io.ImageInfo`.
        stretch_16bit: None (the rule above), True or False.

    Returns:
        ``(image, note)``: the (possibly stretched) tensor, and a one-line note for the user when
        the default rule stretched it (None otherwise).
    """
    if info.bit_depth != 16 or stretch_16bit is False:
        return image, None
    if stretch_16bit:
        return stretch(image), None
    flat = image.flatten(1).float()
    lo, hi = float(_quantile(flat, 0.005)[0]), float(_quantile(flat, 0.995)[0])
    if not 0 < hi - lo < AUTO_STRETCH_SPAN:
        return image, None
    note = (f"{info.path.name}: 16-bit image uses {round(lo * 65535)}..{round(hi * 65535)} of 0..65535 "
            "(0.5-99.5 % of its values); stretched to the full range (--no-stretch-16bit keeps the raw values)")
    return stretch(image), note


@dataclass(frozen=True)
class FuseResult:
    """What :func:`fuse_files` did; ``notes``: one line each for the user (e.g. a 16-bit source stretched)."""

    output: Path
    width: int
    height: int
    channels: int
    seconds: float
    notes: tuple[str, ...] = ()


def fuse_files(
    model: nn.Module,
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    gray: bool = False,
    bit_depth: int = 8,
    tile: int = 0,
    overlap: int = 32,
    stretch_16bit: bool | None = None,
    max_pixels: int | None = None,
    precision: str = "fp32",
) -> FuseResult:
    """Read the source images, fuse them, and write the result atomically.

    Args:
        model: a registered model.
        inputs: image paths in the order of the spec's ``inputs`` (e.g. infrared, visible).
        output: output path; the extension picks the format (.png, .jpg, .tif, .bmp).
        gray: force a gray output.
        bit_depth: 8 or 16 (PNG and TIFF only).
        tile, overlap: see :func:`fuse_tensors`.
        stretch_16bit: None (default): stretch the 16-bit sources that fill less than half of their
            range (raw thermal counts), with a note in the result; True: stretch every 16-bit source;
            False: use the raw values. See :func:`prepare_16bit`. 8-bit sources are used as they are.
        max_pixels: refuse sources above this many pixels (see :func:`fusecli.io.read_image`).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (see :func:`resolve_precision`).

    Raises:
        ImageReadError, ImageWriteError, ShapeError, DeviceError, ConfigError.
    """
    if bit_depth not in (8, 16):
        raise ConfigError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    check_tiling(tile, overlap)
    if not inputs:
        raise ImageReadError("no input images given")
    check_source_count(model, len(inputs))
    resolve_precision(precision, device_of(model))  # before any reading
    if spec_of(model).colour == "cube":
        if tile:
            raise ConfigError("--tile is not supported for cube super-resolution; leave it out")
        return fuse_cube_files(model, inputs[0], inputs[1], output, max_pixels=max_pixels, precision=precision)
    start = time.perf_counter()
    loaded = [read_image(p, max_pixels=max_pixels) for p in inputs]
    sizes = {(info.width, info.height) for _, info in loaded}
    if len(sizes) > 1:
        listing = ", ".join(f"{Path(p).name} {info.width}x{info.height}" for p, (_, info) in zip(inputs, loaded))
        raise ShapeError(f"input images differ in size ({listing}); register or resize them first")
    prepared = [prepare_16bit(t, info, stretch_16bit) for t, info in loaded]
    fused = fuse_images(model, [t for t, _ in prepared], gray=gray, tile=tile, overlap=overlap, precision=precision)
    path = write_image(output, fused.cpu(), bit_depth=bit_depth, protect=inputs)
    _, channels, height, width = fused.shape
    notes = tuple(note for _, note in prepared if note)
    device = device_of(model)
    if resolve_precision(precision, device) == torch.bfloat16 and not native_bf16(device):
        notes += ("bf16 runs emulated on this CPU (no AVX512-BF16 or AMX): slower than fp32 here",)
    return FuseResult(Path(path), width, height, channels, time.perf_counter() - start, notes)


def fuse_cube_files(
    model: nn.Module,
    cube: str | Path,
    guide: str | Path,
    output: str | Path,
    *,
    max_pixels: int | None = None,
    precision: str = "fp32",
) -> FuseResult:
    """Super-resolve a spectral cube with a guide image (CSC-MSF) and write it atomically.

    Args:
        model: a model whose spec has ``colour="cube"`` (``cscfuse-msf``).
        cube: the low-resolution cube: ``.npy``, multi-page ``.tif`` or a folder of band images
            (:func:`fusecli.io.read_cube`).
        guide: the RGB guide image at ``model.config.scale`` times the cube's resolution.
        output: the output cube (:func:`fusecli.io.write_cube`: the format its path names, in the
            input's sample type and layout).
        max_pixels: refuse a cube or guide above this many pixels (see :func:`fusecli.io.read_cube`).
        precision: as :func:`fuse_tensors`.

    Returns:
        A :class:`FuseResult` (``channels``: the number of bands).

    Raises:
        ImageReadError, ImageWriteError, ShapeError, DeviceError, ConfigError.
    """
    if spec_of(model).colour != "cube":
        raise ConfigError(f"{type(model).__name__} fuses images, not a cube and a guide; use fuse_files")
    device = device_of(model)
    dtype = resolve_precision(precision, device)
    start = time.perf_counter()
    lr, info = read_cube(cube, max_pixels=max_pixels)
    rgb, _ = read_image(guide, max_pixels=max_pixels)
    with _out_of_memory_as_device_error(f"out of memory on {device} super-resolving a {info.width}x"
                                        f"{info.height} cube; use --device cpu or a smaller cube"):
        with torch.inference_mode(), _autocast(device, dtype):
            out = model(lr.to(device), rgb.to(device)).float().clamp(0, 1).cpu()
    path = write_cube(output, out, like=info, protect=[cube, guide])
    _, bands, height, width = out.shape
    return FuseResult(Path(path), width, height, bands, time.perf_counter() - start)
