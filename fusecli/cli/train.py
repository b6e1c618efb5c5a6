"""``fusecli train``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError
from ..inference import resolve_device
from ..train import StagedTrainConfig, TrainConfig, get_recipe, parse_options
from ..train import train as run_training
from ..train.frufn import STAGED_MODELS, STAGES, parse_stages
from ._console import err, progress, reporting_errors


def train(
    model: str = typer.Argument(..., help="Model to train (its paper's recipe is used), e.g. auif."),
    data: list[Path] = typer.Option(None, "--data", help="Dataset folder (repeatable). Role sub-folders "
                                    "(ir/, vis/) are read, or the folder's own images; models trained on "
                                    "pairs (derun) take the pairs of ir/+vis/, pet/+mri/, spect/+mri/, ct/+mri/; "
                                    "cscfuse-mef the under/+over/ stacks. "
                                    "frufn/efrufn use --sharp-data and --ivf-data instead.",
                                    show_default=False),
    split: str = typer.Option("auto", "--split", help="Pairs of datasets with a fixed held-out split "
                              "(harvard_mri_pet, harvard_mri_spect, harvard_mri_ct, mefb, roadscene: every 5th sorted "
                              "stem held out, and RoadScene's night pairs): auto = their train part and all pairs of other datasets; train = "
                              "the train part (error for a dataset without a split); fit = the train part without its "
                              "validation part (every 8th sorted stem of it, for choosing an epoch); all = every pair."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Run folder: last.pt, final weights, card "
                                       "(frufn/efrufn: one sub-folder per stage); default runs/train.",
                                       show_default=False),
    out: Path | None = typer.Option(None, "--out", hidden=True, help="Deprecated spelling of --output."),
    epochs: int | None = typer.Option(None, help="Epochs (default: the recipe's)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the recipe's)."),
    crop: int | None = typer.Option(None, help="Crop side in pixels (default: the recipe's)."),
    lr: float | None = typer.Option(None, help="Base learning rate (default: the recipe's)."),
    steps_per_epoch: int | None = typer.Option(None, help="Steps per epoch (default: images / batch size)."),
    seed: int = typer.Option(0, help="Random seed (crops, initialisation)."),
    device: str = typer.Option("auto", "--device", "-d", help="auto, cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt if it exists."),
    stages: str | None = typer.Option(None, "--stages", help=f"frufn/efrufn: the sequential gradient-transfer "
                                      f"stages to run, in order (default {','.join(STAGES)}); each writes "
                                      "OUT/<stage>/ and teaches the next.", show_default=False),
    sharp_data: list[Path] = typer.Option(None, "--sharp-data", help="frufn/efrufn: folder of sharp, well-exposed "
                                          "images (repeatable) from which the multi-focus and multi-exposure "
                                          "pairs are synthesised, e.g. the vis/ folder of RoadScene.",
                                          show_default=False),
    ivf_data: list[Path] = typer.Option(None, "--ivf-data", help="frufn/efrufn: ir/+vis/ dataset folder "
                                        "(repeatable) for the infrared-visible stage.", show_default=False),
    teacher: Path | None = typer.Option(None, "--teacher", help="frufn/efrufn: weights or card of the stage "
                                        "before the first one run, if not already in OUT.", show_default=False),
    color_epochs: int | None = typer.Option(None, help="frufn/efrufn: ColorNet epochs in the meif stage "
                                            "(default: --epochs if given, else 320; 0 = no ColorNet)."),
    synth_seed: int | None = typer.Option(None, help="frufn/efrufn: seed of the pair synthesis (default: --seed)."),
    option: list[str] = typer.Option(None, "--option", help="A recipe hyper-parameter as KEY=NUMBER "
                                     "(repeatable), e.g. cscfuse-mef's halo_max=0; unknown keys are an error.",
                                     show_default=False),
    init: Path | None = typer.Option(None, "--init", help="Weights to start from (checkpoint or card), e.g. "
                                     "an auto-encoder from `fusecli train auif` for auif-fusion.",
                                     show_default=False),
    snapshots: bool = typer.Option(False, "--snapshots", help="Also write every epoch's weights "
                                   "(OUT/epoch-NNN.safetensors), to choose an epoch on validation data."),
    transfer_loss: str = typer.Option("paper", help="frufn/efrufn: gradient-transfer loss, 'paper' (eq. 3) or "
                                      "'official' (the authors' code)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; errors only."),
) -> None:
    """Train a model with its paper's recipe; writes OUT/<model>.safetensors and a draft weights card."""
    with reporting_errors():
        if out is not None:
            if output is not None:
                raise ConfigError("give the run folder once: -o/--output (--out is its deprecated spelling)")
            err.print("warning: --out is deprecated in `fusecli train`; write -o/--output (the old spelling goes in "
                      "the next release)", markup=False, highlight=False, soft_wrap=True)
        run = str(output or out or Path("runs/train"))
        if model.lower() in STAGED_MODELS:
            if option:
                raise ConfigError(f"--option is not used by {model}'s staged training")
            if init is not None:
                raise ConfigError(f"--init is not used by {model}'s staged training (use --teacher)")
            if snapshots:
                raise ConfigError(f"--snapshots is not used by {model}'s staged training")
            if data:
                raise ConfigError(f"{model} trains in stages: pass --sharp-data and --ivf-data, not --data")
            config: TrainConfig | StagedTrainConfig = StagedTrainConfig(
                model=model.lower(), out=run, stages=parse_stages(stages or ",".join(STAGES)),
                sharp_data=tuple(map(str, sharp_data or ())), ivf_data=tuple(map(str, ivf_data or ())),
                teacher=None if teacher is None else str(teacher), epochs=epochs, batch_size=batch_size, crop=crop,
                lr=lr, steps_per_epoch=steps_per_epoch, color_epochs=color_epochs, transfer_mode=transfer_loss,
                seed=seed, synth_seed=synth_seed, device=str(resolve_device(device)), resume=resume)
            header = f"training {config.model} in stages {','.join(config.stages)} -> {run}/<stage>/"
        else:
            if stages is not None or sharp_data or ivf_data or teacher is not None:
                raise ConfigError("--stages, --sharp-data, --ivf-data and --teacher are for "
                                  f"{' and '.join(STAGED_MODELS)}")
            if not data:
                raise ConfigError(f"training {model} needs --data FOLDER")
            header = f"training {model}: {get_recipe(model).description}"
            config = TrainConfig(model=model, data=tuple(map(str, data)), out=run, epochs=epochs,
                                 batch_size=batch_size, crop=crop, lr=lr, steps_per_epoch=steps_per_epoch,
                                 seed=seed, device=str(resolve_device(device)), resume=resume, split=split,
                                 options=parse_options(option or ()), init=None if init is None else str(init),
                                 snapshots=snapshots)
        # one bar per stage and phase, shown from the first step: a mistake found before stays one line
        bar = progress("train", unit="steps", quiet=quiet, transient=False)
        started: list[bool] = []

        def report(step: int, total: int, logs: dict) -> None:
            if not started and not quiet:  # the run has started
                err.print(header, highlight=False)
            started.append(True)
            text = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, float))
            task = f"{logs['stage']} {logs['phase']}" if "stage" in logs else None
            bar.update(step, total, info=f"epoch {logs['epoch']} {text}", task=task)

        with bar:
            written = run_training(config, progress=report)
    if quiet:
        return
    if isinstance(written, dict):
        for stage, card in written.items():
            err.print(f"{stage}: wrote {card} and its weights", highlight=False)
    else:
        err.print(f"wrote {written} and {written.with_suffix('.yaml')}", highlight=False)
