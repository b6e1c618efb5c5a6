"""Seconds per DeRUN training step through `fusecli train`'s loop (the recipe: batch 4, crop 128).

    OMP_NUM_THREADS=1 python benchmarks/bench_derun_train.py --data ../shared/datasets/roadscene --steps 6

Runs one short epoch of the real loop (data loading, aligned crops, forward, eq. 14 loss, backward,
Adam) into a temporary folder and prints the wall-clock and the process CPU time of every step
after the first (CPU time is what a run would take on an idle core when the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from fusecli.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=[], help="dataset folder(s) (default: roadscene)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = tuple(args.data) or ("../shared/datasets/roadscene",)
    stamps: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        train(TrainConfig(model="derun", data=data, out=out, epochs=1, steps_per_epoch=args.steps,
                          batch_size=args.batch_size, crop=args.crop, seed=0, device=args.device),
              progress=lambda *_: stamps.append((time.perf_counter(), time.process_time())))
    wall = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    cpu = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]
    print(f"derun, batch {args.batch_size}, crop {args.crop}, {args.threads} thread(s), device {args.device}, data {', '.join(data)}")
    print(f"setup + first step: {stamps[0][0] - t0:.1f} s")
    print(f"steps 2..{args.steps}: wall {statistics.mean(wall):.2f} s/step (min {min(wall):.2f}), "
          f"CPU {statistics.mean(cpu):.2f} s/step (min {min(cpu):.2f})")


if __name__ == "__main__":
    main()
