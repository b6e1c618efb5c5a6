"""Training: one plain loop for every model, and one recipe per model.

A :class:`Recipe` holds what the model's paper prescribes (loss, optimiser groups, schedule, crop
size, epochs); :class:`TrainConfig` holds the run (data, output folder, seed, device, and any
override of the recipe's numbers). :func:`train` resumes from ``OUT/last.pt`` when asked, saves it
atomically after every epoch, and finally writes ``OUT/<model>.safetensors`` plus a draft weights
card ``OUT/<model>.yaml`` (sha256, config, data, recipe) ready to be copied to ``weights/``.
"""

from __future__ import annotations

import dataclasses
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from ..errors import ConfigError, UnknownNameError
from ..io import write_bytes_atomic, write_text_atomic
from ..losses import ssim_loss
from ..models import create_model, get_entry
from ..models import auif as _auif
from ..models._weights import sha256_file
from .data import RandomResizedCrops, collect_images, load_luma


@dataclass(frozen=True)
class Recipe:
    """A model's published training recipe."""

    model: str
    description: str
    loss: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
    param_groups: Callable[[nn.Module, float], list[dict[str, Any]]]
    epochs: int
    batch_size: int
    crop: int
    lr: float
    milestones: tuple[int, ...]
    gamma: float
    roles: tuple[str, ...] | None = None
    #: config changes computed from the trained model (e.g. AUIF's Sum-rule offset), applied at the end
    finalize: Callable[[nn.Module], dict[str, Any]] | None = None


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


def get_recipe(name: str) -> Recipe:
    recipe = RECIPES.get(name.lower())
    if recipe is None:
        raise UnknownNameError("trainable model", name, RECIPES)
    return recipe


# --- the loop ------------------------------------------------------------------------------------

def _atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def train(config: TrainConfig, *, progress: Callable[[int, int, dict[str, float]], None] | None = None) -> Path:
    """Train ``config.model`` with its recipe; returns the path of the final safetensors file.

    Args:
        config: the run.
        progress: called after every step as ``progress(step, total_steps, logs)``.
    """
    recipe = get_recipe(config.model)
    entry = get_entry(config.model)
    epochs = config.epochs or recipe.epochs
    batch_size = config.batch_size or recipe.batch_size
    crop = config.crop or recipe.crop
    lr = config.lr or recipe.lr
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    files = collect_images(config.data, recipe.roles)
    images = [load_luma(p) for p in files]
    too_small = [p.name for p, im in zip(files, images) if min(im.shape[-2:]) < 16]
    if too_small:
        raise ConfigError(f"training images smaller than 16 px: {', '.join(too_small[:5])}")
    crops = RandomResizedCrops(images, crop, generator=generator)
    steps = config.steps_per_epoch or max(1, len(images) // batch_size)

    model = create_model(config.model, weights=None, device=config.device, **config.model_config)
    model.train()
    optimizer = torch.optim.Adam(recipe.param_groups(model, lr))
    # A shortened (or lengthened) run keeps the recipe's schedule shape: milestones scale with the epochs.
    milestones = sorted({max(1, round(m * epochs / recipe.epochs)) for m in recipe.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, recipe.gamma)
    start_epoch = 0
    last = out / "last.pt"
    if config.resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch = state["epoch"]

    history: list[dict[str, float]] = []
    t0 = time.time()
    for epoch in range(start_epoch, epochs):
        sums: dict[str, float] = {}
        for step in range(steps):
            batch = crops.batch(batch_size).to(config.device)
            loss, logs = recipe.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            logs = {"loss": loss.item(), **logs}
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress:
                progress(epoch * steps + step + 1, epochs * steps, {"epoch": epoch + 1, **logs})
        scheduler.step()
        history.append({"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}})
        _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                            "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
                            "config": dataclasses.asdict(config)}, last)

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
            "images": len(images),
            "recipe": recipe.description,
            "epochs": epochs, "batch_size": batch_size, "crop": crop, "lr": lr, "milestones": milestones,
            "steps_per_epoch": steps, "seed": config.seed, "device": config.device,
            "seconds": round(time.time() - t0, 1),
            "final_epoch": history[-1] if history else None,
        },
    }
    write_text_atomic(out / f"{config.model}.yaml", yaml.safe_dump(card, sort_keys=False))
    return final
