"""Day and night: the ir-vis models against the classical rules (the acceptance run of the default).

Three test sets, none of them trained on:

* ``tno42``: the 42 TNO pairs (``DATA/tno``);
* ``night``: the night pairs of TNO and RoadScene listed in ``benchmarks/night_pairs.txt`` (visible
  mean luminance < 80/255; ``--write-night`` remakes the list from the data);
* ``lowlight``: RoadScene's held-out pairs (``fusecli.train.splits.roadscene_split``) with the visible
  image darkened by ``fusecli degrade --kind lowlight`` at levels 1-5 (seed 0), scored against the
  clean sources, as ``fusecli robustness`` scores them.

For every model and set it prints the mean of the basket EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM
(CDDFuse convention, gray of the saved 8-bit image), how many of the nine a model wins against
``average`` and ``laplacian``, and the number of fused images whose mean luminance is below the
darker source's (the sources the model was given). Results are cached per (set, model, weights) in
``--out`` under :func:`fusecli.runs.model_identity` (weights and config), so a rerun with new
weights or settings recomputes only that model.

    python benchmarks/ivf_default.py --models auif-fusion,auif,average,max,laplacian --out runs/ivf-eval
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fusecli import create_model
from fusecli.color import split_luma
from fusecli.degrade import degrade
from fusecli.inference import fuse_images
from fusecli.io import quantize, read_image, write_text_atomic
from fusecli.metrics import evaluate, get_metric
from fusecli.metrics.report import rgb_to_gray
from fusecli.pairs import scan_pairs
from fusecli.runs import model_identity
from fusecli.train.splits import select_pairs

BASKET = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")
NIGHT_FILE = Path(__file__).with_name("night_pairs.txt")
NIGHT_LIMIT = 80.0  # visible mean luminance (0..255) below which a pair is a night pair


def night_pairs() -> list[tuple[str, str]]:
    """(dataset, stem) of every pair in :data:`NIGHT_FILE`."""
    rows = [line.split() for line in NIGHT_FILE.read_text().splitlines() if line and not line.startswith("#")]
    return [(row[0], row[1]) for row in rows]


def gray_255(image: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [0, 1] -> (H, W) gray levels of its 8-bit version (CDDFuse's rule for colour)."""
    samples = quantize(image.detach().cpu(), 8).astype(np.float64)
    return samples if samples.ndim == 2 else rgb_to_gray(samples, "cddfuse")


def luma_mean(image: torch.Tensor) -> float:
    return float(split_luma(image)[0].mean()) * 255


def write_night(data: Path) -> None:
    """Measure the visible mean luminance of every TNO and RoadScene pair and write the night list."""
    lines = [f"# night pairs: visible mean luminance (BT.601 Y, 0..255) < {NIGHT_LIMIT:g}",
             "# made by: python benchmarks/ivf_default.py --write-night --data DATA",
             "# dataset stem visible_mean infrared_mean"]
    for name in ("tno", "roadscene"):
        for pair in scan_pairs(data / name).pairs:
            ir, vis = (read_image(p)[0] for p in pair.paths)
            v = luma_mean(vis)
            if v < NIGHT_LIMIT:
                lines.append(f"{name} {pair.stem} {v:.1f} {luma_mean(ir):.1f}")
    write_text_atomic(NIGHT_FILE, "\n".join(lines) + "\n")
    print(f"wrote {NIGHT_FILE} ({len(lines) - 3} pairs)")


def test_sets(data: Path) -> dict[str, list[tuple[str, list[Path], int]]]:
    """``{set: [(name, [ir, vis], lowlight level), ...]}``."""
    sets: dict[str, list[tuple[str, list[Path], int]]] = {}
    sets["tno42"] = [(p.stem, list(p.paths), 0) for p in scan_pairs(data / "tno").pairs]
    night = night_pairs()
    by_set = {name: {p.stem: p for p in scan_pairs(data / name).pairs} for name in {n[0] for n in night}}
    sets["night"] = [(f"{d}/{s}", list(by_set[d][s].paths), 0) for d, s, *_ in night]
    held = select_pairs(data / "roadscene", scan_pairs(data / "roadscene").pairs, "test")
    for level in range(1, 6):
        sets[f"lowlight{level}"] = [(p.stem, list(p.paths), level) for p in held]
    return sets


def evaluate_model(model, items, cache: Path) -> dict[str, dict[str, float]]:
    """Per-pair basket + brightness of one model on one set (cached)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(cache.read_text()) if cache.is_file() else {}
    for name, paths, level in items:
        if name in rows:
            continue
        clean = [read_image(p)[0] for p in paths]
        given = list(clean)
        if level:
            given[1] = degrade(clean[1], "lowlight", level, seed=0, name=Path(paths[1]).stem)
        with torch.inference_mode():
            fused = fuse_images(model, given)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = evaluate(gray_255(fused), [gray_255(c) for c in clean], names=list(BASKET), convention="cddfuse")
        row = {m: float(v[0]) for m, v in values.items()}
        row["fused_mean"] = luma_mean(fused)
        row["darker_source_mean"] = min(luma_mean(g) for g in given)
        rows[name] = row
        write_text_atomic(cache, json.dumps(rows, indent=1))
    return {name: rows[name] for name, _, _ in items}


def summarise(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {m: float(np.nanmean([r[m] for r in rows.values()])) for m in BASKET}
    out["darker"] = sum(r["fused_mean"] < r["darker_source_mean"] for r in rows.values())
    out["fused_mean"] = float(np.mean([r["fused_mean"] for r in rows.values()]))
    out["darker_source_mean"] = float(np.mean([r["darker_source_mean"] for r in rows.values()]))
    return out


def wins(a: dict[str, float], b: dict[str, float]) -> int:
    """Metrics of the basket on which mean ``a`` is better than mean ``b``."""
    n = 0
    for m in BASKET:
        better = a[m] > b[m] if get_metric(m).higher_is_better else a[m] < b[m]
        n += bool(better) and not math.isnan(a[m])
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets"), help="folder with tno/ and roadscene/")
    ap.add_argument("--models", default="auif-fusion,auif,average,max,laplacian",
                    help="comma-separated; LABEL=NAME:CHECKPOINT for other weights, e.g. "
                         "auif-official=auif:../shared/checkpoints/official/auif")
    ap.add_argument("--sets", default="tno42,night,lowlight1,lowlight2,lowlight3,lowlight4,lowlight5")
    ap.add_argument("--limit", type=int, default=0, help="first N pairs of each set (0: all)")
    ap.add_argument("--out", type=Path, default=Path("runs/ivf-eval"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--write-night", action="store_true", help="remake benchmarks/night_pairs.txt and exit")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.write_night:
        write_night(args.data)
        return
    sets = test_sets(args.data)
    chosen = [s.strip() for s in args.sets.split(",") if s.strip()]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for spec in [m.strip() for m in args.models.split(",") if m.strip()]:
        label, _, rest = spec.partition("=")
        name, _, ckpt = (rest or label).partition(":")
        model = create_model(name, checkpoint=ckpt or None)
        tag = hashlib.sha256(model_identity(model).encode()).hexdigest()[:10]
        for s in chosen:
            items = sets[s][:args.limit] if args.limit else sets[s]
            t0 = time.perf_counter()
            rows = evaluate_model(model, items, args.out / "cache" / f"{s}__{label}__{tag}.json")
            results.setdefault(s, {})[label] = summarise(rows)
            print(f"{label:>16} {s:>10}: {len(items)} pairs, {time.perf_counter() - t0:.0f} s", flush=True)
    lines = []
    for s in chosen:
        table = results[s]
        lines.append(f"\n{s} ({len(sets[s][:args.limit] if args.limit else sets[s])} pairs)")
        lines.append(f"| model | {' | '.join(BASKET)} | wins vs average | wins vs laplacian | fused mean | "
                     f"darker-source mean | images darker than the darker source |")
        lines.append("|" + "---|" * (len(BASKET) + 6))
        for label, r in table.items():
            w_avg = wins(r, table["average"]) if "average" in table and label != "average" else "-"
            w_lap = wins(r, table["laplacian"]) if "laplacian" in table and label != "laplacian" else "-"
            vals = " | ".join(f"{r[m]:.4g}" for m in BASKET)
            lines.append(f"| {label} | {vals} | {w_avg} | {w_lap} | {r['fused_mean']:.1f} | "
                         f"{r['darker_source_mean']:.1f} | {r['darker']} |")
    levels = [s for s in chosen if s.startswith("lowlight")]
    if len(levels) > 1:  # the sweep in one table: mean over the levels, and the wins level by level
        lines.append(f"\nlowlight sweep, mean of levels {', '.join(s[8:] for s in levels)} "
                     f"(wins vs average / laplacian per level)")
        lines.append(f"| model | {' | '.join(BASKET)} | wins vs average | wins vs laplacian | "
                     f"images darker than the darker source |")
        lines.append("|" + "---|" * (len(BASKET) + 4))
        for label in results[levels[0]]:
            mean = {m: float(np.mean([results[s][label][m] for s in levels])) for m in BASKET}
            per = lambda ref: "/".join(str(wins(results[s][label], results[s][ref])) for s in levels) \
                if ref in results[levels[0]] and label != ref else "-"
            darker = sum(results[s][label]["darker"] for s in levels)
            lines.append(f"| {label} | {' | '.join(f'{mean[m]:.4g}' for m in BASKET)} | {per('average')} | "
                         f"{per('laplacian')} | {darker} |")
    text = "\n".join(lines)
    print(text)
    write_text_atomic(args.out / "summary.md", text + "\n")
    write_text_atomic(args.out / "summary.json", json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
