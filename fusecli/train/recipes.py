"""The training recipes: what each model's paper (or fusecli, where it says so) prescribes.

A :class:`Recipe` holds a model's loss on a batch, optimiser groups, schedule, crop size, epochs,
and what it trains on (single gray images for the auto-encoders AUIF and CSC-IVF, aligned source
pairs for DeRUN, CSC-MEF and AUIF-Fusion). :data:`RECIPES` maps model names to them;
:func:`fusecli.train.train` runs one through :func:`fusecli.train.loop.fit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..degrade import MAX_LEVEL, get_kind
from ..errors import ConfigError, UnknownNameError
from ..losses import halo_loss, lgde_loss, mef_msssim_lum, ssim_loss
from ..models import auif as _auif
from .loop import multistep, scale_milestones

__all__ = ["Recipe", "RECIPES", "get_recipe", "step_decay_after", "parse_options", "resolve_options",
           "schedule", "darken", "intensity_gradient_loss", "DERUN_LAYOUTS", "DERUN_LGDE_WEIGHT",
           "DERUN_LGDE_SOFTNESS", "DERUN_DEGRADE_KINDS", "degrade_inputs", "IVF_LAYOUTS"]


@dataclass(frozen=True)
class Recipe:
    """A model's published training recipe."""

    model: str
    description: str
    #: ``loss(model, batch) -> (loss, logs)``; ``batch`` is a (B, 1, H, W) tensor of single images,
    #: or for a ``paired`` recipe a tuple of (B, 1, H, W) tensors, one per model input in order
    loss: Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
    param_groups: Callable[[nn.Module, float], list[dict[str, Any]]]
    epochs: int
    batch_size: int
    crop: int
    lr: float
    #: MultiStepLR milestones (scaled with the epochs) and factor, used when ``scheduler`` is None
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    roles: tuple[str, ...] | None = None
    #: config changes computed from the trained model (e.g. AUIF's Sum-rule offset), applied at the end
    finalize: Callable[[nn.Module], dict[str, Any]] | None = None
    #: False: single gray images (auto-encoders: the images of the ``roles`` folders pooled,
    #: random-resized crops); True: aligned source pairs matched by :mod:`fusecli.pairs`, the same
    #: random crop and flip on every side, one tensor per model input (the first role folder of the
    #: dataset layout, e.g. ir/, pet/, spect/, is the first input)
    paired: bool = False
    #: role-folder layouts a paired recipe accepts, each in model-input order (None: any known layout)
    layouts: tuple[tuple[str, ...], ...] | None = None
    #: ``scheduler(optimizer, epochs) -> (lr scheduler stepped once per epoch, card record)``; None:
    #: MultiStepLR(``milestones`` scaled by epochs / recipe epochs, ``gamma``)
    scheduler: Callable[[torch.optim.Optimizer, int], tuple[Any, dict[str, Any]]] | None = None
    #: the recipe's tunable hyper-parameters and their paper values (``--option KEY=VALUE``); a
    #: recipe with options gets ``loss(model, batch, step=i, **options)``, ``i`` the 1-based
    #: iteration counted over the whole run (so a resumed run continues any ramp where it stopped)
    options: dict[str, float] = field(default_factory=dict)
    #: ``warm_start(model, state) -> keys left at their initial values``: loads the state dict of
    #: ``--init`` (e.g. an auto-encoder's) into the model; None: ``--init`` loads strict
    warm_start: Callable[[nn.Module, dict[str, torch.Tensor]], list[str]] | None = None
    #: max L2 norm of the gradient (None: no clipping)
    clip: float | None = None
    #: steps of linear learning-rate warm-up at the start of the run (0: none)
    lr_warmup_steps: int = 0


def step_decay_after(start: int, every: int, gamma: float, *, epochs: int
                     ) -> Callable[[torch.optim.Optimizer, int], tuple[Any, dict[str, Any]]]:
    """A schedule "constant for ``start`` epochs, then x ``gamma`` every ``every`` epochs" of a
    recipe of ``epochs`` epochs, as a :attr:`Recipe.scheduler`.

    The decays fall at the (0-based) epochs ``start, start + every, ... < epochs`` (DeRUN:
    50, 60, ..., 140: ten decays, the lr ends at 0.9^10 = 0.35 of its start). A run of another
    length scales every decay epoch by ``run epochs / epochs`` (rounded, at least 1) and keeps
    their number, so the lr falls by the same total factor over the same fraction of the run
    (decays that land on one epoch are applied together).
    """
    recipe_milestones = list(range(start, epochs, every))

    def build(optimizer: torch.optim.Optimizer, run_epochs: int) -> tuple[Any, dict[str, Any]]:
        milestones = scale_milestones(recipe_milestones, run_epochs, epochs, repeats=True)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma)
        return scheduler, {
            "kind": "step decay after a constant phase",
            "recipe": f"constant for {start} epochs, then x{gamma} every {every} epochs, {epochs} epochs",
            "scaled_to_epochs": run_epochs,
            "decay_epochs": milestones,
            "gamma": gamma,
            "final_factor": round(gamma ** len(milestones), 6),
        }

    return build


def schedule(recipe: Recipe, optimizer: torch.optim.Optimizer, epochs: int) -> tuple[Any, dict[str, Any]]:
    """The recipe's lr schedule for a run of ``epochs`` and its card record: :attr:`Recipe.scheduler`,
    else MultiStepLR at the recipe's milestones scaled to ``epochs``."""
    if recipe.scheduler is not None:
        return recipe.scheduler(optimizer, epochs)
    return multistep(optimizer, recipe.milestones, recipe.gamma, epochs=epochs, recipe_epochs=recipe.epochs)


def parse_options(items: Sequence[str]) -> dict[str, float]:
    """``["halo_max=0", ...]`` -> ``{"halo_max": 0.0}`` (the CLI's ``--option KEY=VALUE``).

    Raises:
        ConfigError: an item without ``=`` or with a value that is not a number.
    """
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--option must be KEY=NUMBER (e.g. halo_max=0), got {item!r}") from None
    return out


def resolve_options(recipe: Recipe, overrides: dict[str, float]) -> dict[str, float]:
    """The recipe's options with ``overrides`` (``--option``) applied.

    Raises:
        ConfigError: an override the recipe has no option for.
    """
    unknown = sorted(set(overrides) - set(recipe.options))
    if unknown:
        known = ", ".join(sorted(recipe.options)) or "none"
        raise ConfigError(f"recipe {recipe.model} has no option {', '.join(unknown)} (its options: {known})")
    return {**recipe.options, **overrides}


# --- recipes -------------------------------------------------------------------------------------

def _autoencoder_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """AUIF / CSC-IVF auto-encoder loss: MSE + 5 * SSIM loss (kornia, window 3)."""
    recon = model.reconstruct(batch)
    mse = torch.mean((recon - batch) ** 2)
    ssim_l = ssim_loss(recon, batch, window=3)
    return mse + 5 * ssim_l, {"mse": mse.item(), "ssim_loss": ssim_l.item()}


def _auif_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Adam groups of the official code: base encoder + decoder at lr, detail encoder at lr / 10."""
    return [
        {"params": list(model.base.parameters()) + list(model.decoder.parameters()), "lr": lr},
        {"params": list(model.detail.parameters()), "lr": lr / 10},
    ]


def _one_group(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Every parameter in one group at lr."""
    return [{"params": list(model.parameters()), "lr": lr}]


def _csc_ivf_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """CSC-IVF: the official code's three Adam optimisers (base, detail, decoder), all at lr."""
    return [{"params": list(part.parameters()), "lr": lr} for part in (model.base, model.detail, model.decoder)]


RECIPES: dict[str, Recipe] = {
    "auif": Recipe(
        model="auif",
        description="auto-encoder on gray random-resized 128 crops; loss MSE + 5*(1-SSIM)/2 (window 3); "
                    "Adam, lr 1e-2 (base encoder, decoder) and 1e-3 (detail encoder); "
                    "MultiStepLR milestones 41, 81, gamma 0.1; 80 epochs, batch 32 (AUIF, TCSVT 2021)",
        loss=_autoencoder_loss,
        param_groups=_auif_groups,
        epochs=80, batch_size=32, crop=128, lr=1e-2, milestones=(41, 81), gamma=0.1,
        roles=("ir", "vis"),
        finalize=lambda model: {"sum_offset": _auif.calibrate_sum_offset(model)},
    ),
    "cscfuse-ivf": Recipe(
        model="cscfuse-ivf",
        description="auto-encoder on gray random-resized 128 crops; loss MSE + 5*(1-SSIM)/2 (window 3); "
                    "Adam lr 1e-2 for base encoder, detail encoder and decoder; lr x0.1 after epoch 30 "
                    "(the paper; the official code's float milestones never fire); 60 epochs, batch 16 "
                    "(CSC-IVF, Zhao et al., CVPRW 2023)",
        loss=_autoencoder_loss,
        param_groups=_csc_ivf_groups,
        epochs=60, batch_size=16, crop=128, lr=1e-2, milestones=(30,), gamma=0.1,
        roles=("ir", "vis"),
    ),
}


# --- DeRUN (He et al., ICCV 2023): a fusion network trained on the source pairs -------------------

#: weight of the LGDE term in DeRUN's loss (eq. 14; the paper: gamma = 10)
DERUN_LGDE_WEIGHT = 10.0
#: soft-binning temperature of the differentiable LGDE (fusecli.metrics.lgde; hard bins at 0)
DERUN_LGDE_SOFTNESS = 0.1
#: the dataset layouts DeRUN trains on, (intensity source U, texture source V)
DERUN_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("ir", "vis"), ("ir", "vi"), ("infrared", "visible"), ("IR", "VIS"),
    ("pet", "mri"), ("spect", "mri"), ("ct", "mri"),
)


#: the kinds ``--option degrade=P`` draws from: every :mod:`fusecli.degrade` kind of a visible
#: camera (or of any sensor), so that no single test condition is trained for
DERUN_DEGRADE_KINDS: tuple[str, ...] = ("haze", "rain", "lowlight", "noise", "defocus", "motion", "jpeg", "contrast")


def degrade_inputs(v: torch.Tensor, probability: float, rng: np.random.Generator,
                   kinds: Sequence[str] = DERUN_DEGRADE_KINDS) -> torch.Tensor:
    """Each image of ``v`` (B, C, H, W) float32 in [0, 1] degraded with ``probability`` by a kind
    drawn from ``kinds`` at a level drawn from 1..5 (:mod:`fusecli.degrade`); all draws from ``rng``.
    Returns a new tensor (``v`` itself when nothing is drawn)."""
    out = None
    for b in range(v.shape[0]):
        if rng.random() < probability:
            kind = get_kind(kinds[int(rng.integers(len(kinds)))])
            out = v.clone() if out is None else out
            out[b:b + 1] = kind.fn(v[b:b + 1], int(rng.integers(1, MAX_LEVEL + 1)), rng)
    return v if out is None else out


def _derun_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], *, step: int = 0,
                pixel: float = 1.0, lgde: float = DERUN_LGDE_WEIGHT, intensity: float = 0.0, gradient: float = 0.0,
                ssim: float = 0.0, degrade: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """DeRUN eq. 14: ``pixel * MSE(X, U) + lgde * MSE(LGDE(X), LGDE(V))`` with X = model(U, V) and the
    paper's weights 1 and 10 (``gamma``).

    ``batch`` = (U, V): (B, 1, H, W) in [0, 1], U the intensity source (infrared / PET / SPECT), V the
    texture source (visible / MRI). Logs every term in use, unweighted (``pixel``, ``lgde``,
    ``intensity``, ``gradient``).

    fusecli's options (0 in the paper): ``intensity`` / ``gradient`` add
    :func:`intensity_gradient_loss` (``L1(X, max(U, V))``, ``L1(|Sobel X|, max(|Sobel U|, |Sobel V|))``);
    ``ssim`` adds ``(ssim_loss(X, U) + ssim_loss(X, V)) / 2`` (structural similarity to both sources,
    the SSIM term of EFRUFN's IVF loss; :func:`fusecli.losses.ssim_loss`, 11x11 window);
    ``degrade`` is the probability that the network sees a degraded V (:func:`degrade_inputs`,
    random kind and level; the random stream is a function of ``step``, so a resumed run draws the
    same) while the loss still compares X with the clean sources: it learns to take V's structure,
    not its haze, rain or noise.
    """
    u, v = batch
    seen = v if degrade <= 0 else degrade_inputs(v, degrade, np.random.default_rng([step, 14]))
    x = model(u, seen)
    loss, logs = x.new_zeros(()), {}
    if pixel:
        term = torch.mean((x - u) ** 2)
        loss, logs["pixel"] = loss + pixel * term, term.item()
    if lgde:
        term = lgde_loss(x, v, softness=DERUN_LGDE_SOFTNESS)
        loss, logs["lgde"] = loss + lgde * term, term.item()
    if intensity or gradient:
        term, more = intensity_gradient_loss(x, u, v, intensity=intensity, gradient=gradient)
        loss, logs = loss + term, {**logs, **more}
    if ssim:
        term = (ssim_loss(x, u) + ssim_loss(x, v)) / 2
        loss, logs["ssim"] = loss + ssim * term, term.item()
    return loss, logs


RECIPES["derun"] = Recipe(
    model="derun",
    description="fusion network on aligned 128x128 source crops (same crop and flip on both sides, "
                "luminance; U = ir/pet/spect, V = vis/mri); loss MSE(X, U) + 10 * MSE(LGDE(X), LGDE(V)) "
                "(eq. 14, soft-binned LGDE, softness 0.1); Adam (0.9, 0.999), lr 1e-4, constant for 50 "
                "epochs then x0.9 every 10 epochs; 150 epochs, batch 4 (DeRUN, ICCV 2023; crop size and "
                "flips are fusecli's choice, the paper gives none); options: pixel=1 and lgde=10 weigh eq. 14's "
                "terms; fusecli's additions, 0 in the paper: intensity and gradient weigh "
                "L1(X, max(U, V)) and L1(|Sobel X|, max(|Sobel U|, |Sobel V|)), ssim the mean SSIM loss to U and V, "
                "degrade is the probability "
                "of a degraded V input (random visible kind and level; the loss sees the clean sources)",
    loss=_derun_loss,
    param_groups=_one_group,
    epochs=150, batch_size=4, crop=128, lr=1e-4,
    paired=True,
    layouts=DERUN_LAYOUTS,
    scheduler=step_decay_after(50, 10, 0.9, epochs=150),
    options={"pixel": 1.0, "lgde": DERUN_LGDE_WEIGHT, "intensity": 0.0, "gradient": 0.0, "ssim": 0.0,
             "degrade": 0.0},
)


# --- CSC-MEF (Zhao et al., CVPRW 2023): a weight-map network trained on exposure stacks ------------

def _csc_mef_loss(model: nn.Module, batch: tuple[torch.Tensor, ...], *, step: int, halo_max: float,
                  halo_ramp: float) -> tuple[torch.Tensor, dict[str, float]]:
    """CSC-MEF eq. 7: ``-MEF-MS-SSIM(y_F; y_1..y_K) + lambda_i * L_halo(y_F)``.

    ``batch`` = K (B, 1, H, W) exposure luminances in [0, 1]. Only the fused luminance enters the
    loss, and it depends only on the weight maps and the source lumas (``y_F = sum_k w_k y_k``), so
    training on luminance crops is exact: the chroma rule has no parameters. ``lambda_i =
    min(halo_ramp * (i - 1), halo_max)`` at the 1-based iteration ``i`` (the paper's ramp).
    """
    ys = torch.cat(batch, 1)  # (B, K, H, W)
    y = (model.weight_maps(*batch) * ys).sum(1, keepdim=True)
    q = mef_msssim_lum(y, ys).mean()
    halo = halo_loss(y)
    weight = min(halo_ramp * (step - 1), halo_max)
    return -q + weight * halo, {"mef_msssim": q.item(), "halo": halo.item(), "halo_weight": weight}


RECIPES["cscfuse-mef"] = Recipe(
    model="cscfuse-mef",
    description="weight-map network on aligned 128x128 luminance crops of exposure stacks (same crop and flip "
                "on every exposure); loss -MEF-MS-SSIM (MEF-Net's differentiable form with the luminance "
                "term, 3 scales) + lambda_i * mean |Sobel(y_F)| (halo loss), lambda_i = min(0.25 (i - 1), "
                "halo_max), halo_max 10 (eq. 7; the official checkpoint's run used 0); Adam lr 5e-4, 50 epochs, "
                "batch 8 (CSC-MEF, Zhao et al., CVPRW 2023; crop size is fusecli's choice, the paper gives none)",
    loss=_csc_mef_loss,
    param_groups=_one_group,
    epochs=50, batch_size=8, crop=128, lr=5e-4,
    paired=True,
    layouts=(("under", "over"),),
    options={"halo_max": 10.0, "halo_ramp": 0.25},
)


# --- AUIF-Fusion (fusecli's ir-vis default): AUIF's encoders trained end to end as a fusion network --

#: the infrared-visible dataset layouts, (infrared, visible)
IVF_LAYOUTS: tuple[tuple[str, str], ...] = (("ir", "vis"), ("ir", "vi"), ("infrared", "visible"), ("IR", "VIS"))


def darken(vis: torch.Tensor, *, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Night-time augmentation of a batch of visible luminance crops (B, 1, H, W) in [0, 1].

    With probability ``p`` per sample: ``s * vis ** gamma`` with gain ``s`` uniform in [0.05, 0.7]
    and gamma uniform in [1, 2.2] (a dark, crushed visible image: mean luminance down to a few grey
    levels); the other samples are returned unchanged.
    """
    b = vis.shape[0]
    u = torch.rand(b, 3, 1, 1, generator=generator).to(vis)
    gain = 0.05 + 0.65 * u[:, 1:2]
    gamma = 1.0 + 1.2 * u[:, 2:3]
    dark = gain * vis.clamp_min(0) ** gamma
    return torch.where(u[:, 0:1] < p, dark, vis)


def intensity_gradient_loss(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, intensity: float = 1.0,
                            gradient: float = 4.0) -> tuple[torch.Tensor, dict[str, float]]:
    """``intensity * |F - max(a, b)| + gradient * | |grad F| - max(|grad a|, |grad b|) |`` (means; Sobel
    magnitudes as :func:`fusecli.losses.sobel_gradient`), the IVF loss of EFRUFN without its SSIM and
    contrast terms. All (B, 1, H, W) in [0, 1]; logs both terms unweighted."""
    from ..losses import sobel_gradient
    l_int = torch.mean(torch.abs(fused - torch.maximum(a, b)))
    l_grad = torch.mean(torch.abs(sobel_gradient(fused) - torch.maximum(sobel_gradient(a), sobel_gradient(b))))
    return intensity * l_int + gradient * l_grad, {"intensity": l_int.item(), "gradient": l_grad.item()}


def _auif_fusion_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], *, step: int, intensity: float,
                      gradient: float, dark_p: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Darken some visible crops (:func:`darken`), fuse with the network (without the parameter-free
    pyramid detail step), :func:`intensity_gradient_loss` to the (darkened) sources."""
    ir, vis = batch
    vis = darken(vis, p=dark_p)
    # the trained part only: the pyramid detail step (detail_levels) has no parameters
    return intensity_gradient_loss(model.network(ir, vis), ir, vis, intensity=intensity, gradient=gradient)


def _auif_fusion_warm_start(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    from ..models.auif_fusion import warm_start_from_auif
    return warm_start_from_auif(model, state)


RECIPES["auif-fusion"] = Recipe(
    model="auif-fusion",
    description="fusion network on aligned 128x128 ir/vis luminance crops (same crop and flip on both sides), "
                "visible crops darkened with probability dark_p (gain 0.05-0.7, gamma 1-2.2); loss "
                "intensity * L1(F, max(ir, vis)) + gradient * L1(|Sobel F|, max(|Sobel ir|, |Sobel vis|)); "
                "encoders warm-started from an AUIF auto-encoder (--init, `fusecli train auif` on "
                "the same split), BatchNorm statistics frozen; Adam lr 1e-3 for the fusion step, lr/10 for "
                "the encoders; lr x0.1 at 2/3 of the epochs (fusecli's recipe)",
    loss=_auif_fusion_loss,
    param_groups=lambda model, lr: [
        {"params": list(model.fusion.parameters()), "lr": lr},
        {"params": [p for n, p in model.named_parameters() if not n.startswith("fusion.")], "lr": lr / 10},
    ],
    epochs=60, batch_size=8, crop=128, lr=1e-3, milestones=(40,), gamma=0.1,
    paired=True,
    layouts=IVF_LAYOUTS,
    options={"intensity": 1.0, "gradient": 4.0, "dark_p": 0.5},
    warm_start=_auif_fusion_warm_start,
)


def get_recipe(name: str) -> Recipe:
    """The recipe of model ``name`` (any case).

    Raises:
        UnknownNameError: no recipe for it (the message lists the trainable models).
    """
    recipe = RECIPES.get(name.lower())
    if recipe is None:
        raise UnknownNameError("trainable model", name, RECIPES)
    return recipe
