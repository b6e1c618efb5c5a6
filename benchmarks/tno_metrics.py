"""Fuse the 42 TNO pairs of ../shared/datasets/tno and report EN, SD, SF, AG of the fused images.

Compares checkpoints side by side (the README's AUIF table comes from this script):

    python benchmarks/tno_metrics.py --weights default --checkpoint ../shared/checkpoints/official/auif

Fused images are written as 8-bit PNG (round(255 x), as the AUIF authors write them) to --out and
read back, so the metrics see exactly the files a user gets. Metrics are computed under both the
CDDFuse (Python) and the MATLAB conventions (they differ in SF/AG normalisation only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fusecli import create_model, fuse_files, read_image
from fusecli.io import list_images
from fusecli.metrics import evaluate_arrays

METRICS = ["EN", "SD", "SF", "AG"]


def evaluate_model(model, dataset: Path, out: Path) -> dict[str, dict[str, float]]:
    out.mkdir(parents=True, exist_ok=True)
    per_convention: dict[str, list[dict[str, float]]] = {"cddfuse": [], "matlab": []}
    for ir in list_images(dataset / "ir"):
        vis = dataset / "vis" / ir.name
        target = out / f"{ir.stem}.png"
        fuse_files(model, [ir, vis], target)
        fused, _ = read_image(target)
        gray = np.rint(fused[0, 0].numpy() * 255)
        for convention, rows in per_convention.items():
            rows.append(evaluate_arrays(gray, None, METRICS, convention))
    return {c: {m: float(np.mean([r[m] for r in rows])) for m in METRICS} for c, rows in per_convention.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/tno")
    parser.add_argument("--model", default="auif")
    parser.add_argument("--weights", action="append", default=[], help="weights card name(s), e.g. default")
    parser.add_argument("--checkpoint", action="append", default=[], type=Path, help="checkpoint file/folder(s)")
    parser.add_argument("--fusion", help="override the model's fusion rule "
                        "(AUIF: sum, average, l1; cscfuse-ivf: saliency, l1, average, add)")
    parser.add_argument("--out", type=Path, default=Path("runs/tno_metrics"))
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args()

    runs = [(f"weights:{w}", dict(weights=w)) for w in args.weights]
    runs += [(f"checkpoint:{c}", dict(checkpoint=c)) for c in args.checkpoint]
    results = {}
    for i, (label, kwargs) in enumerate(runs):
        model = create_model(args.model, device="cpu", fusion=args.fusion, **kwargs)
        results[label] = evaluate_model(model, args.dataset, args.out / f"run{i}")
        results[label]["weights_info"] = model.weights_info
    n = len(list_images(args.dataset / "ir"))
    print(f"{args.model} on {n} pairs of {args.dataset}")
    for convention in ("cddfuse", "matlab"):
        print(f"\nconvention {convention}")
        print(f"| weights | {' | '.join(METRICS)} |")
        print(f"|---|{'---|' * len(METRICS)}")
        for label, res in results.items():
            print(f"| {label} | {' | '.join(f'{res[convention][m]:.3f}' for m in METRICS)} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
