"""``fusecli fuse`` on videos: progress and printing around :func:`fusecli.video.fuse_videos`."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from ..errors import ConfigError
from ..video import fuse_videos, is_sequence_pattern, is_video_path
from ._console import err, progress

__all__ = ["is_video_job", "run_video"]


def is_video_job(inputs: list[Path], output: Path) -> bool:
    """Whether ``fuse`` was given videos or frame patterns (then every input and the output must be
    streams). Raises ConfigError for a mix of images and streams."""
    kinds = [is_video_path(p) for p in inputs]
    if not any(kinds) and not is_video_path(output):
        return False
    if not all(kinds):
        raise ConfigError("give either images or videos (or frame patterns such as ir/%05d.png) as inputs, "
                          "not a mix")
    if not is_video_path(output):
        raise ConfigError(f"-o {output}: fusing videos writes a video (.mp4, .avi, .mov, .mkv) or a frame "
                          "pattern such as fused/%05d.png")
    return True


def run_video(net, inputs: list[Path], output: Path, *, model: str, device, quiet: bool, **options) -> None:
    """Fuse two streams with ``net`` and report like ``fuse`` does (notes, one summary line)."""
    if len(inputs) != 2:
        raise ConfigError(f"fusing videos takes two streams (infrared, visible), got {len(inputs)}")
    with progress("fusing frames", unit="frames", quiet=quiet) as bar:
        result = fuse_videos(net, inputs[0], inputs[1], output, progress=bar, **options)
    if not quiet:
        for note in result.notes:
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
        kind = "gray" if result.channels == 1 else "colour"
        rate = "" if is_sequence_pattern(result.output) else f", {result.fps:g} frames/s"
        err.print(f"wrote {escape(str(result.output))} ({result.frames} frames, {result.width}x{result.height} "
                  f"{kind}{rate}) with {model} on {device} in {result.seconds:.1f} s "
                  f"({result.frames_per_second:.1f} frames/s)", highlight=False, soft_wrap=True)
