"""Every model with shipped weights fuses one pair on the CPU and on a CUDA device: how far apart are they?

    python benchmarks/cuda_agreement.py                      # samples/ir.png + samples/vis_color.png, cuda
    python benchmarks/cuda_agreement.py --device cuda:1 --pair A.png B.png

Prints, per model, the max and mean absolute difference of the two 8-bit results (grey levels) and
the share of identical samples (each fusion is ``bench_precision.py``'s ``timed`` in fp32), and the seconds of each first call (model set-up on the device
included, so not a speed figure: see bench_fuse.py / bench_precision.py for those).
"""

from __future__ import annotations

import argparse

import torch
from bench_precision import timed

from fusecli import create_model
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
        (cpu_s, cpu_out), (dev_s, dev_out) = (timed(create_model(name, device=d), images, "fp32", torch.device(d))
                                              for d in ("cpu", args.device))
        diff = (cpu_out - dev_out).abs()
        print(f"{name}: {tuple(dev_out.shape)}, max diff {int(diff.max())}, mean {float(diff.mean()):.4f}, "
              f"identical {100 * float((diff == 0).float().mean()):.2f} %; first call cpu {cpu_s:.2f} s, "
              f"{args.device} {dev_s:.2f} s", flush=True)


if __name__ == "__main__":
    main()
