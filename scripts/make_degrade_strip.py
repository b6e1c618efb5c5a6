"""Make the example strips of ``docs/degrade.md``: one PNG per degradation kind, clean + levels 1-5.

Visible-light kinds are shown on ``samples/vis_color.png``, the infrared kinds (``stripe``,
``ir-lowcontrast``) on ``samples/ir.png``, ``noise`` and ``lowlight`` on the gray
``samples/vis.png`` (noise does not compress; colour would triple the file). The sample is first
reduced to 40 % (128x96) so that the strips stay small (< 150 KB each), then degraded with seed 0:
the tiles show exactly what ``fusecli degrade`` does to an image of that size. Run from the repository root::

    python scripts/make_degrade_strip.py            # writes docs/degrade/<kind>.png
    python scripts/make_degrade_strip.py --out DIR

Deterministic: running it again gives the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch.nn.functional as F

from fusecli.degrade import LEVELS, degrade, get_kind, list_kinds
from fusecli.io import quantize, read_image

REPO = Path(__file__).resolve().parents[1]
HEADER = 18  # pixels of text above each tile
TILE = (96, 128)  # (height, width) of each tile: the 320x240 sample reduced to 40 %
GRAY = ("noise", "lowlight")  # noise does not compress: these two are shown on the gray sample
GAP = 2

# the parameter shown under each level, per kind: (table key, format)
SHOWN = {
    "haze": ("transmission", "t={:.2f}"),
    "rain": ("density", "{:.0f}/1e4px"),
    "lowlight": ("exposure", "x{:.2f}"),
    "noise": ("sigma", "s={:.2f}"),
    "defocus": ("radius", "r={:.0f}px"),
    "motion": ("length", "{:.0f}px"),
    "jpeg": ("quality", "q={:.0f}"),
    "contrast": ("factor", "c={:.2f}"),
    "stripe": ("offset_sigma", "s={:.1f}/255"),
    "ir-lowcontrast": ("factor", "c={:.2f}"),
}


def _tile_rgb(tensor) -> np.ndarray:
    """(1, C, H, W) float in [0, 1] -> (H, W, 3) uint8 RGB."""
    u8 = quantize(tensor, 8)
    return np.repeat(u8[:, :, None], 3, axis=2) if u8.ndim == 2 else u8


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    band = np.full((HEADER, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (3, HEADER - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, tile], axis=0)


def make_strip(kind: str) -> np.ndarray:
    entry = get_kind(kind)
    sample = "ir.png" if entry.modality == "infrared" else "vis.png" if kind in GRAY else "vis_color.png"
    image, _ = read_image(REPO / "samples" / sample)
    image = F.interpolate(image, size=TILE, mode="area")
    key, fmt = SHOWN[kind]
    tiles = [_label(_tile_rgb(image), "clean")]
    for level in range(1, 6):
        out = degrade(image, kind, level, seed=0, name=Path(sample).stem)
        value = LEVELS[kind][key][level - 1] * (255 if kind == "stripe" else 1)
        tiles.append(_label(_tile_rgb(out), f"{level}: {fmt.format(value)}"))
    gap = np.full((tiles[0].shape[0], GAP, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    return np.concatenate(row, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "degrade")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in list_kinds():
        strip = make_strip(kind)
        path = args.out / f"{kind}.png"
        ok, data = cv2.imencode(".png", np.ascontiguousarray(strip[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok
        path.write_bytes(data.tobytes())
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {len(data) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
