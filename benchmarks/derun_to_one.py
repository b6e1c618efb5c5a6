"""``C -> 1`` 3x3 convolutions as DeRUN's fast path runs them (``fusecli.models._derun_fast._to_one``:
depthwise, then a sum over channels) against oneDNN's plain ``C -> 1`` convolution, on one tile of
the fast path (130x674, channels-last), one thread, medians of interleaved runs.

    python benchmarks/derun_to_one.py

Random weights and inputs; the largest difference between the two is printed (float rounding).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from fusecli.models._derun_fast import _to_one


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| C | oneDNN C -> 1, ms | depthwise + sum, ms | speed-up | max difference |")
    print("|---|---|---|---|---|")
    for c in (2, 4, 8, 16):
        x = torch.randn(1, c, 130, 674).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(1, c, 3, 3) * 0.1
        with torch.no_grad():
            paths = {"onednn": lambda: F.conv2d(x, weight), "to_one": lambda: _to_one(x, weight)}
            times: dict[str, list[float]] = {k: [] for k in paths}
            for fn in paths.values():
                fn()
            for _ in range(30):
                for name, fn in paths.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            diff = (paths["onednn"]() - paths["to_one"]()).abs().max().item()
        a, b = (1e3 * statistics.median(times[k]) for k in ("onednn", "to_one"))
        print(f"| {c} | {a:.3f} | {b:.3f} | {a / b:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
