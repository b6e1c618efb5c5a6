"""``fusecli compare``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ..compare import DEFAULT_LABEL_SIZE, Zoom, make_figures
from . import _options as opt
from ._console import err, reporting_errors


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def compare(
    dataset: Path = typer.Argument(..., help="Dataset folder with role folders (ir/+vis/, ...), as for batch.",
                                   show_default=False),
    output: Path = opt.output("Figure file (.png, .jpg, .tif, .bmp, .pdf); with several pairs NAME_<pair>.EXT "
                                 "beside it. Without an extension: a folder of <pair>.<ext> figures."),
    models: str | None = opt.models(None, "Models to fuse each pair with, comma-separated (shipped weights)."),
    fused: list[Path] = typer.Option([], "--fused", help="A folder written by fusecli batch (DIR/<pair>.<ext>); "
                                     "repeat for several. Shown before --models, labelled by folder name.",
                                     show_default=False),
    labels: str | None = typer.Option(None, "--labels", help="Labels of the methods, comma-separated, in panel "
                                      "order (--fused folders, then --models).", show_default=False),
    pairs: str | None = typer.Option(None, "--pairs", "-p", help="Pairs to draw by stem, comma-separated, e.g. "
                                     "01,05 (default: every pair).", show_default=False),
    zoom: str | None = typer.Option(None, "--zoom", help="x,y,w,h: a box (image pixels) outlined on every panel "
                                    "and shown magnified.", show_default=False),
    zoom_row: bool = typer.Option(False, "--zoom-row", help="Show the magnified box under each panel instead of "
                                  "in its corner."),
    zoom_corner: str = typer.Option("br", "--zoom-corner", help="Corner of the inset: br, bl, tr or tl."),
    columns: int = typer.Option(0, "--columns", help="Panels per row (0: all in one row)."),
    label_size: int = typer.Option(DEFAULT_LABEL_SIZE, "--label-size", help="Label text height in pixels."),
    labels_above: bool = typer.Option(False, "--labels-above", help="Labels over the panels (default: under)."),
    ext: str = typer.Option("png", "--ext", help="Format of the figures when -o is a folder: png, jpg, tif, "
                            "bmp or pdf."),
    role_a: str | None = opt.role_a(),
    role_b: str | None = opt.role_b(),
    device: str = opt.device(),
    max_pixels: int | None = opt.max_pixels(),
    quiet: bool = opt.quiet(),
) -> None:
    """Draw comparison figures: the sources, then one labelled panel per method, for each pair.

    Methods are folders fused by `fusecli batch` (--fused) and/or models fused here (--models).
    PNG needs nothing more; PDF (vector labels) needs matplotlib: pip install 'fusecli[plots]'.
    """
    with reporting_errors():
        roles = opt.role_folders(role_a, role_b)
        paths = make_figures(
            dataset, output, models=_split(models) or [], fused=fused, labels=_split(labels), pairs=_split(pairs),
            roles=roles, ext=ext, device=device, max_pixels=max_pixels,
            progress=None if quiet else lambda stem, path: err.print(f"wrote {escape(str(path))}", highlight=False),
            zoom=None if zoom is None else Zoom.parse(zoom), zoom_row=zoom_row, zoom_corner=zoom_corner,
            columns=columns or None, label_size=label_size, label_position="above" if labels_above else "below",
        )
    if not quiet and len(paths) > 1:
        err.print(f"{len(paths)} figures", highlight=False)
