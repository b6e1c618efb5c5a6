"""Shared by benchmarks/derun_tno.py and benchmarks/derun_medical.py: model specs, fusing a list of
pairs with fusecli, scoring them with fusecli.metrics, and the DeRUN paper's rows.

A run is named by a spec ``MODEL[:key=value,...]``:

    derun:checkpoint=runs/derun-ivf/derun.yaml      # a weights card written by `fusecli train`
    derun:weights=derun.roadscene                     # a shipped card in weights/
    derun-admm                                        # default weights (none needed for derun-admm)
    auif:checkpoint=../shared/checkpoints/official/auif,label=auif-official

Keys: ``checkpoint``, ``weights`` (``none``: random initialisation), ``fusion`` (models that have
fusion rules), ``label`` (the column name; default: the spec itself).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fusecli import create_model, fuse_files
from fusecli.metrics import list_metrics
from fusecli.metrics.report import evaluate_files
from fusecli.pairs import Pair

#: the eight metrics of DeRUN's Tables 1 and 2, in the paper's column order
PAPER_METRICS: tuple[str, ...] = ("SSIM", "PSNR", "AG", "FMI", "VIF", "EN", "UIQI", "Q_P")

#: DeRUN's rows, copied from the paper (He et al., ICCV 2023; ../shared/papers/derun.txt):
#: Table 1 "TNO (100 pairs)" and Table 2 "PMF task in MIF (200 pairs)", "SMF task in MIF (250 pairs)".
#: The paper does not name its toolbox ("all methods are evaluated with the same toolbox").
PAPER_ROWS: dict[str, dict[str, float]] = {
    "tno": {"SSIM": 0.79, "PSNR": 18.83, "AG": 7.18, "FMI": 0.91, "VIF": 1.54, "EN": 7.45, "UIQI": 0.88, "Q_P": 0.78},
    "mri_pet": {"SSIM": 0.81, "PSNR": 20.59, "AG": 7.60, "FMI": 0.91, "VIF": 0.77, "EN": 5.14, "UIQI": 0.93,
                "Q_P": 0.80},
    "mri_spect": {"SSIM": 0.83, "PSNR": 24.32, "AG": 8.01, "FMI": 0.89, "VIF": 0.83, "EN": 5.39, "UIQI": 0.92,
                  "Q_P": 0.81},
}
PAPER_SOURCE = {
    "tno": "DeRUN paper, Table 1, TNO (100 pairs) row 'DeRUN'",
    "mri_pet": "DeRUN paper, Table 2, PMF task in MIF (200 pairs), row 'DeRUN'",
    "mri_spect": "DeRUN paper, Table 2, SMF task in MIF (250 pairs), row 'DeRUN'",
}


def available_metrics() -> tuple[list[str], list[str]]:
    """(the paper's metrics that fusecli.metrics registers, those it does not), in paper order."""
    registered = {m.lower(): m for m in list_metrics()}
    have = [registered[m.lower()] for m in PAPER_METRICS if m.lower() in registered]
    missing = [m for m in PAPER_METRICS if m.lower() not in registered]
    return have, missing


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """``MODEL[:key=value,...]`` -> (label, model name, create_model keyword arguments)."""
    name, _, rest = spec.partition(":")
    kwargs: dict = {}
    label = spec
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in ("checkpoint", "weights", "fusion", "label"):
            raise SystemExit(f"bad run spec {spec!r}: use "
                             "MODEL[:checkpoint=PATH|weights=NAME|fusion=RULE|label=NAME,...]")
        if key == "label":
            label = value
        elif key == "weights":
            kwargs["weights"] = None if value.lower() == "none" else value
        else:
            kwargs[key] = value
    return label, name.strip(), kwargs


def fuse_and_score(spec: str, pairs: Sequence[Pair], out: Path, conventions: Sequence[str],
                   metrics: Sequence[str]) -> dict:
    """Fuse ``pairs`` (in model-input order) with the run ``spec`` into ``out/<stem>.png`` (8-bit,
    colour kept as ``fusecli fuse`` does) and score every fused file against its sources.

    Returns ``{"label", "model", "weights_info", "seconds_per_pair", "per_pair": {conv: {stem: {m: v}}},
    "mean": {conv: {m: mean over pairs, NaN skipped}}}``.
    """
    label, name, kwargs = parse_spec(spec)
    model = create_model(name, device="cpu", **kwargs)
    out.mkdir(parents=True, exist_ok=True)
    per_pair: dict[str, dict[str, dict[str, float]]] = {c: {} for c in conventions}
    fuse_seconds = 0.0
    for pair in pairs:
        target = out / f"{pair.stem}.png"
        t = time.perf_counter()
        fuse_files(model, list(pair.paths), target)
        fuse_seconds += time.perf_counter() - t
        for c in conventions:
            per_pair[c][pair.stem] = evaluate_files(target, pair.paths, list(metrics), c)
    mean = {c: {m: _nanmean([v[m] for v in per_pair[c].values()]) for m in metrics} for c in conventions}
    return {"label": label, "model": name, "weights_info": getattr(model, "weights_info", ""),
            "seconds_per_pair": fuse_seconds / max(1, len(pairs)), "per_pair": per_pair, "mean": mean}


def _nanmean(values: list[float]) -> float:
    v = np.array(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def table(title: str, results: Sequence[dict], convention: str, metrics: Sequence[str],
          paper: dict[str, float] | None, paper_label: str) -> str:
    """A Markdown table: one row per run (means under ``convention``) plus the paper's row."""
    lines = [f"**{title}** (convention {convention})", "",
             f"| run | {' | '.join(metrics)} |", f"|---|{'---|' * len(metrics)}"]
    for r in results:
        lines.append(f"| {r['label']} | {' | '.join(_fmt(r['mean'][convention][m]) for m in metrics)} |")
    if paper:
        lines.append(f"| {paper_label} | {' | '.join(_fmt(paper.get(m, math.nan)) for m in metrics)} |")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def write_json(path: Path, data: dict) -> None:
    from fusecli.io import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=True))
