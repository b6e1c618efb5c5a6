"""Image-fusion quality metrics and their registry.

Metrics are small pure functions (in the style of piq / kornia) on gray images on the **0–255
scale**, batched in torch: a fused image or batch ``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)``
in, a ``(B,)`` ``float64`` tensor out. Each is registered with a :class:`MetricSpec` saying what
it needs and whether higher is better; :func:`evaluate` runs several at once.

Modules are named for what they compute, never for an author: a metric with the variants built on
it lives in a module named as its function (:mod:`~fusecli.metrics.fmi`, ``lgde``, ``nabf``,
``ms_ssim``, ``mef_ssim``, ``viff``, ``q_p``, ``q_s`` (Q_S with Q_W, Q_E), ``q_sf``); metrics of one
family share a module named for the family (``statistics``: the fused image alone; ``similarity``:
the CDDFuse set against each source; ``information``, ``structural``, ``perceptual``). Private
helpers (``_checks``, ``_filters``) start with an underscore; ``report`` reads files.

Example::

    from fusecli.metrics import evaluate_arrays
    evaluate_arrays(fused_u8, [ir_u8, vis_u8], names=["EN", "SF"], convention="vifb")
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ShapeError, UnknownNameError
from ._checks import CONVENTIONS, as_gray_255, as_sources_255, check_convention, checked

__all__ = [
    "CONVENTIONS",
    "MetricSpec",
    "as_gray_255",
    "evaluate",
    "evaluate_arrays",
    "get_metric",
    "list_metrics",
    "register",
]

#: What a metric needs besides the fused image: ``"fused"`` (nothing), ``"pair"`` (exactly two
#: source images, e.g. infrared + visible), ``"sources"`` (any K >= 1 source images, e.g. an
#: exposure stack) or ``"reference"`` (a ground-truth image).
NEEDS: tuple[str, ...] = ("fused", "pair", "sources", "reference")


@dataclass(frozen=True)
class MetricSpec:
    """What the registry knows about one metric.

    ``fn`` is called as ``fn(fused)`` (``needs="fused"``), ``fn(fused, sources)``
    (``needs="pair"``: exactly two source images; ``needs="sources"``: K >= 1 source images) or
    ``fn(fused, reference)`` (``needs="reference"``: a ground-truth image), plus
    ``convention=...`` when ``fn`` accepts it.

    ``conventions`` maps each convention to one line saying how the metric is computed under it
    (the table of docs/metrics.md is generated from these); ``variants`` names the other
    definitions published under the same name that the function can compute (keyword
    arguments of ``fn``).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    higher_is_better: bool
    needs: str  # one of NEEDS
    description: str
    reference: str  # paper / toolbox
    conventions: Mapping[str, str] = field(default_factory=dict)
    variants: tuple[str, ...] = ()
    #: The ideal value of a metric for which neither higher nor lower is better (Q_SF: 0); the
    #: best of several values is then the one closest to it. ``None`` for the usual metrics.
    target: float | None = None

    @property
    def takes_convention(self) -> bool:
        """Whether ``fn`` has a ``convention`` keyword."""
        return "convention" in inspect.signature(self.fn).parameters


_REGISTRY: dict[str, MetricSpec] = {}  # lower-cased name -> spec, in registration order


def register(
    name: str,
    *,
    higher_is_better: bool,
    needs: str,
    description: str,
    reference: str,
    conventions: Mapping[str, str] | None = None,
    variants: Sequence[str] = (),
    target: float | None = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator that registers a metric function under ``name`` and returns it unchanged.

    ``conventions``: ``{convention: how it is computed there}``; a convention left out means
    "computed as under the first one given" (the metric exists in one form only). ``target``: the
    ideal value when neither higher nor lower is better (see :attr:`MetricSpec.target`).
    """
    if needs not in NEEDS:
        raise ValueError(f"needs must be one of {NEEDS}, got {needs!r}")
    conv = dict(conventions or {})
    if conv:
        first = next(iter(conv.values()))
        conv = {c: conv.get(c, first) for c in CONVENTIONS}

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        key = name.lower()
        if key in _REGISTRY:
            raise ValueError(f"metric {name!r} is already registered")
        _REGISTRY[key] = MetricSpec(name, fn, higher_is_better, needs, description, reference,
                                    conv, tuple(variants), target)
        return fn

    return deco


def list_metrics() -> list[str]:
    """Names of the registered metrics, in registration order."""
    return [spec.name for spec in _REGISTRY.values()]


def get_metric(name: str) -> MetricSpec:
    """The :class:`MetricSpec` of ``name`` (case-insensitive).

    Raises:
        UnknownNameError: ``name`` is not registered (the message suggests a close match).
    """
    spec = _REGISTRY.get(str(name).lower())
    if spec is None:
        exc = UnknownNameError("metric", str(name), list_metrics())
        close = difflib.get_close_matches(str(name).lower(), list(_REGISTRY), n=1)
        if close and "Did you mean" not in str(exc):  # the hint, case-insensitively
            msg = str(exc).replace(". Choose", f". Did you mean {_REGISTRY[close[0]].name!r}? Choose", 1)
            exc.args = (msg,)
        raise exc
    return spec


def evaluate(
    fused: Any,
    sources: Sequence[Any] | None = None,
    names: str | Iterable[str] | None = None,
    convention: str = "cddfuse",
    reference: Any = None,
) -> dict[str, torch.Tensor]:
    """Compute several metrics on a fused image or batch.

    Args:
        fused: ``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)``, torch or numpy, gray on 0–255.
        sources: the source images (e.g. ``[ir, vis]``), each ``(H, W)``/``(1, H, W)`` (shared
            by the whole batch) or ``(B, 1, H, W)``; needed by ``needs="pair"`` (exactly two)
            and ``needs="sources"`` metrics.
        names: a metric name, a list of names (case-insensitive), or ``None`` for every
            registered metric whose inputs were given.
        convention: ``"cddfuse"``, ``"matlab"``, ``"vifb"`` or ``"mefb"``; passed to the metrics that
            take one, ignored by the others.
        reference: a ground-truth image, shaped like ``fused``; needed by
            ``needs="reference"`` metrics.

    Returns:
        ``{metric name: (B,) float64 tensor}`` in the order asked, on ``fused``'s device.

    Raises:
        UnknownNameError: an unknown metric name or convention.
        ShapeError: inputs of a wrong or mismatched shape.
        ConfigError: a metric asked for by name needs sources / a reference that were not given.
    """
    conv = check_convention(convention)
    if isinstance(names, str):
        names = [names]
    if names is None:
        given = {"fused", *(["sources"] if sources is not None else []),
                 *(["pair"] if sources is not None and len(sources) == 2 else []),
                 *(["reference"] if reference is not None else [])}
        specs = [s for s in _REGISTRY.values() if s.needs in given]
    else:
        specs = [get_metric(n) for n in names]

    x = as_gray_255(fused, "fused")
    srcs = ref = None
    for spec in specs:
        if spec.needs in ("sources", "pair") and sources is None:
            raise ConfigError(f"metric {spec.name} needs the source images; pass sources=[...].")
        if spec.needs == "pair" and len(sources) != 2:
            raise ShapeError(f"metric {spec.name} needs exactly two source images (e.g. [ir, vis]), "
                             f"got {len(sources)}.")
        if spec.needs == "reference" and reference is None:
            raise ConfigError(f"metric {spec.name} needs a reference image; pass reference=...")
    if sources is not None and any(s.needs in ("sources", "pair") for s in specs):
        srcs = as_sources_255(sources, x)
    if reference is not None and any(s.needs == "reference" for s in specs):
        ref = as_sources_255([reference], x)[0]

    out: dict[str, torch.Tensor] = {}
    with checked(x, *(srcs or []), *([ref] if ref is not None else [])):
        for spec in specs:
            kw = {"convention": conv} if spec.takes_convention else {}
            if spec.needs == "fused":
                out[spec.name] = spec.fn(x, **kw)
            elif spec.needs in ("sources", "pair"):
                out[spec.name] = spec.fn(x, srcs, **kw)
            else:
                out[spec.name] = spec.fn(x, ref, **kw)
    return out


def evaluate_arrays(
    fused: np.ndarray,
    sources: list[np.ndarray] | None = None,
    names: str | Iterable[str] | None = None,
    convention: str = "cddfuse",
) -> dict[str, float]:
    """:func:`evaluate` for one numpy image: ``fused`` ``(H, W)`` on 0–255 (e.g. ``uint8``),
    ``sources`` a list of ``(H, W)`` arrays. Returns ``{metric name: float}``."""
    x = as_gray_255(fused, "fused")
    if x.shape[0] != 1:
        raise ShapeError(f"evaluate_arrays takes one image, got a batch of {x.shape[0]}; use evaluate.")
    return {k: float(v[0]) for k, v in evaluate(x, sources, names, convention).items()}


# registration order = the order of list_metrics() and of "--metrics all"
from . import statistics  # noqa: E402,F401  (EN, SD, SF, AG, EI)
from . import similarity  # noqa: E402,F401  (MI, MSE, PSNR, CC, SCD, VIF, Qabf, SSIM)
from . import viff  # noqa: E402,F401  (VIFF)
from . import information  # noqa: E402,F401  (NMI, CE, TE, Q_TE, Q_NCIE)
from . import structural  # noqa: E402,F401  (UIQI, Q_Y, Q_C)
from . import nabf  # noqa: E402,F401  (Nabf)
from . import perceptual  # noqa: E402,F401  (Q_CB, Q_CV)
from . import q_s  # noqa: E402,F401  (Q_S, Q_W, Q_E)
from . import mef_ssim  # noqa: E402,F401  (MEF-SSIM, MEF-MS-SSIM)
from . import ms_ssim  # noqa: E402,F401  (MS-SSIM)
from . import fmi  # noqa: E402,F401  (FMI, FMI_pixel, FMI_dct, FMI_gradient)
from . import q_p  # noqa: E402,F401  (Q_P)
from . import q_sf  # noqa: E402,F401  (Q_SF)
from . import lgde  # noqa: E402,F401  (LGDE)
