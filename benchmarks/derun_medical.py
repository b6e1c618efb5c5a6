"""DeRUN's Table 2 (PMF and SMF) on the held-out split of harvard_mri_pet and harvard_mri_spect.

    python benchmarks/derun_medical.py --run derun:checkpoint=runs/derun-med/derun.yaml --run derun-admm

The held-out pairs are fusecli.train.splits' fixed split (every 5th sorted stem: 53 MRI-PET and
71 MRI-SPECT pairs), the ones `fusecli train derun --split auto|train` leaves out. Each pair is fused
as `fusecli fuse` does it (model inputs: PET/SPECT first, MRI second; the PET/SPECT Y is fused and
its Cb/Cr put back), written as 8-bit PNG to --out and read back, and scored against its two
sources with fusecli.metrics (fused and PET/SPECT converted to gray as the convention's toolbox
does). Metrics: those of the paper's eight (SSIM, PSNR, AG, FMI, VIF, EN, UIQI, Q_P) that
fusecli.metrics registers; the others are listed as missing. The paper's DeRUN rows are printed
below for comparison; its test sets (200 / 250 pairs) and toolbox differ from these.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from derun_common import PAPER_ROWS, PAPER_SOURCE, available_metrics, fuse_and_score, table, write_json

from fusecli.pairs import scan_pairs
from fusecli.train.splits import HELD_OUT_EVERY, select_pairs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = {"mri_pet": "harvard_mri_pet", "mri_spect": "harvard_mri_spect"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], metavar="SPEC",
                        help="MODEL[:checkpoint=PATH|weights=NAME|fusion=RULE|label=NAME] (repeatable; "
                             "default: derun-admm)")
    parser.add_argument("--datasets", type=Path, default=SHARED,
                        help="folder holding harvard_mri_pet/ and harvard_mri_spect/")
    parser.add_argument("--convention", action="append", default=[],
                        help="metric convention(s) (default: cddfuse and matlab)")
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N held-out pairs of each set (quick check)")
    parser.add_argument("--out", type=Path, default=Path("runs/derun_medical"), help="fused images go here")
    parser.add_argument("--json", type=Path, default=None, help="result file (default: OUT/results.json)")
    args = parser.parse_args()
    runs = args.run or ["derun-admm"]
    conventions = args.convention or ["cddfuse", "matlab"]
    metrics, missing = available_metrics()

    report: dict = {"split": f"held-out part of fusecli.train.splits (every {HELD_OUT_EVERY}th sorted stem)",
                    "metrics": metrics, "missing_metrics": missing, "conventions": conventions, "tasks": {}}
    for task, folder in DATASETS.items():
        dataset = args.datasets / folder
        pairs = select_pairs(dataset, scan_pairs(dataset).pairs, "test")
        if args.limit:
            pairs = pairs[:args.limit]
        results = []
        for i, spec in enumerate(runs):
            print(f"{folder}: {len(pairs)} held-out pairs, run {spec}", flush=True)
            results.append(fuse_and_score(spec, pairs, args.out / folder / f"run{i}", conventions, metrics))
        report["tasks"][task] = {"dataset": str(dataset), "stems": [p.stem for p in pairs], "runs": results,
                                 "paper": PAPER_ROWS[task], "paper_source": PAPER_SOURCE[task]}
        for c in conventions:
            print()
            print(table(f"{folder}, {len(pairs)} held-out pairs", results, c, metrics, PAPER_ROWS[task],
                        "paper (Table 2)"))
        print()
    if missing:
        print(f"not in fusecli.metrics (left out): {', '.join(missing)}")
    path = args.json or args.out / "results.json"
    write_json(path, report)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
