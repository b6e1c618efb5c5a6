"""Speed and memory of FRUFN and EFRUFN at the paper's Table 5 size (224x448), inference and training.

    python benchmarks/bench_frufn.py                                  # CPU, both models
    python benchmarks/bench_frufn.py --device cuda --repeat 20        # on a GPU
    python benchmarks/bench_frufn.py --models efrufn --size 448x224 --train-iters 5,20

Inference: pairs/s over --repeat timed runs after --warmup runs (random 1-channel inputs, batch 1,
``fuse_tensors``, no file I/O); EFRUFN with the default solver (Anderson, 5 map evaluations).
Peak memory: each measurement runs in a fresh subprocess. On the CPU it is the process's peak
resident set size (ru_maxrss, Python and torch included) and its increase over the resident size
just before the measured call; on CUDA ``torch.cuda.max_memory_allocated``.
Training memory (--train-iters): one training step (forward + backward, batch 1) of EFRUFN with the
1-step gradient at each solver iteration count, and of FRUFN (5 unrolled cells), for Fig. 13-style
comparisons. Timings on a shared CPU are rough.
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


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def speed(model_name: str, device: str, size: tuple[int, int], repeat: int, warmup: int) -> float:
    dev = resolve_device(device)
    model = create_model(model_name, weights=None, device=dev)
    w, h = size
    g = torch.Generator().manual_seed(0)
    ir, vis = (torch.rand(1, 1, h, w, generator=g).to(dev) for _ in range(2))
    for _ in range(warmup):
        fuse_tensors(model, [ir, vis])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fuse_tensors(model, [ir, vis])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return repeat / (time.perf_counter() - start)


def memory_child(model_name: str, device: str, size: tuple[int, int], train_iters: int) -> None:
    """One measured call in this (fresh) process; prints a JSON line."""
    dev = resolve_device(device)
    model = create_model(model_name, weights=None, device=dev)
    w, h = size
    ir, vis = torch.rand(1, 1, h, w, device=dev), torch.rand(1, 1, h, w, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    before = _rss_kib()
    start = time.perf_counter()
    if train_iters:
        model.train()
        if model_name == "efrufn":
            out = model.forward_with_info(ir, vis, solver_iters=train_iters)[0]
        else:
            out = model(ir, vis)
        out.mean().backward()
    else:
        fuse_tensors(model, [ir, vis])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"peak_rss_mib": round(peak / 1024), "increase_mib": round((peak - before) / 1024),
              "seconds": round(seconds, 2)}
    if dev.type == "cuda":
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20)
    print(json.dumps(result))


def memory(model_name: str, device: str, size: tuple[int, int], train_iters: int = 0, threads: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", model_name, "--device", device, "--size", f"{size[0]}x{size[1]}",
           "--child-train-iters", str(train_iters), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="frufn,efrufn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=_size, default=(448, 224), help="WxH (default 448x224, Table 5)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--train-iters", default="", help="comma-separated EFRUFN solver iterations for the "
                        "training-memory table, e.g. 5,20")
    parser.add_argument("--child")
    parser.add_argument("--child-train-iters", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        memory_child(args.child, args.device, args.size, args.child_train_iters)
        return

    w, h = args.size
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, {w}x{h}, batch 1")
    cuda_col = "cuda" in args.device
    print("| model | pairs/s | s/pair | peak RSS MiB | increase MiB |" + (" CUDA peak MiB |" if cuda_col else ""))
    print("|---|---|---|---|---|" + ("---|" if cuda_col else ""))
    for name in args.models.split(","):
        pps = speed(name, args.device, args.size, args.repeat, args.warmup)
        mem = memory(name, args.device, args.size, threads=args.threads)
        cuda = f" {mem['cuda_peak_mib']} |" if "cuda_peak_mib" in mem else ""
        row = f"| {name} | {pps:.3f} | {1 / pps:.2f} | {mem['peak_rss_mib']} | {mem['increase_mib']} |{cuda}"
        print(row, flush=True)
    if args.train_iters:
        print("\ntraining step (forward + backward, batch 1)")
        head = "| model | solver iterations | peak RSS MiB | increase MiB | s |"
        print(head + (" CUDA peak MiB |" if cuda_col else ""))
        print("|---|---|---|---|---|" + ("---|" if cuda_col else ""))
        rows = [("frufn", 5)] + [("efrufn", int(n)) for n in args.train_iters.split(",")]
        for name, n in rows:
            mem = memory(name, args.device, args.size, n, threads=args.threads)
            cuda = f" {mem['cuda_peak_mib']} |" if "cuda_peak_mib" in mem else ""
            label = f"{n} (unrolled cells)" if name == "frufn" else str(n)
            row = f"| {name} | {label} | {mem['peak_rss_mib']} | {mem['increase_mib']} | {mem['seconds']} |{cuda}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
