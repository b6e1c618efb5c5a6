"""Metrics over files and folders: reading images the way each toolbox reads them, pairing fused
images with their sources, mean ± std over a set, and CSV / JSON output.

Used by ``fusecli metrics``; everything here is plain library code (no printing).
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from .. import __version__
from ..errors import ConfigError, ImageWriteError, ShapeError
from ..inference import resolve_device
from ..io import _same_file, list_images, read_image, write_text_atomic
from . import evaluate, get_metric, list_metrics
from ._checks import DEFAULT_CONVENTION, MetricWarning, check_convention

__all__ = [
    "DEFAULT_METRICS",
    "ImageResult",
    "MethodReport",
    "evaluate_files",
    "evaluate_folder",
    "load_gray",
    "resolve_metric_names",
    "rgb_to_gray",
    "write_csv",
    "write_json",
]

#: The CDDFuse table (Zhao et al., CVPR 2023): what ``--metrics`` defaults to.
DEFAULT_METRICS: tuple[str, ...] = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")

# MATLAB rgb2gray: the first row of inv([1 .956 .621; 1 -.272 -.647; 1 -1.106 1.703]),
# documented as 0.2989 R + 0.5870 G + 0.1140 B
_MATLAB_GRAY = np.linalg.inv(np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]]))[0]


def resolve_metric_names(spec: str | Sequence[str] | None) -> list[str]:
    """``"en,sd,..."`` / a list / ``"all"`` / ``None`` (:data:`DEFAULT_METRICS`) -> registered names.

    Raises:
        UnknownNameError: a name is not registered (with a close-match hint).
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "default")):
        return list(DEFAULT_METRICS)
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list_metrics()
        spec = [s for s in spec.split(",") if s.strip()]
    names = []
    for s in spec:
        n = get_metric(s.strip()).name
        if n not in names:
            names.append(n)
    if not names:
        raise ConfigError("no metric named; pass e.g. --metrics en,sd,sf or --metrics all")
    return names


def rgb_to_gray(rgb: np.ndarray, convention: str) -> np.ndarray:
    """Gray levels (float64, integers 0..255) of an ``(H, W, 3)`` RGB image with 0..255 integer
    values, by the convention's rule:

    * ``"cddfuse"``: OpenCV ``cvtColor(BGR2GRAY)`` on float32 (0.299 R + 0.587 G + 0.114 B),
      then ``np.round`` (half to even), as the Evaluator's ``image_read_cv2(..., 'GRAY')``;
    * ``"matlab"``, ``"vifb"``, ``"mefb"``: MATLAB ``rgb2gray`` on uint8 (0.2989 R + 0.5870 G +
      0.1140 B rounded half away from zero).
    """
    c = check_convention(convention)
    if c == "cddfuse":
        bgr = np.ascontiguousarray(rgb[..., ::-1], dtype=np.float32)
        return np.round(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)).astype(np.float64)
    y = rgb.astype(np.float64) @ _MATLAB_GRAY
    return np.clip(np.floor(y + 0.5), 0, 255)


def load_gray(path: str | os.PathLike[str], convention: str = DEFAULT_CONVENTION, *, allow_16bit: bool = False,
              keep_red: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as the toolboxes do: ``(H, W)`` float64 gray levels 0..255 (integers).

    Colour images are converted with :func:`rgb_to_gray` (``keep_red=True``: keep the R channel
    only, MEFB's treatment of a colour fused image with gray sources).

    Args:
        path: PNG / JPEG / BMP / TIFF, 8-bit (or 16-bit with ``allow_16bit``).
        convention: the toolbox whose gray conversion is used.
        allow_16bit: rescale 16-bit images to 8 bits as MATLAB ``im2uint8`` does
            (``round(v / 257)``) instead of refusing them.
        max_pixels: refuse images above this many pixels (see :func:`fusecli.io.read_image`).

    Raises:
        ImageReadError: unreadable file. ConfigError: a 16-bit file without ``allow_16bit``.
    """
    image, info = read_image(path, max_pixels=max_pixels)
    maxv = 255.0 if info.bit_depth == 8 else 65535.0
    arr = np.rint(image[0].numpy().astype(np.float64) * maxv)  # exact integer samples back
    if info.bit_depth == 16:
        if not allow_16bit:
            raise ConfigError(f"'{path}' is a 16-bit image; the metrics are defined on 8-bit images. "
                              "Pass --allow-16bit to rescale it to 8 bits (round(v/257), as MATLAB im2uint8).")
        arr = np.floor(arr / 257.0 + 0.5)
    if arr.shape[0] == 1:
        return arr[0]
    rgb = arr.transpose(1, 2, 0)
    if keep_red:
        return rgb[..., 0].copy()
    return rgb_to_gray(rgb, convention)


@dataclass
class ImageResult:
    """Metric values of one fused image (``values[name]`` is ``nan`` where undefined)."""

    stem: str
    values: dict[str, float]


@dataclass
class MethodReport:
    """The per-image values of one fused folder (one method), what could not be paired, and the image
    files it read (``inputs``: :func:`write_csv` and :func:`write_json` never write onto one)."""

    name: str
    fused_dir: str
    convention: str
    metrics: list[str]
    rows: list[ImageResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    def column(self, metric: str) -> np.ndarray:
        return np.array([r.values[metric] for r in self.rows], dtype=np.float64)

    def mean(self) -> dict[str, float]:
        """Mean over the images (NaN values skipped), as papers report it."""
        return {m: _nanstat(self.column(m), np.nanmean) for m in self.metrics}

    def std(self) -> dict[str, float]:
        """Population standard deviation over the images (NaN values skipped)."""
        return {m: _nanstat(self.column(m), np.nanstd) for m in self.metrics}


def _nanstat(v: np.ndarray, fn) -> float:
    v = v[~np.isnan(v)]
    return float(fn(v)) if v.size else math.nan


def evaluate_files(fused: str | os.PathLike[str], sources: Sequence[str | os.PathLike[str]],
                   names: Sequence[str] | None = None, convention: str = DEFAULT_CONVENTION, *,
                   allow_16bit: bool = False, device: str | torch.device = "cpu",
                   max_pixels: int | None = None) -> dict[str, float]:
    """Metrics of one fused image file against its source files ``[A, B]`` (IR first); images above
    ``max_pixels`` are refused (see :func:`fusecli.io.read_image`).

    Raises:
        ImageReadError, ConfigError, ShapeError (sizes differ), UnknownNameError.
        DeviceError: ``device`` is unknown or not on this machine (checked before any work).
    """
    dev = resolve_device(device)
    c = check_convention(convention)
    names = resolve_metric_names(names)
    srcs = [load_gray(p, c, allow_16bit=allow_16bit, max_pixels=max_pixels) for p in sources]
    f_img, f_info = read_image(fused, max_pixels=max_pixels)
    keep_red = c == "mefb" and f_info.channels == 3 and all(s.ndim == 2 for s in srcs)
    f = load_gray(fused, c, allow_16bit=allow_16bit, keep_red=keep_red, max_pixels=max_pixels)
    for p, s in zip(sources, srcs):
        if s.shape != f.shape:
            raise ShapeError(f"'{fused}' is {f.shape[0]}×{f.shape[1]} but source '{p}' is "
                             f"{s.shape[0]}×{s.shape[1]} (H×W); fused and source images must be the same size.")
    ft = torch.from_numpy(f).to(dev)
    st = [torch.from_numpy(s).to(dev) for s in srcs]
    values: dict[str, float] = {}
    for n in names:
        try:
            values.update({k: float(v[0]) for k, v in evaluate(ft, st, [n], c).items()})
        except ShapeError:  # the image is smaller than this metric's window: only this value is undefined
            values[get_metric(n).name] = math.nan
    return values


def evaluate_folder(fused_dir: str | os.PathLike[str], dataset: str | os.PathLike[str],
                    names: Sequence[str] | None = None, convention: str = DEFAULT_CONVENTION, *,
                    roles: Sequence[str] | None = None, allow_16bit: bool = False, workers: int = 1,
                    device: str | torch.device = "cpu", name: str | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    max_pixels: int | None = None) -> MethodReport:
    """Metrics of every fused image in ``fused_dir`` against the pair of ``dataset`` with the same
    file stem (dataset layouts as for ``batch``: ``ir/`` + ``vis/``, ``ct/`` + ``mri/`` ...).

    Missing, extra, ambiguous and unreadable or mis-sized files are listed in
    :attr:`MethodReport.problems`, never silently skipped; a NaN value (undefined metric, e.g. a
    correlation with a constant image) is listed there too.

    Args:
        fused_dir: folder of fused images named like the sources (any image extension).
        dataset: folder holding the role folders.
        names: metric names (``None``: :data:`DEFAULT_METRICS`).
        convention: ``"cddfuse"`` (default), ``"matlab"``, ``"vifb"``, ``"mefb"``.
        roles: role folder names, detected if ``None``.
        workers: images evaluated in parallel (threads).
        progress: called as ``progress(done, total)`` after each image.
        max_pixels: an image above this many pixels is listed in the problems (see
            :func:`fusecli.io.read_image`).

    Raises:
        ConfigError: ``fused_dir`` or ``dataset`` is not a folder / has no known layout, or no
            fused image matches any pair.
        DeviceError: ``device`` is unknown or not on this machine (checked before any work).
    """
    from ..pairs import scan_pairs

    device = resolve_device(device)
    c = check_convention(convention)
    names = resolve_metric_names(names)
    fused_dir = Path(fused_dir)
    if not fused_dir.is_dir():
        raise ConfigError(f"fused folder '{fused_dir}' is not an existing folder; pass the folder of fused images")
    scan = scan_pairs(dataset, roles)
    report = MethodReport(name=name or fused_dir.name, fused_dir=str(fused_dir), convention=c, metrics=list(names))
    report.problems += scan.problems
    by_stem: dict[str, list[Path]] = {}
    for p in list_images(fused_dir):
        by_stem.setdefault(p.stem, []).append(p)
        report.inputs.append(str(p))
    report.inputs += [str(p) for pr in scan.pairs for p in pr.paths]
    jobs = []
    pair_stems = {pr.stem for pr in scan.pairs}
    for pr in scan.pairs:
        found = by_stem.get(pr.stem, [])
        if not found:
            report.problems.append(f"{pr.stem}: no fused image with this stem in '{fused_dir}'")
        elif len(found) > 1:
            report.problems.append(f"{pr.stem}: several fused images ({', '.join(p.name for p in found)}); keep one")
        else:
            jobs.append((pr.stem, found[0], pr.paths))
    for stem, paths in sorted(by_stem.items()):
        if stem not in pair_stems:
            report.problems += [f"{p.name}: fused image without sources of stem {stem!r} in '{dataset}'" for p in paths]
    if not jobs:
        raise ConfigError(f"no fused image in '{fused_dir}' matches a pair of '{dataset}' by file stem; "
                          "name fused images like their sources (e.g. 01.png for ir/01.png + vis/01.png)")

    def run(job):
        stem, fpath, spaths = job
        try:
            return stem, evaluate_files(fpath, spaths, names, c, allow_16bit=allow_16bit, device=device,
                                        max_pixels=max_pixels), None
        except (ShapeError, ConfigError, OSError) as exc:
            return stem, None, f"{stem}: {' '.join(str(exc).split())}"

    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)  # NaNs are reported below instead
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for i, r in enumerate(pool.map(run, jobs), start=1):
                    results.append(r)
                    if progress:
                        progress(i, len(jobs))
        else:
            for i, job in enumerate(jobs, start=1):
                results.append(run(job))
                if progress:
                    progress(i, len(jobs))
    for stem, values, problem in results:
        if problem:
            report.problems.append(problem)
            continue
        report.rows.append(ImageResult(stem, values))
        nan = [k for k, v in values.items() if math.isnan(v)]
        if nan:
            report.problems.append(f"{stem}: {', '.join(nan)} undefined (NaN: e.g. a constant image, or an "
                                   "image smaller than the metric's window); left out of the mean")
    return report


# ------------------------------------------------------------------ output files


def _atomic_write(path: Path, text: str, reports: Sequence[MethodReport] = ()) -> None:
    path = Path(path)
    if any(_same_file(path, Path(p)) for r in reports for p in r.inputs):
        raise ImageWriteError(f"refusing to write '{path}': it is one of the input images; choose another file name")
    if path.is_dir():
        raise ImageWriteError(f"cannot write '{path}': it is a folder; pass a file name")
    if not path.parent.exists():
        raise ImageWriteError(f"cannot write '{path}': folder '{path.parent}' does not exist; create it first")
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise ImageWriteError(f"cannot write '{path}': {exc.strerror or exc}; check the folder's permissions") from exc


def _num(v: float) -> float | str:
    return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))


def write_json(reports: Sequence[MethodReport], path: str | os.PathLike[str]) -> None:
    """Write every value, the means and stds, the convention and the fusecli version as JSON
    (atomically: a reader never sees a half-written file). Non-finite values are strings."""
    first = reports[0]
    doc = {
        "fusecli_version": __version__,
        "convention": first.convention,
        "metrics": first.metrics,
        "higher_is_better": {m: get_metric(m).higher_is_better for m in first.metrics},
        "definitions": {m: get_metric(m).conventions.get(first.convention, "") for m in first.metrics},
        "methods": [
            {
                "name": r.name,
                "fused_dir": r.fused_dir,
                "images": len(r.rows),
                "mean": {k: _num(v) for k, v in r.mean().items()},
                "std": {k: _num(v) for k, v in r.std().items()},
                "per_image": [{"image": row.stem, **{k: _num(v) for k, v in row.values.items()}} for row in r.rows],
                "problems": r.problems,
            }
            for r in reports
        ],
    }
    _atomic_write(Path(path), json.dumps(doc, indent=2) + "\n", reports)


def write_csv(reports: Sequence[MethodReport], path: str | os.PathLike[str]) -> None:
    """Write one row per image and per method a ``mean`` and a ``std`` row; every row carries the
    method, the convention and the fusecli version (written atomically)."""
    first = reports[0]
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "image", "convention", "fusecli_version", *first.metrics])
    for r in reports:
        for row in r.rows:
            w.writerow([r.name, row.stem, r.convention, __version__, *(repr(row.values[m]) for m in r.metrics)])
        mean, std = r.mean(), r.std()
        w.writerow([r.name, "mean", r.convention, __version__, *(repr(mean[m]) for m in r.metrics)])
        w.writerow([r.name, "std", r.convention, __version__, *(repr(std[m]) for m in r.metrics)])
    _atomic_write(Path(path), buf.getvalue(), reports)
