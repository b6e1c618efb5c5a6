"""bf16 (or fp16) against fp32 per model: speed and the largest difference in grey levels.

    python benchmarks/bench_precision.py                          # TNO pair 10 (640x480), 2 threads, CPU
    python benchmarks/bench_precision.py --precision fp16 --device cuda
    python benchmarks/bench_precision.py --models frufn,efrufn --pair 14 --repeats 3

Each model fuses one infrared-visible pair through ``fuse_images`` (the library path of ``fusecli
fuse``) at fp32 and at the lower precision (``--precision``: the model under ``torch.autocast``),
with its shipped weights (EFRUFN: the official IVF checkpoint when it is here). After one untimed
run of each, the two run alternately ``--repeats`` times; the table shows the median wall-clock
seconds of each, their ratio (above 1: the lower precision is faster), and how far the 8-bit
results (``round(255 x)``, as ``fusecli fuse`` writes them) are apart: the largest difference in
grey levels, the mean difference and the share of identical pixels. The pair is TNO's (``--pair``,
from ../shared/datasets/tno) or, when TNO is not here, the bundled samples. ``cscfuse-mef`` fuses
the pair as two exposures (the sources repeated to RGB, as ``fuse_images`` does for it).

Whether bf16 is native here (AVX512-BF16 or AMX on a CPU, bfloat16 on a GPU) is printed: without
it the CPU emulates bf16 and it is slower than fp32.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from fusecli import create_model, read_image
from fusecli.inference import fuse_images, native_bf16, resolve_device, resolve_precision

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = "auif,auif-fusion,cscfuse-ivf,derun,frufn,efrufn,cscfuse-mef"


def build(name: str, device: torch.device) -> torch.nn.Module:
    official = SHARED / "checkpoints" / "official" / "frufn" / "ufnet_deq_deeper_ivf.pth"
    if name == "efrufn" and official.exists():
        return create_model(name, checkpoint=official, device=device)
    return create_model(name, device=device)


def load_pair(pair: str) -> tuple[list[torch.Tensor], str]:
    tno = SHARED / "datasets" / "tno"
    if (tno / "ir" / f"{pair}.png").exists():
        paths, label = [tno / "ir" / f"{pair}.png", tno / "vis" / f"{pair}.png"], f"TNO pair {pair}"
    else:
        paths, label = [REPO / "samples" / "ir.png", REPO / "samples" / "vis.png"], "samples/ir.png + vis.png"
    images = [read_image(p)[0] for p in paths]
    return images, f"{label}, {images[0].shape[-1]}x{images[0].shape[-2]}"


def timed(model: torch.nn.Module, images: list[torch.Tensor], precision: str, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fuse_images(model, images, precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, (out.float().cpu() * 255).round()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS, help=f"comma-separated (default {MODELS})")
    parser.add_argument("--precision", default="bf16", help="bf16 (default) or fp16 (CUDA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pair", default="10", help="TNO pair stem (default 10, 640x480)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each precision (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    resolve_precision(args.precision, device)
    images, label = load_pair(args.pair)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
          f"{args.threads} thread(s), native bf16: {'yes' if native_bf16(device) else 'no (emulated)'}; "
          f"{label}; {args.repeats} repeat(s) (median); load average {load[0]:.1f}")
    p = args.precision
    print(f"| model | fp32 s | {p} s | {p} speed vs fp32 | max diff (grey levels) | mean diff | identical |")
    print("|---|---|---|---|---|---|---|")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = build(name, device)
        _, ref = timed(model, images, "fp32", device)
        _, low = timed(model, images, p, device)
        times: dict[str, list[float]] = {"fp32": [], p: []}
        for i in range(args.repeats):
            for prec in (("fp32", p) if i % 2 == 0 else (p, "fp32")):
                times[prec].append(timed(model, images, prec, device)[0])
        t32, tlow = statistics.median(times["fp32"]), statistics.median(times[p])
        diff = (ref - low).abs()
        print(f"| {name} | {t32:.2f} | {tlow:.2f} | {t32 / tlow:.2f}x | {int(diff.max())} | "
              f"{float(diff.mean()):.3f} | {100 * float((diff == 0).float().mean()):.2f} % |", flush=True)


if __name__ == "__main__":
    main()
