"""The one training loop, and what every training run writes.

:func:`fit` trains any model with a step function that returns the loss and its logs (a recipe's
loss on a batch of crops, a FRUFN stage's loss, ColorNet's chroma loss): optional gradient
clipping, a frozen teacher handed to the step, a loss warm-up (the step is told it is in the
first epochs), a linear learning-rate warm-up, the lr schedule stepped once per epoch, per-step
progress and per-epoch means, an atomic ``last.pt`` after every epoch and an exact resume from it
(weights, optimiser, schedule and random streams; read with ``weights_only=True``), and if asked
the weights of every epoch (to choose one on validation data).

At the end the caller writes the weights and their card with :func:`weights_card` and
:func:`write_card`; :func:`scale_milestones` / :func:`multistep` scale a recipe's decay epochs to
a run of another length, the same rule everywhere.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..io import write_bytes_atomic, write_text_atomic
from ..models._weights import sha256_file

__all__ = ["Step", "StepFn", "Fitted", "ProgressFn", "fit", "save_checkpoint", "load_checkpoint", "checkpoint_fits",
           "scale_milestones", "multistep", "save_weights", "weights_card", "write_card"]

#: ``progress(iteration, total_iterations, logs)`` after every step
ProgressFn = Callable[[int, int, dict[str, Any]], None]


# --- checkpoints ---------------------------------------------------------------------------------

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


def _rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    return {**{k: g.get_state() for k, g in generators.items()}, "torch_rng": torch.get_rng_state()}


def _set_rng_state(generators: dict[str, torch.Generator], state: dict[str, Any]) -> None:
    for k, g in generators.items():
        g.set_state(state[k])
    torch.set_rng_state(state["torch_rng"])


# --- schedules -----------------------------------------------------------------------------------

def scale_milestones(milestones: Sequence[int], epochs: int, recipe_epochs: int, *,
                     repeats: bool = False) -> list[int]:
    """A recipe's decay epochs scaled to a run of ``epochs``: ``max(1, round(m * epochs / recipe_epochs))``
    each, sorted, so that a shortened (or lengthened) run keeps the recipe's schedule shape.

    ``repeats=False`` merges milestones that land on one epoch (one decay there); ``True`` keeps
    them (MultiStepLR then applies them together: the total decay is the recipe's).
    """
    scaled = [max(1, round(m * epochs / recipe_epochs)) for m in milestones]
    return sorted(scaled if repeats else set(scaled))


def multistep(optimizer: torch.optim.Optimizer, milestones: Sequence[int], gamma: float, *, epochs: int,
              recipe_epochs: int) -> tuple[torch.optim.lr_scheduler.MultiStepLR, dict[str, Any]]:
    """MultiStepLR at the recipe's ``milestones`` (of ``recipe_epochs``) scaled to ``epochs``
    (:func:`scale_milestones`), and its record for the weights card."""
    scaled = scale_milestones(milestones, epochs, recipe_epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, scaled, gamma), {
        "kind": "multistep", "recipe": f"milestones {list(milestones)} of {recipe_epochs} epochs, x{gamma}",
        "scaled_to_epochs": epochs, "decay_epochs": scaled, "gamma": gamma}


# --- the loop ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """What :func:`fit` hands the step function for one optimiser step.

    Attributes:
        model: the model being trained (in training mode).
        teacher: the frozen teacher (eval mode, no gradient), or None.
        epoch: 0-based epoch.
        iteration: 1-based step counted over the whole run (a resumed run continues the count,
            so that any ramp in the loss continues where it stopped).
        warmup: True in the first ``warmup_epochs`` epochs (e.g. FRUFN's source reconstruction).
    """

    model: nn.Module
    teacher: nn.Module | None
    epoch: int
    iteration: int
    warmup: bool


#: ``step(Step) -> (loss, logs)``: draws its batch, returns the scalar loss and its terms as floats
StepFn = Callable[[Step], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Fitted:
    """What :func:`fit` did.

    Attributes:
        start_epoch: the epoch the run started from (the checkpoint's after a resume, else 0).
        history: one entry per epoch, the resumed runs' included: ``epoch``, ``lr`` (of the first
            parameter group, during the epoch) and the mean of every logged value.
        milestones: a MultiStepLR's decay epochs (after a resume: the checkpoint's), else None.
        previous_seconds: training time of the runs this one resumed.
        started: ``time.time()`` when this run's training began.
    """

    start_epoch: int
    history: list[dict[str, float]]
    milestones: list[int] | None
    previous_seconds: float
    started: float

    def seconds(self) -> float:
        """Training time of this run and the runs it resumed, until now."""
        return self.previous_seconds + time.time() - self.started


def fit(model: nn.Module, step: StepFn, optimizer: torch.optim.Optimizer, scheduler: Any, *, epochs: int, steps: int,
        checkpoint: Path, resume: bool = False, generators: dict[str, torch.Generator] | None = None,
        rng_key: str | None = "rng", clip: float | None = None, teacher: nn.Module | None = None,
        warmup_epochs: int = 0, lr_warmup_steps: int = 0, progress: ProgressFn | None = None,
        tags: dict[str, Any] | None = None, record: dict[str, Any] | None = None, snapshots: bool = False) -> Fitted:
    """Train ``model`` for ``epochs`` x ``steps`` optimiser steps of ``step``.

    Each step: ``loss, logs = step(Step(...))``, backward, gradient-norm clipping to ``clip``
    (if given), the optimiser step (during the first ``lr_warmup_steps`` steps at ``i /
    lr_warmup_steps`` of the scheduled lr), then ``progress(i, epochs * steps, {**tags, "epoch",
    "loss", **logs})``. After each epoch: ``scheduler.step()``, the epoch's means appended to the
    history, and ``checkpoint`` written atomically.

    Args:
        model: trained in place (put in training mode).
        step: the recipe's step function.
        optimizer, scheduler: the scheduler is stepped once per epoch.
        epochs: the run's total epochs (a resumed run continues to it). steps: steps per epoch.
        checkpoint: the ``last.pt`` file; its folder is created when training starts.
        resume: continue from ``checkpoint`` if it exists.
        generators: random streams saved with the checkpoint and restored on resume (the torch
            global generator always is). rng_key: the checkpoint entry holding their states (a
            dict with ``torch_rng``); None: one top-level entry each, and ``torch_rng``.
        clip: max L2 norm of the gradient (``torch.nn.utils.clip_grad_norm_``); None: no clipping.
        teacher: a model the step may call; frozen here (eval mode, ``requires_grad`` off).
        warmup_epochs: epochs at the start in which ``Step.warmup`` is True.
        lr_warmup_steps: steps of linear lr warm-up (0: none).
        progress: called after every step.
        tags: entries put first in every progress ``logs`` (e.g. ``stage``).
        record: further entries saved in every checkpoint (e.g. the run's config).
        snapshots: also save the weights after every epoch as ``epoch-NNN.safetensors`` beside
            ``checkpoint`` (:func:`save_weights`), to choose an epoch on validation data afterwards.

    Returns:
        :class:`Fitted`.

    Raises:
        CheckpointError: ``last.pt`` is unreadable or does not fit this run. ConfigError: its
            folder cannot be created.
    """
    generators = generators or {}
    model.train()
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    start, history, previous = 0, [], 0.0
    if resume and checkpoint.is_file():
        rng_keys = (rng_key,) if rng_key else (*generators, "torch_rng")
        state = load_checkpoint(checkpoint, ("model", "optimizer", "scheduler", *rng_keys, "epoch"))
        with checkpoint_fits(checkpoint, scheduler):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(generators, state[rng_key] if rng_key else state)
        start = state["epoch"]
        history = list(state.get("history", []))
        previous = float(state.get("seconds", 0.0))
    milestones = (sorted(scheduler.milestones.elements())
                  if isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR) else None)
    try:  # created only now: a mistake found before training leaves nothing behind
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run folder '{checkpoint.parent}': {exc.strerror or exc}; "
                          "choose another -o") from exc

    run = Fitted(start, history, milestones, previous, time.time())
    tags = tags or {}
    total = epochs * steps
    for epoch in range(start, epochs):
        sums: dict[str, float] = {}
        epoch_lr = optimizer.param_groups[0]["lr"]
        for i in range(epoch * steps + 1, (epoch + 1) * steps + 1):
            loss, logs = step(Step(model, teacher, epoch, i, epoch < warmup_epochs))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip)
            _optimizer_step(optimizer, min(1.0, i / lr_warmup_steps) if lr_warmup_steps else 1.0)
            logs = {"loss": loss.item(), **logs}
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value
            if progress:
                progress(i, total, {**tags, "epoch": epoch + 1, **logs})
        scheduler.step()
        history.append({"epoch": epoch + 1, "lr": epoch_lr, **{key: v / steps for key, v in sums.items()}})
        rng = _rng_state(generators)
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), **({rng_key: rng} if rng_key else rng),
                         "epoch": epoch + 1, "history": history, "seconds": run.seconds(), **(record or {})},
                        checkpoint)
        if snapshots:
            save_weights(model, checkpoint.parent / f"epoch-{epoch + 1:03d}.safetensors")
    return run


def _optimizer_step(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """``optimizer.step()`` at ``factor`` x each group's lr; the scheduled lr is left as it was."""
    if factor == 1.0:
        optimizer.step()
        return
    scheduled = [group["lr"] for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, scheduled):
        group["lr"] = lr * factor
    try:
        optimizer.step()
    finally:
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr


# --- what a run writes ---------------------------------------------------------------------------

def save_weights(module: nn.Module, path: Path) -> str:
    """``module``'s state dict as safetensors at ``path`` (atomically); returns the file's sha256."""
    from safetensors.torch import save  # imported here: only training writes safetensors
    write_bytes_atomic(path, save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}))
    return sha256_file(path)


def weights_card(module: nn.Module, path: Path, *, name: str, model: str, config: dict[str, Any],
                 task: Sequence[str], inputs: Sequence[str], training: dict[str, Any]) -> dict[str, Any]:
    """Save ``module``'s weights at ``path`` (:func:`save_weights`) and return their weights card
    (the format of ``weights/*.yaml``, read by :func:`fusecli.models._weights.read_card`)."""
    return {"name": name, "model": model, "file": path.name, "sha256": save_weights(module, path),
            "config": config, "task": list(task), "inputs": list(inputs), "training": training}


class _PlainDumper(yaml.SafeDumper):
    """Writes an object met twice twice (no ``&id`` anchors and aliases)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_card(path: Path, card: dict[str, Any]) -> None:
    """Write a weights card as plain YAML (keys in their order, no anchors), atomically."""
    write_text_atomic(path, yaml.dump(card, Dumper=_PlainDumper, sort_keys=False))

