"""``fusecli degrade``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..degrade import degrade_path, get_kind, list_kinds
from . import _options as opt
from ._console import err, progress, reporting_errors


def _kinds_help() -> str:
    return "; ".join(f"{k} ({get_kind(k).modality})" for k in list_kinds())


def degrade(
    input: Path = typer.Argument(..., help="An image, a folder of images, or a dataset folder with role "
                                 "sub-folders (ir/ vis/ ...).", show_default=False),
    output: Path = opt.output("Output image or folder (for a dataset: a complete dataset, the other roles "
                                 "copied). Never the input."),
    kind: str = typer.Option(..., "--kind", "-k", help="Degradation, or several separated by commas, applied "
                             "in order (haze,noise). Kinds: " + _kinds_help() + ".", show_default=False),
    level: int = typer.Option(..., "--level", "-l", help="Severity 1 (mild) to 5 (severe); the tables are in "
                              "docs/degrade.md.", show_default=False),
    seed: int = typer.Option(0, "--seed", help="Random seed; with each image's name it fixes the result "
                             "(same seed: byte-identical files)."),
    role: str | None = typer.Option(None, "--role", help="Dataset input: the role folder to degrade "
                                    "(default: the visible/texture one, e.g. vis).", show_default=False),
    depth: str = typer.Option("ramp", "--depth", help="Haze depth: ramp (far at the top), uniform, or a "
                              "folder of depth maps matched by file stem (larger = farther)."),
    inverse_depth: bool = typer.Option(False, "--inverse-depth", help="The depth maps are inverse depths "
                                       "(near = bright, as monocular depth networks write them)."),
    max_pixels: int | None = opt.max_pixels(),
    quiet: bool = opt.quiet(),
) -> None:
    """Simulate weather, light and sensor degradations (haze, rain, low light, noise, blur, JPEG, IR stripes ...).

    Keeps each image's name, bit depth (8/16) and channel count; deterministic for a given --seed.
    """
    with reporting_errors():
        with progress("degrading", unit="images", quiet=quiet) as bar:
            report = degrade_path(input, output, kind, level, seed=seed, role=role, depth=depth,
                                  inverse_depth=inverse_depth, progress=bar, max_pixels=max_pixels)
    if not quiet:
        what = ",".join(report.kinds)
        if report.mode == "dataset":
            err.print(f"degraded {len(report.degraded)} image(s) of {report.role}/ with {what} level {report.level} "
                      f"(seed {report.seed}), copied {len(report.copied)} other file(s) -> {report.output}",
                      highlight=False, soft_wrap=True)
        elif report.mode == "folder":
            err.print(f"degraded {len(report.degraded)} image(s) with {what} level {report.level} "
                      f"(seed {report.seed}) -> {report.output}", highlight=False, soft_wrap=True)
        else:
            err.print(f"wrote {report.degraded[0]} ({what} level {report.level}, seed {report.seed})",
                      highlight=False, soft_wrap=True)
