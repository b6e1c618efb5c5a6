"""Evaluate the FRUFN / EFRUFN gradient-transfer stages on datasets without references.

* stage 1 (``mfif``) on ``../shared/datasets/mfifb`` (near/ + far/; the Lytro subset ``lytro_*``
  reported separately, the paper's Table 1 is on 22 Lytro pairs);
* stage 2 (``meif``) on ``mefb`` (under/ + over/; paper Table 2 is on SICE, with references);
* stage 2 on ``harvard_mri_ct`` and ``harvard_mri_spect`` (generalisation, §4.5, paper Table 4,
  20 random pairs each in the paper; the held-out fifth of fusecli's fixed split here by default).

Metrics: EN, MI, SCD, MS-SSIM (+ MEF-SSIM for multi-exposure) from :mod:`fusecli.metrics`
(CDDFuse conventions) on the fused luminance rounded to 8 bits, against the sources' BT.601
luminance rounded to 8 bits. Note that the paper's MI is about twice its EN (e.g. 13.80 vs 6.90),
so its MI code differs from the common MI(A,F) + MI(B,F): compare MI with care.

    python benchmarks/frufn_stages.py --model frufn --run runs/frufn            # OUT of fusecli train
    python benchmarks/frufn_stages.py --model efrufn --mfif a.yaml --meif b.yaml --limit 10
    python benchmarks/frufn_stages.py --model efrufn --meif weights/efrufn.meif.yaml --only harvard_mri_ct,harvard_mri_spect --limit 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fusecli import create_model, fuse_images, read_image
from fusecli.color import split_luma
from fusecli.metrics import evaluate_arrays
from fusecli.pairs import scan_pairs
from fusecli.train.splits import has_fixed_split, select_pairs

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
METRICS = ["EN", "MI", "SCD", "MS-SSIM"]

#: the paper's Tables 1, 2 and 4 (Wang et al., TPAMI 2026): (dataset, model) -> metrics
PAPER = {
    ("mfifb (Lytro)", "frufn"): {"MS-SSIM": 0.9938, "EN": 7.4943, "MI": 14.9887, "SCD": 0.6858},
    ("mfifb (Lytro)", "efrufn"): {"MS-SSIM": 0.9937, "EN": 7.4943, "MI": 14.9887, "SCD": 0.6768},
    ("mefb", "frufn"): {"MEF-SSIM": 0.7280, "note": "SICE, 27 pairs, with references (Table 2)"},
    ("mefb", "efrufn"): {"MEF-SSIM": 0.7305, "note": "SICE, 27 pairs, with references (Table 2)"},
    ("harvard_mri_spect", "frufn"): {"MS-SSIM": 0.9328, "EN": 5.0450, "MI": 10.0901, "SCD": 1.2293},
    ("harvard_mri_spect", "efrufn"): {"MS-SSIM": 0.9583, "EN": 5.2384, "MI": 10.4769, "SCD": 1.4471},
    ("harvard_mri_ct", "frufn"): {"MS-SSIM": 0.9112, "EN": 5.2384, "MI": 10.4768, "SCD": 1.0985},
    ("harvard_mri_ct", "efrufn"): {"MS-SSIM": 0.9415, "EN": 4.8855, "MI": 9.7711, "SCD": 1.3487},
}


def _luma255(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    image, _ = read_image(path)
    y = split_luma(image)[0]
    return y, np.rint(y[0, 0].numpy() * 255)


def evaluate_pairs(model, pairs, metrics: list[str]) -> tuple[dict[str, float], float]:
    """Mean metrics over ``pairs`` and mean seconds per pair (fusion only)."""
    rows, seconds = [], 0.0
    for pair in pairs:
        (ya, a), (yb, b) = _luma255(pair.paths[0]), _luma255(pair.paths[1])
        t0 = time.perf_counter()
        with torch.no_grad():
            fused = fuse_images(model, [ya, yb], gray=True)
        seconds += time.perf_counter() - t0
        rows.append(evaluate_arrays(np.rint(fused[0, 0].numpy() * 255), [a, b], metrics))
    return {m: float(np.mean([r[m] for r in rows])) for m in metrics}, seconds / max(1, len(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["frufn", "efrufn"], default="frufn")
    parser.add_argument("--run", type=Path, help="run folder of `fusecli train MODEL --stages ...` (OUT)")
    parser.add_argument("--mfif", type=Path, help="stage-1 weights or card (default RUN/mfif/MODEL.mfif.yaml)")
    parser.add_argument("--meif", type=Path, help="stage-2 weights or card (default RUN/meif/MODEL.meif.yaml)")
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--limit", type=int, help="at most this many pairs per dataset (sorted by stem)")
    parser.add_argument("--harvard-part", choices=["held-out", "all"], default="held-out",
                        help="Harvard pairs: the held-out fifth of fusecli's fixed split, or all")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--only", help="comma-separated dataset labels to run (e.g. harvard_mri_ct,harvard_mri_spect)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    weights = {s: getattr(args, s) or (args.run / s / f"{args.model}.{s}.yaml" if args.run else None)
               for s in ("mfif", "meif")}
    jobs = []  # (label, stage, dataset folder, roles, metrics, pair filter)
    if weights["mfif"]:
        jobs += [("mfifb", "mfif", "mfifb", ("near", "far"), METRICS, None),
                 ("mfifb (Lytro)", "mfif", "mfifb", ("near", "far"), METRICS, "lytro_")]
    if weights["meif"]:
        jobs += [("mefb", "meif", "mefb", ("under", "over"), METRICS + ["MEF-SSIM"], None),
                 ("harvard_mri_ct", "meif", "harvard_mri_ct", ("ct", "mri"), METRICS, "harvard"),
                 ("harvard_mri_spect", "meif", "harvard_mri_spect", ("spect", "mri"), METRICS, "harvard")]
    if args.only:
        wanted = {x.strip() for x in args.only.split(",") if x.strip()}
        unknown = wanted - {job[0] for job in jobs}
        if unknown:
            parser.error(f"--only: unknown label(s) {', '.join(sorted(unknown))}")
        jobs = [job for job in jobs if job[0] in wanted]
        weights = {s: w for s, w in weights.items() if any(job[1] == s for job in jobs)}
    if not jobs:
        parser.error("pass --run or --mfif / --meif")

    models = {s: create_model(args.model, checkpoint=w) for s, w in weights.items() if w}
    results = {}
    for label, stage, folder, roles, metrics, which in jobs:
        root = args.datasets / folder
        pairs = scan_pairs(root, roles).pairs
        if which == "harvard" and args.harvard_part == "held-out" and has_fixed_split(root):
            train = {p.stem for p in select_pairs(root, pairs, "train")}
            pairs = [p for p in pairs if p.stem not in train]
        elif which:
            pairs = [p for p in pairs if p.stem.startswith(which)]
        pairs = pairs[: args.limit] if args.limit else pairs
        means, sec = evaluate_pairs(models[stage], pairs, metrics)
        results[label] = {"stage": stage, "weights": models[stage].weights_info, "pairs": len(pairs),
                          "seconds_per_pair": round(sec, 2), **{m: round(v, 4) for m, v in means.items()}}
        paper = PAPER.get((label, args.model), {})
        cells = " | ".join(f"{m} {means[m]:.4f}" + (f" (paper {paper[m]})" if m in paper else "") for m in metrics)
        print(f"{label:20s} stage {stage}, {len(pairs)} pairs, {sec:.2f} s/pair: {cells}", flush=True)
        results[label]["paper"] = paper
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
