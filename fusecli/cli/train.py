"""``fusecli train``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..inference import resolve_device
from ..train import TrainConfig, get_recipe
from ..train import train as run_training
from ._console import err, reporting_errors


def train(
    model: str = typer.Argument(..., help="Model to train (its paper's recipe is used), e.g. auif."),
    data: list[Path] = typer.Option(..., "--data", help="Dataset folder (repeatable). Role sub-folders "
                                    "(ir/, vis/) are read, or the folder's own images.", show_default=False),
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Run folder: last.pt, final weights, card."),
    epochs: int | None = typer.Option(None, help="Epochs (default: the recipe's)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the recipe's)."),
    crop: int | None = typer.Option(None, help="Crop side in pixels (default: the recipe's)."),
    lr: float | None = typer.Option(None, help="Base learning rate (default: the recipe's)."),
    steps_per_epoch: int | None = typer.Option(None, help="Steps per epoch (default: images / batch size)."),
    seed: int = typer.Option(0, help="Random seed (crops, initialisation)."),
    device: str = typer.Option("auto", "--device", "-d", help="auto, cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt if it exists."),
) -> None:
    """Train a model with its paper's recipe; writes OUT/<model>.safetensors and a draft weights card."""
    with reporting_errors():
        recipe = get_recipe(model)
        config = TrainConfig(model=model, data=tuple(map(str, data)), out=str(out), epochs=epochs,
                             batch_size=batch_size, crop=crop, lr=lr, steps_per_epoch=steps_per_epoch,
                             seed=seed, device=str(resolve_device(device)), resume=resume)
        err.print(f"training {model}: {recipe.description}", highlight=False)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[logs]}"))
        with Progress(*columns, console=err) as bar:
            task = bar.add_task("train", total=None, logs="")

            def progress(step: int, total: int, logs: dict[str, float]) -> None:
                text = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
                bar.update(task, completed=step, total=total, logs=text)

            final = run_training(config, progress=progress)
    err.print(f"wrote {final} and {final.with_suffix('.yaml')}", highlight=False)
