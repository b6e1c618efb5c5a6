"""Speed of the ir-vis default (auif-fusion) against AUIF and the classical rules, in one run.

    python benchmarks/bench_default.py                    # 640x480, 2 threads, 15 rounds
    python benchmarks/bench_default.py --models auif-fusion,auif --threads 2 --rounds 30

Library path (``fuse_tensors``, no file I/O), batch 1, random luminance inputs, shipped weights.
Each round times one pair per model, models interleaved, so a busy machine slows them alike; the
table gives the median seconds per pair, pairs/s, and the ratio to the first model.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fusecli import create_model, fuse_tensors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="auif-fusion,auif,laplacian,average")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    g = torch.Generator().manual_seed(0)
    ir, vis = torch.rand(1, 1, h, w, generator=g), torch.rand(1, 1, h, w, generator=g)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    models = {n: create_model(n) for n in names}
    for _ in range(args.warmup):
        for m in models.values():
            fuse_tensors(m, [ir, vis])
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for n, m in models.items():
            t0 = time.perf_counter()
            fuse_tensors(m, [ir, vis])
            times[n].append(time.perf_counter() - t0)
    first = statistics.median(times[names[0]])
    print(f"{w}x{h}, {args.threads} threads, median of {args.rounds} interleaved rounds (torch {torch.__version__})")
    print("| model | s/pair | pairs/s | time / " + names[0] + " |")
    print("|---|---|---|---|")
    for n in names:
        s = statistics.median(times[n])
        print(f"| {n} | {s:.4f} | {1 / s:.1f} | {s / first:.2f} |")


if __name__ == "__main__":
    main()
