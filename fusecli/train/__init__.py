"""Training: one loop (:func:`fusecli.train.loop.fit`) for every model, and one recipe per model.

A :class:`Recipe` (:mod:`fusecli.train.recipes`) holds what the model's paper prescribes (loss,
optimiser groups, schedule, crop size, epochs, and what it trains on: single gray images for the
auto-encoders AUIF and CSC-IVF, aligned source pairs for DeRUN); :class:`TrainConfig` holds the
run (data, split, output folder, seed, device, and any override of the recipe's numbers). FRUFN
and EFRUFN train in stages instead (:mod:`fusecli.train.frufn`, :class:`StagedTrainConfig`).

:func:`train` runs either: it resumes from ``OUT/last.pt`` when asked, saves it atomically after
every epoch, and finally writes ``OUT/<model>.safetensors`` plus a draft weights card
``OUT/<model>.yaml`` (sha256, config, data, split, recipe, schedule, per-epoch history) ready to be
copied to ``weights/``.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..models import create_model, get_entry
from .data import PairedCrops, RandomResizedCrops, collect_images, collect_pairs, load_luma, load_pair
from .frufn import StageHook, StagedTrainConfig, train_stages
from .loop import (ProgressFn, Step, checkpoint_fits, fit, load_checkpoint, save_checkpoint, weights_card,
                   write_card)
from .recipes import (DERUN_LAYOUTS, DERUN_LGDE_SOFTNESS, DERUN_LGDE_WEIGHT, IVF_LAYOUTS, RECIPES, Recipe, darken,
                      get_recipe, intensity_gradient_loss, parse_options, resolve_options, schedule, step_decay_after)
from .splits import SPLIT_CHOICES, select_pairs

__all__ = ["TrainConfig", "StagedTrainConfig", "train", "train_stages", "Recipe", "RECIPES", "get_recipe",
           "parse_options", "step_decay_after", "darken", "intensity_gradient_loss", "fit", "Step",
           "save_checkpoint", "load_checkpoint", "checkpoint_fits", "DERUN_LAYOUTS", "DERUN_LGDE_WEIGHT",
           "DERUN_LGDE_SOFTNESS", "IVF_LAYOUTS"]


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
    #: ``"auto"`` (their train part; all pairs of other datasets), ``"train"``, ``"fit"`` (the train
    #: part without its validation part) or ``"all"``
    split: str = "auto"
    #: overrides of the recipe's :attr:`Recipe.options` (unknown keys are an error)
    options: dict[str, float] = field(default_factory=dict)
    #: weights to start from (a checkpoint file or weights card; see :attr:`Recipe.warm_start`)
    init: str | None = None
    #: also write every epoch's weights, ``OUT/epoch-NNN.safetensors`` (see ``benchmarks/select_epoch.py``)
    snapshots: bool = False


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
                raise ConfigError(f"run folder '{out}': '{folder}' is a file, not a folder; choose another -o")
            return


@overload
def train(config: TrainConfig, *, progress: ProgressFn | None = None) -> Path: ...


@overload
def train(config: StagedTrainConfig, *, progress: ProgressFn | None = None,
          on_stage_end: StageHook | None = None) -> dict[str, Path]: ...


def train(config: TrainConfig | StagedTrainConfig, *, progress: ProgressFn | None = None,
          on_stage_end: StageHook | None = None) -> Path | dict[str, Path]:
    """Run a training: a model's recipe (:class:`TrainConfig`) or FRUFN / EFRUFN's stages
    (:class:`StagedTrainConfig`, :func:`fusecli.train.frufn.train_stages`).

    Single-image recipes crop the images of the datasets' role folders; paired recipes
    (``Recipe.paired``) crop the datasets' pairs alike on every side and pass one (B, 1, crop, crop)
    tensor per model input to the loss. ``config.split`` leaves out the held-out pairs of datasets
    with a fixed split (:mod:`fusecli.train.splits`).

    Args:
        config: the run.
        progress: called after every step as ``progress(step, total_steps, logs)``; ``logs`` holds
            ``epoch``, ``loss`` and the loss terms (staged runs: also ``stage`` and ``phase``).
        on_stage_end: staged runs only, see :func:`~fusecli.train.frufn.train_stages`.

    Returns:
        A recipe's final safetensors file (its card beside it, ``.yaml``); for a staged run
        ``{stage: card path}``.

    Raises:
        UnknownNameError: no recipe for the model. ConfigError: no usable data, a bad split, images
            smaller than the crop. ImageReadError: an unreadable training image. CheckpointError:
            a ``last.pt`` or ``--init`` file that cannot be read or does not fit.
    """
    if isinstance(config, StagedTrainConfig):
        return train_stages(config, progress=progress, on_stage_end=on_stage_end)
    return _train_recipe(config, progress)


def _train_recipe(config: TrainConfig, progress: ProgressFn | None) -> Path:
    recipe = get_recipe(config.model)
    entry = get_entry(config.model)
    epochs = config.epochs or recipe.epochs
    batch_size = config.batch_size or recipe.batch_size
    crop = config.crop or recipe.crop
    lr = config.lr or recipe.lr
    options = resolve_options(recipe, config.options)
    out = Path(config.out)
    _check_run_folder(out)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    crops, samples, data_card = _recipe_data(recipe, config, crop, generator)
    steps = config.steps_per_epoch or max(1, samples // batch_size)

    model = create_model(config.model, weights=None, device=config.device, **config.model_config)
    init_card: dict[str, Any] | None = None
    if config.init is not None:
        init_card = _warm_start(model, recipe, Path(config.init))
    optimizer = torch.optim.Adam(recipe.param_groups(model, lr))
    scheduler, schedule_card = schedule(recipe, optimizer, epochs)

    def step(s: Step) -> tuple[torch.Tensor, dict[str, float]]:
        batch = crops.batch(batch_size)
        batch = (tuple(t.to(config.device) for t in batch) if isinstance(batch, tuple)
                 else batch.to(config.device))
        if recipe.options:
            return recipe.loss(s.model, batch, step=s.iteration, **options)
        return recipe.loss(s.model, batch)

    run = fit(model, step, optimizer, scheduler, epochs=epochs, steps=steps, checkpoint=out / "last.pt",
              resume=config.resume, generators={"generator": generator}, rng_key=None, clip=recipe.clip,
              lr_warmup_steps=recipe.lr_warmup_steps, progress=progress,
              record={"config": dataclasses.asdict(config)}, snapshots=config.snapshots)
    if run.milestones is not None:  # after a resume: the resumed run's own decay epochs
        schedule_card["decay_epochs"] = run.milestones

    final = out / f"{config.model}.safetensors"
    model_config = dataclasses.asdict(model.config)
    if recipe.finalize is not None:
        model_config.update(recipe.finalize(model))
    history = run.history
    card = weights_card(model, final, name=config.model, model=config.model, config=model_config,
                        task=entry.tasks, inputs=model.inputs, training={
        "data": [str(d) for d in config.data],
        "split": config.split,
        **data_card,
        "recipe": recipe.description,
        "epochs": epochs, "recipe_epochs": recipe.epochs, "batch_size": batch_size, "crop": crop, "lr": lr,
        "milestones": schedule_card["decay_epochs"], "schedule": schedule_card,
        **({"clip_grad_norm": recipe.clip} if recipe.clip is not None else {}),
        **({"lr_warmup_steps": recipe.lr_warmup_steps} if recipe.lr_warmup_steps else {}),
        **({"options": dict(options)} if options else {}),
        **({"init": init_card} if init_card else {}),
        "steps_per_epoch": steps, "seed": config.seed, "device": config.device,
        "seconds": round(run.seconds(), 1),  # all runs of a resumed training
        "final_epoch": history[-1] if history else None,
        "history": history,
    })
    write_card(out / f"{config.model}.yaml", card)
    return final


def _recipe_data(recipe: Recipe, config: TrainConfig, crop: int, generator: torch.Generator
                 ) -> tuple[PairedCrops | RandomResizedCrops, int, dict[str, Any]]:
    """The recipe's training crops, the number of images or pairs, and the data's card record.

    Raises:
        ConfigError: a bad split, no images left, images smaller than 16 px or the crop.
    """
    if config.split not in SPLIT_CHOICES:
        raise ConfigError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {config.split!r}")
    if recipe.paired:
        pair_sets = collect_pairs(config.data, layouts=recipe.layouts, split=config.split)
        pairs = [pair for pair_set in pair_sets for pair in pair_set.pairs]
        sources = [load_pair(pair) for pair in pairs]
        crops = PairedCrops(sources, crop, generator=generator,
                            names=[f"{pair.stem} ({pair.paths[0].parent.parent.name})" for pair in pairs])
        return crops, len(sources), {
            "datasets": [{"path": str(ps.dataset), "roles": list(ps.roles), "pairs": len(ps.pairs),
                          "pairs_in_dataset": ps.total, "part": ps.part} for ps in pair_sets],
            "pairs": len(sources),
        }
    files = [f for root in config.data
             for f in select_pairs(root, collect_images([root], recipe.roles), config.split)]
    if not files:
        raise ConfigError(f"no training images left in {', '.join(map(str, config.data))} "
                          f"after --split {config.split}")
    images = [load_luma(p) for p in files]
    too_small = [p.name for p, im in zip(files, images) if min(im.shape[-2:]) < 16]
    if too_small:
        raise ConfigError(f"training images smaller than 16 px: {', '.join(too_small[:5])}")
    return RandomResizedCrops(images, crop, generator=generator), len(images), {"images": len(images)}
