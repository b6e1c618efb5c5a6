"""Choose a training run's epoch on the validation part of its data, and make it the run's weights.

    python benchmarks/select_epoch.py runs/derun-rs-v --data ../shared/datasets/roadscene
    python benchmarks/select_epoch.py runs/derun-hv-v --data ../shared/datasets/harvard_mri_pet \\
        --data ../shared/datasets/harvard_mri_spect --write

A run trained with ``fusecli train MODEL --split fit --snapshots`` leaves ``epoch-NNN.safetensors``
after every epoch. Each one (every ``--every``-th, and the last), and the untrained model the run
started from (epoch 0: for DeRUN its classical solver, ``derun-admm``), fuses the validation pairs
(``--split val``: every 8th sorted stem of the train part, never trained on and never a test pair;
:mod:`fusecli.train.splits`) and is scored with DeRUN's eight Table-1 metrics under the CDDFuse
convention, per dataset. An epoch's *wins* are the (dataset, metric) means better than epoch 0's; the
chosen epoch has the most wins (ties: the larger mean relative gain over epoch 0) among the epochs that
keep both sources: on every dataset, the smaller of the two detail coefficients of
``benchmarks/source_share.py`` (how much of each source's detail the fused image carries) is at least
epoch 0's (``--detail-floor start``, the default) or a given number. Without that floor the rule chose
weights that return the infrared image (the Table-1 metrics reward a copy of it). ``--write``
then makes it the run's result: ``MODEL.safetensors`` becomes that epoch's weights and the card
(``MODEL.yaml``, written by ``fusecli train``) gets the new sha256 and a ``selection`` record
with the table. The run's model must have its default config (as ``fusecli train`` builds it; a
run of the library's ``TrainConfig(model_config=...)`` is refused). Scores are cached in ``RUN/selection/`` per epoch file and sha256, so a rerun
after more epochs scores only the new ones.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml
from derun_common import available_metrics, fuse_and_score
from source_share import luma, share

from fusecli.io import write_text_atomic
from fusecli.metrics import get_metric
from fusecli.models._weights import sha256_file
from fusecli.pairs import scan_pairs
from fusecli.train.loop import load_checkpoint, write_card
from fusecli.train.splits import VALIDATION_EVERY, select_pairs


def snapshots(run: Path, every: int) -> list[tuple[int, Path]]:
    """``(epoch, file)`` of the run's snapshots: every ``every``-th epoch and the last."""
    found = sorted((int(m.group(1)), p) for p in run.glob("epoch-*.safetensors")
                   if (m := re.fullmatch(r"epoch-(\d+)\.safetensors", p.name)))
    if not found:
        raise SystemExit(f"{run}: no epoch-NNN.safetensors (train with --snapshots)")
    return [(e, p) for e, p in found if e % every == 0 or (e, p) == found[-1]]


def score(spec: str, key: str, pairs_by_set: dict[str, list], run: Path, metrics: list[str]) -> dict:
    """Per dataset, the metric means of ``spec`` on its validation pairs (cached under ``key``)."""
    cache = run / "selection" / f"{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    means = {}
    for name, pairs in pairs_by_set.items():
        result = fuse_and_score(spec, pairs, run / "selection" / "fused" / key / name, ["cddfuse"], metrics)
        means[name] = result["mean"]["cddfuse"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cache, json.dumps(means, indent=1))
    return means


def detail_shares(key: str, pairs_by_set: dict[str, list], run: Path) -> dict[str, list[float]]:
    """Per dataset, the mean detail coefficients (source A, source B) of the fused validation images
    that :func:`score` left under ``key`` (cached)."""
    cache = run / "selection" / f"{key}.share.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    out = {}
    for name, pairs in pairs_by_set.items():
        folder = run / "selection" / "fused" / key / name
        rows = [share(luma(folder / f"{p.stem}.png"), luma(p.paths[0]), luma(p.paths[1]))[2:] for p in pairs]
        out[name] = [float(v) for v in np.mean(rows, axis=0)]
    write_text_atomic(cache, json.dumps(out, indent=1))
    return out


def keeps_both(shares: dict[str, list[float]], floor: dict[str, float]) -> bool:
    """True when, on every dataset, the smaller detail coefficient is at least the floor."""
    return all(min(shares[name]) >= floor[name] for name in floor)


def floor_arg(text: str) -> str | float:
    """``--detail-floor``: ``"start"`` or a number."""
    if text == "start":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'start' or a number, got {text!r}") from None


def wins(means: dict, base: dict, metrics: list[str]) -> tuple[int, float]:
    """(number of (dataset, metric) means better than the base's, mean relative gain over the base;
    a gain is positive where the metric is better, as :mod:`fusecli.metrics` registers its direction)."""
    count, gains = 0, []
    for name in base:
        for m in metrics:
            a, b = means[name][m], base[name][m]
            if math.isnan(a) or math.isnan(b):
                continue
            gain = (a - b) if get_metric(m).higher_is_better else (b - a)
            count += gain > 0
            gains.append(gain / abs(b) if b else 0.0)
    return count, sum(gains) / max(1, len(gains))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run folder (fusecli train -o)")
    parser.add_argument("--data", type=Path, action="append", required=True, help="dataset folder (repeatable)")
    parser.add_argument("--model", default="derun")
    parser.add_argument("--every", type=int, default=1, help="score every N-th epoch (and the last)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N validation pairs per dataset")
    parser.add_argument("--detail-floor", type=floor_arg, default="start",
                        help="least detail coefficient of the weaker source an epoch must keep on every dataset: "
                             "'start' (epoch 0's) or a number (0: no floor)")
    parser.add_argument("--write", action="store_true", help="make the chosen epoch the run's weights and card")
    args = parser.parse_args()
    metrics, _ = available_metrics()
    last = args.run / "last.pt"
    if last.is_file() and load_checkpoint(last).get("config", {}).get("model_config"):
        raise SystemExit(f"{args.run} was trained with a non-default model config: its snapshots cannot be "
                         "rebuilt from the weights alone here")
    pairs_by_set = {}
    for d in args.data:
        pairs = select_pairs(d, scan_pairs(d).pairs, "val")
        pairs_by_set[d.name] = pairs[:args.limit] if args.limit else pairs
    print(f"validation pairs: {', '.join(f'{k} {len(v)}' for k, v in pairs_by_set.items())}", flush=True)

    base = score(f"{args.model}:weights=none,label=epoch 0", "epoch-000", pairs_by_set, args.run, metrics)
    base_shares = detail_shares("epoch-000", pairs_by_set, args.run)
    floor = ({n: min(s) for n, s in base_shares.items()} if args.detail_floor == "start"
             else dict.fromkeys(base_shares, args.detail_floor))
    rows = [(0, base, (0, 0.0), base_shares)]
    for epoch, path in snapshots(args.run, args.every):
        key = f"epoch-{epoch:03d}-{sha256_file(path)[:12]}"
        print(f"epoch {epoch}", flush=True)
        means = score(f"{args.model}:checkpoint={path},label=epoch {epoch}", key, pairs_by_set, args.run, metrics)
        rows.append((epoch, means, wins(means, base, metrics), detail_shares(key, pairs_by_set, args.run)))

    total = len(base) * len(metrics)
    print(f"\n| epoch | wins of {total} | mean gain | " + " | ".join(
        f"{n} {m}" for n in base for m in metrics + ["detail A", "detail B"]) + " |")
    for epoch, means, (w, g), shares in rows:
        print(f"| {epoch} | {w} | {g:+.3f} | " + " | ".join(
            " | ".join([f"{means[n][m]:.3f}" for m in metrics] + [f"{v:.2f}" for v in shares[n]]) for n in base) + " |")
    eligible = [r for r in rows[1:] if keeps_both(r[3], floor)]
    floor_text = ", ".join(f"{n} {v:.2f}" for n, v in floor.items())
    if not eligible:
        sys.exit(f"no epoch keeps the weaker source's detail coefficient at the floor ({floor_text}); nothing chosen")
    epoch, means, (w, g), shares = max(eligible, key=lambda r: r[2])
    print(f"\nchosen: epoch {epoch} ({w} of {total} wins over epoch 0, mean gain {g:+.3f}; "
          f"detail floor {floor_text})")
    if not args.write:
        return
    card_path = args.run / f"{args.model}.yaml"
    if not card_path.is_file():
        sys.exit(f"{card_path} missing: finish the run (fusecli train ... --resume) before --write")
    card = yaml.safe_load(card_path.read_text())
    weights = args.run / card["file"]
    shutil.copyfile(args.run / f"epoch-{epoch:03d}.safetensors", weights)
    card["sha256"] = sha256_file(weights)
    card["training"]["selection"] = {
        "epoch": epoch, "epochs_run": rows[-1][0],
        "rule": f"most (dataset, metric) wins over epoch 0 (the untrained start) on the validation part "
                f"(every {VALIDATION_EVERY}th sorted stem of the train part), DeRUN's eight Table-1 metrics, "
                "cddfuse convention; ties: larger mean relative gain; only epochs whose weaker source's detail "
                "coefficient (benchmarks/source_share.py) is at least the floor on every dataset",
        "detail_floor": {n: round(v, 3) for n, v in floor.items()},
        "detail_coefficients": {n: [round(v, 3) for v in shares[n]] for n in shares},
        "command": "python benchmarks/select_epoch.py " + " ".join(sys.argv[1:]),
        "validation_pairs": {k: len(v) for k, v in pairs_by_set.items()},
        "wins": w, "of": total, "mean_gain": round(g, 4),
        "table": {f"epoch {e}": {n: {m: round(v, 4) for m, v in ms[n].items()} for n in ms}
                  for e, ms, _, _ in rows},
    }
    write_card(card_path, card)
    print(f"wrote {weights} (epoch {epoch}) and {card_path}")


if __name__ == "__main__":
    main()
