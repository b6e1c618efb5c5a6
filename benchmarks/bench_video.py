"""Video fusion speed (frames/s) against single-image `fuse`, in one run.

    python benchmarks/bench_video.py                          # fuse's default model, 640x480, CPU
    python benchmarks/bench_video.py --device cuda --batch-size 8 --frames 200
    python benchmarks/bench_video.py --model average --threads 1

End to end, as the commands run it: ``fuse_videos`` decodes two MJPG .avi streams (gray IR, colour
visible, generated here), fuses and encodes an .mp4; the reference is ``fuse_files`` on one PNG pair
of the same size (read, fuse, write a PNG), once per frame. Rounds alternate the two, so a busy
machine slows both alike; the medians and their ratio are printed. The model is the ``fuse``
command's default unless --model says otherwise; weights do not change the speed, so a model
without shipped weights runs with random ones.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fusecli import create_model, fuse_files, resolve_device
from fusecli.cli.fuse import fuse as fuse_command
from fusecli.errors import CheckpointError
from fusecli.video import fuse_videos

DEFAULT_MODEL = inspect.signature(fuse_command).parameters["model"].default.default


def _make_inputs(folder: Path, frames: int, width: int, height: int) -> tuple[Path, Path, Path, Path]:
    rng = np.random.default_rng(0)
    codec = cv2.VideoWriter_fourcc(*"MJPG")
    ir = cv2.VideoWriter(str(folder / "ir.avi"), codec, 25, (width, height), isColor=False)
    vis = cv2.VideoWriter(str(folder / "vis.avi"), codec, 25, (width, height))
    for i in range(frames):
        base = cv2.GaussianBlur(rng.integers(0, 256, (height, width), dtype=np.uint8), (9, 9), 0)
        colour = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0)
        ir.write(base)
        vis.write(colour)
        if i == 0:
            cv2.imwrite(str(folder / "ir.png"), base)
            cv2.imwrite(str(folder / "vis.png"), colour)
    ir.release()
    vis.release()
    return folder / "ir.avi", folder / "vis.avi", folder / "ir.png", folder / "vis.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"default: fuse's default ({DEFAULT_MODEL})")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--frames", type=int, default=30, help="frames per video round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = resolve_device(args.device)
    try:
        model, weights = create_model(args.model, device=device), "shipped"
    except CheckpointError:
        model, weights = create_model(args.model, weights=None, device=device), "random (none shipped)"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ir, vis, ir_png, vis_png = _make_inputs(folder, args.frames, width, height)
        fuse_files(model, [ir_png, vis_png], folder / "warm.png")  # warm-up
        video_fps, image_fps = [], []
        for _ in range(args.rounds):
            result = fuse_videos(model, ir, vis, folder / "fused.mp4", batch_size=args.batch_size)
            video_fps.append(result.frames / result.seconds)
            start = time.perf_counter()
            for _ in range(args.frames):
                fuse_files(model, [ir_png, vis_png], folder / "fused.png")
            image_fps.append(args.frames / (time.perf_counter() - start))
    v, i = statistics.median(video_fps), statistics.median(image_fps)
    print(f"model {args.model} ({weights} weights), {width}x{height}, {device}, {args.threads} thread(s), "
          f"batch {args.batch_size}, {args.rounds} rounds of {args.frames} frames")
    print(f"video (decode avi, fuse, encode mp4): {v:.2f} frames/s  (rounds: {', '.join(f'{x:.2f}' for x in video_fps)})")
    print(f"fuse_files per PNG pair:              {i:.2f} pairs/s  (rounds: {', '.join(f'{x:.2f}' for x in image_fps)})")
    print(f"ratio video / single-image fuse:      {v / i:.2f}")


if __name__ == "__main__":
    main()
