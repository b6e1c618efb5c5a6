"""``fusecli fuse``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ..errors import ConfigError
from ..inference import fuse_files, resolve_device, resolve_precision
from ..models import create_model
from . import _options as opt
from ._console import err, reporting_errors
from ._video import is_video_job, run_video


def fuse(
    inputs: list[Path] = typer.Argument(..., help="Source images in the model's order: for IR-visible models "
                                        "INFRARED VISIBLE (medical: the functional scan, then MRI); for "
                                        "cscfuse-mef two or more exposures (UNDER OVER [MORE ...]); for "
                                        "cscfuse-msf CUBE GUIDE (a .npy, multi-page .tif or folder of band "
                                        "images, and the RGB guide at twice its resolution).",
                                        show_default=False),
    output: Path = opt.output("Output image; the extension picks the format (.png, .jpg, .tif, .bmp). For "
                                 "cscfuse-msf the output cube: .npy, .tif (one page per band) or a folder of band "
                                 "PNGs. Never overwrites an input."),
    model: str = opt.model(),
    checkpoint: Path | None = opt.checkpoint("Checkpoint file or folder: fusecli's own or the authors' official "
                                                "files. Default: the model's shipped weights."),
    weights: str = opt.weights(),
    device: str = opt.device(),
    tile: int = opt.tile(),
    overlap: int = opt.overlap(),
    gray: bool = opt.gray(),
    bit_depth: int = opt.bit_depth(),
    fusion: str | None = opt.fusion(),
    stretch_16bit: bool | None = opt.stretch_16bit(),
    max_pixels: int | None = opt.max_pixels(),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Videos: fuse this many frames in one "
                                   "forward pass (GPU)."),
    fps: float | None = typer.Option(None, "--fps", help="Videos: output frame rate (default: the visible "
                                     "stream's; 25 for frame sequences).", show_default=False),
    resize_to: str | None = typer.Option(None, "--resize-to", help="Videos of different frame sizes: resample "
                                         "the other stream to this one's size (ir or vis). Default: refused.",
                                         show_default=False),
    precision: str = opt.precision(),
    quiet: bool = opt.quiet(),
) -> None:
    """Fuse one set of aligned source images into one image.

    A colour visible image keeps its colour: its luminance (BT.601 Y) is fused and its chroma is put
    back. Gray sources give a gray output. cscfuse-mef fuses any number of exposures in colour;
    cscfuse-msf super-resolves a spectral cube with an RGB guide (fusecli fuse -m cscfuse-msf
    cube.npy guide.png -o out.npy).

    Videos: fusecli fuse ir.mp4 vis.mp4 -o fused.mp4 (or frame patterns: ir/%05d.png vis/%05d.png
    -o fused/%05d.png) fuses frame by frame with the same colour path, at the visible stream's
    frame rate.
    """
    with reporting_errors():
        video = is_video_job(inputs, output)
        if not video and (batch_size != 1 or fps is not None or resize_to is not None):
            raise ConfigError("--batch-size, --fps and --resize-to apply to videos only")
        dev = resolve_device(device)
        resolve_precision(precision, dev)  # a bad value fails before the model loads
        net = create_model(model, checkpoint=checkpoint, weights=weights, device=dev, fusion=fusion)
        if video:
            run_video(net, inputs, output, model=model, device=dev, quiet=quiet, batch_size=batch_size, fps=fps,
                      resize_to=resize_to, gray=gray, bit_depth=bit_depth, tile=tile, overlap=overlap,
                      stretch_16bit=stretch_16bit, max_pixels=max_pixels, precision=precision)
            return
        result = fuse_files(net, inputs, output, gray=gray, bit_depth=bit_depth, tile=tile, overlap=overlap,
                            stretch_16bit=stretch_16bit, max_pixels=max_pixels, precision=precision)
    if not quiet:
        for note in result.notes:
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
        kind = {1: "gray", 3: "colour"}.get(result.channels, f"{result.channels}-band cube")
        depth = "" if result.channels not in (1, 3) else f", {bit_depth}-bit"
        err.print(f"wrote {result.output} ({result.width}x{result.height} {kind}{depth}) with "
                  f"{model} on {dev} in {result.seconds:.2f} s; weights: {net.weights_info}", highlight=False)
