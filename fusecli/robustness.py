"""Robustness sweeps: degrade one role of a dataset at increasing severity, fuse, and score.

For every model, every degradation ("kind", or a composition ``haze+noise``) and every level
(0 = clean), the chosen role (default: visible) of each pair is degraded with
:func:`fusecli.degrade.degrade`, the pair is fused with :func:`fusecli.inference.fuse_images`, and
the fused image is scored with :mod:`fusecli.metrics` against the **clean** sources (the
degradation is what the fusion should see through, not what it should reproduce).

Resumable: each (model, kind, level) *cell* keeps its per-pair rows in ``OUT/cells/*.json``,
rewritten atomically after every pair together with a key of everything that determines the
values (model and weights, kinds, level and its parameters, seed, depth, metrics, convention,
role, tiling). A rerun reuses the rows whose key matches and computes only what is missing; a
changed setting recomputes its cells. Level 0 is computed once per model and shared by all kinds.

Outputs: ``OUT/robustness.csv`` (one row per model × kind × level × pair, then a ``(mean)`` row
per model × kind × level) and, with matplotlib installed (``pip install 'fusecli[plots]'``),
``OUT/robustness_<kind>.png``: each metric's mean against the level, one line per model.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .degrade import image_rng, parse_kinds, resolve_depth
from .degrade import degrade as _degrade
from .degrade.apply import _depth_files, _read_depth
from .degrade.levels import MAX_LEVEL, level_params
from .errors import ConfigError, ShapeError
from .inference import check_tiling, fuse_images, prepare_16bit, resolve_precision
from .io import quantize, read_image, write_bytes_atomic, write_text_atomic
from .locking import releases_output_locks
from .metrics import evaluate, get_metric, list_metrics
from .metrics._checks import check_convention
from .pairs import Pair, PairScan, scan_pairs
from .runs import build_models, claim_output, model_identity, stretch_note, stretch_record, write_json

__all__ = [
    "DEFAULT_METRICS",
    "RobustnessResult",
    "parse_levels",
    "parse_sweeps",
    "resolve_metrics",
    "run_robustness",
    "write_plots",
]

DEFAULT_METRICS: tuple[str, ...] = ("EN", "SD", "SF", "AG", "VIF", "Qabf", "SSIM", "MI")
"""The metrics of a sweep unless told otherwise (those not registered are skipped, with a note)."""

MEAN_ROW = "(mean)"
"""The ``pair`` value of the mean rows of ``robustness.csv``."""

PLOTS_HINT = "install matplotlib for the plots: pip install 'fusecli[plots]'"


def parse_levels(spec: str | Sequence[int]) -> list[int]:
    """``"0-5"``, ``"0,2,4"``, ``"1-3,5"`` or a list -> sorted unique levels in 0..5 (0 = clean).

    Raises:
        ConfigError: malformed, or a level outside 0..5.
    """
    if not isinstance(spec, str):
        items = [str(int(v)) for v in spec]
        spec = ",".join(items)
    levels: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not match:
            raise ConfigError(f"--levels {spec!r}: expected levels 0-{MAX_LEVEL} like 0-5, 0,2,4 or 1-3,5")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if lo > hi or hi > MAX_LEVEL:
            raise ConfigError(f"--levels {spec!r}: levels run from 0 (clean) to {MAX_LEVEL}")
        levels.update(range(lo, hi + 1))
    if not levels:
        raise ConfigError(f"--levels {spec!r}: no level given; e.g. --levels 0-5")
    return sorted(levels)


def parse_sweeps(spec: str | Sequence[str]) -> list[tuple[str, ...]]:
    """``"haze,rain"`` -> ``[("haze",), ("rain",)]``; ``"haze+noise"`` is one sweep of a composition.

    Raises:
        UnknownNameError, ConfigError.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    sweeps: list[tuple[str, ...]] = []
    for item in items:
        if str(item).strip():
            kinds = parse_kinds(str(item).split("+"))
            if kinds not in sweeps:
                sweeps.append(kinds)
    if not sweeps:
        raise ConfigError("no degradation kind given; pass e.g. --kinds haze,rain")
    return sweeps


def resolve_metrics(names: str | Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The metrics to compute and those skipped.

    ``None`` means :data:`DEFAULT_METRICS`: the registered ones are used and the others returned
    as skipped. Names given explicitly must all be registered (case-insensitive).

    Returns:
        ``(metrics, skipped)``.

    Raises:
        UnknownNameError: an explicitly named metric is not registered. ConfigError: a metric
        needs a reference image (there is none in a robustness sweep), or none is left.
    """
    if names is None:
        registered = {n.lower(): n for n in list_metrics()}
        chosen = [registered[n.lower()] for n in DEFAULT_METRICS if n.lower() in registered]
        skipped = [n for n in DEFAULT_METRICS if n.lower() not in registered]
    else:
        items = names.split(",") if isinstance(names, str) else list(names)
        if [s.strip().lower() for s in items] == ["all"]:
            items = list_metrics()
        chosen, skipped = [], []
        for item in items:
            if item.strip():
                name = get_metric(item.strip()).name
                if name not in chosen:
                    chosen.append(name)
    for name in chosen:
        if get_metric(name).needs == "reference":
            raise ConfigError(f"metric {name} needs a ground-truth image, which a robustness sweep does not have; "
                              "drop it from --metrics")
    if not chosen:
        raise ConfigError("no metric to compute; pass e.g. --metrics EN,SD,SF")
    return chosen, skipped


@dataclass
class RobustnessResult:
    """What :func:`run_robustness` did.

    Attributes:
        csv: path of ``robustness.csv``.
        plots: the plot files written (empty without matplotlib: see ``plots_note``).
        plots_note: why there are no plots, else ``""``.
        metrics: the metrics computed.
        skipped_metrics: default metrics that are not registered in this fusecli.
        pairs: number of pairs swept.
        computed: pair evaluations computed in this run.
        reused: pair evaluations taken from ``cells/`` (an earlier, matching run).
        means: ``{(model, kind, level): {metric: mean}}``.
        seconds: wall time of the run.
        notes: one line each for the user (16-bit sources stretched by default).
    """

    csv: Path
    plots: list[Path] = field(default_factory=list)
    plots_note: str = ""
    metrics: list[str] = field(default_factory=list)
    skipped_metrics: list[str] = field(default_factory=list)
    pairs: int = 0
    computed: int = 0
    reused: int = 0
    means: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _gray_255(image: torch.Tensor, convention: str) -> np.ndarray:
    """(1, C, H, W) in [0, 1] -> (H, W) float64 gray levels of its 8-bit version, as the metrics
    toolboxes read a saved image (colour: the convention's RGB -> gray rule)."""
    samples = quantize(image.detach().cpu(), 8).astype(np.float64)
    if samples.ndim == 2:
        return samples
    from .metrics.report import rgb_to_gray

    return rgb_to_gray(samples, convention)


def _load_cell(path: Path, key: dict[str, Any]) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("rows"), dict):
        return {}
    return data["rows"]


def _to_json_value(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


@releases_output_locks
def run_robustness(
    dataset: str | os.PathLike[str],
    models: Sequence[str] | Mapping[str, nn.Module],
    kinds: str | Sequence[str] = "haze,rain",
    levels: str | Sequence[int] = "0-5",
    output: str | os.PathLike[str] = "robustness",
    *,
    metrics: str | Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    role: str | None = None,
    roles: Sequence[str] | None = None,
    depth: str | os.PathLike[str] | None = "ramp",
    inverse_depth: bool = False,
    checkpoints: Mapping[str, str | os.PathLike[str]] | None = None,
    device: str | torch.device = "cpu",
    tile: int = 0,
    convention: str = "cddfuse",
    plots: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
    stretch_16bit: bool | None = None,
    max_pixels: int | None = None,
    precision: str = "fp32",
) -> RobustnessResult:
    """Sweep degradations × levels × models over a dataset and write the report.

    Args:
        dataset: a dataset folder with role sub-folders (see :mod:`fusecli.pairs`).
        models: registry names (built with :func:`fusecli.models.create_model`, weights from
            ``checkpoints`` or the shipped default), or ``{label: model}`` of ready models.
        kinds: sweeps, comma-separated; ``a+b`` composes kinds within one sweep.
        levels: ``"0-5"`` etc. (0 = clean).
        output: the report folder (created).
        metrics: metric names, or None for :data:`DEFAULT_METRICS` (missing ones skipped).
        limit: sweep only the first N pairs (sorted by stem).
        seed: degradation seed (per pair: seed + the pair's stem; see :func:`fusecli.degrade.image_rng`).
        role: the role folder to degrade (default: the visible / texture role, the second).
        roles: role folders, if not a known layout.
        depth, inverse_depth: haze depth (``"ramp"``, ``"uniform"``, or a folder of depth maps).
        checkpoints: ``{model name: checkpoint}`` for models given by name.
        device: where the models run.
        tile: fuse in tiles of this size (0: whole images).
        convention: metrics convention (``"cddfuse"``, ``"matlab"``, ``"vifb"`` ...).
        plots: write the PNG plots when matplotlib is installed.
        progress: called as ``progress(done, total, description)`` after each pair evaluation.
        stretch_16bit: 16-bit sources, as for :func:`fusecli.inference.fuse_files` (None: stretch
            those that use less than half of their range; listed in ``result.notes``).
        max_pixels: refuse images above this many pixels (see :func:`fusecli.io.read_image`).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the models' compute precision
            (see :func:`fusecli.inference.resolve_precision`).

    Returns:
        A :class:`RobustnessResult`.

    Raises:
        ConfigError (also: ``output`` is the dataset or one of its role folders), UnknownNameError,
        CheckpointError, ImageReadError, ShapeError, DeviceError.
        ImageWriteError: another run into ``output`` is going on (it holds the folder's lock, see
            :mod:`fusecli.locking`; nothing is written).
    """
    start = time.perf_counter()
    # plan: check the options, pair the dataset, build the models, claim the report folder
    sweeps, level_list = parse_sweeps(kinds), parse_levels(levels)
    metric_names, skipped = resolve_metrics(metrics)
    convention = check_convention(convention)  # before anything is written
    image_rng(seed, "")  # validates the seed
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    check_tiling(tile, 0)
    resolve_precision(precision, device)
    depth_spec = resolve_depth(depth)
    scan, pairs, role_index = _pairs(dataset, roles, limit, role)
    depth_maps: dict[str, Path] = {}
    if isinstance(depth_spec, Path) and any("haze" in s for s in sweeps):
        depth_maps = _depth_files(depth_spec, [p.paths[role_index] for p in pairs])
    built = _models(models, checkpoints, device)
    run = _Run(role_index=role_index, metrics=metric_names, convention=convention, tile=tile, precision=precision,
               seed=seed, depth=depth_spec, depth_maps=depth_maps, inverse_depth=inverse_depth,
               stretch_16bit=stretch_16bit, max_pixels=max_pixels,
               setting={"role": scan.roles[role_index], "metrics": metric_names, "convention": convention,
                        "tile": tile, "stretch_16bit": stretch_record(stretch_16bit),
                        **({} if precision == "fp32" else {"precision": precision})})  # fp32: as earlier runs
    out_dir = claim_output(output, dataset, scan.roles, command="robustness")  # one run per folder from here on
    cells = [run.cell(label, built[label], kinds_, lv, pairs, out_dir / "cells")
             for label in built for kinds_, lv in _cells(sweeps, level_list)]

    # execute: evaluate the pairs the cells miss, each cell's file rewritten after every pair
    result = RobustnessResult(csv=out_dir / "robustness.csv", metrics=metric_names, skipped_metrics=skipped,
                              pairs=len(pairs), reused=sum(len(c.rows) for c in cells))
    todo = sum(len(c.missing) for c in cells)
    stretched: set[tuple[str, str]] = set()  # (source, note) of the 16-bit sources prepare_16bit stretched
    for cell in cells:
        for pair in cell.missing:
            cell.rows[pair.stem] = run.evaluate(built[cell.label], pair, cell.kinds, cell.level, stretched)
            write_json(cell.path, {"key": cell.key, "rows": {
                s: {m: _to_json_value(v) for m, v in r.items()} for s, r in cell.rows.items()}})
            result.computed += 1
            if progress is not None:
                progress(result.computed, todo, cell.description)

    # report: the table, the notes, the plots
    result.means = _write_table(result.csv, cells, sweeps, level_list, pairs, metric_names)
    if len(stretched) == 1:
        result.notes.append(next(iter(stretched))[1])
    elif stretched:
        sources = sorted({source for source, _ in stretched})
        result.notes.append(stretch_note([Path(s).name for s in sources],
                                         sum(any(str(p) in sources for p in pair.paths) for pair in pairs)))
    if plots:
        result.plots, result.plots_note = write_plots(result.means, out_dir, metric_names,
                                                      title=f"{Path(dataset).resolve().name}, {len(pairs)} pairs")
    result.seconds = time.perf_counter() - start
    return result


def _pairs(dataset: str | os.PathLike[str], roles: Sequence[str] | None, limit: int | None, role: str | None
           ) -> tuple[PairScan, list[Pair], int]:
    """The dataset's scan, the pairs to sweep (the first ``limit``, by stem) and the index of the role
    to degrade (default: the second, the visible / texture one).

    Raises:
        ConfigError: no complete pair, or ``role`` is not a role folder of the dataset.
    """
    scan = scan_pairs(dataset, roles)
    pairs = scan.pairs[:limit] if limit else scan.pairs
    if not pairs:
        raise ConfigError(f"no complete pairs in '{dataset}' (roles {', '.join(scan.roles)})")
    chosen = scan.roles[1] if role is None else str(role)
    if chosen not in scan.roles:
        raise ConfigError(f"--role {chosen!r} is not a role folder of '{dataset}'; its roles are "
                          f"{', '.join(scan.roles)}")
    return scan, pairs, scan.roles.index(chosen)


def _models(models: Sequence[str] | Mapping[str, nn.Module], checkpoints: Mapping[str, str | os.PathLike[str]] | None,
            device: str | torch.device) -> dict[str, nn.Module]:
    """``{label: model}``: ready models as given, names built (see :func:`fusecli.runs.build_models`)
    with their checkpoint or shipped weights.

    Raises:
        ConfigError: no model, a model named twice, a checkpoint for a model not swept.
        UnknownNameError, CheckpointError, DeviceError.
    """
    if isinstance(models, Mapping):
        return dict(models)
    labels = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    if not labels:
        raise ConfigError("no model given; pass e.g. --models auif")
    from .models import get_entry

    for label in labels:
        get_entry(label)  # unknown names fail before any work
    if len(set(labels)) != len(labels):
        raise ConfigError("a model is named twice in --models")
    extra = sorted(set(checkpoints or {}) - set(labels))
    if extra:
        raise ConfigError(f"--checkpoint for {', '.join(extra)}, which is not in --models")
    return {label: build_models(label, checkpoint=(checkpoints or {}).get(label), devices=[device])[0]
            for label in labels}


def _cells(sweeps: Sequence[tuple[str, ...]], levels: Sequence[int]) -> list[tuple[tuple[str, ...], int]]:
    """A model's cells, ``(kinds, level)``: level 0 once (kinds ``()``, shared by all sweeps), then
    each sweep's levels above 0."""
    return ([((), 0)] if 0 in levels else []) + [(s, lv) for s in sweeps for lv in levels if lv > 0]


@dataclass
class _Cell:
    """One (model, kinds, level) of a sweep: the key of everything that determines its values, its
    file under ``cells/``, the rows it holds (by stem) and the pairs it misses."""

    label: str
    kinds: tuple[str, ...]
    level: int
    key: dict[str, Any]
    path: Path
    rows: dict[str, dict[str, float]]
    missing: list[Pair]

    @property
    def description(self) -> str:
        return f"{self.label} {'+'.join(self.kinds) or 'clean'} L{self.level}"


@dataclass(frozen=True)
class _Run:
    """The checked settings of a run: how a pair is degraded, fused and scored, and what a cell's key
    holds of them (``setting``: those that apply to every cell)."""

    role_index: int
    metrics: list[str]
    convention: str
    tile: int
    precision: str
    seed: int
    depth: Any
    depth_maps: dict[str, Path]
    inverse_depth: bool
    stretch_16bit: bool | None
    max_pixels: int | None
    setting: dict[str, Any]

    def cell(self, label: str, model: nn.Module, kinds: tuple[str, ...], level: int, pairs: Sequence[Pair],
             cells_dir: Path) -> _Cell:
        """The cell, with the rows an earlier run left under a matching key."""
        key: dict[str, Any] = {"model": label, "weights": model_identity(model),
                               "kinds": list(kinds), "level": level, **self.setting}
        if level > 0:
            key.update(seed=self.seed, depth=str(self.depth), inverse_depth=self.inverse_depth,
                       parameters={k: level_params(k, level) for k in kinds})
        path = cells_dir / f"{_safe(label)}__{_safe('+'.join(kinds) if kinds else 'clean')}__L{level}.json"
        rows = _load_cell(path, key)
        rows = {p.stem: rows[p.stem] for p in pairs if p.stem in rows and set(rows[p.stem]) >= set(self.metrics)}
        return _Cell(label, kinds, level, key, path, rows, [p for p in pairs if p.stem not in rows])

    def evaluate(self, model: nn.Module, pair: Pair, kinds: tuple[str, ...], level: int,
                 stretched: set[tuple[str, str]]) -> dict[str, float]:
        """Degrade the pair's role at ``level``, fuse, and score against the clean sources; the
        16-bit sources stretched are added to ``stretched``.

        Raises:
            ImageReadError, ShapeError (sources of different sizes).
        """
        prepared = [prepare_16bit(*read_image(p, max_pixels=self.max_pixels), self.stretch_16bit) for p in pair.paths]
        images = [t for t, _ in prepared]
        stretched.update((str(p), note) for p, (_, note) in zip(pair.paths, prepared) if note)
        clean = list(images)
        if level > 0:
            i = self.role_index
            depth = (_read_depth(self.depth_maps[pair.paths[i].stem], self.max_pixels) if self.depth_maps
                     else self.depth)
            images[i] = _degrade(images[i], kinds, level, seed=self.seed, name=pair.stem, depth=depth,
                                 inverse_depth=self.inverse_depth)
        if len({tuple(t.shape[-2:]) for t in images}) > 1:
            raise ShapeError(f"pair {pair.stem!r}: the sources differ in size; register or resize them first")
        fused = fuse_images(model, images, tile=self.tile, precision=self.precision)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined values come back as NaN, reported as nan
            values = evaluate(_gray_255(fused, self.convention), [_gray_255(c, self.convention) for c in clean],
                              names=self.metrics, convention=self.convention)
        return {m: float(v[0]) for m, v in values.items()}


def _write_table(path: Path, cells: Sequence[_Cell], sweeps: Sequence[tuple[str, ...]], levels: Sequence[int],
                 pairs: Sequence[Pair], metric_names: Sequence[str]) -> dict[tuple[str, str, int], dict[str, float]]:
    """Write ``robustness.csv``: per model, sweep and level a row per pair, then the mean row; return
    the means, ``{(model, kind, level): {metric: mean}}`` (level 0: the clean cell under every kind)."""
    by_cell = {(c.label, c.kinds, c.level): c.rows for c in cells}
    labels = list(dict.fromkeys(c.label for c in cells))
    means: dict[tuple[str, str, int], dict[str, float]] = {}
    buffer = _io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "kind", "level", "pair", *metric_names])
    for label in labels:
        for sweep in sweeps:
            kind = "+".join(sweep)
            for lv in levels:
                rows = by_cell[(label, () if lv == 0 else sweep, lv)]
                for pair in pairs:
                    writer.writerow([_fmt(v) for v in [label, kind, lv, pair.stem]
                                     + [_num(rows[pair.stem].get(m)) for m in metric_names]])
                mean = means[(label, kind, lv)] = {m: _nanmean([_num(rows[p.stem].get(m)) for p in pairs])
                                                   for m in metric_names}
                writer.writerow([_fmt(v) for v in [label, kind, lv, MEAN_ROW] + [mean[m] for m in metric_names]])
    write_text_atomic(path, buffer.getvalue())
    return means


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def write_plots(
    means: Mapping[tuple[str, str, int], Mapping[str, float]],
    out_dir: str | os.PathLike[str],
    metric_names: Sequence[str],
    *,
    title: str = "",
) -> tuple[list[Path], str]:
    """One PNG per kind, ``robustness_<kind>.png``: a panel per metric, its mean against the level,
    one line per model.

    Returns:
        ``(files, note)``; without matplotlib no file and a note saying how to get it.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], PLOTS_HINT
    out_dir = Path(out_dir)
    files = []
    models = list(dict.fromkeys(k[0] for k in means))
    kinds = list(dict.fromkeys(k[1] for k in means))
    cols = min(4, len(metric_names))
    nrows = math.ceil(len(metric_names) / cols)
    for kind in kinds:
        fig, axes = plt.subplots(nrows, cols, figsize=(3.1 * cols, 2.5 * nrows + 0.5), squeeze=False)
        for ax, metric in zip(axes.flat, metric_names):
            for model in models:
                points = sorted((lv, vals[metric]) for (m, k, lv), vals in means.items() if m == model and k == kind)
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3.5, label=model)
            spec = get_metric(metric)
            ax.set_title(f"{metric} ({'higher' if spec.higher_is_better else 'lower'} is better)", fontsize=9)
            ax.set_xlabel("level", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        for ax in list(axes.flat)[len(metric_names):]:
            ax.axis("off")
        handles, names = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="upper right", fontsize=8, ncol=min(4, len(names)))
        fig.suptitle(f"{kind}: metrics vs severity (0 = clean){' - ' + title if title else ''}", fontsize=10,
                     x=0.01, ha="left")
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        path = out_dir / f"robustness_{_safe(kind)}.png"
        buffer = _io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, buffer.getvalue())
        files.append(path)
    return files, ""
