"""Where an EFRUFN training step spends its time: the student's forward (solve without autograd, then
the differentiable phantom step), the frozen teacher's forward, and the backward pass.

    python benchmarks/efrufn_step_parts.py --threads 2
    python benchmarks/efrufn_step_parts.py --threads 1 --impl reference
    python benchmarks/efrufn_step_parts.py --threads 2 --floor
    python benchmarks/efrufn_step_parts.py --threads 2 --compile

``--floor``: one whole training step of ``bench_paths.py``'s ``efrufn train`` row (teacher, student,
loss, backward) on each path: the step's seconds (best of ``--repeats``, no profiler) and the seconds
spent inside the convolution kernels (forward and backward) in the same step under
``torch.profiler`` (best of ``--repeats``; the profiler's self time of those operators is their
wall time on this thread, oneDNN running them on the intra-op threads), against the 3x target (a
third of today's step). The convolutions are the same on both paths and run at oneDNN's speed, so
they are a floor that no rewrite of the rest goes below.

``--compile``: one evaluation of the fixed-point map without autograd (the solver's unit of work,
ten per step) on today's cell, on the fast cell, and on today's cell through ``torch.compile``
(inductor, static shapes; the first call, which compiles, is timed apart: inductor's on-disk
cache makes later runs compile faster), and the largest difference of the compiled map from today's.

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
from bench_paths import ENTRIES, _frufn, training_batch


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


#: the profiler names of the convolution kernels (forward and backward) on the CPU
CONV_KERNELS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
                "aten::_slow_conv2d_backward", "aten::thnn_conv2d", "aten::_nnpack_spatial_convolution")


def floor(repeats: int) -> None:
    """Print, per path, the profiled step and its convolution time (best of ``repeats``)."""
    from torch.profiler import ProfilerActivity, profile

    entry = ENTRIES["efrufn train"]
    inputs = entry.make_inputs()
    rows = {}
    for impl, build in (("reference", entry.build_reference), ("fast", entry.build_fast)):
        model = build()
        entry.run(model, inputs)  # warm-up (and the teacher copy)
        best_step = best(lambda: entry.run(model, inputs), repeats)  # without the profiler's overhead
        best_conv = float("inf")
        for _ in range(repeats):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                entry.run(model, inputs)
            conv = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in CONV_KERNELS) / 1e6
            best_conv = min(best_conv, conv)
        rows[impl] = (best_step, best_conv)
    target = rows["reference"][0] / 3
    for impl, (step, conv) in rows.items():
        print(f"{impl:<9} step {step:5.2f} s, convolutions {conv:5.2f} s "
              f"({100 * conv / step:.0f} %), the rest {step - conv:5.2f} s")
    conv = rows["fast"][1]
    print(f"3x target: {target:.2f} s per step; the convolutions alone take {conv:.2f} s of it, leaving "
          f"{target - conv:.2f} s for the rest (now {rows['fast'][0] - conv:.2f} s: "
          f"{(rows['fast'][0] - conv) / max(target - conv, 1e-9):.1f}x too slow)")


def compiled_map(repeats: int) -> None:
    """Print the seconds of one map evaluation: today's cell, the fast cell, today's cell compiled."""
    a, b = training_batch()
    reference, fast = _frufn("efrufn", "reference").eval(), _frufn("efrufn", "fast").eval()
    with torch.no_grad():
        f1, f2 = reference.enc_ir(a), reference.enc_vis(b)
        z0 = reference.initial_state(f2, f1)
        last = [x.contiguous(memory_format=torch.channels_last) for x in (z0, f1, f2)]
        print(f"today's map:          {best(lambda: reference.fixed_point_map(z0, f1, f2), repeats):.3f} s")
        print(f"fast map:             {best(lambda: fast.fixed_point_map(*last), repeats):.3f} s")
        compiled = torch.compile(reference.fixed_point_map, dynamic=False)
        start = time.perf_counter()
        out = compiled(z0, f1, f2)
        first = time.perf_counter() - start
        print(f"today's map compiled: {best(lambda: compiled(z0, f1, f2), repeats):.3f} s "
              f"(first call, compiling: {first:.0f} s; largest difference from today's "
              f"{(out - reference.fixed_point_map(z0, f1, f2)).abs().max().item():.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--impl", choices=("fast", "reference"), default="fast")
    parser.add_argument("--floor", action="store_true", help="the convolution floor of a whole step (above)")
    parser.add_argument("--compile", action="store_true", help="one map evaluation, also compiled (above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compile:
        compiled_map(args.repeats)
        return
    if args.floor:
        floor(args.repeats)
        return
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
