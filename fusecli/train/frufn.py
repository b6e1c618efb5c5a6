"""FRUFN / EFRUFN training: three stages of sequential gradient transfer (Wang et al., TPAMI 2026, §3.1).

Stages, in this order (``fusecli train frufn|efrufn --stages mfif,meif,ivf``):

1. ``mfif`` -- multi-focus, supervised: ``2 (1 - SSIM(F, all-in-focus))`` (eq. 2); during the first
   two epochs the authors' warm-up instead trains the encoders and decoder to reconstruct both
   sources (``L1(D(E_a(a)), a) + L1(D(E_b(b)), b)``).
2. ``meif`` -- multi-exposure, supervised + gradient transfer from the frozen stage-1 model:
   ``2 (1 - SSIM(F, reference)) + 1 * L_gt(F, F_teacher)`` (eqs. 1-3). The student starts from
   the stage-1 weights. Then ColorNet (Remark 1) is trained on the frozen stage-2 model's fused
   luminance: ``L1(ColorNet(Y_F, CbCr_under, CbCr_over), CbCr_reference)`` (eq. 8).
3. ``ivf`` -- infrared-visible, unsupervised: the authors' ``fusion_loss_med`` (eqs. 4-7,
   :func:`fusecli.losses.ivf_unsupervised_loss`) ``+ 40 * L_gt(F, F_teacher)`` with the frozen
   stage-2 model as teacher; the student starts from the stage-2 weights.

Numbers (optimiser, schedule, batch, crop, clipping, loss weights) are the authors' training
scripts' (``train_mfif.py.py``, ``train_meif_stage1.py``, ``train_meif_stage2.py``,
``train_ivf_stage.py``): :data:`STAGE_RECIPES`.

Data. Stages 1 and 2 need multi-focus / multi-exposure ground truth (the authors used RealMFF,
MFI-WHU and SICE); instead their pairs are synthesised on the fly from random crops of sharp,
well-exposed images (:mod:`fusecli.train.synth`, seeded by ``synth_seed``). Stage 3 reads aligned ``ir/`` + ``vis/`` pairs
(:func:`fusecli.train.data.collect_pairs`, with its held-out splits). Crops are plain windows (no
resizing) with random horizontal flips, the same on both sides of a pair
(:class:`fusecli.train.data.PairedCrops`).

Input roles follow :mod:`fusecli.pairs` (the model's first input takes the near-focus /
under-exposed / infrared image), so ``fusecli fuse`` and ``fusecli batch`` feed the trained models
as they were trained.

Output, per stage, in ``OUT/<stage>/``: ``<model>.<stage>.safetensors``, the weights card
``<model>.<stage>.yaml`` (stage, data, synthesis seed and parameters, teacher file and sha256,
epochs ...) and ``last.pt`` (written atomically after every epoch; ``resume`` continues from it,
and skips a stage whose weights are complete). Stage 2 also writes
``<model>.meif.colornet.safetensors`` (+ ``colornet_last.pt``), named in its card under ``colornet``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..color import split_luma
from ..errors import CheckpointError, ConfigError, UnknownNameError
from ..io import read_image
from ..losses import gradient_transfer_loss, ivf_unsupervised_loss, ssim
from ..models import create_model
from ..models._weights import read_card, sha256_file
from ..models.colornet import ColorNet, ColorNetConfig
from .data import PairedCrops, collect_images, collect_pairs, load_pair
from .loop import ProgressFn, Step, fit, load_checkpoint, multistep, save_weights, weights_card, write_card
from .recipes import IVF_LAYOUTS
from .synth import multi_exposure, multi_focus

__all__ = ["STAGES", "STAGED_MODELS", "IVF_LAYOUTS", "StageRecipe", "STAGE_RECIPES", "StagedTrainConfig",
           "parse_stages", "stage_paths", "train_stages"]

STAGES = ("mfif", "meif", "ivf")
STAGED_MODELS = ("frufn", "efrufn")
_TASKS = {"mfif": "multi-focus", "meif": "multi-exposure", "ivf": "ir-vis"}
_ROLES = {"mfif": ("near", "far"), "meif": ("under", "over"), "ivf": ("ir", "vis")}


@dataclass(frozen=True)
class StageRecipe:
    """The authors' settings of one stage (Adam, betas 0.9/0.999, eps 1e-8, in every stage).

    Attributes:
        stage: ``mfif``, ``meif`` or ``ivf``.
        description: one line for logs and cards.
        epochs, batch_size, crop, lr, milestones, gamma: the schedule (MultiStepLR).
        clip: max L2 norm of the gradient (``clip_grad_norm_``).
        warmup_epochs: leading epochs of source reconstruction instead of the stage loss.
        ssim_weight: weight of ``1 - SSIM(F, reference)`` (supervised stages).
        transfer_weight: lambda of eq. 1, the gradient-transfer weight (0 in stage 1).
        synth: keyword arguments of the synthesis function (empty for ``ivf``).
        color_epochs, color_batch_size, color_crop, color_lr, color_milestones: ColorNet's
            training (``meif`` only; ``color_epochs = 0`` elsewhere).
    """

    stage: str
    description: str
    epochs: int
    batch_size: int
    crop: int
    lr: float
    milestones: tuple[int, ...]
    gamma: float
    clip: float
    warmup_epochs: int = 0
    ssim_weight: float = 0.0
    transfer_weight: float = 0.0
    synth: dict[str, Any] = field(default_factory=dict)
    color_epochs: int = 0
    color_batch_size: int = 4
    color_crop: int = 96
    color_lr: float = 1e-4
    color_milestones: tuple[int, ...] = ()


STAGE_RECIPES: dict[str, StageRecipe] = {
    "mfif": StageRecipe(
        stage="mfif",
        description="stage 1, multi-focus (supervised): 2 epochs of L1 source reconstruction, then "
                    "2*(1-SSIM(F, all-in-focus)); Adam lr 1e-3, MultiStepLR 50/100/200/300 x0.5, 320 epochs, "
                    "batch 2, 128 crops, grad-norm clip 1e-4 (train_mfif.py.py)",
        epochs=320, batch_size=2, crop=128, lr=1e-3, milestones=(50, 100, 200, 300), gamma=0.5, clip=1e-4,
        warmup_epochs=2, ssim_weight=2.0,
        synth={"blur_sigma": (1.0, 4.0), "mask_cells": (2, 5), "mask_fraction": (0.3, 0.7),
               "edge_sigma": (1.0, 3.0)},
    ),
    "meif": StageRecipe(
        stage="meif",
        description="stage 2, multi-exposure (supervised + gradient transfer from the frozen stage-1 model): "
                    "2*(1-SSIM(F, reference)) + 1*L_gt; starts from the stage-1 weights; Adam lr 1e-4, "
                    "MultiStepLR 200/300 x0.5, 320 epochs, batch 3, 96 crops, grad-norm clip 1e-4 "
                    "(train_meif_stage1.py); then ColorNet, L1 on CbCr, Adam lr 1e-4, 320 epochs, batch 4 "
                    "(train_meif_stage2.py)",
        epochs=320, batch_size=3, crop=96, lr=1e-4, milestones=(200, 300), gamma=0.5, clip=1e-4,
        ssim_weight=2.0, transfer_weight=1.0,
        synth={"under_stops": (1.0, 3.0), "over_stops": (0.5, 2.0), "gamma": (1.8, 2.6),
               "read_noise": (0.0, 0.01), "shot": 1e-3},
        color_epochs=320, color_batch_size=4, color_crop=96, color_lr=1e-4, color_milestones=(200, 300),
    ),
    "ivf": StageRecipe(
        stage="ivf",
        description="stage 3, infrared-visible (unsupervised): 20*L_int + 100*L_text + 50*(1-SSIM_w) - 50*std "
                    "+ 40*L_gt from the frozen stage-2 model; starts from the stage-2 weights; Adam lr 1e-4, "
                    "MultiStepLR 200/300 x0.5, 320 epochs, batch 2, 128 crops, grad-norm clip 1e-2 "
                    "(train_ivf_stage.py)",
        epochs=320, batch_size=2, crop=128, lr=1e-4, milestones=(200, 300), gamma=0.5, clip=1e-2,
        transfer_weight=40.0,
    ),
}


@dataclass(frozen=True)
class StagedTrainConfig:
    """One staged run. ``None`` numbers take each stage's recipe value.

    Attributes:
        model: ``frufn`` or ``efrufn``.
        out: run folder (one sub-folder per stage).
        stages: the stages to run: a contiguous, ordered part of :data:`STAGES`.
        sharp_data: folders of sharp, well-exposed images (stages ``mfif`` and ``meif``; role
            sub-folders are all read, e.g. ``roadscene/vis``).
        ivf_data: ``ir/`` + ``vis/`` dataset folders (stage ``ivf``).
        teacher: weights (safetensors / card) of the stage before the first one run, when that
            stage's output is not already in ``OUT`` (e.g. ``--stages ivf --teacher meif.yaml``).
        epochs, batch_size, crop, lr, steps_per_epoch: overrides for every stage run.
        color_epochs: override of ColorNet's epochs (default: ``epochs`` if given, else the recipe's).
        transfer_mode: ``"paper"`` (eq. 3) or ``"official"`` (the code's L_GT_Grad), see
            :func:`fusecli.losses.gradient_transfer_loss`.
        seed: initialisation and crop seed. synth_seed: synthesis seed (default: ``seed``); stage
            ``k`` (0, 1, 2) draws from ``synth_seed + k``.
        device: ``cpu``, ``cuda`` ...
        resume: continue every stage from its ``last.pt``; complete stages are skipped.
        model_config: model config overrides (e.g. a tiny model for tests).
    """

    model: str
    out: str
    stages: tuple[str, ...] = STAGES
    sharp_data: tuple[str, ...] = ()
    ivf_data: tuple[str, ...] = ()
    teacher: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    crop: int | None = None
    lr: float | None = None
    steps_per_epoch: int | None = None
    color_epochs: int | None = None
    transfer_mode: str = "paper"
    seed: int = 0
    synth_seed: int | None = None
    device: str = "cpu"
    resume: bool = False
    model_config: dict[str, Any] = field(default_factory=dict)


def parse_stages(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"mfif,meif"`` -> ``("mfif", "meif")``; checks the names and that they are a contiguous,
    ordered part of :data:`STAGES` (each stage's teacher is the one before it).

    Raises:
        UnknownNameError: an unknown stage; ConfigError: empty, repeated, out of order or with a gap.
    """
    names = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not names:
        raise ConfigError(f"no stage given; choose from {','.join(STAGES)}")
    for name in names:
        if name not in STAGES:
            raise UnknownNameError("training stage", name, STAGES)
    idx = [STAGES.index(n) for n in names]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise ConfigError(f"stages must run in the order {','.join(STAGES)} without gaps or repeats "
                          f"(each stage's teacher is the stage before it), got {','.join(names)}")
    return tuple(names)


def stage_paths(out: str | Path, model: str, stage: str) -> dict[str, Path]:
    """Files of one stage in the run folder ``out``: ``dir``, ``weights``, ``card``, ``last``,
    ``colornet`` and ``colornet_last``."""
    d = Path(out) / stage
    return {"dir": d, "weights": d / f"{model}.{stage}.safetensors", "card": d / f"{model}.{stage}.yaml",
            "last": d / "last.pt", "colornet": d / f"{model}.{stage}.colornet.safetensors",
            "colornet_last": d / "colornet_last.pt"}


# --- data ------------------------------------------------------------------------------------------

def _load_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) float32 RGB in [0, 1] (grey images repeated to three channels)."""
    image, _ = read_image(path)
    return image[0].expand(3, -1, -1).contiguous() if image.shape[1] == 1 else image[0]


def _stage_images(stage: str, config: StagedTrainConfig) -> tuple[list[tuple[torch.Tensor, ...]], Any]:
    """The stage's training images as tuples for :class:`PairedCrops`, and their description for the
    card: ``(rgb,)`` (meif), ``(luminance,)`` (mfif) or ``(ir, vis)`` luminance pairs (ivf)."""
    if stage == "ivf":
        if not config.ivf_data:
            raise ConfigError("stage ivf needs aligned ir/ + vis/ pairs: pass --ivf-data (e.g. "
                              "a copy of RoadScene)")
        pair_sets = collect_pairs(config.ivf_data, layouts=IVF_LAYOUTS)
        data = [{"path": str(ps.dataset), "roles": list(ps.roles), "pairs": len(ps.pairs), "part": ps.part}
                for ps in pair_sets]
        return [load_pair(p) for ps in pair_sets for p in ps.pairs], data
    if not config.sharp_data:
        raise ConfigError(f"stage {stage} synthesises its pairs from sharp, well-exposed images: pass "
                          "--sharp-data (e.g. the vis/ folder of RoadScene)")
    images = [_load_rgb(p) for p in collect_images(config.sharp_data)]
    if stage == "mfif":
        images = [split_luma(im[None])[0][0] for im in images]
    return [(im,) for im in images], list(config.sharp_data)


# --- models ----------------------------------------------------------------------------------------

def _reconstruct(model: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each source through its own encoder and the shared decoder (the authors' ``out_I1``, ``out_I2``)."""
    return model.decoder(model.enc_ir(a)), model.decoder(model.enc_vis(b))


def _teacher_path(config: StagedTrainConfig, stage: str, first: bool) -> Path | None:
    k = STAGES.index(stage)
    if k == 0:
        return None
    prev = STAGES[k - 1]
    if first and config.teacher is not None:
        path = Path(config.teacher)
        if not path.exists():
            raise CheckpointError(f"teacher {path} does not exist; pass the {prev} stage's weights or card")
        return path
    path = stage_paths(config.out, config.model, prev)["card"]
    if not path.is_file():
        raise ConfigError(f"stage {stage} learns from the frozen {prev} model, but {path} does not exist: "
                          f"run --stages {prev},{stage} or pass --teacher")
    return path


def _teacher_sha(path: Path) -> str:
    return read_card(path).sha256 if path.suffix.lower() in (".yaml", ".yml") else sha256_file(path)


# --- the stages ------------------------------------------------------------------------------------

StageHook = Callable[[str, nn.Module, nn.Module | None, ColorNet | None], None]


def train_stages(config: StagedTrainConfig, *, progress: ProgressFn | None = None,
                 on_stage_end: StageHook | None = None) -> dict[str, Path]:
    """Run the stages of ``config`` in order; returns ``{stage: card path}``.

    Args:
        config: the run.
        progress: called after every step as ``progress(step, total_steps, logs)`` (``logs`` has
            ``stage``, ``phase`` (``fusion`` / ``colornet``), ``epoch`` and the loss terms).
        on_stage_end: called after each stage as ``on_stage_end(stage, student, teacher, colornet)``
            (for inspection, e.g. in tests).

    Raises:
        UnknownNameError, ConfigError, CheckpointError, ShapeError.
    """
    if config.model.lower() not in STAGED_MODELS:
        raise UnknownNameError("model with staged FRUFN training", config.model, STAGED_MODELS)
    stages = parse_stages(config.stages)
    if config.transfer_mode not in ("paper", "official"):
        raise ConfigError(f"transfer_mode must be 'paper' or 'official', got {config.transfer_mode!r}")
    for name in ("epochs", "batch_size", "crop", "steps_per_epoch"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if config.color_epochs is not None and config.color_epochs < 0:
        raise ConfigError(f"color_epochs must be >= 0, got {config.color_epochs}")
    cards = {}
    for i, stage in enumerate(stages):
        cards[stage] = _run_stage(config, stage, _teacher_path(config, stage, first=i == 0), progress, on_stage_end)
    return cards


def _run_stage(config: StagedTrainConfig, stage: str, teacher_path: Path | None, progress: ProgressFn | None,
               on_stage_end: StageHook | None) -> Path:
    recipe = STAGE_RECIPES[stage]
    k = STAGES.index(stage)
    paths = stage_paths(config.out, config.model, stage)
    epochs = config.epochs or recipe.epochs
    batch_size = config.batch_size or recipe.batch_size
    crop = config.crop or recipe.crop
    lr = config.lr or recipe.lr
    synth_seed = config.seed if config.synth_seed is None else config.synth_seed
    device = torch.device(config.device)
    # the warm-up keeps its length (2 epochs) but never takes more than half of a shortened run
    warmup = min(recipe.warmup_epochs, epochs // 2)

    torch.manual_seed(config.seed + k)
    generators = {"crops": torch.Generator().manual_seed(config.seed + k),
                  "synth": torch.Generator().manual_seed(synth_seed + k)}
    images, data = _stage_images(stage, config)
    crops = PairedCrops(images, crop, generator=generators["crops"])
    steps = config.steps_per_epoch or max(1, len(images) // batch_size)

    student = create_model(config.model, weights=None, device=device, **config.model_config)
    teacher = None
    if teacher_path is not None:
        teacher = create_model(config.model, checkpoint=teacher_path, device=device, **config.model_config)
        student.load_state_dict(teacher.state_dict())  # the student starts from the previous stage
    optimizer = torch.optim.Adam(student.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler, _ = multistep(optimizer, recipe.milestones, recipe.gamma, epochs=epochs, recipe_epochs=recipe.epochs)

    def step(s: Step) -> tuple[torch.Tensor, dict[str, float]]:
        return _stage_loss(stage, recipe, s.model, s.teacher, crops, batch_size, generators, device,
                           warmup=s.warmup, mode=config.transfer_mode)

    run = fit(student, step, optimizer, scheduler, epochs=epochs, steps=steps, checkpoint=paths["last"],
              resume=config.resume, generators=generators, clip=recipe.clip, teacher=teacher,
              warmup_epochs=warmup, progress=progress, tags={"stage": stage, "phase": "fusion"},
              record={"config": dataclasses.asdict(config)})

    student.eval()
    if run.start_epoch >= epochs and paths["card"].is_file():  # resumed a complete stage: keep its card
        card = yaml.safe_load(paths["card"].read_text())
    else:
        card = weights_card(student, paths["weights"], name=f"{config.model}.{stage}", model=config.model,
                            config=dataclasses.asdict(student.config), task=[_TASKS[stage]], inputs=_ROLES[stage],
                            training={
            "stage": f"{k + 1} of 3: {stage}",
            "recipe": recipe.description,
            "data": data,
            ("pairs" if stage == "ivf" else "images"): len(images),
            "synthesis": None if stage == "ivf" else {
                "kind": "multi_focus" if stage == "mfif" else "multi_exposure",
                "function": f"fusecli.train.synth.{'multi_focus' if stage == 'mfif' else 'multi_exposure'}",
                "seed": synth_seed + k,
                "parameters": {key: list(v) if isinstance(v, tuple) else v for key, v in recipe.synth.items()},
            },
            "teacher": None if teacher_path is None else {"file": str(teacher_path),
                                                          "sha256": _teacher_sha(teacher_path)},
            "init": "random" if teacher_path is None else "teacher (previous stage)",
            "transfer_loss": None if teacher is None else {"mode": config.transfer_mode,
                                                           "weight": recipe.transfer_weight},
            "epochs": epochs, "warmup_epochs": warmup, "batch_size": batch_size, "crop": crop, "lr": lr,
            "milestones": run.milestones, "clip_grad_norm": recipe.clip, "steps_per_epoch": steps,
            "seed": config.seed, "device": config.device,
            "seconds": round(run.seconds(), 1),
            "final_epoch": run.history[-1] if run.history else None,
        })
    colornet = None
    if stage == "meif":
        colornet = _train_colornet(config, recipe, student, images, generators, paths, card, progress)
    write_card(paths["card"], card)
    if on_stage_end:
        on_stage_end(stage, student, teacher, colornet)
    return paths["card"]


def _sample(stage: str, recipe: StageRecipe, crops: PairedCrops, n: int,
            generators: dict[str, torch.Generator], device: torch.device) -> dict[str, torch.Tensor]:
    """One batch of the stage: ``a``, ``b`` (model inputs, (n, 1, s, s)), ``gt`` where supervised, and
    for ``meif`` the chroma ``cbcr_a``, ``cbcr_b``, ``cbcr_gt`` ((n, 2, s, s))."""
    batch = crops.batch(n)
    if stage == "ivf":
        return {"a": batch[0].to(device), "b": batch[1].to(device)}
    batch = batch[0]
    if stage == "mfif":
        t = multi_focus(batch, generators["synth"], **recipe.synth)
        return {"a": t.near.to(device), "b": t.far.to(device), "gt": t.gt.to(device)}
    t = multi_exposure(batch, generators["synth"], **recipe.synth)
    (ya, ca), (yb, cb), (yg, cg) = split_luma(t.under), split_luma(t.over), split_luma(t.gt)
    return {"a": ya.to(device), "b": yb.to(device), "gt": yg.to(device),
            "cbcr_a": ca.to(device), "cbcr_b": cb.to(device), "cbcr_gt": cg.to(device)}


def _stage_loss(stage: str, recipe: StageRecipe, student: nn.Module, teacher: nn.Module | None,
                crops: PairedCrops, n: int, generators: dict[str, torch.Generator], device: torch.device,
                *, warmup: bool, mode: str) -> tuple[torch.Tensor, dict[str, float]]:
    x = _sample(stage, recipe, crops, n, generators, device)
    a, b = x["a"], x["b"]
    if warmup:  # the authors' first epochs: encoders + decoder reconstruct the sources
        ra, rb = _reconstruct(student, a, b)
        loss = F.l1_loss(ra, a) + F.l1_loss(rb, b)
        return loss, {"reconstruction": loss.item()}
    fused = student(a, b)
    logs: dict[str, float] = {}
    if stage == "ivf":
        loss, logs = ivf_unsupervised_loss(fused, b, a)  # (visible, infrared), as the authors' call
    else:
        ssim_l = 1 - ssim(fused, x["gt"])
        loss, logs = recipe.ssim_weight * ssim_l, {"ssim_loss": ssim_l.item()}
    if teacher is not None and recipe.transfer_weight:
        with torch.no_grad():
            guide = teacher(a, b)
        gt_l = gradient_transfer_loss(fused, guide, mode=mode)
        loss = loss + recipe.transfer_weight * gt_l
        logs["transfer"] = gt_l.item()
    return loss, logs


def _train_colornet(config: StagedTrainConfig, recipe: StageRecipe, fusion: nn.Module,
                    images: list[tuple[torch.Tensor, ...]],
                    generators: dict[str, torch.Generator], paths: dict[str, Path], card: dict[str, Any],
                    progress: ProgressFn | None) -> ColorNet | None:
    """ColorNet on the frozen stage-2 model's fused luminance (eq. 8); adds ``colornet`` to ``card``.
    ``color_epochs = 0`` trains none (returns None)."""
    epochs = config.color_epochs if config.color_epochs is not None else (config.epochs or recipe.color_epochs)
    if epochs == 0:
        card.pop("colornet", None)
        return None
    batch_size = config.batch_size or recipe.color_batch_size
    crop = config.crop or recipe.color_crop
    steps = config.steps_per_epoch or max(1, len(images) // batch_size)
    device = torch.device(config.device)
    net = ColorNet(ColorNetConfig()).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.color_lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler, _ = multistep(optimizer, recipe.color_milestones, recipe.gamma, epochs=epochs,
                             recipe_epochs=recipe.color_epochs)
    crops = PairedCrops(images, crop, generator=generators["crops"])

    def step(s: Step) -> tuple[torch.Tensor, dict[str, float]]:
        x = _sample("meif", recipe, crops, batch_size, generators, device)
        with torch.no_grad():
            y = s.teacher(x["a"], x["b"]).clamp(0, 1)  # the frozen fusion model's luminance
        return F.l1_loss(s.model(y, x["cbcr_a"], x["cbcr_b"]), x["cbcr_gt"]), {}

    run = fit(net, step, optimizer, scheduler, epochs=epochs, steps=steps, checkpoint=paths["colornet_last"],
              resume=config.resume, generators=generators, teacher=fusion, progress=progress,
              tags={"stage": "meif", "phase": "colornet"})
    net.eval()
    if run.start_epoch >= epochs and paths["colornet"].is_file() and "colornet" in card:
        return net
    last = run.history[-1] if run.history else None
    if last is None and paths["colornet_last"].is_file():  # a state written before the history was kept
        last = load_checkpoint(paths["colornet_last"]).get("final_epoch")
    card["colornet"] = {
        "file": paths["colornet"].name,
        "sha256": save_weights(net, paths["colornet"]),
        "config": dataclasses.asdict(net.config),
        "inputs": "cat(Y fused, CbCr under, CbCr over) -> CbCr (fusecli.models.colornet.ColorNet)",
        "training": {"loss": "L1(ColorNet(Y_F, CbCr_under, CbCr_over), CbCr_reference) (eq. 8), fusion model frozen",
                     "epochs": epochs, "batch_size": batch_size, "crop": crop, "lr": recipe.color_lr,
                     "milestones": run.milestones, "steps_per_epoch": steps, "seconds": round(run.seconds(), 1),
                     "final_epoch": last},
    }
    return net
