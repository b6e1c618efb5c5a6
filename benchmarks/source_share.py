"""How much of each source a fused image carries: a check that a "fusion" is not one source copied.

    python benchmarks/source_share.py FUSED_DIR [FUSED_DIR ...] --sources DATASET

For every fused image (matched to its pair in ``DATASET`` by stem, as ``fusecli metrics`` does) and
the luminance of its two sources A, B (``fusecli.train.data.load_luma``: BT.601 Y, in [0, 1]):

* ``|F-A|``, ``|F-B|``: mean absolute difference, in 8-bit grey levels;
* ``detail A``, ``detail B``: the least-squares coefficients of the fused image's detail on the two
  sources' details, ``hp(F) ≈ a·hp(A) + b·hp(B)``, where ``hp(x) = x - GaussianBlur(x, σ=2)``.
  A fusion that keeps the texture of both has both clearly above 0 (the per-pixel average: 0.5 and
  0.5); an output that is source A with a little of B has ``a ≈ 1, b ≈ 0``.

The eight Table-1 metrics of DeRUN under the CDDFuse convention do not see this: on RoadScene the
infrared image itself scores above ``derun-admm`` on 7 of them (README, *DeRUN from its algorithm*).
Means over the images are printed, one row per folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fusecli.io import list_images
from fusecli.pairs import scan_pairs
from fusecli.train.data import load_luma


def luma(path: Path) -> np.ndarray:
    """(H, W) float64 luminance in [0, 1] of an image file (the training code's reader)."""
    return load_luma(path)[0].numpy().astype(np.float64)


def detail(x: np.ndarray) -> np.ndarray:
    return x - cv2.GaussianBlur(x, (0, 0), 2.0)


def share(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """``(|F-A|, |F-B|`` in grey levels, detail coefficient of A, of B``)``."""
    design = np.stack([detail(a).ravel(), detail(b).ravel()], axis=1)
    coef = np.linalg.lstsq(design, detail(fused).ravel(), rcond=None)[0]
    return float(np.abs(fused - a).mean() * 255), float(np.abs(fused - b).mean() * 255), float(coef[0]), float(coef[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fused", type=Path, nargs="+", help="folders of fused images named like their pairs")
    parser.add_argument("--sources", type=Path, required=True, help="the dataset folder (role sub-folders)")
    args = parser.parse_args()
    pairs = {p.stem: p for p in scan_pairs(args.sources).pairs}
    print("| fused | images | abs(F-A) | abs(F-B) | detail A | detail B |")
    print("|---|---|---|---|---|---|")
    for folder in args.fused:
        rows = []
        for path in list_images(folder):
            pair = pairs.get(path.stem)
            if pair is None:
                continue
            rows.append(share(luma(path), luma(pair.paths[0]), luma(pair.paths[1])))
        if not rows:
            raise SystemExit(f"{folder}: no image matches a pair of {args.sources}")
        m = np.mean(rows, axis=0)
        print(f"| {folder} | {len(rows)} | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} | {m[3]:.2f} |")


if __name__ == "__main__":
    main()
