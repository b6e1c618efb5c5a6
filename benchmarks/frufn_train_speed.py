"""Seconds per training step of FRUFN / EFRUFN in each gradient-transfer stage (fusecli.train.frufn).

Runs ``train_stages`` for a few steps per stage (published model configs, the recipe's losses and
teachers, real data through the real pipeline) and times consecutive steps from the progress
callback; the first step of each stage is dropped (warm-up), the median of the others reported, as
wall-clock seconds and as this process's CPU seconds (on a shared machine the CPU seconds of a
1-thread run are the better estimate of the time on an idle core).

    python benchmarks/frufn_train_speed.py --threads 1 --batch-size 2 --crops 64 128

Needs ../shared/datasets/roadscene. Writes its throw-away runs under a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fusecli.train.frufn import STAGES, StagedTrainConfig, train_stages

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["frufn", "efrufn"])
    parser.add_argument("--crops", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="steps per stage (the first is not counted)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| model | crop | batch | {' | '.join(f'{s} s/step wall (cpu)' for s in STAGES)} |")
    print("|---|---|---|" + "---|" * len(STAGES))
    for model in args.models:
        for crop in args.crops:
            with tempfile.TemporaryDirectory() as tmp:
                stamps: dict[str, list[tuple[float, float]]] = {s: [] for s in STAGES}
                config = StagedTrainConfig(
                    model=model, out=tmp, sharp_data=(str(SHARED / "roadscene" / "vis"),),
                    ivf_data=(str(SHARED / "roadscene"),), epochs=1, batch_size=args.batch_size, crop=crop,
                    steps_per_epoch=args.steps, color_epochs=0, device=args.device)

                def progress(step, total, logs):
                    stamps[logs["stage"]].append((time.perf_counter(), time.process_time()))

                train_stages(config, progress=progress)
                cells = []
                for stage in STAGES:
                    t = stamps[stage]
                    wall = [b[0] - a[0] for a, b in zip(t, t[1:])]
                    cpu = [b[1] - a[1] for a, b in zip(t, t[1:])]
                    cells.append(f"{statistics.median(wall):.2f} ({statistics.median(cpu):.2f})" if wall else "n/a")
                print(f"| {model} | {crop} | {args.batch_size} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
