"""Speed of CSC-IVF (``cscfuse-ivf``) and where the time goes.

    python benchmarks/bench_cscfuse.py                          # CPU, 640x480, saliency rule
    python benchmarks/bench_cscfuse.py --device cuda --repeat 20
    python benchmarks/bench_cscfuse.py --fusion l1 --size 1280x1024

Pairs/s: ``fuse_tensors`` (the library path of ``fusecli fuse``, no file I/O) over ``--repeat``
timed runs after ``--warmup`` runs; random weights (the speed does not depend on the values) and
random 1-channel inputs, batch 1. Split: the same forward pass timed stage by stage (both
encoders on the two sources, the base-feature fusion rule, the detail-feature fusion rule, the
decoder), averaged over the timed runs.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import defaultdict

import torch

from fusecli import create_model, fuse_tensors, resolve_device
from fusecli.models.cscfuse_ivf import l1_attention


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def split(model, ir: torch.Tensor, vis: torch.Tensor, dev: torch.device) -> dict[str, float]:
    """Seconds per stage of one saliency-rule forward pass."""
    times: dict[str, float] = {}

    def timed(name, fn, *args):
        _sync(dev)
        t = time.perf_counter()
        out = fn(*args)
        _sync(dev)
        times[name] = time.perf_counter() - t
        return out

    with torch.inference_mode():
        base, detail = timed("encoders", model.encode, torch.cat([ir, vis]))
        fuse_base = model._saliency if model.config.fusion == "saliency" else l1_attention
        fb = timed(f"base fusion ({model.config.fusion})", fuse_base, base[:1], base[1:])
        fd = timed("detail fusion (l1)", l1_attention, detail[:1], detail[1:])
        timed("decoder", model.decode, 2 * fb, 2 * fd)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=_size, default=(640, 480), help="WxH")
    parser.add_argument("--fusion", default="saliency", help="saliency, l1, average or add")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    dev = resolve_device(args.device)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    model = create_model("cscfuse-ivf", weights=None, device=dev, fusion=args.fusion)
    w, h = args.size
    g = torch.Generator().manual_seed(0)
    ir, vis = (torch.rand(1, 1, h, w, generator=g).to(dev) for _ in range(2))
    for _ in range(args.warmup):
        fuse_tensors(model, [ir, vis])
    _sync(dev)
    start = time.perf_counter()
    for _ in range(args.repeat):
        fuse_tensors(model, [ir, vis])
    _sync(dev)
    seconds = (time.perf_counter() - start) / args.repeat
    print(f"cscfuse-ivf fusion={args.fusion} {w}x{h}: {1 / seconds:.3f} pairs/s ({seconds:.3f} s/pair)")

    totals: dict[str, float] = defaultdict(float)
    for _ in range(args.repeat):
        for name, s in split(model, ir, vis, dev).items():
            totals[name] += s / args.repeat
    whole = sum(totals.values())
    for name, s in totals.items():
        print(f"  {name:<28} {s:8.3f} s  {100 * s / whole:5.1f} %")


if __name__ == "__main__":
    main()
