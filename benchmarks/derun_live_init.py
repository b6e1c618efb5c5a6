"""A classical DeRUN start whose silent filters can learn: the experiment of docs/derun-training.md
("Silent filters").

    python benchmarks/derun_live_init.py runs/derun-live/init.safetensors
    OMP_NUM_THREADS=1 fusecli train derun ... --init runs/derun-live/init.safetensors

From ``init="classical"`` only the Sobel pair is live: the other filters' second layers in ``T`` and
first layers in ``T^T`` are zero, their maps stay zero and their gradients are exactly zero. Here the
``T^T`` weights that read those silent outputs get small noise (std ``--scale``): the untrained output
is still ``derun-admm``'s (those weights multiply zero maps; printed: the largest difference from the
classical start on a random pair, float rounding), and ``T``'s silent rows now get gradients.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from fusecli import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .safetensors file to write")
    parser.add_argument("--scale", type=float, default=0.01, help="std of the noise on the silent T^T weights")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = create_model("derun", weights=None)
    with torch.no_grad():
        for stage in model.stages:
            for fwd, back in ((stage.T.spec_l, stage.Tt.spec_l), (stage.T.spec_k, stage.Tt.spec_k),
                              (stage.T.share, stage.Tt.share)):
                silent = (fwd.conv2.flatten(1) == 0).all(1)  # T's output channels that are zero
                noise = torch.randn_like(back.conv1) * args.scale  # (hidden, T's outputs, 3, 3)
                back.conv1[:, silent] += noise[:, silent]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
    g = torch.Generator().manual_seed(1)
    u, v = torch.rand(1, 1, 64, 64, generator=g), torch.rand(1, 1, 64, 64, generator=g)
    with torch.no_grad():
        diff = (model(u, v) - create_model("derun", weights=None)(u, v)).abs().max().item()
    print(f"wrote {args.out}; largest difference from the classical start on a random 64x64 pair: {diff:.2e}")


if __name__ == "__main__":
    main()
