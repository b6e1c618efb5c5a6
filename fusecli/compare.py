"""Comparison figures: the sources and several fused results side by side, labelled, with a zoom.

:func:`comparison_grid` is the pure layout: images and labels in, an RGB array (and where each panel
and label is) out; no files. :func:`make_figures` is the I/O around it: it pairs a dataset (see
:mod:`fusecli.pairs`), takes each method's result from a folder ``fusecli batch`` wrote
(``DIR/<stem>.<ext>``) or fuses it with a model (the colour path of ``fusecli fuse``), and writes
one figure per pair: PNG/JPEG/TIFF/BMP with OpenCV, PDF with matplotlib (the ``plots`` extra).

Panels: the sources first (role names as labels: Infrared, Visible, ...), then one per method.
Labels are drawn with ``cv2.putText`` (Hershey Simplex, black on white) in a strip under (or over)
each panel; in a PDF they are vector text at the same places. A zoom box ``x, y, w, h`` (pixels of
the images) is outlined on every panel and shown magnified in a corner of it, or as a second row.
Colour images are shown in colour, gray ones in gray.
"""

from __future__ import annotations

import glob
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import ConfigError, ImageReadError, ImageWriteError, ShapeError
from .inference import fuse_images, prepare_16bit, resolve_device
from .io import IMAGE_EXTENSIONS, _same_file, quantize, read_image, write_bytes_atomic
from .pairs import Pair, scan_pairs

__all__ = ["Zoom", "Grid", "comparison_grid", "to_rgb8", "label_strip_height", "source_label", "select_pairs",
           "find_fused", "figure_paths", "write_figure", "make_figures", "FIGURE_EXTENSIONS", "DEFAULT_LABEL_SIZE",
           "PDF_HINT"]

FIGURE_EXTENSIONS = (*IMAGE_EXTENSIONS, ".pdf")
#: text height (pixels, a capital letter) of the labels by default
DEFAULT_LABEL_SIZE = 20
PDF_HINT = "PDF figures need matplotlib: pip install 'fusecli[plots]' (or write a .png)"

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_LABEL_SIZE = 8  # a label too wide for its panel shrinks down to this, then is cut with "..."
_BOX_COLOUR = (255, 0, 0)  # RGB red
_ROLE_LABELS = {"ir": "Infrared", "infrared": "Infrared", "vis": "Visible", "vi": "Visible", "visible": "Visible",
                "ct": "CT", "pet": "PET", "spect": "SPECT", "mri": "MRI", "under": "Under-exposed",
                "over": "Over-exposed", "near": "Near focus", "far": "Far focus"}


@dataclass(frozen=True)
class Zoom:
    """A zoom box in image pixels: left ``x``, top ``y``, width ``w``, height ``h``."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def parse(cls, text: str) -> Zoom:
        """``"x,y,w,h"`` (integers) -> Zoom; ConfigError otherwise."""
        parts = [p.strip() for p in text.split(",")]
        try:
            x, y, w, h = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"--zoom {text!r}: give the box as x,y,w,h in pixels, e.g. 100,80,64,48") from None
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            raise ConfigError(f"--zoom {text!r}: x and y must be >= 0, w and h > 0")
        return cls(x, y, w, h)

    def check(self, width: int, height: int) -> None:
        if self.x + self.w > width or self.y + self.h > height:
            raise ConfigError(f"--zoom {self.x},{self.y},{self.w},{self.h} reaches outside the {width}x{height} "
                              "images; choose a box inside them")


@dataclass
class Grid:
    """A laid-out figure: ``image`` (H, W, 3) uint8 RGB; ``panels``: the (x, y, w, h) of each image
    panel; ``labels``: the (x, y, w, h, text) of each label strip; ``label_size``: text height in px."""

    image: np.ndarray
    panels: list[tuple[int, int, int, int]] = field(default_factory=list)
    labels: list[tuple[int, int, int, int, str]] = field(default_factory=list)
    label_size: int = DEFAULT_LABEL_SIZE


def to_rgb8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB for display.

    Accepts a float tensor/array (1, C, H, W), (C, H, W) or (H, W) in [0, 1] (C = 1 or 3, RGB), or a
    uint8 array (H, W) / (H, W, 3) RGB. Gray is repeated to three channels.
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        array = image
    else:
        array = quantize(image, 8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ShapeError(f"expected a gray or RGB image, got an array of shape {array.shape}")
    return np.ascontiguousarray(array)


@lru_cache(maxsize=None)
def _cap_height(thickness: int) -> float:
    """Height in pixels of a rendered capital H at font scale 1, measured (``getTextSize`` reports
    more than the ink: the font's ascender room, which differs between OpenCV versions)."""
    scale = 8.0
    canvas = np.zeros((400, 400), np.uint8)
    cv2.putText(canvas, "H", (20, 300), _FONT, scale, 255, max(1, round(thickness * scale)), cv2.LINE_8)
    rows = np.flatnonzero(canvas.max(axis=1) >= 128)
    return (rows[-1] - rows[0] + 1) / scale


def _text_scale(size: int, thickness: int) -> float:
    """cv2 font scale whose capital letters are ``size`` pixels tall."""
    return size / _cap_height(thickness)


def _thickness(size: int) -> int:
    return max(1, round(size / 11))


def label_strip_height(size: int = DEFAULT_LABEL_SIZE) -> int:
    """Height in pixels of the strip that holds a label of text height ``size`` (room for descenders)."""
    return size + 2 * max(4, round(size * 0.45))


def _fit_label(text: str, size: int, width: int) -> tuple[str, int]:
    """Shrink the text height (down to a minimum), then cut the text, until it fits ``width`` pixels."""
    margin = max(4, size // 3)
    while True:
        thickness = _thickness(size)
        (w, _), _ = cv2.getTextSize(text, _FONT, _text_scale(size, thickness), thickness)
        if w <= width - 2 * margin:
            return text, size
        if size > _MIN_LABEL_SIZE:
            size -= 1
        elif len(text.removesuffix("...")) > 1:
            text = text.removesuffix("...")[:-1].rstrip() + "..."
        else:
            return text, size


def _draw_label(canvas: np.ndarray, box: tuple[int, int, int, int], text: str, size: int) -> None:
    """Black text, centred in ``box`` (x, y, w, h) of the RGB canvas."""
    x, y, w, h = box
    text, size = _fit_label(text, size, w)
    thickness = _thickness(size)
    scale = _text_scale(size, thickness)
    (tw, _), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    # capitals plus descenders (about 0.3 of the cap height) centred in the strip
    origin = (x + (w - tw) // 2, y + round((h - 1.3 * size) / 2 + size))
    cv2.putText(canvas, text, origin, _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)


def _resize(image: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width <= image.shape[1] and height <= image.shape[0]
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=interp)


def _zoom_scale(zoom: Zoom, width: int, height: int, factor: float | None, fraction: float) -> float:
    """The inset's magnification: ``factor``, or the largest that keeps the inset within ``fraction``
    of the panel's width and half its height."""
    if factor is not None:
        return factor
    return min(fraction * width / zoom.w, 0.5 * height / zoom.h)


def _outline(panel: np.ndarray, x: int, y: int, w: int, h: int, thickness: int) -> None:
    cv2.rectangle(panel, (x, y), (x + w - 1, y + h - 1), _BOX_COLOUR, thickness, cv2.LINE_8)


def comparison_grid(
    images: Sequence[np.ndarray | torch.Tensor],
    labels: Sequence[str],
    *,
    columns: int | None = None,
    zoom: Zoom | None = None,
    zoom_row: bool = False,
    zoom_corner: str = "br",
    zoom_factor: float | None = None,
    label_size: int = DEFAULT_LABEL_SIZE,
    label_position: str = "below",
    gap: int = 8,
    draw_labels: bool = True,
) -> Grid:
    """Lay out labelled panels in a grid, row by row.

    Args:
        images: one image per panel (see :func:`to_rgb8`: float (1, C, H, W) in [0, 1] or uint8
            arrays); panels of another size than the most common one are resampled to it.
        labels: one label per panel.
        columns: panels per row (default: all in one row).
        zoom: a box (image pixels) outlined in red on every panel and shown magnified.
        zoom_row: show the magnified box under each panel (as wide as the panel) instead of as an
            inset in a corner of it.
        zoom_corner: ``br``, ``bl``, ``tr`` or ``tl``: where the inset goes.
        zoom_factor: the inset's magnification (default: as large as fits in 45 % of the panel's
            width and half its height). Magnified pixels are repeated (nearest neighbour), so the
            crop shows the real pixels.
        label_size: text height in pixels (a capital letter). When a label is too wide for its
            panel, every label of the figure is drawn smaller (down to 8 px), then the long one is cut.
        label_position: ``below`` or ``above`` the panel.
        gap: white pixels between panels.
        draw_labels: False leaves the label strips blank (for vector text in a PDF).

    Returns:
        A :class:`Grid`: the (H, W, 3) uint8 RGB figure, white background, and the panel and label
        boxes.

    Raises:
        ShapeError, ConfigError: no images, labels of another count, bad options, a zoom box outside.
    """
    if not images:
        raise ShapeError("no images to lay out")
    if len(labels) != len(images):
        raise ShapeError(f"{len(images)} images but {len(labels)} labels")
    if zoom_corner not in ("br", "bl", "tr", "tl"):
        raise ConfigError(f"--zoom-corner {zoom_corner!r}: use br, bl, tr or tl")
    if label_position not in ("below", "above"):
        raise ConfigError(f"label position {label_position!r}: use below or above")
    if label_size < _MIN_LABEL_SIZE:
        raise ConfigError(f"--label-size must be at least {_MIN_LABEL_SIZE} pixels, got {label_size}")
    if gap < 0:
        raise ConfigError(f"gap must be >= 0, got {gap}")
    rgb = [to_rgb8(im) for im in images]
    (height, width), _ = Counter(im.shape[:2] for im in rgb).most_common(1)[0]
    rgb = [_resize(im, width, height) for im in rgb]
    columns = len(rgb) if not columns else max(1, min(columns, len(rgb)))
    rows = math.ceil(len(rgb) / columns)
    thickness = max(2, round(min(width, height) / 150))
    crop_h = 0
    if zoom is not None:
        zoom.check(width, height)
        if zoom_row:
            crop_h = min(height, max(1, round(width * zoom.h / zoom.w)))
    # one text size for the whole figure: the largest at which every label fits its panel (longer
    # labels are then cut)
    label_size = min(_fit_label(label, label_size, width)[1] for label in labels)
    strip = label_strip_height(label_size)
    cell_h = height + strip + (crop_h + gap if crop_h else 0)
    canvas = np.full((rows * cell_h + (rows - 1) * gap, columns * width + (columns - 1) * gap, 3), 255, np.uint8)
    grid = Grid(canvas, label_size=label_size)
    for index, (image, label) in enumerate(zip(rgb, labels)):
        row, col = divmod(index, columns)
        x0, y0 = col * (width + gap), row * (cell_h + gap)
        panel_y = y0 + (strip if label_position == "above" else 0)
        panel = image.copy()
        if zoom is not None:
            crop = image[zoom.y:zoom.y + zoom.h, zoom.x:zoom.x + zoom.w]
            _outline(panel, zoom.x, zoom.y, zoom.w, zoom.h, thickness)
            if zoom_row:
                scale = min(width / zoom.w, crop_h / zoom.h)
                big = _resize(crop, max(1, round(zoom.w * scale)), max(1, round(zoom.h * scale)), nearest=True)
                _outline(big, 0, 0, big.shape[1], big.shape[0], thickness)
                cy, cx = panel_y + height + gap, x0 + (width - big.shape[1]) // 2
                canvas[cy:cy + big.shape[0], cx:cx + big.shape[1]] = big
            else:
                scale = _zoom_scale(zoom, width, height, zoom_factor, 0.45)
                iw, ih = min(width, max(1, round(zoom.w * scale))), min(height, max(1, round(zoom.h * scale)))
                big = _resize(crop, iw, ih, nearest=True)
                _outline(big, 0, 0, iw, ih, thickness)
                ix = width - iw if zoom_corner[1] == "r" else 0
                iy = height - ih if zoom_corner[0] == "b" else 0
                panel[iy:iy + ih, ix:ix + iw] = big
        canvas[panel_y:panel_y + height, x0:x0 + width] = panel
        grid.panels.append((x0, panel_y, width, height))
        label_y = y0 if label_position == "above" else y0 + cell_h - strip
        box = (x0, label_y, width, strip)
        grid.labels.append((*box, label))
        if draw_labels:
            _draw_label(canvas, box, label, label_size)
    return grid


# --- files ---------------------------------------------------------------------------------------------

def source_label(role: str) -> str:
    """A readable label for a role folder: ``ir`` -> ``Infrared``, ``vis`` -> ``Visible``, ``ct`` -> ``CT``."""
    return _ROLE_LABELS.get(role.lower(), role)


def select_pairs(pairs: Sequence[Pair], wanted: Sequence[str] | None) -> list[Pair]:
    """The pairs named in ``wanted`` (stems, in that order; ``"1"`` also finds ``01``), or all.

    Raises:
        ConfigError: a stem that is not a pair of the dataset.
    """
    if not wanted:
        return list(pairs)
    by_stem = {p.stem: p for p in pairs}
    chosen = []
    for stem in wanted:
        pair = by_stem.get(stem)
        if pair is None and stem.isdigit():
            pair = next((p for p in pairs if p.stem.isdigit() and int(p.stem) == int(stem)), None)
        if pair is None:
            known = ", ".join(p.stem for p in pairs[:8]) + (", ..." if len(pairs) > 8 else "")
            raise ConfigError(f"--pairs: no pair {stem!r} in the dataset (pairs: {known or 'none'})")
        chosen.append(pair)
    return chosen


def find_fused(folder: Path, stem: str) -> Path:
    """``folder/<stem>.<ext>`` as ``fusecli batch`` writes it (any image extension).

    Raises:
        ImageReadError: the folder is missing, or holds no (or several) images of that stem.
    """
    if not folder.is_dir():
        raise ImageReadError(f"--fused '{folder}' is not a folder; give a folder written by fusecli batch")
    found = sorted(p for p in folder.glob(f"{glob.escape(stem)}.*")
                   if p.stem == stem and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not found:
        raise ImageReadError(f"--fused '{folder}' has no image of pair {stem!r}; run fusecli batch DATASET -o "
                             f"{folder} first")
    if len(found) > 1:
        raise ImageReadError(f"--fused '{folder}' has several images of pair {stem!r} "
                             f"({', '.join(p.name for p in found)}); keep one")
    return found[0]


def figure_paths(output: str | os.PathLike[str], stems: Sequence[str], ext: str = "png") -> dict[str, Path]:
    """Where the figure of each pair goes.

    ``output`` with a figure extension (.png, .jpg, .tif, .bmp, .pdf): that file for one pair; for
    several, ``<name>_<stem><ext>`` beside it (``fig.png`` -> ``fig_01.png``, ``fig_05.png``).
    ``output`` without an extension is a folder: ``<folder>/<stem>.<ext>``.

    Raises:
        ConfigError: an extension that is not a figure format.
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix and suffix not in FIGURE_EXTENSIONS:
        raise ConfigError(f"-o {output}: figures are written as {', '.join(FIGURE_EXTENSIONS)}, or into a folder "
                          "(no extension)")
    if not suffix:
        ext = "." + ext.lower().lstrip(".")
        if ext not in FIGURE_EXTENSIONS:
            raise ConfigError(f"--ext {ext[1:]!r}: use one of {', '.join(e[1:] for e in FIGURE_EXTENSIONS)}")
        return {stem: output / f"{stem}{ext}" for stem in stems}
    if len(stems) == 1:
        return {stems[0]: output}
    return {stem: output.with_name(f"{output.stem}_{stem}{output.suffix}") for stem in stems}


def _check_pdf() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(PDF_HINT) from None


def _pdf_bytes(grid: Grid, dpi: float = 100.0) -> bytes:
    """The grid as a one-page PDF: the panels as an embedded image, the labels as vector text."""
    _check_pdf()
    from matplotlib.backends.backend_pdf import FigureCanvasPdf
    from matplotlib.figure import Figure

    height, width = grid.image.shape[:2]
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasPdf(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(grid.image, interpolation="none", aspect="auto")
    axes.set_axis_off()
    for x, y, w, h, text in grid.labels:
        fit, size = _fit_label(text, grid.label_size, w)
        points = size / 0.72 * 72 / dpi  # a capital letter is about 0.72 of the font size
        figure.text((x + w / 2) / width, 1 - (y + h / 2) / height, fit, ha="center", va="center",
                    fontsize=points, color="black")
    buffer = BytesIO()
    figure.savefig(buffer, format="pdf", dpi=dpi)
    return buffer.getvalue()


def write_figure(path: str | os.PathLike[str], grid: Grid, *, protect: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Write a grid atomically: PNG/JPEG/TIFF/BMP (labels as drawn), or PDF (matplotlib): the grid
    as an image and its labels as vector text (lay it out with ``draw_labels=False`` for a PDF).

    Raises:
        ImageWriteError: an unknown extension, an input's path, an unwritable folder.
        ConfigError: PDF without matplotlib.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FIGURE_EXTENSIONS:
        raise ImageWriteError(f"cannot write '{path}': use one of {', '.join(FIGURE_EXTENSIONS)}")
    for other in protect:
        if _same_file(path, Path(other)):
            raise ImageWriteError(f"refusing to write '{path}': it is one of the inputs; choose another -o")
    if suffix == ".pdf":
        data = _pdf_bytes(grid)
    else:
        ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(grid.image[:, :, ::-1]))
        if not ok:
            raise ImageWriteError(f"cannot write '{path}': OpenCV failed to encode it as {suffix}")
        data = encoded.tobytes()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise ImageWriteError(f"cannot write '{path}': {exc.strerror or exc}; choose a writable folder") from exc
    return path


def _read_source(path: Path, max_pixels: int | None) -> torch.Tensor:
    image, info = read_image(path, max_pixels=max_pixels)
    return prepare_16bit(image, info)[0]


def make_figures(
    dataset: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    models: Sequence[str] = (),
    fused: Sequence[str | os.PathLike[str]] = (),
    labels: Sequence[str] | None = None,
    pairs: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    ext: str = "png",
    device: str = "auto",
    max_pixels: int | None = None,
    progress: Callable[[str, Path], None] | None = None,
    **layout,
) -> list[Path]:
    """Write one comparison figure per pair of ``dataset``.

    Args:
        dataset: a folder with role folders (``ir/`` + ``vis/``, ...; see :mod:`fusecli.pairs`).
        output: a figure file or a folder (see :func:`figure_paths`).
        models: model names: each pair is fused with each (shipped weights, the colour path of
            ``fuse``). Results of ``fused`` folders come first, then these.
        fused: folders written by ``fusecli batch`` (``DIR/<stem>.<ext>``), labelled by folder name.
        labels: labels of the methods, in panel order (default: folder names, then model names).
        pairs: stems to draw (default: every pair).
        roles: role folder names (default: detected).
        ext: the format of figures written into a folder.
        device: where the models run.
        max_pixels: see :func:`fusecli.io.read_image`.
        progress: called with ``(stem, path)`` after each figure.
        **layout: passed to :func:`comparison_grid` (``zoom``, ``zoom_row``, ``columns``,
            ``label_size``, ...).

    Returns:
        The figure paths, in pair order.

    Raises:
        ConfigError, ImageReadError, ImageWriteError, ShapeError, CheckpointError, UnknownNameError,
        DeviceError (all before a figure is written when they come from the options).
    """
    from .models import create_model

    models, fused = list(models), [Path(f) for f in fused]
    if not models and not fused:
        raise ConfigError("name the methods to compare: --models a,b,c and/or --fused DIR (batch outputs)")
    names = [f.name or str(f) for f in fused] + models
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(names):
            raise ConfigError(f"--labels gives {len(labels)} labels for {len(names)} methods "
                              f"({', '.join(names)})")
        names = labels
    for folder in fused:
        if not folder.is_dir():
            raise ImageReadError(f"--fused '{folder}' is not a folder; give a folder written by fusecli batch")
    scan = scan_pairs(dataset, roles)
    chosen = select_pairs(scan.pairs, pairs)
    if not chosen:
        raise ConfigError(f"'{dataset}' has no complete pairs to draw")
    targets = figure_paths(output, [p.stem for p in chosen], ext)
    if any(t.suffix.lower() == ".pdf" for t in targets.values()):
        _check_pdf()
    dev = resolve_device(device)
    nets = [create_model(m, device=dev) for m in models]
    written = []
    for pair in chosen:
        sources = [_read_source(p, max_pixels) for p in pair.paths]
        results = [_read_source(find_fused(f, pair.stem), max_pixels) for f in fused]
        if nets:
            sizes = {tuple(s.shape[-2:]) for s in sources}
            if len(sizes) > 1:
                raise ShapeError(f"pair {pair.stem!r}: the sources differ in size; fuse it with fusecli batch "
                                 "--resize-to and compare with --fused")
            results += [fuse_images(net, sources).cpu() for net in nets]
        panel_labels = [source_label(r) for r in scan.roles] + names
        target = targets[pair.stem]
        grid = comparison_grid(sources + results, panel_labels, **{"draw_labels": target.suffix.lower() != ".pdf",
                                                                   **layout})
        path = write_figure(target, grid, protect=pair.paths)
        written.append(path)
        if progress:
            progress(pair.stem, path)
    return written
