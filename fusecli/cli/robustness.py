"""``fusecli robustness``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ..errors import ConfigError
from ..inference import resolve_device
from ..models import DEFAULT_MODEL
from ..robustness import DEFAULT_METRICS, run_robustness
from . import _options as opt
from ._console import err, progress, reporting_errors


def _checkpoints(values: list[str], models: list[str]) -> dict[str, str]:
    """``--checkpoint PATH`` (one model) or ``--checkpoint NAME=PATH`` (any number)."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name.strip() in models:
            out[name.strip()] = path
        elif len(models) == 1:
            out[models[0]] = value
        else:
            raise ConfigError(f"--checkpoint {value!r}: with several models write NAME=PATH (e.g. auif=ckpt/)")
    return out


def robustness(
    dataset: Path = typer.Argument(..., help="Dataset folder with role sub-folders (ir/ vis/ ...).",
                                   show_default=False),
    models: str = opt.models(DEFAULT_MODEL, "Models to compare, comma-separated."),
    kinds: str = typer.Option("haze,rain", "--kinds", "-k", help="Degradations to sweep, comma-separated; "
                              "a+b composes two kinds in one sweep. See `fusecli degrade --help`."),
    levels: str = typer.Option("0-5", "--levels", "-l", help="Severity levels: 0 (clean) to 5, e.g. 0-5 or 0,2,4."),
    output: Path = opt.output("Report folder: robustness.csv, one plot per kind, cells/ (kept for resuming)."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Only the first N pairs (by name), for a quick run.",
                                     show_default=False),
    metrics: str | None = typer.Option(None, "--metrics", help="Metrics, comma-separated (default: "
                                       + ",".join(DEFAULT_METRICS) + ", those available).", show_default=False),
    checkpoint: list[str] = opt.checkpoint("Checkpoint file or folder (one model), or NAME=PATH; repeatable. "
                                              "Default: the models' shipped weights.", default=[]),
    seed: int = typer.Option(0, "--seed", help="Degradation seed."),
    role: str | None = typer.Option(None, "--role", help="Role folder to degrade (default: the visible one).",
                                    show_default=False),
    depth: str = typer.Option("ramp", "--depth", help="Haze depth: ramp, uniform, or a folder of depth maps."),
    device: str = opt.device(),
    tile: int = opt.tile(),
    convention: str = typer.Option("cddfuse", "--convention", "-C", help="Metrics convention: cddfuse, matlab, "
                                   "vifb ..."),
    stretch_16bit: bool | None = opt.stretch_16bit(),
    max_pixels: int | None = opt.max_pixels(),
    precision: str = opt.precision(),
    quiet: bool = opt.quiet(),
) -> None:
    """Degrade the visible images at increasing severity, fuse with each model, and score against the clean sources.

    Writes OUTPUT/robustness.csv (one row per model, kind, level and pair, plus means) and one plot per kind.

    Rerunning with the same settings reuses the finished work in OUTPUT/cells/.
    """
    with reporting_errors():
        names = [m.strip() for m in models.split(",") if m.strip()]
        dev = resolve_device(device)
        with progress("evaluating", unit="pairs", quiet=quiet) as bar:
            result = run_robustness(dataset, names, kinds, levels, output, metrics=metrics, limit=limit, seed=seed,
                                    role=role, depth=depth, checkpoints=_checkpoints(checkpoint, names),
                                    device=dev, tile=tile, convention=convention, progress=bar,
                                    stretch_16bit=stretch_16bit, max_pixels=max_pixels, precision=precision)
    if quiet:
        return
    for note in result.notes:
        err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    if result.skipped_metrics:
        err.print(f"note: metric(s) {', '.join(result.skipped_metrics)} are not available in this fusecli; skipped",
                  highlight=False, soft_wrap=True)
    err.print(f"{result.pairs} pair(s): computed {result.computed}, reused {result.reused} from "
              f"{output / 'cells'} in {result.seconds:.1f} s -> {result.csv}", highlight=False, soft_wrap=True)
    if result.plots:
        err.print("plots: " + ", ".join(str(p) for p in result.plots), highlight=False, soft_wrap=True)
    elif result.plots_note:
        err.print(f"no plots: {result.plots_note}", highlight=False, soft_wrap=True)
