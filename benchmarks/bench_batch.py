"""Throughput of `fusecli batch` against a loop of `fuse` calls on the same pairs.

    python benchmarks/bench_batch.py                                  # 50 RoadScene pairs (or synthetic), CPU
    python benchmarks/bench_batch.py --device cuda --synthetic 640x480 --batch-size 8
    python benchmarks/bench_batch.py --cli-pairs 5                    # also time `fusecli fuse` processes

Pairs: the first --pairs pairs of ../shared/datasets/roadscene (JPEG, mixed sizes, colour visible),
or --synthetic WxH random PNG pairs (always, if ../shared is absent). Both sides use one model
instance (official AUIF checkpoint if present, else random weights: speed does not depend on them).

* loop: ``fuse_files(model, pair, out)`` for each pair, one after another: what a script calling
  ``fusecli.fuse_files`` (or ``fusecli fuse`` without its process start-up) does.
* batch: ``run_batch`` on the same pairs (reader/writer threads, --batch-size).
* cli (optional): ``fusecli fuse`` as one process per pair, as a shell loop would run it.

It checks that the batch outputs are byte-identical to the loop's (for --batch-size 1) and
reports medians over --rounds alternating rounds (this machine is shared; the per-round figures
show the spread) and the model's share of the wall time (sum of per-pair fuse seconds / wall seconds): near
100 % means the model, not I/O, is the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fusecli import create_model, fuse_files, resolve_device
from fusecli.batch import run_batch
from fusecli.pairs import scan_pairs

REPO = Path(__file__).resolve().parents[1]
ROADSCENE = REPO.parent / "shared" / "datasets" / "roadscene"
OFFICIAL = REPO.parent / "shared" / "checkpoints" / "official" / "auif"


def _synthetic(root: Path, n: int, size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    w, h = size
    for role in ("ir", "vis"):
        (root / role).mkdir(parents=True)
    for i in range(n):
        base = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (9, 9), 0)
        cv2.imwrite(str(root / "ir" / f"{i:04d}.png"), base)
        cv2.imwrite(str(root / "vis" / f"{i:04d}.png"),
                    cv2.merge([255 - base, base, rng.integers(0, 256, (h, w), dtype=np.uint8)]))
    return root


def _subset(source: Path, root: Path, n: int) -> Path:
    """A dataset folder of symlinks to the first n pairs of ``source``."""
    scan = scan_pairs(source)
    for role in scan.roles:
        (root / role).mkdir(parents=True)
    for pair in scan.pairs[:n]:
        for role, path in zip(scan.roles, pair.paths):
            (root / role / path.name).symlink_to(path.resolve())
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--synthetic", metavar="WxH", help="use synthetic pairs of this size (e.g. 640x480)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--cli-pairs", type=int, default=0, help="also time this many `fusecli fuse` processes")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of loop then batch; medians reported")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    checkpoint = OFFICIAL if OFFICIAL.exists() else None
    model = create_model("auif", checkpoint=checkpoint, weights=None if checkpoint is None else "default",
                         device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.synthetic or not ROADSCENE.exists():
            w, h = map(int, (args.synthetic or "640x480").lower().split("x"))
            data, source = _synthetic(tmp / "data", args.pairs, (w, h)), f"synthetic {w}x{h}"
        else:
            data, source = _subset(ROADSCENE, tmp / "data", args.pairs), "roadscene"
        pairs = scan_pairs(data).pairs
        fuse_files(model, pairs[0].paths, tmp / "warmup.png")  # first-call set-up out of the timings
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        loop_times, batch_times, busy, identical = [], [], [], True
        for _ in range(args.rounds):  # alternate, so a busy spell of the machine hits both
            sync()
            start = time.perf_counter()
            for pair in pairs:
                fuse_files(model, pair.paths, tmp / "loop" / f"{pair.stem}.png")
            sync()
            loop_times.append(time.perf_counter() - start)

            start = time.perf_counter()
            result = run_batch(data, tmp / "batch", model, batch_size=args.batch_size, workers=args.workers,
                               overwrite=True)
            batch_times.append(time.perf_counter() - start)
            assert result.ok, result.failures
            busy.append(sum(r.fuse_s or 0 for r in result.records) / batch_times[-1])
            identical &= all((tmp / "loop" / f"{p.stem}.png").read_bytes()
                             == (tmp / "batch" / f"{p.stem}.png").read_bytes() for p in pairs)
        workers = json.loads(result.manifest.read_text())["options"]["workers"]
        loop_s, batch_s = statistics.median(loop_times), statistics.median(batch_times)

        start = time.perf_counter()
        rerun = run_batch(data, tmp / "batch", model)
        skip_s = time.perf_counter() - start
        assert rerun.counts["skipped"] == len(pairs)

        cli_rate = None
        if args.cli_pairs:
            start = time.perf_counter()
            for pair in pairs[:args.cli_pairs]:
                cmd = [sys.executable, "-m", "fusecli", "fuse", *map(str, pair.paths), "-o",
                       str(tmp / "cli" / f"{pair.stem}.png"), "-d", args.device, "-q"]
                if checkpoint:
                    cmd += ["-c", str(checkpoint)]
                subprocess.run(cmd, check=True)
            cli_rate = args.cli_pairs / (time.perf_counter() - start)

    figures = {
        "source": source, "pairs": len(pairs), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "workers": workers,
        "loop_pairs_per_s": round(len(pairs) / loop_s, 2),
        "batch_pairs_per_s": round(len(pairs) / batch_s, 2),
        "speedup": round(loop_s / batch_s, 2),
        "loop_pairs_per_s_each_round": [round(len(pairs) / t, 2) for t in loop_times],
        "batch_pairs_per_s_each_round": [round(len(pairs) / t, 2) for t in batch_times],
        "model_busy_fraction": round(statistics.median(busy), 3),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "identical_to_fuse": identical,
        "rerun_skip_s": round(skip_s, 2),
        "peak_cuda_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
        "cli_fuse_pairs_per_s": None if cli_rate is None else round(cli_rate, 3),
        "command": " ".join(["python", "benchmarks/bench_batch.py", *sys.argv[1:]]),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
