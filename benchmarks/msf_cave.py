"""CSC-MSF (``cscfuse-msf``) on the real CAVE scenes in ../shared/datasets/cave: x2 spectral
super-resolution guided by the scene's RGB image, scored against the original 31-band cube.

    python benchmarks/msf_cave.py --checkpoint ../shared/checkpoints/official/cscfuse/CSC-MSF
    python benchmarks/msf_cave.py --checkpoint ... --downsample area --device cuda

For each scene folder ``<scene>_ms`` (31 band PNGs, 16-bit; RGB ``<scene>_RGB.bmp``): the cube is
read with :func:`fusecli.io.read_cube` (0-1), reduced x2 (``nearest``: every other pixel, as the
authors' data pipeline; or ``area``: 2x2 means), super-resolved with the RGB guide through
:func:`fusecli.inference.fuse_cube_files` (files written and read back as float32 .npy), and compared
with the original cube: PSNR over all bands (peak 1) and SAM (mean spectral angle, degrees; also
over the pixels whose true spectrum has a mean reflectance >= 0.05 only: CAVE's black backgrounds
make angles of near-zero spectra dominate the plain mean). The
bilinear upsampling of the reduced cube (align_corners, the network's own residual base) is
scored the same way as the baseline.

Note: the authors trained CSC-MSF on CAVE with ``balloons`` in their training folder (their
README); these scenes are not held out.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fusecli import create_model, resolve_device
from fusecli.inference import fuse_cube_files
from fusecli.io import read_cube, write_cube

CAVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cave"


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((x - ref) ** 2).mean()))


def sam_degrees(x: torch.Tensor, ref: torch.Tensor, floor: float = 0.0) -> float:
    """Mean over pixels of the angle between the spectra of (1, C, H, W) x and ref, in degrees;
    only pixels whose reference spectrum has a mean of at least ``floor``."""
    dot = (x * ref).sum(1)
    norm = x.norm(dim=1) * ref.norm(dim=1)
    ok = (norm > 0) & (ref.mean(1) >= floor)
    angle = torch.acos((dot[ok] / norm[ok]).clamp(-1, 1))
    return float(angle.mean() * 180 / math.pi)


def reduce(cube: torch.Tensor, how: str) -> torch.Tensor:
    if how == "nearest":
        return cube[..., ::2, ::2].contiguous()
    return F.avg_pool2d(cube, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the official CSC-MSF best_net.pth (or its folder)")
    parser.add_argument("--data", type=Path, default=CAVE)
    parser.add_argument("--downsample", choices=("nearest", "area"), default="nearest")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = create_model("cscfuse-msf", checkpoint=args.checkpoint, device=resolve_device(args.device))
    scenes = sorted(p for p in args.data.iterdir() if p.is_dir() and p.name.endswith("_ms"))
    print("| scene | size | CSC-MSF PSNR (dB) | CSC-MSF SAM (deg) | SAM, mean >= 0.05 | bilinear PSNR | "
          "bilinear SAM | SAM, mean >= 0.05 | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for folder in scenes:
            scene = folder.name[: -len("_ms")]
            guide = next(folder.glob(f"{scene}_RGB.*"), None) or next(folder.glob("*_RGB.*"))
            cube, _ = read_cube(folder)
            low = reduce(cube, args.downsample)
            low_path, out_path = Path(tmp) / f"{scene}_lr.npy", Path(tmp) / f"{scene}_sr.npy"
            write_cube(low_path, low)
            start = time.perf_counter()
            fuse_cube_files(model, low_path, guide, out_path)
            seconds = time.perf_counter() - start
            sr, _ = read_cube(out_path)
            base = F.interpolate(low, size=cube.shape[-2:], mode="bilinear", align_corners=True).clamp(0, 1)
            print(f"| {scene} | {cube.shape[-1]}x{cube.shape[-2]}x{cube.shape[1]} | {psnr(sr, cube):.2f} | "
                  f"{sam_degrees(sr, cube):.2f} | {sam_degrees(sr, cube, 0.05):.2f} | {psnr(base, cube):.2f} | "
                  f"{sam_degrees(base, cube):.2f} | {sam_degrees(base, cube, 0.05):.2f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
