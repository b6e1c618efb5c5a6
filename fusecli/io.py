"""Reading and writing images: the one image I/O module of fusecli.

Inference, training and the metrics all go through these functions, so every part of fusecli sees
the same pixels.

Tensor contract:
    Images are ``torch.float32`` tensors of shape ``(B, C, H, W)`` with values in ``[0, 1]``,
    channels in RGB order; ``C`` is 1 for greyscale and 3 for colour. 8-bit files are scaled by
    ``1 / 255`` and 16-bit files by ``1 / 65535``: 16-bit data (thermal, medical) is never
    truncated to 8 bits.

Formats:
    PNG (8/16-bit), JPEG (8-bit), BMP (8-bit) and TIFF (8/16-bit) with 1, 2 (grey + alpha),
    3 (RGB) or 4 (RGBA) channels. Alpha is dropped.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import torch

from fusecli.errors import ConfigError, ImageReadError, ImageWriteError, ShapeError

# OpenCV logs "[ WARN:0@0.1] ... PNG input buffer is incomplete" and the like for files it cannot
# decode, and tifffile (imageio's TIFF reader, the fallback) logs "invalid offset to first page";
# fusecli reports every such file itself in one line, so their own lines are silenced (process-wide).
if hasattr(cv2, "utils") and hasattr(cv2.utils, "logging"):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
elif hasattr(cv2, "setLogLevel"):  # older builds
    cv2.setLogLevel(0)
logging.getLogger("tifffile").setLevel(logging.CRITICAL)

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "ImageInfo", "image_size", "list_images", "quantize", "read_image",
           "write_image", "CUBE_FILE_EXTENSIONS", "CubeInfo", "read_cube", "write_cube"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File extensions (lower case) that fusecli reads and writes."""

_WRITE_BIT_DEPTHS = {
    ".png": (8, 16),
    ".jpg": (8,),
    ".jpeg": (8,),
    ".bmp": (8,),
    ".tif": (8, 16),
    ".tiff": (8, 16),
}
_MAX_VALUE = {8: 255, 16: 65535}

MAX_PIXELS = 89_478_485
"""Default limit on width x height of an image read by fusecli (Pillow's ``MAX_IMAGE_PIXELS``, about
9459 x 9459: 1 GiB as a float32 RGB tensor). The size is read from the file's header before any
decoding, so a small file that claims a huge size (a decompression bomb) is refused without being
decoded. The readers' ``max_pixels`` argument (``--max-pixels`` on the command line) overrides it
per call; 0 lifts the limit."""
_DTYPE = {8: np.uint8, 16: np.uint16}


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` found on disk.

    Attributes:
        path: The file that was read.
        bit_depth: Bits per sample in the file: 8 or 16.
        channels: Channels of the returned tensor: 1 (grey) or 3 (RGB).
        stored_channels: Channels as decoded: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
            OpenCV decodes a grey + alpha PNG as 4 channels.
        is_gray: True when the file has one colour channel, or is RGB/RGBA with R == G == B
            at every pixel (such images are returned with 1 channel).
        height: Image height in pixels.
        width: Image width in pixels.
    """

    path: Path
    bit_depth: int
    channels: int
    stored_channels: int
    is_gray: bool
    height: int
    width: int


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> tuple[torch.Tensor, ImageInfo]:
    """Read an image file into a float tensor.

    The size in the file's header is checked against ``max_pixels`` first (nothing is decoded
    before that); then the file is decoded with OpenCV (which handles non-ASCII paths here because
    the bytes are read by NumPy); if OpenCV cannot decode it, ``imageio`` is tried before giving up.

    Args:
        path: A PNG, JPEG, BMP or TIFF file with 8-bit or 16-bit unsigned integer samples.
        max_pixels: Refuse images of more than this many pixels (width x height); ``None``:
            :data:`MAX_PIXELS`; 0: no limit.

    Returns:
        ``(image, info)``: ``image`` is a ``(1, C, H, W)`` float32 tensor with values in
        ``[0, 1]`` (8-bit samples divided by 255, 16-bit samples by 65535), RGB channel order,
        ``C = 1`` for grey (including grey stored as RGB) and ``C = 3`` for colour; alpha is
        dropped. ``info`` describes the file (see :class:`ImageInfo`).

    Raises:
        ImageReadError: The file is missing, a directory, empty, not a PNG/JPEG/BMP/TIFF file, larger
            than ``max_pixels``, not decodable, has zero size, an unsupported sample type (anything
            but uint8/uint16) or channel count.
    """
    path = Path(path)
    data = _read_bytes(path)
    _check_pixels(path, _header_sizes(path, data)[:1], max_pixels)
    array, is_bgr = _decode(path, data)
    if array.size == 0:
        raise ImageReadError(f"cannot read image '{path}': the image has zero size; replace it")
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(
            f"cannot read image '{path}': unsupported sample type {array.dtype}; "
            "convert it to an 8-bit or 16-bit integer PNG or TIFF"
        )
    bit_depth = 8 if array.dtype == np.uint8 else 16

    stored_channels = 1 if array.ndim == 2 else array.shape[2]
    if array.ndim not in (2, 3) or stored_channels not in (1, 2, 3, 4):
        raise ImageReadError(
            f"cannot read image '{path}': unsupported layout {array.shape} "
            "(expected 1 to 4 channels); convert it to a grey or RGB image"
        )
    if array.ndim == 3 and stored_channels <= 2:  # grey, or grey + alpha
        array = array[:, :, 0]
    elif array.ndim == 3:  # colour, alpha dropped
        array = array[:, :, 2::-1] if is_bgr else array[:, :, :3]

    is_gray = array.ndim == 2 or bool(
        np.array_equal(array[:, :, 0], array[:, :, 1])
        and np.array_equal(array[:, :, 0], array[:, :, 2])
    )
    if array.ndim == 3 and is_gray:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = array[:, :, np.newaxis]

    chw = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)
    chw /= np.float32(_MAX_VALUE[bit_depth])
    image = torch.from_numpy(chw).unsqueeze(0)
    info = ImageInfo(
        path=path,
        bit_depth=bit_depth,
        channels=image.shape[1],
        stored_channels=stored_channels,
        is_gray=is_gray,
        height=image.shape[2],
        width=image.shape[3],
    )
    return image, info


def _read_bytes(path: Path) -> np.ndarray:
    """The bytes of an image file, or an :class:`ImageReadError` that says why there are none."""
    if not path.exists():
        raise ImageReadError(f"cannot read image '{path}': the file does not exist; check the path")
    if path.is_dir():
        raise ImageReadError(f"cannot read image '{path}': it is a folder; pass an image file")
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        raise ImageReadError(
            f"cannot read image '{path}': {error.strerror or error}; check the file's permissions"
        ) from error
    if data.size == 0:
        raise ImageReadError(f"cannot read image '{path}': the file is empty (0 bytes); replace it")
    return data


def _decode(path: Path, data: np.ndarray) -> tuple[np.ndarray, bool]:
    """Decode the bytes of ``path`` with OpenCV, else imageio; return the array and whether it is BGR(A)."""
    try:
        array = None if _png_cut_short(data) else cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        array = None
    if array is not None:
        return array, True
    try:
        return np.asarray(iio.imread(path, index=0)), False
    except Exception as error:  # imageio raises many types for undecodable data
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(
            f"cannot read image '{path}': not a decodable image ({reason}); "
            "use a PNG, JPEG, BMP or TIFF file"
        ) from error


def _png_cut_short(data: np.ndarray) -> bool:
    """Whether ``data`` (a file's bytes) is a PNG that ends before its IEND chunk, i.e. a truncated
    file. libpng prints its own "libpng error" line for it, which no OpenCV setting silences, so such
    files skip OpenCV (and get the fallback decoder's error). Walks the chunk lengths only: cheap."""
    if data[:8].tobytes() != b"\x89PNG\r\n\x1a\n":
        return False
    pos, size = 8, data.size
    while pos + 8 <= size:
        length = int.from_bytes(data[pos:pos + 4].tobytes(), "big")
        if pos + 12 + length > size:
            return True
        if data[pos + 4:pos + 8].tobytes() == b"IEND":
            return False
        pos += 12 + length
    return True


# --- image sizes from the file header ----------------------------------------------------------------
#
# A few lines of struct parsing instead of a dependency: OpenCV has no header-only call, and
# imageio's metadata calls may decode the image (the very thing to avoid); Pillow's lazy open
# would do, but fusecli does not depend on Pillow. Only the four formats fusecli reads are parsed;
# any other file is refused before a decoder sees it.

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
_TIFF_MAX_PAGES = 65536


def _header_sizes(path: Path, data: np.ndarray | bytes) -> list[tuple[int, int]]:
    """``[(width, height), ...]`` of the image(s) in ``data`` (the file's bytes), from the header alone.

    One entry for PNG, JPEG and BMP (the frame a decoder reads); one per page for TIFF (classic and
    BigTIFF, either byte order, SHORT/LONG/LONG8 sizes).

    Raises:
        ImageReadError: the file is not a PNG, JPEG, BMP or TIFF, or its header is cut short or damaged.
    """
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    head = bytes(buf[:16])
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            if bytes(buf[12:16]) != b"IHDR":
                raise ValueError("no IHDR chunk")
            return [struct.unpack_from(">II", buf, 16)]
        if head.startswith(b"\xff\xd8"):
            return [_jpeg_size(buf)]
        if head.startswith(b"BM"):
            return [_bmp_size(buf)]
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff_sizes(buf)
    except (struct.error, ValueError, IndexError) as error:
        kind = {b"\x89P": "PNG", b"\xff\xd8": "JPEG", b"BM": "BMP"}.get(head[:2], "TIFF")
        raise ImageReadError(f"cannot read image '{path}': its {kind} header is cut short or damaged "
                             f"({error}); replace the file") from None
    raise ImageReadError(f"cannot read image '{path}': not a PNG, JPEG, BMP or TIFF file "
                         f"(it starts with {head[:8]!r}); convert it to one of these")


def _jpeg_size(buf: memoryview) -> tuple[int, int]:
    """Width and height from the first start-of-frame segment, skipping the others by their length."""
    pos = 2
    while True:
        if buf[pos] != 0xFF:
            raise ValueError(f"no marker at byte {pos}")
        while buf[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = buf[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            raise ValueError("no frame header before the image data")
        (length,) = struct.unpack_from(">H", buf, pos)
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", buf, pos + 3)
            return width, height
        if length < 2:
            raise ValueError(f"segment length {length}")
        pos += length


def _bmp_size(buf: memoryview) -> tuple[int, int]:
    (header,) = struct.unpack_from("<I", buf, 14)
    if header == 12:  # BITMAPCOREHEADER: unsigned 16-bit sizes
        return struct.unpack_from("<HH", buf, 18)
    width, height = struct.unpack_from("<ii", buf, 18)  # height < 0: rows stored top-down
    return abs(width), abs(height)


def _tiff_sizes(buf: memoryview) -> list[tuple[int, int]]:
    """Every page's ImageWidth (tag 256) and ImageLength (257), following the chain of IFDs."""
    order = "<" if bytes(buf[:2]) == b"II" else ">"
    big = buf[2 + (order == ">")] == 0x2B
    if big:
        (offset,) = struct.unpack_from(order + "Q", buf, 8)
        count_fmt, entry_size, offset_fmt = "Q", 20, "Q"
    else:
        (offset,) = struct.unpack_from(order + "I", buf, 4)
        count_fmt, entry_size, offset_fmt = "H", 12, "I"
    value_fmt = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    sizes: list[tuple[int, int]] = []
    seen: set[int] = set()
    while offset and offset not in seen and len(sizes) < _TIFF_MAX_PAGES:
        seen.add(offset)
        (count,) = struct.unpack_from(order + count_fmt, buf, offset)
        start = offset + struct.calcsize(count_fmt)
        found: dict[int, int] = {}
        for index in range(count):
            entry = start + index * entry_size
            tag, kind = struct.unpack_from(order + "HH", buf, entry)
            if tag in (256, 257) and kind in value_fmt:
                (found[tag],) = struct.unpack_from(order + value_fmt[kind], buf, entry + (12 if big else 8))
        if 256 not in found or 257 not in found:
            raise ValueError(f"page {len(sizes) + 1} has no ImageWidth/ImageLength")
        sizes.append((found[256], found[257]))
        (offset,) = struct.unpack_from(order + offset_fmt, buf, start + count * entry_size)
    if not sizes:
        raise ValueError("no image directory")
    return sizes


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header without decoding it (first page of
    a TIFF).

    Raises:
        ImageReadError: missing, empty or unreadable file, not a PNG/JPEG/BMP/TIFF, damaged header.
    """
    path = Path(path)
    return _header_sizes(path, _read_bytes(path))[0]


def _check_pixels(path: Path, sizes: list[tuple[int, int]], max_pixels: int | None, what: str = "image") -> None:
    """Raise :class:`ImageReadError` if the images of ``sizes`` (``(width, height)`` each: one image, or
    the bands of a cube) hold more pixels than the limit (None: :data:`MAX_PIXELS`; 0: no limit)."""
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if limit < 0:
        raise ConfigError(f"max_pixels must be 0 (no limit) or positive, got {limit}")
    pixels = sum(width * height for width, height in sizes)
    if not limit or pixels <= limit:
        return
    width, height = sizes[0]
    size = f"{width}x{height}" if len(sizes) == 1 else (
        f"{len(sizes)} bands of {width}x{height}" if len(set(sizes)) == 1 else f"{len(sizes)} bands")
    raise ImageReadError(
        f"cannot read {what} '{path}': it is {size} = {pixels:,} pixels, above the limit of {limit:,}; "
        f"if you trust the file, raise the limit with --max-pixels {pixels} (max_pixels= in Python; 0 = no limit)"
    )


def quantize(image: torch.Tensor | np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Convert a float image in ``[0, 1]`` to integer samples, as :func:`write_image` stores them.

    Each value becomes ``rint(clip(x, 0, 1) * 255)`` (``* 65535`` for 16 bits), rounding halves to
    even.

    Args:
        image: A float tensor or array of shape ``(1, C, H, W)``, ``(C, H, W)`` or ``(H, W)`` with
            values in ``[0, 1]``, ``C`` in {1, 3}, RGB channel order. Values outside are clipped.
        bit_depth: 8 (uint8 result) or 16 (uint16 result).

    Returns:
        A uint8/uint16 array of shape ``(H, W)`` for grey or ``(H, W, 3)`` (RGB) for colour.

    Raises:
        ShapeError: The shape is not one of the above.
        ValueError: ``bit_depth`` is not 8 or 16.
    """
    if bit_depth not in _MAX_VALUE:
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image, dtype=np.float64)
    shape = array.shape
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    elif array.ndim != 2:
        raise ShapeError(
            f"expected an image of shape (1, C, H, W), (C, H, W) or (H, W) with C in {{1, 3}}, "
            f"got shape {shape}"
        )
    scaled = np.rint(np.clip(array, 0.0, 1.0) * _MAX_VALUE[bit_depth])
    return scaled.astype(_DTYPE[bit_depth])


def write_image(
    path: str | os.PathLike[str],
    image: torch.Tensor | np.ndarray,
    *,
    bit_depth: int = 8,
    protect: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write a float image to disk, atomically.

    The format follows the extension. The image is encoded in memory, written to a hidden
    temporary file in the target folder, synced, then renamed onto ``path``; a failed write
    leaves any existing ``path`` untouched and no temporary file behind. Missing parent folders
    are created.

    Args:
        path: Output file ending in .png, .jpg, .jpeg, .bmp, .tif or .tiff (any case).
        image: Float tensor or array of shape ``(1, C, H, W)``, ``(C, H, W)`` or ``(H, W)``, values
            in ``[0, 1]`` (clipped), ``C`` in {1, 3}, RGB channel order. See :func:`quantize`.
        bit_depth: 8 or 16 bits per sample. JPEG and BMP are 8-bit only.
        protect: Paths that must not be overwritten (the inputs); writing onto one of them, or
            onto another name of the same file, is refused.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ImageWriteError: Unknown extension, bit depth the format cannot store, ``path`` is a
            protected input, or the folder/file cannot be written.
        ShapeError: ``image`` has an unsupported shape.
    """
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in _WRITE_BIT_DEPTHS:
        raise ImageWriteError(
            f"cannot write '{path}': unknown image extension {path.suffix!r}; "
            f"use one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    if bit_depth not in _WRITE_BIT_DEPTHS[extension]:
        if bit_depth in _MAX_VALUE:
            raise ImageWriteError(
                f"cannot write '{path}': {extension[1:].upper()} stores 8-bit images only; "
                "use .png or .tif for 16-bit output"
            )
        raise ImageWriteError(
            f"cannot write '{path}': bit depth must be 8 or 16, got {bit_depth!r}"
        )
    if any(_same_file(path, Path(other)) for other in protect):
        raise ImageWriteError(
            f"refusing to write '{path}': it is one of the input images; choose another output path"
        )

    samples = quantize(image, bit_depth)
    if samples.ndim == 3:
        samples = np.ascontiguousarray(samples[:, :, ::-1])  # RGB -> BGR for OpenCV
    try:
        ok, encoded = cv2.imencode(extension, samples)
    except cv2.error:
        ok, encoded = False, None
    if not ok:
        raise ImageWriteError(
            f"cannot write '{path}': OpenCV failed to encode the image as {extension}"
        )

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, encoded.tobytes())
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ImageWriteError(
            f"cannot write '{path}': {reason}; choose a writable output folder"
        ) from error
    return path


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file: same resolved path, or same inode."""
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it onto ``path``.

    Readers see the old file or the new one, never a half-written one; on any failure the
    temporary file is removed and the old file is untouched. Used for every file fusecli writes.

    The temporary file is opened with mode 0o666 (less the umask), so the result has the same
    permissions as any newly created file; ``tempfile`` would make it private (0o600).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """List the image files directly inside ``folder``.

    Files are matched by extension (case-insensitive, see :data:`IMAGE_EXTENSIONS`); hidden files
    (names starting with ``.``, such as macOS ``._name.png`` metadata files) are skipped.

    Args:
        folder: The folder to list (not searched recursively).

    Returns:
        The image paths, sorted by file name.

    Raises:
        ImageReadError: ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(
            f"cannot list images in '{folder}': it is not an existing folder; check the path"
        )
    images = [
        entry
        for entry in folder.iterdir()
        if entry.suffix.lower() in IMAGE_EXTENSIONS
        and not entry.name.startswith(".")
        and entry.is_file()
    ]
    return sorted(images, key=lambda entry: entry.name)


# --- spectral cubes ---------------------------------------------------------------------------------

CUBE_FILE_EXTENSIONS = (".npy", ".tif", ".tiff")
"""Single-file cube formats; a folder of one image per band is the third format."""


@dataclass(frozen=True)
class CubeInfo:
    """What :func:`read_cube` found on disk (and what :func:`write_cube` reproduces).

    Attributes:
        path: the file or folder that was read.
        format: ``"npy"`` (a NumPy array), ``"tiff"`` (a multi-page TIFF, one page per band) or
            ``"folder"`` (one gray image file per band, in natural name order).
        dtype: the stored sample type: ``"uint8"``, ``"uint16"`` or ``"float32"``/``"float64"``.
        layout: ``"chw"`` or ``"hwc"``: the axis order of a ``.npy`` array (``"chw"`` otherwise).
        bands, height, width: the cube's size.
        band_names: the band files of a folder (empty otherwise).
    """

    path: Path
    format: str
    dtype: str
    layout: str
    bands: int
    height: int
    width: int
    band_names: tuple[str, ...] = ()


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _cube_from_array(array: np.ndarray, path: Path) -> torch.Tensor:
    """(C, H, W) integer or float array -> (1, C, H, W) float32 in [0, 1]."""
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        scale = np.float32(_MAX_VALUE[8 if array.dtype == np.uint8 else 16])
        data = array.astype(np.float32) / scale
    elif array.dtype in (np.float16, np.float32, np.float64):
        data = array.astype(np.float32)
        if not np.isfinite(data).all():
            raise ImageReadError(f"cannot read cube '{path}': it holds NaN or infinite values; clean it first")
        lo, hi = float(data.min()), float(data.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ImageReadError(f"cannot read cube '{path}': float values must lie in [0, 1], found "
                                 f"{lo:.4g}..{hi:.4g}; scale the cube (e.g. divide by its maximum) first")
        data = np.clip(data, 0, 1)
    else:
        raise ImageReadError(f"cannot read cube '{path}': unsupported sample type {array.dtype}; use uint8, "
                             "uint16 or float in [0, 1]")
    return torch.from_numpy(np.ascontiguousarray(data)).unsqueeze(0)


def read_cube(path: str | os.PathLike[str], *, layout: str = "auto",
              max_pixels: int | None = None) -> tuple[torch.Tensor, CubeInfo]:
    """Read a spectral cube (e.g. 31 bands, 400-700 nm) from a ``.npy`` file, a multi-page TIFF or a
    folder of one gray image per band.

    Args:
        path: ``cube.npy`` (2-D: one band; 3-D: (C, H, W) or (H, W, C); 4-D: (1, C, H, W)),
            ``cube.tif``/``.tiff`` (one page per band) or a folder of gray PNG/TIFF/... band images of
            one size and bit depth, ordered by name with numbers compared as numbers
            (``band_2`` before ``band_10``; CAVE's ``*_ms_01.png`` ... ``*_ms_31.png``); colour
            images in the folder (CAVE keeps ``<scene>_RGB.bmp`` there) are not bands and are skipped.
        layout: axis order of a 3-D ``.npy``: ``"chw"``, ``"hwc"`` or ``"auto"`` (the band axis is
            the smallest axis, which must be the first or the last; ``"chw"`` on a tie).
        max_pixels: refuse a TIFF or folder cube of more than this many pixels over all its bands
            (bands x height x width, from the headers, before decoding); ``None``: :data:`MAX_PIXELS`,
            0: no limit. A ``.npy`` is not compressed: it is as large as its file.

    Returns:
        ``(cube, info)``: cube is a (1, C, H, W) float32 tensor in [0, 1] (uint8 / 255, uint16 /
        65535, float as stored, which must lie in [0, 1]); ``info`` records the format, sample
        type and layout for :func:`write_cube`.

    Raises:
        ImageReadError: missing or unreadable path, unsupported format, type, shape or values, a
            cube above ``max_pixels``, or band images that differ in size, bit depth or are not gray.
    """
    path = Path(path)
    if layout not in ("auto", "chw", "hwc"):
        raise ImageReadError(f"cube layout must be auto, chw or hwc, got {layout!r}")
    if not path.exists():
        raise ImageReadError(f"cannot read cube '{path}': it does not exist; check the path")
    if path.is_dir():
        return _read_cube_folder(path, max_pixels)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ImageReadError(f"cannot read cube '{path}': not a readable .npy array ({error})") from error
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim == 2:
            array = array[np.newaxis]
        if array.ndim != 3:
            raise ImageReadError(f"cannot read cube '{path}': expected a (C, H, W) or (H, W, C) array, got shape "
                                 f"{array.shape}")
        chosen = layout
        if layout == "auto":
            c0, h0, c2 = array.shape
            if c0 <= min(h0, c2):
                chosen = "chw"
            elif c2 < min(c0, h0):
                chosen = "hwc"
            else:
                raise ImageReadError(f"cannot read cube '{path}': cannot tell the band axis of shape {array.shape}; "
                                     "store it as (C, H, W) or (H, W, C) with fewer bands than rows and columns")
        if chosen == "hwc":
            array = array.transpose(2, 0, 1)
        cube = _cube_from_array(array, path)
        info = CubeInfo(path, "npy", str(array.dtype), chosen, *cube.shape[1:])
        return cube, info
    if suffix in (".tif", ".tiff"):
        data = _read_bytes(path)
        _check_pixels(path, _header_sizes(path, data), max_pixels, "cube")
        try:
            ok, pages = cv2.imdecodemulti(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            ok, pages = False, []
        if not ok or not pages:
            raise ImageReadError(f"cannot read cube '{path}': not a readable (multi-page) TIFF")
        if any(p.ndim != 2 for p in pages) or len({(p.shape, p.dtype) for p in pages}) != 1:
            raise ImageReadError(f"cannot read cube '{path}': every page must be one gray band of the same "
                                 "size and sample type")
        array = np.stack(pages)
        cube = _cube_from_array(array, path)
        return cube, CubeInfo(path, "tiff", str(array.dtype), "chw", *cube.shape[1:])
    raise ImageReadError(f"cannot read cube '{path}': unknown format {path.suffix!r}; use .npy, a multi-page "
                         ".tif, or a folder of one image per band")


def _read_cube_folder(folder: Path, max_pixels: int | None = None) -> tuple[torch.Tensor, CubeInfo]:
    files = sorted(list_images(folder), key=lambda p: _natural_key(p.name))
    if not files:
        raise ImageReadError(f"cannot read cube '{folder}': the folder holds no band images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
    _check_pixels(folder, [image_size(file) for file in files], max_pixels, "cube")  # before decoding any band
    bands, depths, names = [], set(), []
    for file in files:
        band, info = read_image(file, max_pixels=0)  # the whole cube is within the limit
        if band.shape[1] != 1:
            continue  # a colour image beside the bands (CAVE's <scene>_RGB.bmp) is not a band
        if bands and band.shape != bands[0].shape:
            raise ImageReadError(f"cannot read cube '{folder}': '{file.name}' is {info.width}x{info.height}, "
                                 f"'{files[0].name}' is {bands[0].shape[-1]}x{bands[0].shape[-2]}")
        bands.append(band)
        depths.add(info.bit_depth)
        names.append(file.name)
    if not bands:
        raise ImageReadError(f"cannot read cube '{folder}': it holds no gray band images (only colour images)")
    if len(depths) > 1:
        raise ImageReadError(f"cannot read cube '{folder}': the band images mix 8-bit and 16-bit files")
    cube = torch.cat(bands, dim=1)
    dtype = "uint8" if depths == {8} else "uint16"
    return cube, CubeInfo(folder, "folder", dtype, "chw", *cube.shape[1:], tuple(names))


def _cube_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "npy"
    if suffix in (".tif", ".tiff"):
        return "tiff"
    if suffix in IMAGE_EXTENSIONS:
        raise ImageWriteError(f"cannot write cube '{path}': a cube is a .npy file, a multi-page .tif, or a "
                              f"folder (a path without an image extension) of one image per band")
    if path.exists() and not path.is_dir():
        raise ImageWriteError(f"cannot write cube '{path}': it exists and is not a folder")
    return "folder"


def write_cube(
    path: str | os.PathLike[str],
    cube: torch.Tensor | np.ndarray,
    *,
    like: CubeInfo | None = None,
    protect: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write a spectral cube atomically, in the format the path names (see :func:`read_cube`).

    ``.npy``: the array in ``like``'s sample type and layout (default float32, (C, H, W));
    ``.tif``/``.tiff``: one page per band, ``like``'s sample type (default float32); any other
    path: a folder of ``<folder name>_NN.png`` band images, 16-bit unless ``like`` is 8-bit
    (written into a hidden temporary folder, then renamed into place; an existing folder is
    replaced). Integer types store ``rint(x * 255)`` / ``rint(x * 65535)``.

    Args:
        path: output file or folder.
        cube: (1, C, H, W) or (C, H, W) float in [0, 1] (clipped).
        like: the :class:`CubeInfo` of the input cube, to write the same sample type and layout.
        protect: input paths that must not be overwritten.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ImageWriteError: an image extension other than .tif, a protected input, or an unwritable path.
        ShapeError: ``cube`` is not (1, C, H, W) or (C, H, W).
    """
    path = Path(path)
    kind = _cube_format(path)
    if any(_same_file(path, Path(other)) for other in protect):
        raise ImageWriteError(f"refusing to write '{path}': it is one of the inputs; choose another output path")
    if isinstance(cube, torch.Tensor):
        cube = cube.detach().cpu().numpy()
    array = np.asarray(cube, dtype=np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ShapeError(f"write_cube expects a (1, C, H, W) or (C, H, W) cube, got shape {np.shape(cube)}")
    array = np.clip(array, 0, 1)
    dtype = like.dtype if like is not None else "float32"
    if kind == "folder" and dtype not in ("uint8", "uint16"):
        dtype = "uint16"
    if dtype in ("uint8", "uint16"):
        array = np.rint(array * _MAX_VALUE[8 if dtype == "uint8" else 16]).astype(dtype)
    else:
        array = array.astype(dtype if dtype in ("float32", "float64") else "float32")
    try:
        if kind == "npy":
            if like is not None and like.format == "npy" and like.layout == "hwc":
                array = array.transpose(1, 2, 0)
            buffer = BytesIO()
            np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, buffer.getvalue())
        elif kind == "tiff":
            ok, encoded = cv2.imencodemulti(".tiff", [np.ascontiguousarray(band) for band in array])
            if not ok:
                raise ImageWriteError(f"cannot write '{path}': OpenCV failed to encode the cube as TIFF")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, encoded.tobytes())
        else:
            _write_cube_folder(path, array)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ImageWriteError(f"cannot write '{path}': {reason}; choose a writable output folder") from error
    return path


def _write_cube_folder(folder: Path, array: np.ndarray) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f".{folder.name}.{secrets.token_hex(8)}.tmp")
    digits = max(2, len(str(array.shape[0])))
    try:
        temporary.mkdir()
        for index, band in enumerate(array, start=1):
            ok, encoded = cv2.imencode(".png", band)
            if not ok:
                raise ImageWriteError(f"cannot write '{folder}': OpenCV failed to encode band {index} as PNG")
            write_bytes_atomic(temporary / f"{folder.name}_{index:0{digits}d}.png", encoded.tobytes())
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.{secrets.token_hex(8)}.old")
            os.replace(folder, old)
        os.replace(temporary, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
