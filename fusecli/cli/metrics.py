"""``fusecli metrics``: parsing and printing only; the work is in :mod:`fusecli.metrics.report`."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.markup import escape
from rich.text import Text

from ..errors import ConfigError
from ..inference import resolve_device
from ..metrics import CONVENTIONS, get_metric
from ..metrics.report import (
    DEFAULT_METRICS,
    ImageResult,
    MethodReport,
    evaluate_files,
    evaluate_folder,
    resolve_metric_names,
    write_csv,
    write_json,
)
from . import _options as opt
from ._console import err, print_table, progress, reporting_errors


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"


def _best(values: list[float], higher: bool, target: float | None = None) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2:
        return None
    if target is not None:  # neither higher nor lower is better: closest to the ideal value
        return min(finite, key=lambda v: abs(v - target))
    return max(finite) if higher else min(finite)


def _print_tables(reports: list[MethodReport], per_image: bool) -> None:
    first = reports[0]
    arrows = {m: (f"→{get_metric(m).target:g}" if get_metric(m).target is not None
                  else "↑" if get_metric(m).higher_is_better else "↓") for m in first.metrics}
    if per_image:
        for r in reports:
            headers = [f"{m} {arrows[m]}" for m in r.metrics]
            print_table(["image", *headers], [[row.stem, *(_fmt(row.values[m]) for m in r.metrics)] for row in r.rows],
                        title=f"{r.name} — per image ({r.convention} convention)", right=headers)
    headers = [f"{m} {arrows[m]}" for m in first.metrics]
    means = [r.mean() for r in reports]
    stds = [r.std() for r in reports]
    best = {m: _best([mu[m] for mu in means], get_metric(m).higher_is_better, get_metric(m).target)
            for m in first.metrics}
    rows = []
    for r, mu, sd in zip(reports, means, stds):
        cells = []
        for m in first.metrics:
            text = f"{_fmt(mu[m])} ± {_fmt(sd[m])}" if len(r.rows) > 1 else _fmt(mu[m])
            cells.append(Text(text, style="bold green") if best[m] is not None and mu[m] == best[m] else text)
        rows.append([r.name, str(len(r.rows)), *cells])
    print_table(["method", "images", *headers], rows, right=["images", *headers],
                title=f"mean ± std over the images ({first.convention} convention)")


def metrics(
    fused: list[Path] = typer.Argument(..., help="Folder of fused images named like their sources (several "
                                       "folders: one column block per method), or one fused image with --ir/--vis.",
                                       show_default=False),
    sources: Path | None = typer.Option(None, "--sources", "-s", help="Dataset folder with the role folders "
                                        "(ir/ + vis/, ct/ + mri/, ...); fused images are paired by file stem.",
                                        show_default=False),
    ir: Path | None = typer.Option(None, "--ir", "--a", help="Single-image mode: the first source (infrared).",
                                   show_default=False),
    vis: Path | None = typer.Option(None, "--vis", "--b", help="Single-image mode: the second source (visible).",
                                    show_default=False),
    metric_names: str = typer.Option(",".join(DEFAULT_METRICS), "--metrics",
                                     help="Comma-separated metric names, or 'all'. See docs/metrics.md."),
    convention: str = typer.Option("cddfuse", "--convention", "-C",
                                   help=f"Whose numbers to reproduce: {', '.join(CONVENTIONS)}. "
                                   "cddfuse = CDDFuse's Python Evaluator (MI in nats, its SSIM and PSNR)."),
    compare: list[Path] = typer.Option([], "--compare", help="More fused folders (methods) to put side by side; "
                                       "the best mean per metric is highlighted.", show_default=False),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write every value (+ mean/std rows) to this CSV file.",
                                         show_default=False),
    json_path: Path | None = typer.Option(None, "--json", help="Write every value, means and stds to this JSON file.",
                                          show_default=False),
    per_image: bool = typer.Option(False, "--per-image", help="Also print one row per image."),
    workers: int = opt.workers(1, "Images evaluated in parallel.", min=1),
    allow_16bit: bool = typer.Option(False, "--allow-16bit", help="Rescale 16-bit images to 8 bits "
                                     "(round(v/257)) instead of refusing them."),
    device: str = opt.device(),
    max_pixels: int | None = opt.max_pixels(),
    quiet: bool = opt.quiet(),
) -> None:
    """Compute fusion-quality metrics (EN, SD, SF, MI, SCD, VIF, Qabf, SSIM, ...) as a published
    toolbox computes them. Default convention: cddfuse."""
    with reporting_errors():
        device = str(resolve_device(device))  # before any work, as the other commands
        names = resolve_metric_names(metric_names)
        dirs = list(fused) + list(compare)
        if ir is not None or vis is not None:
            if ir is None or vis is None or sources is not None or len(dirs) != 1 or dirs[0].is_dir():
                raise ConfigError("single-image mode takes one fused image file with both --ir and --vis "
                                  "(and no --sources); for folders use --sources DATASET_DIR")
            values = evaluate_files(dirs[0], [ir, vis], names, convention, allow_16bit=allow_16bit, device=device,
                                    max_pixels=max_pixels)
            reports = [MethodReport(dirs[0].name, str(dirs[0]), convention.lower(), names,
                                    [ImageResult(dirs[0].stem, values)], inputs=[str(dirs[0]), str(ir), str(vis)])]
        else:
            if sources is None:
                raise ConfigError("pass the dataset folder with --sources DATASET_DIR (or --ir/--vis for one image)")
            reports = []
            for d in dirs:
                with progress(d.name, unit="images", quiet=quiet) as bar:
                    reports.append(evaluate_folder(d, sources, names, convention, allow_16bit=allow_16bit,
                                                   workers=workers, device=device, progress=bar,
                                                   max_pixels=max_pixels))
        if csv_path is not None:
            write_csv(reports, csv_path)
        if json_path is not None:
            write_json(reports, json_path)
    _print_tables(reports, per_image)
    for r in reports:
        for p in r.problems:
            err.print(f"[yellow]warning:[/] {escape(r.name)}: {escape(p)}", highlight=False, soft_wrap=True)
    written = [str(p) for p in (csv_path, json_path) if p is not None]
    if written and not quiet:
        err.print(f"wrote {', '.join(written)} (convention {reports[0].convention})", highlight=False)
