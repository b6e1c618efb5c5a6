"""MEF-SSIM on the 20 held-out MEFB scenes: CSC-MEF (official checkpoint, or any weights) against
OpenCV's Mertens exposure fusion (``cv2.createMergeMertens``) as the classical baseline.

    python benchmarks/mef_baseline.py --checkpoint ../shared/checkpoints/official/cscfuse/CSC-MEF
    python benchmarks/mef_baseline.py --weights cscfuse-mef.mefb          # the shipped weights
    python benchmarks/mef_baseline.py --checkpoint ... --csv runs/mef_baseline.csv

Scenes: the held-out part of :func:`fusecli.train.splits.mefb_split` (every 5th sorted scene name,
20 of 100; the 80 others are for ``fusecli train cscfuse-mef``). Each scene is the ``under`` /
``over`` pair of ``../shared/datasets/mefb``. Fused images are rounded to 8 bits as ``fusecli
fuse`` writes them. Score: MEF-SSIM (Ma et al. 2015, single scale,
:func:`fusecli.metrics.mef_ssim.mef_ssim`) on the BT.601 luma (0-255) of the fused image against the
lumas of the two exposures; mean over the scenes. ``--full`` adds MEF-MS-SSIM (3 scales, what
MEFB's ``metricsMEF_SSIM`` reports) and CSC-MEF's output before the official 0.5 % / 99.5 %
stretch ("no stretch": ``model.blend``, clamped).

Note: CSC-MEF was trained to maximise MEF-MS-SSIM (on other data, SICE), which favours it here.
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fusecli import create_model, resolve_device
from fusecli.color import rgb_to_y
from fusecli.inference import fuse_images
from fusecli.io import quantize, read_image, write_text_atomic
from fusecli.metrics.mef_ssim import mef_ms_ssim, mef_ssim
from fusecli.pairs import scan_pairs
from fusecli.train.splits import mefb_split

MEFB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mefb"


def _luma255(rgb_u8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 1, H, W) float64 BT.601 luma on 0-255."""
    t = torch.from_numpy(rgb_u8.astype(np.float32) / 255).permute(2, 0, 1)[None]
    return rgb_to_y(t).double() * 255


def mertens(under: torch.Tensor, over: torch.Tensor) -> np.ndarray:
    """OpenCV's Mertens exposure fusion of two (1, 3, H, W) [0, 1] images -> (H, W, 3) uint8 RGB."""
    images = [quantize(x, 8)[:, :, ::-1].copy() for x in (under, over)]  # BGR uint8, as OpenCV expects
    fused = cv2.createMergeMertens().process(images)
    return np.ascontiguousarray(np.rint(np.clip(fused, 0, 1) * 255).astype(np.uint8)[:, :, ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="CSC-MEF checkpoint (official best_net.pth or fusecli's)")
    parser.add_argument("--weights", help="name of a weights card in weights/ (instead of --checkpoint)")
    parser.add_argument("--data", type=Path, default=MEFB)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--csv", type=Path, help="also write the per-scene scores here")
    parser.add_argument("--full", action="store_true", help="also score CSC-MEF without the stretch, and "
                        "MEF-MS-SSIM (three times slower)")
    args = parser.parse_args()
    if not args.checkpoint and not args.weights:
        parser.error("pass --checkpoint or --weights")

    dev = resolve_device(args.device)
    model = create_model("cscfuse-mef", checkpoint=args.checkpoint, weights=args.weights, device=dev)
    pairs = {p.stem: p for p in scan_pairs(args.data, ("under", "over")).pairs}
    _, held_out = mefb_split(pairs)
    rows = []
    methods = ("cscfuse-mef", "raw", "mertens") if args.full else ("cscfuse-mef", "mertens")
    titles = {"cscfuse-mef": "CSC-MEF", "raw": "CSC-MEF, no stretch", "mertens": "Mertens"}
    metrics = ("MEF-SSIM", "MEF-MS-SSIM") if args.full else ("MEF-SSIM",)
    columns = [(m, k) for k in metrics for m in methods]
    print("| scene | size | " + " | ".join(f"{titles[m]} {k}" for m, k in columns) + " | CSC-MEF s |")
    print("|---" * (len(columns) + 3) + "|")
    for stem in held_out:
        (under, _), (over, _) = (read_image(p) for p in pairs[stem].paths)
        start = time.perf_counter()
        fused = quantize(fuse_images(model, [under, over]).cpu(), 8)
        seconds = time.perf_counter() - start
        images = {"cscfuse-mef": fused, "mertens": mertens(under, over)}
        if args.full:
            with torch.inference_mode():  # the network's own output, before the official 0.5/99.5 % stretch
                images["raw"] = quantize(model.blend(under.to(dev), over.to(dev)).clamp(0, 1).cpu(), 8)
        sources = [_luma255(quantize(x, 8) if x.shape[1] == 3 else np.repeat(quantize(x, 8)[..., None], 3, 2))
                   for x in (under, over)]
        h, w = under.shape[-2:]
        row = {"scene": stem, "width": w, "height": h}
        for m, k in columns:
            y = _luma255(images[m])
            row[f"{m} {k}"] = float((mef_ssim if k == "MEF-SSIM" else mef_ms_ssim)(y, sources)[0])
        row["cscfuse_seconds"] = seconds
        rows.append(row)
        print(f"| {stem} | {w}x{h} | " + " | ".join(f"{row[f'{m} {k}']:.4f}" for m, k in columns)
              + f" | {seconds:.1f} |", flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("scene", "width", "height")}
    print(f"| **mean of {len(rows)}** | | " + " | ".join(f"{mean[f'{m} {k}']:.4f}" for m, k in columns)
          + f" | {mean['cscfuse_seconds']:.1f} |")
    print(f"weights: {model.weights_info}")
    if args.csv:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.csv, text.getvalue())


if __name__ == "__main__":
    main()
