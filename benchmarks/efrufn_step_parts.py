"""Where an EFRUFN training step spends its time: the student's forward (solve without autograd, then
the differentiable phantom step), the frozen teacher's forward, and the backward pass.

    python benchmarks/efrufn_step_parts.py --threads 2
    python benchmarks/efrufn_step_parts.py --threads 1 --impl reference

The model and batch of ``bench_paths.py``'s ``efrufn train`` row (the official IVF checkpoint when
../shared has it, batch 4 of 128x128 crops of the samples); the fast cell (``--impl fast``, the
default) or today's (``--impl reference``); the best of ``--repeats`` runs after one warm-up, in
seconds.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from bench_paths import _frufn, training_batch


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--impl", choices=("fast", "reference"), default="fast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    student = _frufn("efrufn", args.impl).train()
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    a, b = training_batch()

    def teach() -> torch.Tensor:
        with torch.no_grad():
            return teacher(a, b)

    def backward() -> float:
        out = student(a, b)
        start = time.perf_counter()
        out.square().mean().backward()
        return time.perf_counter() - start

    print(f"impl {args.impl}, {args.threads} thread(s), batch {a.shape[0]} of {a.shape[-2]}x{a.shape[-1]}")
    print(f"student forward (solve + phantom step): {best(lambda: student(a, b), args.repeats):.2f} s")
    print(f"teacher forward (no autograd):          {best(teach, args.repeats):.2f} s")
    print(f"backward:                               {min(backward() for _ in range(args.repeats)):.2f} s")


if __name__ == "__main__":
    main()
