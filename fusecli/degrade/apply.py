"""Applying degradations: per-image random streams, composition, and files / folders / datasets.

Determinism: the generator of an image is seeded from ``SeedSequence([seed, h(name), h(kind),
step])`` where ``h`` is a stable 64-bit hash (SHA-256) of the text, ``name`` is the image's file
stem (the pair id) and ``step`` the position of the kind in a composition. The severity level is
deliberately *not* part of the seed, so the levels of one image share their random draws and
differ only in strength. Nothing depends on the order, the number of images or the sharding of
the work; the same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ConfigError, ImageReadError, ImageWriteError
from ..io import IMAGE_EXTENSIONS, list_images, read_image, write_image
from ..runs import write_json
from .kinds import DEPTH_MODES, get_kind
from .levels import check_level, level_params

__all__ = [
    "DegradeReport",
    "degrade",
    "degrade_path",
    "image_rng",
    "parse_kinds",
    "resolve_depth",
    "stable_hash",
]


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same on every machine, process and Python version
    (first 8 bytes of its SHA-256, unlike the salted built-in ``hash()``)."""
    return int.from_bytes(hashlib.sha256(str(text).encode("utf-8")).digest()[:8], "little")


def image_rng(seed: int, name: str, kind: str = "", step: int = 0) -> np.random.Generator:
    """The random generator of one image and one degradation step.

    Args:
        seed: the user's seed (``--seed``), a non-negative integer.
        name: the image's name, normally its file stem (the pair id).
        kind: the degradation kind.
        step: the kind's position in a composition (``--kind haze,noise``: 0 and 1).

    Raises:
        ConfigError: a negative or non-integer seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    entropy = [int(seed), stable_hash(name), stable_hash(kind), int(step)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def parse_kinds(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Canonical kind names from ``"haze,noise"`` (or a list), in order; aliases resolved.

    Raises:
        UnknownNameError: an unknown kind. ConfigError: no kind given.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(item).strip() for item in items if str(item).strip()]
    if not names:
        raise ConfigError("no degradation kind given; pass --kind NAME (e.g. --kind haze)")
    return tuple(get_kind(name).name for name in names)


def degrade(
    image: torch.Tensor,
    kinds: str | Sequence[str],
    level: int,
    *,
    seed: int = 0,
    name: str = "",
    depth: Any = "ramp",
    inverse_depth: bool = False,
) -> torch.Tensor:
    """Degrade one image (or batch) with one kind or a composition, deterministically.

    Args:
        image: ``(B, C, H, W)`` float32 tensor in [0, 1], C = 1 or 3.
        kinds: a kind (``"haze"``), a comma-separated composition (``"haze,noise"``) or a list;
            applied in order.
        level: severity 1..5, the same for every kind of the composition.
        seed: non-negative integer; with ``name`` it seeds the random draws (see :func:`image_rng`).
        name: the image's name (its file stem): different images get different draws.
        depth: depth proxy for ``haze``: ``"ramp"``, ``"uniform"`` or a 2-D depth map.
        inverse_depth: the depth map is an inverse depth (near = bright).

    Returns:
        The degraded tensor (same shape, dtype, device).

    Raises:
        UnknownNameError, ConfigError (bad level, seed or depth), ShapeError (bad image).
    """
    names = parse_kinds(kinds)
    level = check_level(level)
    out = image
    for step, kind in enumerate(names):
        entry = get_kind(kind)
        options = {"depth": depth, "inverse_depth": inverse_depth} if "depth" in entry.options else {}
        out = entry.fn(out, level, image_rng(seed, name, kind, step), **options)
    return out


# --- files, folders, datasets --------------------------------------------------------------------


@dataclass
class DegradeReport:
    """What :func:`degrade_path` did.

    Attributes:
        mode: ``"file"``, ``"folder"`` (a folder of images) or ``"dataset"`` (role sub-folders).
        output: the output file or folder.
        kinds, level, seed: the degradation.
        role: the degraded role folder (dataset mode), else None.
        degraded: the files written.
        copied: the files copied unchanged (the other roles of a dataset).
    """

    mode: str
    output: Path
    kinds: tuple[str, ...]
    level: int
    seed: int
    role: str | None = None
    degraded: list[Path] = field(default_factory=list)
    copied: list[Path] = field(default_factory=list)


def resolve_depth(depth: str | os.PathLike[str] | None) -> str | Path:
    """``--depth``: ``"ramp"`` (default for None), ``"uniform"``, or an existing folder of depth maps.

    Raises:
        ConfigError: anything else.
    """
    if depth is None:
        return "ramp"
    text = str(depth).strip()
    if text.lower() in DEPTH_MODES:
        return text.lower()
    path = Path(text)
    if not path.is_dir():
        raise ConfigError(f"--depth {text!r}: expected 'ramp', 'uniform' or an existing folder of depth maps "
                          "(one per image, matched by file stem)")
    return path


def _depth_files(depth_dir: Path, images: Sequence[Path]) -> dict[str, Path]:
    """Map each image's stem to its depth map in ``depth_dir``; error on the first missing one."""
    maps: dict[str, Path] = {}
    for path in list_images(depth_dir):
        maps.setdefault(path.stem, path)
    missing = [p for p in images if p.stem not in maps]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"no depth map for '{missing[0].name}' in '{depth_dir}'{more}: expected a file "
                          f"named '{missing[0].stem}' with an image extension ({', '.join(IMAGE_EXTENSIONS)})")
    return {p.stem: maps[p.stem] for p in images}


def _read_depth(path: Path, max_pixels: int | None = None) -> np.ndarray:
    tensor, _ = read_image(path, max_pixels=max_pixels)
    return tensor[0].mean(dim=0).numpy()


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _copy(src: Path, dst: Path) -> None:
    if _same_path(src, dst):
        raise ImageWriteError(f"refusing to copy '{src}' onto itself; choose another output folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    temporary = dst.with_name(f".{dst.name}.{secrets.token_hex(8)}.tmp")
    try:
        shutil.copyfile(src, temporary)
        os.replace(temporary, dst)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _input_mode(path: Path) -> str:
    if path.is_file():
        return "file"
    if not path.is_dir():
        raise ImageReadError(f"input '{path}' does not exist; pass an image, a folder of images or a dataset folder")
    if list_images(path):
        return "folder"
    return "dataset"


def degrade_path(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    kinds: str | Sequence[str],
    level: int,
    *,
    seed: int = 0,
    role: str | None = None,
    roles: Sequence[str] | None = None,
    depth: str | os.PathLike[str] | None = "ramp",
    inverse_depth: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    max_pixels: int | None = None,
) -> DegradeReport:
    """Degrade an image file, a folder of images, or one role of a dataset, into ``output``.

    * An image file: ``output`` is the output file, or a folder to write it into (same name).
    * A folder with images in it: each image is written to ``output/`` under its own name.
    * A dataset (a folder whose role sub-folders are found by :func:`fusecli.pairs.detect_roles`,
      e.g. ``ir/`` + ``vis/``): the images of ``role`` (default: the visible / texture role, the
      second of the layout) are degraded into ``output/<role>/``; the other role folders are copied
      unchanged, so ``output`` is a complete dataset.

    Outputs keep the input's file name, bit depth (8/16) and channel count (gray stays gray; a gray
    image stored as RGB is written as 1-channel gray). A ``degrade.json`` with the settings and
    the level's parameters is written next to the images (folder and dataset modes).

    Args:
        input: image, folder of images, or dataset folder.
        output: output file or folder; never the input.
        kinds, level, seed: see :func:`degrade`.
        role: dataset mode: the role folder to degrade.
        roles: dataset mode: the role folders, if not one of the known layouts.
        depth: haze depth: ``"ramp"``, ``"uniform"``, or a folder of depth maps matched by stem.
        inverse_depth: the depth maps are inverse depths (near = bright).
        progress: called as ``progress(done, total, name)`` after each image.
        max_pixels: refuse images (and depth maps) above this many pixels (see
            :func:`fusecli.io.read_image`).

    Raises:
        ConfigError, UnknownNameError (bad kinds / level / role / depth, missing depth maps),
        ImageReadError, ImageWriteError (unreadable input, output == input).
    """
    from ..pairs import detect_roles  # local: pairs imports io, keep degrade importable alone

    names = parse_kinds(kinds)
    level = check_level(level)
    image_rng(seed, "")  # validates the seed before any work
    depth_spec = resolve_depth(depth)
    src, dst = Path(input), Path(output)
    mode = _input_mode(src)
    if _same_path(src, dst):
        raise ImageWriteError(f"output '{dst}' is the input; choose another output path (inputs are never overwritten)")

    jobs: list[tuple[Path, Path]] = []  # (source image, output image)
    copies: list[tuple[Path, Path]] = []
    chosen: str | None = None
    if mode == "file":
        if src.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ImageReadError(f"input '{src}' is not an image ({', '.join(IMAGE_EXTENSIONS)})")
        target = dst if dst.suffix.lower() in IMAGE_EXTENSIONS else dst / src.name
        jobs.append((src, target))
    elif mode == "folder":
        if dst.suffix.lower() in IMAGE_EXTENSIONS:
            raise ConfigError(f"input '{src}' is a folder: pass an output folder, not the file name '{dst.name}'")
        jobs = [(p, dst / p.name) for p in list_images(src)]
    else:
        found = detect_roles(src, roles)
        chosen = found[1] if role is None else str(role)
        if chosen not in found:
            raise ConfigError(f"--role {chosen!r} is not a role folder of '{src}'; its roles are "
                              f"{', '.join(found)}")
        for r in found:
            if _same_path(src / r, dst):
                raise ImageWriteError(f"output '{dst}' is the input's role folder '{r}'; choose another output path")
        jobs = [(p, dst / chosen / p.name) for p in list_images(src / chosen)]
        copies = [(p, dst / r / p.name) for r in found if r != chosen for p in list_images(src / r)]
        if not jobs:
            raise ImageReadError(f"no images in '{src / chosen}' to degrade")

    depth_maps: dict[str, Path] = {}
    if isinstance(depth_spec, Path) and "haze" in names:
        depth_maps = _depth_files(depth_spec, [s for s, _ in jobs])

    report = DegradeReport(mode, dst, names, level, seed, chosen)
    protect = [s for s, _ in jobs] + [s for s, _ in copies]
    total = len(jobs) + len(copies)
    done = 0
    for source, target in jobs:
        image, info = read_image(source, max_pixels=max_pixels)
        depth_value: Any = _read_depth(depth_maps[source.stem], max_pixels) if source.stem in depth_maps else (
            depth_spec if isinstance(depth_spec, str) else "ramp")
        result = degrade(image, names, level, seed=seed, name=source.stem, depth=depth_value,
                         inverse_depth=inverse_depth)
        report.degraded.append(write_image(target, result, bit_depth=info.bit_depth, protect=protect))
        done += 1
        if progress is not None:
            progress(done, total, source.name)
    for source, target in copies:
        _copy(source, target)
        report.copied.append(target)
        done += 1
        if progress is not None:
            progress(done, total, source.name)

    if mode != "file":
        write_json(dst / "degrade.json", {
            "fusecli": __version__,
            "input": str(src),
            "kinds": list(names),
            "level": level,
            "seed": seed,
            "role": chosen,
            "depth": str(depth_spec),
            "inverse_depth": inverse_depth,
            "parameters": {k: level_params(k, level) for k in names},
            "degraded": len(report.degraded),
            "copied": len(report.copied),
        })
    return report
