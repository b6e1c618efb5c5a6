"""Training: one plain loop for every model, and one recipe per model.

A :class:`Recipe` holds what the model's paper prescribes (loss, optimiser groups, schedule, crop
size, epochs, and what it trains on: single gray images for the auto-encoders AUIF and CSC-IVF,
aligned source pairs for DeRUN); :class:`TrainConfig` holds the run (data, split, output folder,
seed, device, and any override of the recipe's numbers). :func:`train` resumes from
``OUT/last.pt`` when asked, saves it atomically after every epoch, and finally writes
``OUT/<model>.safetensors`` plus a draft weights card ``OUT/<model>.yaml`` (sha256, config, data,
split, recipe, schedule, per-epoch history) ready to be copied to ``weights/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pickle
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from ..errors import CheckpointError, ConfigError, UnknownNameError
from ..io import write_bytes_atomic, write_text_atomic
from ..losses import halo_loss, lgde_loss, mef_msssim_lum, ssim_loss
from ..models import create_model, get_entry
from ..models import auif as _auif
from ..models._weights import sha256_file
from .data import PairedCrops, RandomResizedCrops, collect_images, collect_pairs, load_luma, load_pair
from .splits import SPLIT_CHOICES, select_pairs


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
        milestones = [max(1, round(m * run_epochs / epochs)) for m in recipe_milestones]
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


def _multistep(recipe: Recipe, optimizer: torch.optim.Optimizer, epochs: int) -> tuple[Any, dict[str, Any]]:
    """The default schedule: MultiStepLR, milestones scaled with the epochs."""
    # A shortened (or lengthened) run keeps the recipe's schedule shape: milestones scale with the epochs.
    milestones = sorted({max(1, round(m * epochs / recipe.epochs)) for m in recipe.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, recipe.gamma)
    return scheduler, {"kind": "multistep", "recipe": f"milestones {list(recipe.milestones)} of {recipe.epochs} "
                       f"epochs, x{recipe.gamma}", "scaled_to_epochs": epochs, "decay_epochs": milestones,
                       "gamma": recipe.gamma}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` fields take the recipe's value."""

    model: str
    data: tuple[str, ...]
    out: str
    epochs: int | None = None
    batch_size: int | None = None
    crop: int | None = None
    lr: float | None = None
    steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    model_config: dict[str, Any] = field(default_factory=dict)
    #: which pairs of datasets with a fixed held-out split are used (:mod:`fusecli.train.splits`):
    #: ``"auto"`` (their train part; all pairs of other datasets), ``"train"`` or ``"all"``
    split: str = "auto"
    #: overrides of the recipe's :attr:`Recipe.options` (unknown keys are an error)
    options: dict[str, float] = field(default_factory=dict)
    #: weights to start from (a checkpoint file or weights card; see :attr:`Recipe.warm_start`)
    init: str | None = None


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


def _resolve_options(recipe: Recipe, overrides: dict[str, float]) -> dict[str, float]:
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


def _derun_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """DeRUN eq. 14: ``MSE(X, U) + gamma * MSE(LGDE(X), LGDE(V))`` with X = model(U, V), gamma = 10.

    ``batch`` = (U, V): (B, 1, H, W) in [0, 1], U the intensity source (infrared / PET / SPECT), V the
    texture source (visible / MRI). Logs both terms (``pixel``, ``lgde``; the LGDE one unweighted).
    """
    u, v = batch
    x = model(u, v)
    pixel = torch.mean((x - u) ** 2)
    lgde = lgde_loss(x, v, softness=DERUN_LGDE_SOFTNESS)
    return pixel + DERUN_LGDE_WEIGHT * lgde, {"pixel": pixel.item(), "lgde": lgde.item()}


RECIPES["derun"] = Recipe(
    model="derun",
    description="fusion network on aligned 128x128 source crops (same crop and flip on both sides, "
                "luminance; U = ir/pet/spect, V = vis/mri); loss MSE(X, U) + 10 * MSE(LGDE(X), LGDE(V)) "
                "(eq. 14, soft-binned LGDE, softness 0.1); Adam (0.9, 0.999), lr 1e-4, constant for 50 "
                "epochs then x0.9 every 10 epochs; 150 epochs, batch 4 (DeRUN, ICCV 2023; crop size and "
                "flips are fusecli's choice, the paper gives none)",
    loss=_derun_loss,
    param_groups=lambda model, lr: [{"params": list(model.parameters()), "lr": lr}],
    epochs=150, batch_size=4, crop=128, lr=1e-4,
    paired=True,
    layouts=DERUN_LAYOUTS,
    scheduler=step_decay_after(50, 10, 0.9, epochs=150),
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
    param_groups=lambda model, lr: [{"params": list(model.parameters()), "lr": lr}],
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
    recipe = RECIPES.get(name.lower())
    if recipe is None:
        raise UnknownNameError("trainable model", name, RECIPES)
    return recipe


# --- the loop ------------------------------------------------------------------------------------

def save_checkpoint(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (a crash never leaves a half-written ``last.pt``).

    ``obj`` holds tensors, numbers, strings, tuples, lists and dicts only, so that
    :func:`load_checkpoint` reads it back with ``weights_only=True``; a ``Counter`` (MultiStepLR's
    milestones) is stored as a plain dict, which :func:`checkpoint_fits` turns back into one.
    """
    buffer = io.BytesIO()
    torch.save(_plain(obj), buffer)
    write_bytes_atomic(path, buffer.getvalue())


def _plain(obj: Any) -> Any:
    """``obj`` with every ``Counter`` (not readable by every torch's ``weights_only`` loader) a dict."""
    if isinstance(obj, Counter):
        return dict(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def load_checkpoint(path: Path, keys: Sequence[str] = ()) -> dict[str, Any]:
    """Read a resume state written by :func:`save_checkpoint`, with ``weights_only=True``.

    Nothing in the file is executed: only tensors, numbers, strings and containers are rebuilt.

    Args:
        path: the ``last.pt`` file.
        keys: entries the state must hold.

    Raises:
        CheckpointError: the file is unreadable, corrupt, foreign (e.g. a pickle of arbitrary
            objects) or lacks one of ``keys``; the message names the file.
    """
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a foreign pickle protocol: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} is not a fusecli training state: it holds objects other than tensors, "
                              "numbers, strings and containers, which are never loaded (that could run code); "
                              "delete it or run without --resume") from exc
    except Exception as exc:  # zip, pickle and unpickler errors all mean "not a state we can read"
        first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable fusecli training state ({first}); "
                              "delete it or run without --resume") from exc
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a fusecli training state (no {', '.join(missing)}); "
                              "delete it or run without --resume")
    return state


@contextlib.contextmanager
def checkpoint_fits(path: Path, scheduler: Any = None) -> Iterator[None]:
    """Around the ``load_state_dict`` / ``set_state`` calls of a resume: a state that does not fit
    this run (another model, config or optimiser) becomes a :class:`CheckpointError` naming ``path``.
    Afterwards a MultiStepLR ``scheduler``'s milestones are a ``Counter`` again."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} does not fit this run ({first}); "
                              "delete it or run without --resume") from exc
    if isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR):
        scheduler.milestones = Counter(scheduler.milestones)


def _warm_start(model: nn.Module, recipe: Recipe, path: Path) -> dict[str, Any]:
    """Load ``--init`` (a checkpoint or a weights card) into ``model``; returns the card record.

    Raises:
        CheckpointError: unreadable file, or weights that do not fit.
    """
    from ..models._weights import load_state_dict, read_card
    if path.suffix.lower() in (".yaml", ".yml"):
        card = read_card(path)
        state, info = card.load_state_dict(), f"{card.path} (sha256 {card.sha256[:12]})"
    else:
        state, info = load_state_dict(path)
    if recipe.warm_start is not None:
        fresh = recipe.warm_start(model, state)
    else:
        model.load_state_dict(state, strict=True)
        fresh = []
    return {"weights": info, "left_at_init": fresh}


def _check_run_folder(out: Path) -> None:
    """Refuse a run folder that cannot be created because it, or a parent, is a file (before any work)."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"--out '{out}': '{folder}' is a file, not a folder; choose another --out")
            return


def train(config: TrainConfig, *, progress: Callable[[int, int, dict[str, float]], None] | None = None) -> Path:
    """Train ``config.model`` with its recipe; returns the path of the final safetensors file.

    Single-image recipes crop the images of the datasets' role folders; paired recipes
    (``Recipe.paired``) crop the datasets' pairs alike on every side and pass one (B, 1, crop, crop)
    tensor per model input to the loss. ``config.split`` leaves out the held-out pairs of datasets
    with a fixed split (:mod:`fusecli.train.splits`).

    Args:
        config: the run.
        progress: called after every step as ``progress(step, total_steps, logs)``.

    Raises:
        UnknownNameError: no recipe for the model. ConfigError: no usable data, a bad split, images
            smaller than the crop. ImageReadError: an unreadable training image.
    """
    recipe = get_recipe(config.model)
    entry = get_entry(config.model)
    epochs = config.epochs or recipe.epochs
    batch_size = config.batch_size or recipe.batch_size
    crop = config.crop or recipe.crop
    lr = config.lr or recipe.lr
    options = _resolve_options(recipe, config.options)
    out = Path(config.out)
    _check_run_folder(out)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    if config.split not in SPLIT_CHOICES:
        raise ConfigError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {config.split!r}")
    if recipe.paired:
        pair_sets = collect_pairs(config.data, layouts=recipe.layouts, split=config.split)
        pairs = [pair for pair_set in pair_sets for pair in pair_set.pairs]
        sources = [load_pair(pair) for pair in pairs]
        crops: PairedCrops | RandomResizedCrops = PairedCrops(
            sources, crop, generator=generator,
            names=[f"{pair.stem} ({pair.paths[0].parent.parent.name})" for pair in pairs])
        samples = len(sources)
        data_card: dict[str, Any] = {
            "datasets": [{"path": str(ps.dataset), "roles": list(ps.roles), "pairs": len(ps.pairs),
                          "pairs_in_dataset": ps.total, "part": ps.part} for ps in pair_sets],
            "pairs": samples,
        }
    else:
        files = [f for root in config.data
                 for f in select_pairs(root, collect_images([root], recipe.roles), config.split)]
        if not files:
            raise ConfigError(f"no training images left in {', '.join(map(str, config.data))} "
                              f"after --split {config.split}")
        images = [load_luma(p) for p in files]
        too_small = [p.name for p, im in zip(files, images) if min(im.shape[-2:]) < 16]
        if too_small:
            raise ConfigError(f"training images smaller than 16 px: {', '.join(too_small[:5])}")
        crops = RandomResizedCrops(images, crop, generator=generator)
        samples = len(images)
        data_card = {"images": samples}
    steps = config.steps_per_epoch or max(1, samples // batch_size)

    model = create_model(config.model, weights=None, device=config.device, **config.model_config)
    init_card: dict[str, Any] | None = None
    if config.init is not None:
        init_card = _warm_start(model, recipe, Path(config.init))
    model.train()
    optimizer = torch.optim.Adam(recipe.param_groups(model, lr))
    if recipe.scheduler is not None:
        scheduler, schedule_card = recipe.scheduler(optimizer, epochs)
    else:
        scheduler, schedule_card = _multistep(recipe, optimizer, epochs)
    milestones = schedule_card["decay_epochs"]
    start_epoch = 0
    previous_seconds = 0.0  # training time of the runs this one resumes
    history: list[dict[str, float]] = []
    last = out / "last.pt"
    if config.resume and last.is_file():
        state = load_checkpoint(last, ("model", "optimizer", "scheduler", "generator", "torch_rng", "epoch"))
        with checkpoint_fits(last, scheduler):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        start_epoch = state["epoch"]
        history = list(state.get("history", []))
        previous_seconds = float(state.get("seconds", 0.0))
        if isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR):  # the resumed run's own decay epochs
            milestones = schedule_card["decay_epochs"] = sorted(scheduler.milestones.elements())

    try:  # created only now: a mistake found above leaves nothing behind
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run folder '{out}': {exc.strerror or exc}; choose another --out") from exc
    t0 = time.time()
    for epoch in range(start_epoch, epochs):
        sums: dict[str, float] = {}
        for step in range(steps):
            batch = crops.batch(batch_size)
            batch = (tuple(t.to(config.device) for t in batch) if isinstance(batch, tuple)
                     else batch.to(config.device))
            if recipe.options:
                loss, logs = recipe.loss(model, batch, step=epoch * steps + step + 1, **options)
            else:
                loss, logs = recipe.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            logs = {"loss": loss.item(), **logs}
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress:
                progress(epoch * steps + step + 1, epochs * steps, {"epoch": epoch + 1, **logs})
        epoch_lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        history.append({"epoch": epoch + 1, "lr": epoch_lr, **{k: v / steps for k, v in sums.items()}})
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                         "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
                         "config": dataclasses.asdict(config), "history": history,
                         "seconds": previous_seconds + time.time() - t0}, last)

    from safetensors.torch import save  # imported here: only training writes safetensors
    final = out / f"{config.model}.safetensors"
    write_bytes_atomic(final, save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
    model_config = dataclasses.asdict(model.config)
    if recipe.finalize is not None:
        model_config.update(recipe.finalize(model))
    card = {
        "name": config.model,
        "model": config.model,
        "file": final.name,
        "sha256": sha256_file(final),
        "config": model_config,
        "task": list(entry.tasks),
        "inputs": list(model.inputs),
        "training": {
            "data": [str(d) for d in config.data],
            "split": config.split,
            **data_card,
            "recipe": recipe.description,
            "epochs": epochs, "recipe_epochs": recipe.epochs, "batch_size": batch_size, "crop": crop, "lr": lr,
            "milestones": list(milestones), "schedule": schedule_card,  # copies: no YAML anchors
            **({"options": dict(options)} if options else {}),
            **({"init": init_card} if init_card else {}),
            "steps_per_epoch": steps, "seed": config.seed, "device": config.device,
            "seconds": round(previous_seconds + time.time() - t0, 1),  # all runs of a resumed training
            "final_epoch": dict(history[-1]) if history else None,
            "history": history,
        },
    }
    write_text_atomic(out / f"{config.model}.yaml", yaml.safe_dump(card, sort_keys=False))
    return final
