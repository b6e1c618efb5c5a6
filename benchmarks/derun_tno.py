"""DeRUN's Table 1 TNO metrics for several models side by side on the 42 TNO pairs.

    python benchmarks/derun_tno.py --run derun:checkpoint=runs/derun-ivf/derun.yaml --run derun-admm --run auif

TNO (../shared/datasets/tno) is held out from fusecli's DeRUN training (trained on RoadScene), so
this is a test-set table. Each pair is fused as `fusecli fuse` does it, written as 8-bit PNG to --out
and read back, and scored with fusecli.metrics: the paper's eight metrics (SSIM, PSNR, AG, FMI, VIF,
EN, UIQI, Q_P) that fusecli registers (the others are listed as missing), under the CDDFuse and the
MATLAB conventions by default. The paper's DeRUN row is printed below; it comes from another TNO
subset ("TNO (100 pairs)", after training on 90 other TNO pairs) and an unnamed toolbox.

``--day-night`` also prints the tables of the night pairs and of the day pairs apart: night pairs are
those that ``benchmarks/night_pairs.txt`` lists for a dataset of this folder's name (visible mean
luminance < 80/255), or by stem alone for a folder of another name (e.g. one made by
``split_folder.py``); the means are over each part's pairs.

    python benchmarks/derun_tno.py --convention cddfuse --day-night --run derun --run derun-admm
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from derun_common import PAPER_ROWS, PAPER_SOURCE, _nanmean, available_metrics, fuse_and_score, table, write_json
from ivf_default import night_pairs

from fusecli.pairs import scan_pairs

TNO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tno"


def night_stems(dataset: Path) -> set[str]:
    """The stems of ``dataset``'s night pairs (see the module docstring)."""
    rows = night_pairs()
    own = {stem for name, stem in rows if name == dataset.name.lower()}
    return own or {stem for _, stem in rows}


def restricted(results: Sequence[dict], stems: set[str]) -> list[dict]:
    """The runs' results with their means over ``stems`` only (NaN skipped)."""
    out = []
    for r in results:
        mean = {}
        for c, per_pair in r["per_pair"].items():
            rows = [v for s, v in per_pair.items() if s in stems]
            mean[c] = {m: _nanmean([v[m] for v in rows]) for m in (rows[0] if rows else {})}
        out.append({**r, "mean": mean})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], metavar="SPEC",
                        help="MODEL[:checkpoint=PATH|weights=NAME|fusion=RULE|label=NAME] (repeatable; "
                             "default: derun-admm and auif)")
    parser.add_argument("--dataset", type=Path, default=TNO)
    parser.add_argument("--convention", action="append", default=[],
                        help="metric convention(s) (default: cddfuse and matlab)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N pairs (quick check)")
    parser.add_argument("--out", type=Path, default=Path("runs/derun_tno"), help="fused images go here")
    parser.add_argument("--day-night", action="store_true", help="also the night and the day pairs apart")
    parser.add_argument("--json", type=Path, default=None, help="result file (default: OUT/results.json)")
    args = parser.parse_args()
    runs = args.run or ["derun-admm", "auif"]
    conventions = args.convention or ["cddfuse", "matlab"]
    metrics, missing = available_metrics()

    pairs = scan_pairs(args.dataset).pairs
    if args.limit:
        pairs = pairs[:args.limit]
    results = []
    for i, spec in enumerate(runs):
        print(f"{args.dataset.name}: {len(pairs)} pairs, run {spec}", flush=True)
        results.append(fuse_and_score(spec, pairs, args.out / f"run{i}", conventions, metrics))
    for c in conventions:
        print()
        print(table(f"{args.dataset.name}, {len(pairs)} pairs", results, c, metrics, PAPER_ROWS["tno"],
                    "paper (Table 1, DeRUN)"))
    if args.day_night:
        night = night_stems(args.dataset) & {p.stem for p in pairs}
        for part, stems in (("night", night), ("day", {p.stem for p in pairs} - night)):
            for c in conventions:
                print()
                print(table(f"{args.dataset.name}, the {len(stems)} {part} pairs", restricted(results, stems), c,
                            metrics, None, ""))
    if missing:
        print(f"\nnot in fusecli.metrics (left out): {', '.join(missing)}")
    path = args.json or args.out / "results.json"
    write_json(path, {"dataset": str(args.dataset), "stems": [p.stem for p in pairs], "metrics": metrics,
                      "missing_metrics": missing, "conventions": conventions, "runs": results,
                      "paper": PAPER_ROWS["tno"], "paper_source": PAPER_SOURCE["tno"]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
