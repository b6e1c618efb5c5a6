"""Every model with shipped weights fuses one pair on the CPU and on a CUDA device: how far apart are they?

    python benchmarks/cuda_agreement.py                      # samples/ir.png + samples/vis_color.png, cuda
    python benchmarks/cuda_agreement.py --device cuda:1 --pair A.png B.png

Prints, per model, the max and mean absolute difference of the two 8-bit results (grey levels) and
the share of identical samples, and the seconds of each first call (model set-up on the device
included, so not a speed figure: see bench_fuse.py / bench_precision.py for those).
"""

from __future__ import annotations

import argparse
import time

from fusecli import create_model, fuse_images
from fusecli.io import read_image

MODELS = "auif,auif-fusion,cscfuse-ivf,derun,derun-admm,laplacian,average,max,efrufn,frufn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--pair", nargs=2, default=["samples/ir.png", "samples/vis_color.png"])
    parser.add_argument("--models", default=MODELS, help=f"comma-separated (default {MODELS})")
    args = parser.parse_args()
    images = [read_image(p)[0] for p in args.pair]
    for name in args.models.split(","):
        results = []
        for device in ("cpu", args.device):
            model = create_model(name, device=device)
            start = time.perf_counter()
            out = fuse_images(model, images)
            results.append(((out.float().cpu() * 255).round(), time.perf_counter() - start))
        diff = (results[0][0] - results[1][0]).abs()
        print(f"{name}: {tuple(results[1][0].shape)}, max diff {int(diff.max())}, mean {float(diff.mean()):.4f}, "
              f"identical {100 * float((diff == 0).float().mean()):.2f} %; first call cpu {results[0][1]:.2f} s, "
              f"{args.device} {results[1][1]:.2f} s", flush=True)


if __name__ == "__main__":
    main()
