"""Speed and memory of `fuse` (library path, no file I/O) for a model.

    python benchmarks/bench_fuse.py                        # AUIF, CPU, 640x480, both operators
    python benchmarks/bench_fuse.py --device cuda --size 640x480 --repeat 50
    python benchmarks/bench_fuse.py --memory 4000x3000 --tile 1024   # peak RSS of one fuse

Speed: pairs/s over --repeat timed runs after --warmup runs, random 1-channel inputs, batch 1.
Memory: each measurement runs in a fresh subprocess and reports its peak resident set size
(ru_maxrss), i.e. everything the process needed, Python and torch included.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch

from fusecli import create_model, fuse_tensors, resolve_device


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def speed(model_name: str, operator: str, device: str, size: tuple[int, int], repeat: int, warmup: int,
          tile: int) -> tuple[float, float | None]:
    """Pairs/s over ``repeat`` runs, and on CUDA the peak memory allocated by torch (MiB) during them."""
    dev = resolve_device(device)
    model = create_model(model_name, weights=None, device=dev, operator=operator)
    w, h = size
    g = torch.Generator().manual_seed(0)
    ir, vis = (torch.rand(1, 1, h, w, generator=g).to(dev) for _ in range(2))
    for _ in range(warmup):
        fuse_tensors(model, [ir, vis], tile=tile)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for _ in range(repeat):
        fuse_tensors(model, [ir, vis], tile=tile)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    pps = repeat / (time.perf_counter() - start)
    return pps, torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None


def memory_child(model_name: str, size: tuple[int, int], tile: int) -> None:
    model = create_model(model_name, weights=None, device="cpu")
    w, h = size
    ir, vis = torch.rand(1, 1, h, w), torch.rand(1, 1, h, w)
    start = time.perf_counter()
    fuse_tensors(model, [ir, vis], tile=tile)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": round(peak_mib), "seconds": round(seconds, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="auif")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=_size, default=(640, 480), help="WxH for the speed test")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--operators", default="composed,direct", help="AUIF operators to time")
    parser.add_argument("--memory", type=_size, help="WxH for a peak-memory run (CPU, subprocess)")
    parser.add_argument("--tile", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        memory_child(args.model, args.memory, args.tile)
        return
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {resolve_device(args.device)}")
    if args.memory:
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--memory",
               f"{args.memory[0]}x{args.memory[1]}", "--tile", str(args.tile)]
        result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(f"{args.model} {args.memory[0]}x{args.memory[1]} tile={args.tile}: "
              f"peak RSS {result['peak_rss_mib']} MiB, {result['seconds']} s")
        return
    for operator in args.operators.split(","):
        repeat = args.repeat if operator == "composed" else max(1, args.repeat // 5)
        pps, peak = speed(args.model, operator, args.device, args.size, repeat, min(args.warmup, repeat), args.tile)
        memory = "" if peak is None else f", peak CUDA memory {peak:.0f} MiB"
        print(f"{args.model} operator={operator} {args.size[0]}x{args.size[1]}: {pps:.2f} pairs/s{memory}")


if __name__ == "__main__":
    main()
