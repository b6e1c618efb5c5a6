"""Which output does a training loss prefer? Its terms on simple candidate outputs of real pairs.

    python benchmarks/loss_ranking.py ../shared/datasets/roadscene --split val --limit 8

For the first ``--limit`` pairs of a split (``fusecli.train.splits``; ``val`` by default, never a
test pair) and their luminances U (first role: infrared / PET / SPECT) and V (second role: visible /
MRI), in [0, 1], the candidates

* ``U``, ``V``, ``average``, ``max`` (per pixel);
* ``derun-admm``: the classical solver's output, DeRUN's untrained start;
* ``U + detail(V)``: the infrared image with the visible detail layer added
  (``detail(x) = x - GaussianBlur(x, σ=2)``, as ``source_share.py``);
* ``blur(U) + maxabs``: U's base layer with, per pixel, the larger-magnitude detail of the two;

are scored with the terms of DeRUN's training options (``fusecli.train.recipes``): ``intensity``
``L1(X, max(U, V))``, ``gradient`` ``L1(|Sobel X|, max(|Sobel U|, |Sobel V|))``, ``ssim``
``(ssim_loss(X, U) + ssim_loss(X, V)) / 2``, and eq. 14's ``pixel`` ``MSE(X, U)`` and ``lgde``. Means
over the pairs; the lowest value of each term is the candidate that term pulls the network to.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from source_share import detail

from fusecli.losses import lgde_loss, ssim_loss
from fusecli.models import create_model
from fusecli.pairs import scan_pairs
from fusecli.train.data import load_luma
from fusecli.train.recipes import intensity_gradient_loss
from fusecli.train.splits import select_pairs

TERMS = ("intensity", "gradient", "ssim", "pixel", "lgde")


def _detail(x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(detail(x[0, 0].double().numpy())).float()[None, None]


def candidates(u: torch.Tensor, v: torch.Tensor, admm: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The candidate outputs for one pair; u, v: (1, 1, H, W) in [0, 1]."""
    du, dv = _detail(u), _detail(v)
    with torch.no_grad():
        solver = admm(u, v).clamp(0, 1)
    return {
        "U": u, "V": v, "average": (u + v) / 2, "max": torch.maximum(u, v), "derun-admm": solver,
        "U + detail(V)": (u + dv).clamp(0, 1),
        "blur(U) + maxabs": (u - du + torch.where(du.abs() >= dv.abs(), du, dv)).clamp(0, 1),
    }


def terms(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> dict[str, float]:
    """The unweighted loss terms of DeRUN's training options for output x."""
    _, ig = intensity_gradient_loss(x, u, v)
    return {**ig, "ssim": float((ssim_loss(x, u) + ssim_loss(x, v)) / 2),
            "pixel": float(torch.mean((x - u) ** 2)), "lgde": float(lgde_loss(x, v))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="dataset folder with role sub-folders")
    parser.add_argument("--split", default="val", help="part of the dataset's fixed split (default: val)")
    parser.add_argument("--limit", type=int, default=8, help="first N pairs of the part (0: all)")
    args = parser.parse_args()
    pairs = select_pairs(args.dataset, scan_pairs(args.dataset).pairs, args.split)
    pairs = pairs[:args.limit] if args.limit else pairs
    admm = create_model("derun-admm")
    rows: dict[str, list[list[float]]] = {}
    for pair in pairs:
        u, v = load_luma(pair.paths[0])[None], load_luma(pair.paths[1])[None]
        for name, x in candidates(u, v, admm).items():
            t = terms(x, u, v)
            rows.setdefault(name, []).append([t[k] for k in TERMS])
    print(f"{args.dataset.name}, {len(pairs)} pairs of the {args.split} part; lowest of each term in bold\n")
    means = {name: np.mean(r, axis=0) for name, r in rows.items()}
    best = np.min(np.stack(list(means.values())), axis=0)
    print("| candidate | " + " | ".join(TERMS) + " |")
    print("|---|" + "---|" * len(TERMS))
    for name, m in means.items():
        cells = [f"**{x:.4f}**" if x == b else f"{x:.4f}" for x, b in zip(m, best)]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
