"""Simulated degradations (weather, light, sensor) for robustness tests: ``fusecli degrade``.

Each kind is a pure function ``kind(image, level, rng, **options)`` on a ``(B, C, H, W)``
float32 tensor in ``[0, 1]`` (the :mod:`fusecli.io` convention), a severity level 1..5 and an
explicit :class:`numpy.random.Generator`; see :mod:`fusecli.degrade.kinds`. The severity tables
are in :mod:`fusecli.degrade.levels` (and nowhere else). :func:`degrade` composes kinds with the
per-image random streams of ``fusecli degrade``; :func:`degrade_path` works on files, folders and
datasets.

Example::

    from fusecli.degrade import degrade
    from fusecli.io import read_image, write_image
    image, info = read_image("vis/0001.png")
    hazy = degrade(image, "haze", 3, seed=0, name="0001")
    write_image("hazy/0001.png", hazy, bit_depth=info.bit_depth)
"""

from __future__ import annotations

from .apply import DegradeReport, degrade, degrade_path, image_rng, parse_kinds, resolve_depth, stable_hash
from .kinds import (
    DEPTH_MODES,
    Degradation,
    contrast,
    defocus,
    get_kind,
    haze,
    ir_lowcontrast,
    jpeg,
    list_kinds,
    lowlight,
    motion,
    noise,
    rain,
    stripe,
)
from .levels import LEVELS, MAX_LEVEL, RANGES, check_level, level_params

__all__ = [
    "DEPTH_MODES",
    "LEVELS",
    "MAX_LEVEL",
    "RANGES",
    "Degradation",
    "DegradeReport",
    "check_level",
    "contrast",
    "defocus",
    "degrade",
    "degrade_path",
    "get_kind",
    "haze",
    "image_rng",
    "ir_lowcontrast",
    "jpeg",
    "level_params",
    "list_kinds",
    "lowlight",
    "motion",
    "noise",
    "parse_kinds",
    "rain",
    "resolve_depth",
    "stable_hash",
    "stripe",
]
