"""DeRUN's Q_a chain (1 -> 12 -> 12 -> 16 -> 1 channels, 3x3, PReLU after the first and third) on one
tile of the fast path (136x680 with context), as fusecli runs it and with the channel counts
padded to multiples of 8 (oneDNN's vector width on AVX2), one thread, medians of interleaved runs.

    python benchmarks/derun_chain_layouts.py

Random weights of the real shapes; channels-last memory as in ``fusecli.models._derun_fast``.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    h, w = 136, 680
    x = torch.randn(1, 1, h, w)
    x = x.as_strided(x.shape, (x.stride(0), 1, x.stride(2), 1))
    slope = torch.rand(16)

    def conv(cout: int, cin: int) -> torch.Tensor:
        return torch.randn(cout, cin, 3, 3) * 0.1

    chains = {
        "fusecli (12, 12, 16)": [(conv(12, 1), slope[:12]), (conv(12, 12), None), (conv(16, 12), slope), (conv(1, 16), None)],
        "all 16": [(conv(16, 1), slope), (conv(16, 16), None), (conv(16, 16), slope), (conv(1, 16), None)],
        "all 16, last 8": [(conv(16, 1), slope), (conv(16, 16), None), (conv(16, 16), slope), (conv(8, 16), None)],
        "middle 16": [(conv(12, 1), slope[:12]), (conv(16, 12), None), (conv(16, 16), slope), (conv(1, 16), None)],
    }

    def run(chain, y):
        for weight, prelu in chain:
            y = F.conv2d(y, weight)
            if prelu is not None:
                y = F.prelu(y, prelu)
        return y

    times = {name: [] for name in chains}
    with torch.no_grad():
        for _ in range(12):
            for name, chain in chains.items():
                start = time.perf_counter()
                run(chain, x)
                times[name].append(time.perf_counter() - start)
    for name, t in times.items():
        print(f"{name:22s} {statistics.median(t[2:]) * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
