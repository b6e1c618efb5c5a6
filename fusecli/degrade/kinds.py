"""The degradations: pure functions of (image, severity level, random generator) and their registry.

Contract (every kind):
    ``kind(image, level, rng, **options) -> image``

    * ``image``: a ``torch.float32`` tensor ``(B, C, H, W)`` with values in ``[0, 1]`` and ``C`` 1
      (gray) or 3 (RGB), the :mod:`fusecli.io` convention. The result has the same shape, dtype and
      device, values clipped to ``[0, 1]``; the input is not modified.
    * ``level``: severity 1 (mild) .. 5 (severe); the strengths are in :mod:`fusecli.degrade.levels`.
    * ``rng``: a :class:`numpy.random.Generator`, the only source of randomness (global random
      state is never touched). Images of a batch consume it one after the other. Pass a fresh
      generator from :func:`fusecli.degrade.image_rng` to get the per-image streams
      ``fusecli degrade`` uses.

    The random draws of a kind do not depend on the level (the level only scales them): the same
    generator seed gives the same airlight, streak positions, noise field, blur direction ... at
    every level, so the levels of one image differ only in strength (common random numbers).

The computation is done per image in NumPy/OpenCV on float32 ``(H, W, C)`` arrays.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import ConfigError, ShapeError, UnknownNameError
from .levels import LEVELS, LOWLIGHT_GAMMA, RANGES, level_params

__all__ = [
    "Degradation",
    "get_kind",
    "list_kinds",
    "haze",
    "rain",
    "lowlight",
    "noise",
    "defocus",
    "motion",
    "jpeg",
    "contrast",
    "stripe",
    "ir_lowcontrast",
    "DEPTH_MODES",
]

DEPTH_MODES = ("ramp", "uniform")
"""Built-in depth proxies of ``haze``: ``ramp`` (far at the top, near at the bottom) and ``uniform``."""


@dataclass(frozen=True)
class Degradation:
    """What the registry knows about one kind.

    Attributes:
        name: registry name (``fusecli degrade --kind NAME``).
        fn: the function, ``fn(image, level, rng, **options)`` (see the module docstring).
        modality: ``"visible"``, ``"infrared"`` or ``"any"``: which sensor it models.
        description: one line for ``--help`` and the docs.
        options: names of the keyword options ``fn`` accepts (e.g. ``("depth", "inverse_depth")``).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    modality: str
    description: str
    options: tuple[str, ...] = ()


_KINDS: dict[str, Degradation] = {}
_ALIASES = {"blur": "defocus", "motion-blur": "motion", "gaussian": "noise", "lowcontrast": "ir-lowcontrast"}


def list_kinds() -> list[str]:
    """Names of the registered kinds, in registration order."""
    return list(_KINDS)


def get_kind(name: str) -> Degradation:
    """The :class:`Degradation` called ``name`` (case-insensitive; ``blur`` = ``defocus``,
    ``motion-blur`` = ``motion``).

    Raises:
        UnknownNameError: no such kind (the message suggests a close match and lists them all).
    """
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _KINDS:
        raise UnknownNameError("degradation kind", str(name), list(_KINDS))
    return _KINDS[key]


def _register(name: str, modality: str, description: str):
    """Turn ``np_fn(x, params, rng, **options)`` on one ``(H, W, C)`` float32 array into the
    tensor-level kind ``fn(image, level, rng, **options)`` and register it."""

    def deco(np_fn: Callable[..., np.ndarray]) -> Callable[..., torch.Tensor]:
        options = tuple(p.name for p in inspect.signature(np_fn).parameters.values()
                        if p.kind is inspect.Parameter.KEYWORD_ONLY)

        @functools.wraps(np_fn)
        def fn(image: torch.Tensor, level: int, rng: np.random.Generator, **kwargs: Any) -> torch.Tensor:
            unknown = sorted(set(kwargs) - set(options))
            if unknown:
                raise ConfigError(f"degradation {name!r} has no option(s) {', '.join(unknown)}"
                                  + (f"; it takes {', '.join(options)}" if options else ""))
            params = level_params(name, level)
            _check_image(image, name)
            _check_rng(rng)
            out = []
            for b in range(image.shape[0]):
                x = image[b].detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
                y = np_fn(np.ascontiguousarray(x), params, rng, **kwargs)
                y = np.clip(np.asarray(y, dtype=np.float32).reshape(x.shape), 0.0, 1.0)
                out.append(torch.from_numpy(np.ascontiguousarray(y.transpose(2, 0, 1))))
            return torch.stack(out).to(image.device)

        fn.__doc__ = (np_fn.__doc__ or "") + _COMMON_DOC
        fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("image", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=torch.Tensor),
             inspect.Parameter("level", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int),
             inspect.Parameter("rng", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=np.random.Generator),
             *[p for p in inspect.signature(np_fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]],
            return_annotation=torch.Tensor)
        _KINDS[name] = Degradation(name, fn, modality, description, options)
        return fn

    return deco


_COMMON_DOC = """
    Args:
        image: ``(B, C, H, W)`` float32 tensor in [0, 1], C = 1 or 3.
        level: severity 1..5 (table: ``fusecli.degrade.levels.LEVELS``).
        rng: the numpy Generator all random draws come from.

    Returns:
        A new tensor of the same shape, dtype and device, clipped to [0, 1].

    Raises:
        ConfigError: a level outside 1..5 or an unknown option. ShapeError: a bad image.
    """


def _check_image(image: Any, name: str) -> None:
    if not isinstance(image, torch.Tensor):
        raise ShapeError(f"degradation {name!r} takes a (B, C, H, W) float tensor, got {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] not in (1, 3) or image.shape[0] < 1:
        raise ShapeError(f"degradation {name!r} takes a (B, C, H, W) tensor with C = 1 or 3, "
                         f"got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ShapeError(f"degradation {name!r} takes a float tensor in [0, 1], got dtype {image.dtype}; "
                         "divide integer images by 255 (or 65535) first")
    if min(image.shape[-2:]) < 2:
        raise ShapeError(f"degradation {name!r} needs an image of at least 2x2 pixels, "
                         f"got {image.shape[-1]}x{image.shape[-2]}")


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng must be a numpy.random.Generator (e.g. fusecli.degrade.image_rng(seed, name)), "
                          f"got {type(rng).__name__}")


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel of ``x`` (H, W, C) with ``kernel``, reflecting at the borders."""
    y = cv2.filter2D(x, cv2.CV_32F, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    return y.reshape(x.shape)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return x
    y = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return y.reshape(x.shape)


# ----------------------------------------------------------------------------------------- haze


def _depth_map(depth: Any, h: int, w: int, inverse: bool) -> np.ndarray:
    """The depth proxy ``d`` in [0, 1], shape (h, w): larger is farther."""
    if isinstance(depth, str):
        mode = depth.strip().lower()
        if mode == "uniform":
            return np.ones((h, w), np.float32)
        if mode == "ramp":  # far (1) at the top row, near (0) at the bottom row
            column = np.linspace(1.0, 0.0, h, dtype=np.float32)
            return np.repeat(column[:, None], w, axis=1)
        raise ConfigError(f"unknown haze depth {depth!r}: use 'ramp', 'uniform', or a depth map (array)")
    if isinstance(depth, torch.Tensor):
        depth = depth.detach().cpu().numpy()
    d = np.asarray(depth, dtype=np.float32)
    d = np.squeeze(d)
    if d.ndim == 3 and d.shape[-1] in (3, 4):  # a colour-coded file: use its mean
        d = d[..., :3].mean(axis=-1)
    if d.ndim != 2 or min(d.shape) < 1:
        raise ShapeError(f"a haze depth map must be a 2-D array, got shape {tuple(np.shape(depth))}")
    if not np.all(np.isfinite(d)):
        raise ShapeError("the haze depth map holds NaN or infinite values")
    if d.shape != (h, w):
        d = cv2.resize(d, (w, h), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(d.min()), float(d.max())
    if hi - lo < 1e-12:
        return np.ones((h, w), np.float32)  # constant depth: uniform haze
    d = (d - lo) / (hi - lo)
    return 1.0 - d if inverse else d


def solve_beta(depth: np.ndarray, transmission: float) -> float:
    """The scattering coefficient beta with ``mean(exp(-beta * depth)) == transmission``.

    ``depth`` holds values in [0, 1]. Solved by bisection (the mean is decreasing in beta); if the
    target cannot be reached (most of the map at depth 0) the largest beta tried (200) is returned.
    """
    d = np.asarray(depth, dtype=np.float64)
    if d.size > 16384:  # a regular subsample is plenty for a mean
        step = int(math.ceil(math.sqrt(d.size / 16384)))
        d = d[::step, ::step]
    d = d.ravel()
    if np.all(d == d[0]) and d[0] > 0:
        return -math.log(transmission) / float(d[0])
    lo, hi = 0.0, 200.0
    if np.mean(np.exp(-hi * d)) > transmission:
        return hi
    for _ in range(48):
        mid = 0.5 * (lo + hi)
        if np.mean(np.exp(-mid * d)) > transmission:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@_register("haze", "visible", "atmospheric scattering I = J t + A (1 - t), t = exp(-beta d); "
           "severity = mean transmission")
def haze(x: np.ndarray, p: dict[str, float], rng: np.random.Generator, *,
         depth: Any = "ramp", inverse_depth: bool = False) -> np.ndarray:
    """Haze by the atmospheric scattering model (Koschmieder; the RESIDE recipe).

    ``I = J t + A (1 - t)`` with ``t = exp(-beta d)``. ``d`` is a depth proxy in [0, 1]:
    ``depth="ramp"`` (default; far at the top, near at the bottom: road and surveillance
    scenes), ``"uniform"`` (d = 1 everywhere), or a depth map (2-D array or tensor of any scale
    and size: resized to the image and min-max normalised, larger = farther; pass
    ``inverse_depth=True`` for maps where near is bright, as monocular depth networks write
    them). beta is solved so that the image's mean transmission is the level's target
    (0.85 / 0.70 / 0.55 / 0.40 / 0.28). The airlight A ~ U(0.75, 0.95) is drawn per image and is
    grey (the same in every channel).
    """
    h, w, _ = x.shape
    airlight = rng.uniform(*RANGES["haze.airlight"])
    d = _depth_map(depth, h, w, inverse_depth)
    beta = solve_beta(d, p["transmission"])
    t = np.exp(-beta * d).astype(np.float32)[:, :, None]
    return x * t + np.float32(airlight) * (1.0 - t)


# ----------------------------------------------------------------------------------------- rain


def _line_peak(width: int, sigma: float) -> float:
    """Peak value of a unit line of ``width`` pixels after a Gaussian blur of ``sigma``."""
    size = 4 * int(math.ceil(sigma * 3 + width)) + 1
    canvas = np.zeros((size, size), np.float32)
    c = size // 2
    cv2.line(canvas, (c, 0), (c, size - 1), 1.0, thickness=width)
    return float(_gaussian(canvas[:, :, None], sigma).max())


@_register("rain", "visible", "rain streaks (density, length, slant, blur grow with the level) + veil + blur")
def rain(x: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Falling rain in image space, in the spirit of Hospach et al. (DATE 2016).

    Streak count follows the rain rate (``density`` streaks per 10^4 pixels); each streak has a
    random position and a random "nearness" in [0.5, 1] that scales its opacity and its length
    (near drops are smeared longer during the exposure), with a ±30 % length jitter. The slant is
    shared by the image (its sign drawn per image, its size growing with the level) with a ±3°
    jitter per streak. The streaks are drawn, Gaussian-blurred (``streak_blur``) and blended
    towards a light grey (0.85) with weight ``opacity × nearness``. Real rain also scatters
    light: the scene is slightly blurred (``scene_blur``) and veiled (uniform haze of
    transmission ``veil``, airlight U(0.70, 0.90)) before the streaks go on. Gray and colour
    alike (the streaks are grey).

    The streak set is drawn for the heaviest level and the first ``n`` are used, so the streaks
    of a level are a subset of those of the next level (same generator seed).
    """
    h, w, _ = x.shape
    table = LEVELS["rain"]
    n_max = int(math.ceil(max(table["density"]) * h * w / 1e4))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    airlight = rng.uniform(*RANGES["rain.airlight"])
    cx = rng.uniform(0.0, w, n_max)
    cy = rng.uniform(0.0, h, n_max)
    nearness = rng.uniform(*RANGES["rain.nearness"], n_max)
    jitter = rng.uniform(*RANGES["rain.length_jitter"], n_max)
    angle_jitter = rng.uniform(*RANGES["rain.angle_jitter"], n_max)

    n = int(round(p["density"] * h * w / 1e4))
    mean_near = sum(RANGES["rain.nearness"]) / 2
    lengths = p["length"] * h * nearness / mean_near * (1.0 + jitter)
    theta = np.deg2rad(sign * p["angle"] + angle_jitter)
    dx, dy = np.sin(theta) * lengths / 2, np.cos(theta) * lengths / 2
    width = max(1, int(round(p["width"] * h)))
    shift = 4  # sub-pixel end points (1/16 px)
    scale = 1 << shift
    layer = np.zeros((h, w), np.float32)
    for i in range(n):
        p0 = (int(round((cx[i] - dx[i]) * scale)), int(round((cy[i] - dy[i]) * scale)))
        p1 = (int(round((cx[i] + dx[i]) * scale)), int(round((cy[i] + dy[i]) * scale)))
        cv2.line(layer, p0, p1, float(nearness[i]), thickness=width, lineType=cv2.LINE_8, shift=shift)
    layer = _gaussian(layer[:, :, None], p["streak_blur"]) / _line_peak(width, p["streak_blur"])
    alpha = np.clip(p["opacity"] * layer, 0.0, 1.0)

    scene = _gaussian(x, p["scene_blur"])
    veil = np.float32(p["veil"])
    scene = scene * veil + np.float32(airlight) * (1.0 - veil)
    brightness = np.float32(RANGES["rain.brightness"][0])
    return scene * (1.0 - alpha) + brightness * alpha


# ------------------------------------------------------------------------------------- lowlight


@_register("lowlight", "visible", "darkening in linear light (gamma 2.2) + Poisson-Gaussian sensor noise")
def lowlight(x: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Low light: linearise (``x ** 2.2``), scale by the ``exposure``, add Poisson shot noise
    (``photons`` photo-electrons at full scale) and Gaussian read noise (``read_noise``), then
    re-apply the gamma. Noise is independent per channel (colour noise on RGB)."""
    linear = np.power(x.astype(np.float64), LOWLIGHT_GAMMA) * p["exposure"]
    photons = p["photons"]
    shot = rng.poisson(linear * photons) / photons
    read = rng.standard_normal(x.shape) * p["read_noise"]
    noisy = np.clip(shot + read, 0.0, 1.0)
    return np.power(noisy, 1.0 / LOWLIGHT_GAMMA).astype(np.float32)


# ---------------------------------------------------------------------------------------- noise


@_register("noise", "any", "additive white Gaussian noise")
def noise(x: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise of standard deviation ``sigma`` (fraction of full scale),
    independent per pixel and channel."""
    return x + (rng.standard_normal(x.shape) * p["sigma"]).astype(np.float32)


# ----------------------------------------------------------------------------------------- blur


def disk_kernel(radius: float) -> np.ndarray:
    """A normalised uniform disk (pill-box) kernel of ``radius`` pixels, anti-aliased at its edge."""
    r = int(math.ceil(radius))
    oversample = 8
    coords = (np.arange((2 * r + 1) * oversample) + 0.5) / oversample - (r + 0.5)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    inside = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    kernel = inside.reshape(2 * r + 1, oversample, 2 * r + 1, oversample).mean(axis=(1, 3))
    return (kernel / kernel.sum()).astype(np.float32)


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised linear motion-blur kernel: a segment of ``length`` pixels through the centre at
    ``angle_deg`` (0 = horizontal, counter-clockwise), splatted bilinearly."""
    half = (length - 1) / 2
    size = 2 * int(math.ceil(half)) + 3
    c = size // 2
    t = np.linspace(-half, half, max(2, int(length * 8)))
    theta = math.radians(angle_deg)
    xs, ys = c + t * math.cos(theta), c - t * math.sin(theta)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    kernel = np.zeros((size, size), np.float64)
    for ox, oy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + oy, x0 + ox), wgt)
    return (kernel / kernel.sum()).astype(np.float32)


@_register("defocus", "any", "defocus blur (uniform disk kernel)")
def defocus(x: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Defocus blur: convolution with a uniform disk of ``radius`` pixels (borders reflected)."""
    return _filter(x, disk_kernel(p["radius"]))


@_register("motion", "any", "linear motion blur in a random direction")
def motion(x: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Motion blur: convolution with a line of ``length`` pixels in a direction drawn per image,
    U(0°, 180°) (borders reflected)."""
    angle = rng.uniform(*RANGES["motion.angle"])
    return _filter(x, motion_kernel(p["length"], angle))


# ----------------------------------------------------------------------------------------- jpeg


@_register("jpeg", "any", "JPEG compression round trip (OpenCV)")
def jpeg(x: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """JPEG round trip at ``quality`` with OpenCV (libjpeg, 4:2:0 chroma on colour). JPEG is
    8-bit: the image is quantised to 8 bits first, so a 16-bit image comes back with 8-bit
    precision (stored again as 16-bit)."""
    u8 = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    bgr = u8[:, :, ::-1] if x.shape[2] == 3 else u8[:, :, 0]
    ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, int(p["quality"])])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
        raise ShapeError("OpenCV failed to JPEG-encode the image")
    decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    decoded = decoded[:, :, ::-1] if decoded.ndim == 3 else decoded[:, :, None]
    return decoded.astype(np.float32) / 255.0


# ------------------------------------------------------------------------------------- contrast


@_register("contrast", "any", "contrast reduction about the image mean")
def contrast(x: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Contrast reduction: ``mean + factor · (x − mean)``, one mean over all pixels and channels
    (colours keep their hue)."""
    mean = np.float32(x.mean())
    return mean + np.float32(p["factor"]) * (x - mean)


# ------------------------------------------------------------------------------------- infrared


@_register("stripe", "infrared", "infrared column fixed-pattern noise (offset and gain per column)")
def stripe(x: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Column fixed-pattern noise of uncooled (microbolometer) infrared cameras: every column gets
    a gain ``1 + N(0, gain_sigma)`` and an offset ``N(0, offset_sigma)`` (fractions of full scale:
    1.5 .. 10 grey levels at 8 bits), constant down the column and the same in every channel."""
    w = x.shape[1]
    z_offset = rng.standard_normal(w)
    z_gain = rng.standard_normal(w)
    gain = (1.0 + p["gain_sigma"] * z_gain).astype(np.float32)[None, :, None]
    offset = (p["offset_sigma"] * z_offset).astype(np.float32)[None, :, None]
    return x * gain + offset


@_register("ir-lowcontrast", "infrared", "infrared low contrast (AGC collapse: squeezed about a grey pedestal)")
def ir_lowcontrast(x: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Low-contrast infrared, as when the camera's automatic gain control is dominated by a hot or
    cold object: contrast squeezed by ``factor`` about the mean, and the mean pulled by
    ``1 − factor`` towards a grey pedestal drawn per image, U(0.35, 0.65)."""
    pedestal = rng.uniform(*RANGES["ir-lowcontrast.pedestal"])
    mean = float(x.mean())
    factor = p["factor"]
    new_mean = mean + (1.0 - factor) * (pedestal - mean)
    return np.float32(new_mean) + np.float32(factor) * (x - np.float32(mean))


def _validate_registry() -> None:
    missing = set(LEVELS) ^ set(_KINDS)
    if missing:  # pragma: no cover - a programming error
        raise RuntimeError(f"severity table and kinds disagree on {sorted(missing)}")


_validate_registry()
