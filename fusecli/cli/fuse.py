"""``fusecli fuse``."""

from __future__ import annotations

from ..models import DEFAULT_MODEL

from pathlib import Path

import typer
from rich.markup import escape

from ..errors import ConfigError
from ..inference import fuse_files, resolve_device, resolve_precision
from ..models import create_model
from ._console import err, reporting_errors
from ._video import is_video_job, run_video


def fuse(
    inputs: list[Path] = typer.Argument(..., help="Source images in the model's order: for IR-visible models "
                                        "INFRARED VISIBLE (medical: the functional scan, then MRI); for "
                                        "cscfuse-mef two or more exposures (UNDER OVER [MORE ...]); for "
                                        "cscfuse-msf CUBE GUIDE (a .npy, multi-page .tif or folder of band "
                                        "images, and the RGB guide at twice its resolution).",
                                        show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Output image; the extension picks the format "
                                "(.png, .jpg, .tif, .bmp). For cscfuse-msf the output cube: .npy, .tif "
                                "(one page per band) or a folder of band PNGs. Never overwrites an input.",
                                show_default=False),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name (see `fusecli models`)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file or folder: "
                                           "fusecli's own or the authors' official files. Default: the "
                                           "model's shipped weights.", show_default=False),
    weights: str = typer.Option("default", "--weights", help="Name of a weights card in weights/ "
                                "(ignored with --checkpoint)."),
    device: str = typer.Option("auto", "--device", "-d", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    tile: int = typer.Option(0, "--tile", help="Fuse in tiles of this many pixels (0: whole image). Use it "
                             "for large images or when the GPU runs out of memory."),
    overlap: int = typer.Option(32, "--overlap", help="Overlap of neighbouring tiles, blended linearly."),
    gray: bool = typer.Option(False, "--gray", help="Write a gray image even if a source is in colour."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="8 or 16 bits per channel (16: PNG and TIFF only)."),
    fusion: str | None = typer.Option(None, "--fusion", help="Override the model's fusion rule, if it has one "
                                      "(AUIF: sum, average, l1; cscfuse-ivf: saliency, l1, average, "
                                      "add).", show_default=False),
    stretch_16bit: bool | None = typer.Option(None, "--stretch-16bit/--no-stretch-16bit", help="Stretch the "
                                              "0.5-99.5 % range of 16-bit sources to the full range before "
                                              "fusing. Default: only sources that use less than half of "
                                              "0..65535 (raw 12/14-bit counts), with a note on stderr.",
                                              show_default=False),
    max_pixels: int | None = typer.Option(None, "--max-pixels", min=0, help="Refuse images of more than this "
                                          "many pixels, checked in the file header before decoding (default "
                                          "89478485, about 9459x9459; 0: no limit).", show_default=False),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Videos: fuse this many frames in one "
                                   "forward pass (GPU)."),
    fps: float | None = typer.Option(None, "--fps", help="Videos: output frame rate (default: the visible "
                                     "stream's; 25 for frame sequences).", show_default=False),
    resize_to: str | None = typer.Option(None, "--resize-to", help="Videos of different frame sizes: resample "
                                         "the other stream to this one's size (ir or vis). Default: refused.",
                                         show_default=False),
    precision: str = typer.Option("fp32", "--precision", help="Compute precision: fp32 (default), bf16 or "
                                  "fp16 (the outputs are the same 8/16-bit images). bf16: CUDA GPUs, and CPUs "
                                  "with AVX512-BF16 or AMX (elsewhere it runs emulated, slower than fp32); "
                                  "fp16: CUDA only."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on success."),
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
