"""The severity tables of every degradation: the ONE place where their strengths are set.

Each kind has five levels, 1 (mild) to 5 (severe); level 0 means "clean" and is handled by the
callers (``fusecli robustness``), never by the degradations themselves. Every value is relative to
full scale (images are floats in ``[0, 1]``), so one table serves 8-bit and 16-bit images.

``LEVELS[kind][parameter]`` is a 5-tuple, the value at levels 1..5; :func:`level_params` picks one
level. The per-image random quantities (airlight, rain angle sign, streak positions, noise fields
...) are drawn within the ranges in ``RANGES``; they are documented in ``docs/degrade.md``.

Calibration: the ``fusion`` preset of the project's research notes
(summarised in ``docs/degrade.md``): haze by target mean transmission, rain densities
anchored on albumentations' drizzle/heavy/torrential, noise/blur/JPEG next to ImageNet-C's
constants (Hendrycks & Dietterich 2019) but milder, IR stripe and low contrast next to the ranges
ControlFusion's generators use. Each row is strictly monotone, so severity is monotone
(tested: mean SSIM to the clean image falls strictly from level 1 to 5 on TNO).
"""

from __future__ import annotations

import numbers
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError

__all__ = ["LEVELS", "RANGES", "MAX_LEVEL", "check_level", "level_params"]

MAX_LEVEL = 5

LEVELS: MappingProxyType[str, MappingProxyType[str, tuple[float, ...]]] = MappingProxyType({
    # I = J t + A (1 - t), t = exp(-beta d); beta solved so that mean(t) over the image = transmission.
    "haze": MappingProxyType({
        "transmission": (0.85, 0.70, 0.55, 0.40, 0.28),
    }),
    # Streaks (Hospach-style: count from the rain rate, length and brightness from each drop's
    # distance), a veil (uniform haze of transmission `veil`) and a slight blur of the scene.
    "rain": MappingProxyType({
        "density": (3.0, 6.0, 12.0, 24.0, 40.0),        # streaks per 10^4 pixels
        "length": (0.04, 0.06, 0.08, 0.10, 0.12),       # mean streak length, fraction of image height
        "angle": (4.0, 8.0, 12.0, 16.0, 20.0),          # slant from vertical, degrees (sign per image)
        "width": (0.0020, 0.0022, 0.0025, 0.0030, 0.0035),  # streak width, fraction of height (>= 1 px)
        "streak_blur": (0.5, 0.7, 0.9, 1.1, 1.3),       # Gaussian sigma of the streaks, pixels
        "opacity": (0.15, 0.25, 0.35, 0.45, 0.55),      # blend weight of the nearest streaks
        "veil": (0.97, 0.93, 0.88, 0.82, 0.75),         # transmission of the rain veil (contrast loss)
        "scene_blur": (0.3, 0.5, 0.7, 0.9, 1.1),        # Gaussian sigma of the scene, pixels
    }),
    # Linearise (x^2.2), scale the exposure, Poisson shot noise + Gaussian read noise, re-gamma.
    "lowlight": MappingProxyType({
        "exposure": (0.50, 0.30, 0.18, 0.10, 0.05),
        "photons": (3000.0, 1500.0, 800.0, 400.0, 200.0),  # photo-electrons at full scale
        "read_noise": (0.002, 0.004, 0.006, 0.010, 0.015),  # in linear light, fraction of full scale
    }),
    # Additive white Gaussian noise (ImageNet-C: .08/.12/.18/.26/.38).
    "noise": MappingProxyType({
        "sigma": (0.02, 0.04, 0.06, 0.08, 0.12),
    }),
    # Defocus: a uniform disk (pill-box) kernel (ImageNet-C defocus radii 3/4/6/8/10 at 224 px).
    "defocus": MappingProxyType({
        "radius": (1.0, 2.0, 3.0, 4.0, 6.0),            # pixels
    }),
    # Linear motion blur of a random direction per image.
    "motion": MappingProxyType({
        "length": (5.0, 9.0, 13.0, 17.0, 23.0),         # pixels
    }),
    # JPEG round trip with OpenCV (ImageNet-C: 25/18/15/10/7).
    "jpeg": MappingProxyType({
        "quality": (60.0, 40.0, 25.0, 15.0, 8.0),
    }),
    # Contrast reduction about the image mean (ImageNet-C contrast: .4/.3/.2/.1/.05).
    "contrast": MappingProxyType({
        "factor": (0.75, 0.60, 0.45, 0.30, 0.20),
    }),
    # Infrared column fixed-pattern noise: per-column offset and gain, constant down each column.
    "stripe": MappingProxyType({
        "offset_sigma": (1.5 / 255, 3.0 / 255, 5.0 / 255, 7.0 / 255, 10.0 / 255),
        "gain_sigma": (0.005, 0.010, 0.020, 0.030, 0.050),
    }),
    # Infrared low contrast (AGC collapse): contrast squeezed about the mean, mean pulled to a pedestal.
    "ir-lowcontrast": MappingProxyType({
        "factor": (0.80, 0.65, 0.50, 0.40, 0.30),
    }),
})
"""Severity table: ``LEVELS[kind][parameter][level - 1]``."""

RANGES: MappingProxyType[str, tuple[float, float]] = MappingProxyType({
    "haze.airlight": (0.75, 0.95),       # A ~ U(0.75, 0.95), grey (same A in every channel), per image
    "rain.airlight": (0.70, 0.90),       # A of the rain veil, per image
    "rain.brightness": (0.85, 0.85),     # grey level the streaks blend towards
    "rain.nearness": (0.50, 1.00),       # per streak: scales its opacity and length (near drops are longer)
    "rain.length_jitter": (-0.30, 0.30),  # per streak, relative
    "rain.angle_jitter": (-3.0, 3.0),    # per streak, degrees
    "motion.angle": (0.0, 180.0),        # blur direction, degrees, per image
    "ir-lowcontrast.pedestal": (0.35, 0.65),  # grey level the mean is pulled towards, per image
})
"""Ranges of the per-image / per-streak random draws (uniform)."""

LOWLIGHT_GAMMA = 2.2
"""Display gamma used to linearise before scaling the exposure (and re-applied after)."""


def check_level(level: Any) -> int:
    """``level`` as an int in 1..5, else a :class:`ConfigError` saying so."""
    if isinstance(level, bool) or not (
        isinstance(level, numbers.Integral) or (isinstance(level, float) and level.is_integer())
    ):
        raise ConfigError(f"severity level must be an integer 1-{MAX_LEVEL}, got {level!r}")
    level = int(level)
    if not 1 <= level <= MAX_LEVEL:
        hint = " (level 0 is the clean image: leave the image as it is)" if level == 0 else ""
        raise ConfigError(f"severity level must be 1-{MAX_LEVEL}, got {level}{hint}")
    return level


def level_params(kind: str, level: int) -> dict[str, float]:
    """The parameters of ``kind`` at ``level`` (1..5), e.g. ``{"transmission": 0.55}`` for haze 3."""
    level = check_level(level)
    return {name: values[level - 1] for name, values in LEVELS[kind].items()}
