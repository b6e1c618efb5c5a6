"""bf16 (or fp16) against fp32 per model: speed and the largest difference in grey levels.

    python benchmarks/bench_precision.py                          # TNO pair 10 (640x480), 2 threads, CPU
    python benchmarks/bench_precision.py --precision fp16 --device cuda
    python benchmarks/bench_precision.py --models frufn,efrufn --pair 14 --repeats 3

Each model fuses one infrared-visible pair through ``fuse_images`` (the library path of ``fusecli
fuse``) at fp32 and at the lower precision (``--precision``: the model under ``torch.autocast``),
with its shipped weights (EFRUFN: the official IVF checkpoint when it is here). After one untimed
run of each, the two run alternately ``--repeats`` times; the table shows the median wall-clock
seconds of each, their ratio (above 1: the lower precision is faster), and how far the 8-bit
results (``round(255 x)``, as ``fusecli fuse`` writes them) are apart: the largest difference in
grey levels, the mean difference and the share of identical pixels. The pair is TNO's (``--pair``,
from ../shared/datasets/tno) or, when TNO is not here, the bundled samples. ``cscfuse-mef`` fuses
the pair as two exposures (the sources repeated to RGB, as ``fuse_images`` does for it).
``cscfuse-msf`` super-resolves a cube instead, through ``fuse_cube_files`` (files written and read
back): CAVE's ``balloons`` (31 bands, every other pixel: 256x256, with its 512x512 RGB guide) and the
official weights when ../shared has them, else the synthetic cube of ``bench_paths.py`` and seeded
weights; its differences are over all bands' 8-bit values.

Whether bf16 is native here (AVX512-BF16 or AMX on a CPU, bfloat16 on a GPU) is printed: without
it the CPU emulates bf16 and it is slower than fp32.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fusecli import create_model, read_image
from fusecli.inference import fuse_cube_files, fuse_images, native_bf16, resolve_device, resolve_precision
from fusecli.io import read_cube, write_cube, write_image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = "auif,auif-fusion,cscfuse-ivf,derun,frufn,efrufn,cscfuse-mef,cscfuse-msf"


def build(name: str, device: torch.device) -> torch.nn.Module:
    official = SHARED / "checkpoints" / "official" / "frufn" / "ufnet_deq_deeper_ivf.pth"
    if name == "efrufn" and official.exists():
        return create_model(name, checkpoint=official, device=device)
    if name == "cscfuse-msf":  # no shipped weights: the authors' when here, else seeded ones
        msf = SHARED / "checkpoints" / "official" / "cscfuse" / "CSC-MSF"
        if msf.exists():
            return create_model(name, checkpoint=msf, device=device)
        torch.manual_seed(0)
        return create_model(name, weights=None, device=device)
    return create_model(name, device=device)


def cube_files(folder: Path) -> tuple[Path, Path, str]:
    """The low-resolution cube (.npy) and RGB guide that ``cscfuse-msf`` super-resolves, in ``folder``."""
    scene = SHARED / "datasets" / "cave" / "balloons_ms"
    if scene.exists():
        cube, _ = read_cube(scene)
        low, guide, label = cube[..., ::2, ::2].contiguous(), next(scene.glob("*_RGB.*")), "CAVE balloons"
    else:
        from bench_paths import cube_and_guide

        low, rgb = cube_and_guide()
        guide, label = write_image(folder / "guide.png", rgb), "synthetic cube"
    low_path = write_cube(folder / "low.npy", low)
    return Path(low_path), Path(guide), f"{label}, {low.shape[1]} bands {low.shape[-1]}x{low.shape[-2]}"


def load_pair(pair: str) -> tuple[list[torch.Tensor], str]:
    tno = SHARED / "datasets" / "tno"
    if (tno / "ir" / f"{pair}.png").exists():
        paths, label = [tno / "ir" / f"{pair}.png", tno / "vis" / f"{pair}.png"], f"TNO pair {pair}"
    else:
        paths, label = [REPO / "samples" / "ir.png", REPO / "samples" / "vis.png"], "samples/ir.png + vis.png"
    images = [read_image(p)[0] for p in paths]
    return images, f"{label}, {images[0].shape[-1]}x{images[0].shape[-2]}"


def timed(model: torch.nn.Module, images: list[torch.Tensor] | tuple[Path, Path, Path], precision: str,
          device: torch.device):
    """Seconds of one fusion and its 8-bit result; ``images`` a cube's (low, guide, output) paths for
    ``cscfuse-msf``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    if isinstance(images, tuple):
        fuse_cube_files(model, images[0], images[1], images[2], precision=precision)
        out = read_cube(images[2])[0]
    else:
        out = fuse_images(model, images, precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, (out.float().cpu() * 255).round()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS, help=f"comma-separated (default {MODELS})")
    parser.add_argument("--precision", default="bf16", help="bf16 (default) or fp16 (CUDA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pair", default="10", help="TNO pair stem (default 10, 640x480)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each precision (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    resolve_precision(args.precision, device)
    images, label = load_pair(args.pair)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
          f"{args.threads} thread(s), native bf16: {'yes' if native_bf16(device) else 'no (emulated)'}; "
          f"{label}; {args.repeats} repeat(s) (median); load average {load[0]:.1f}")
    p = args.precision
    print(f"| model | fp32 s | {p} s | {p} speed vs fp32 | max diff (grey levels) | mean diff | identical |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model = build(name, device)
            inputs, row = images, name
            if name == "cscfuse-msf":
                low, guide, cube_label = cube_files(Path(tmp))
                inputs, row = (low, guide, Path(tmp) / "high.npy"), f"{name} ({cube_label})"
            _, ref = timed(model, inputs, "fp32", device)
            _, lower = timed(model, inputs, p, device)
            times: dict[str, list[float]] = {"fp32": [], p: []}
            for i in range(args.repeats):
                for prec in (("fp32", p) if i % 2 == 0 else (p, "fp32")):
                    times[prec].append(timed(model, inputs, prec, device)[0])
            t32, tlow = statistics.median(times["fp32"]), statistics.median(times[p])
            diff = (ref - lower).abs()
            print(f"| {row} | {t32:.2f} | {tlow:.2f} | {t32 / tlow:.2f}x | {int(diff.max())} | "
                  f"{float(diff.mean()):.3f} | {100 * float((diff == 0).float().mean()):.2f} % |", flush=True)


if __name__ == "__main__":
    main()
