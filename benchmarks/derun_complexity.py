"""Parameters, FLOPs and CPU time of DeRUN (and derun-admm), next to AUIF and CSC-IVF.

    python benchmarks/derun_complexity.py                  # params + FLOPs at 256x256
    python benchmarks/derun_complexity.py --time --threads 2 --repeat 3

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of a
(1, 1, 256, 256) pair: it counts matrix products and convolutions (2 FLOPs per multiply-add), not
element-wise operations or FFTs, so the figures are the convolution/matmul work only (for DeRUN
that is almost all of it; derun-admm spends its time in FFTs and element-wise code, which the
counter does not see). AUIF is counted with ``operator=direct`` (its two 3x3 convolutions per
stage, the paper's computation): its default ``composed`` operator runs on the CPU as sums of
shifted slices, which the counter does not see. Parameters are the trainable ones of each model's
default config (the overrides change no parameter count except ``stages`` / channels).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from fusecli.models import get_entry

MODELS = ("derun", "derun:cg_steps=1", "derun:margin=0", "derun-admm", "auif:operator=direct", "cscfuse-ivf")


def build(spec: str) -> torch.nn.Module:
    """``name`` or ``name:key=value;key=value`` (config overrides, ints/floats/strings)."""
    name, _, options = spec.partition(":")
    overrides = {}
    for item in filter(None, options.split(";")):
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                overrides[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            overrides[key] = value
    entry = get_entry(name)
    return entry.cls(entry.config_cls(**overrides)).eval()  # random init: cost does not depend on weights


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops(model: torch.nn.Module, size: tuple[int, int]) -> int:
    u, v = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(u, v)
    return counter.get_total_flops()


def seconds(model: torch.nn.Module, size: tuple[int, int], repeat: int) -> float:
    u, v = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    best = float("inf")
    with torch.inference_mode():
        model(u, v)  # warm-up
        for _ in range(repeat):
            start = time.perf_counter()
            model(u, v)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated; NAME or NAME:key=value;key=value (config overrides)")
    parser.add_argument("--time", action="store_true", help="also time one forward pass (best of --repeat)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-flops", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    header = f"{'model':<22} {'parameters':>10} {'GFLOPs@256':>11}"
    if args.time:
        header += f" {'s@256x256':>10} {'s@640x480':>10}"
    print(header)
    for name in names:
        model = build(name)
        row = f"{name:<22} {trainable(model):>10,} "
        row += f"{'-':>11}" if args.no_flops else f"{flops(model, (256, 256)) / 1e9:>11.2f}"
        if args.time:
            row += f" {seconds(model, (256, 256), args.repeat):>10.3f} {seconds(model, (480, 640), args.repeat):>10.3f}"
        print(row, flush=True)
    print(f"(torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); FLOPs: convolutions and "
          "matrix products only)")


if __name__ == "__main__":
    main()
