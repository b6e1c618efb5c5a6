"""Fusing whole datasets: pairing, a threaded read/fuse/write pipeline, resume, shards and manifests.

:func:`run_batch` pairs a dataset (see :mod:`fusecli.pairs`), skips pairs whose output exists,
and fuses the rest with the same calls as ``fusecli fuse`` (:func:`fusecli.io.read_image`,
:func:`fusecli.inference.fuse_images`, :func:`fusecli.io.write_image`), so an output of ``batch``
is byte-identical to ``fuse`` on that pair.

Pipeline: reader threads decode (and check, and optionally resample) pairs ahead of the model;
one compute thread per device fuses them, several pairs of equal size in one forward pass when
``batch_size`` > 1; writer threads encode and write the results atomically. The number of pairs
anywhere in the pipeline is bounded, so memory stays flat on datasets of any length.

Bad pairs (unreadable file, missing partner, size mismatch, image too small) are recorded and
skipped; the run goes on. ``OUT/manifest.json`` (``OUT/manifest.shard-I-of-N.json`` for a shard)
records the model, weights, options, fusecli version and every pair's status and timing; it is
written atomically at the start, every few seconds and at the end. :func:`merge_manifests`
merges the manifests of the shards.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .errors import ConfigError, DeviceError, FusecliError, ShapeError
from .inference import check_tiling, fuse_images, prepare_16bit, resolve_device, resolve_precision
from .io import IMAGE_EXTENSIONS, read_image, write_image
from .locking import releases_output_locks
from .models import DEFAULT_MODEL, device_of, spec_of
from .pairs import Pair, PairScan, ambiguity, format_shard, parse_shard, scan_pairs, shard_of
from .runs import build_models, claim_output, resample, resize_index, stretch_note, stretch_record, write_json

__all__ = ["PairRecord", "BatchResult", "run_batch", "merge_manifests", "parse_devices", "manifest_name",
           "MANIFEST", "MANIFEST_FORMAT"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
#: options that change the pixels of an output; a run into a folder made with other values is refused
_RESULT_OPTIONS = ("ext", "gray", "bit_depth", "tile", "overlap", "fusion", "resize_to", "stretch_16bit",
                   "precision")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp")
_MANIFEST_INTERVAL_S = 5.0


@dataclass
class PairRecord:
    """What happened to one pair.

    ``status`` is ``"fused"`` (fused in this run), ``"skipped"`` (its output already existed),
    ``"failed"`` (read, size, fuse or write error; see ``error``) or ``"unmatched"`` (a file
    without a partner, or several files with one stem in a role folder). Paths are relative to
    the dataset (inputs) and output folder (output). Seconds are per pair (a batch's time is
    shared equally among its pairs).
    """

    stem: str
    status: str
    inputs: list[str]
    output: str | None = None
    error: str | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    device: str | None = None
    read_s: float | None = None
    fuse_s: float | None = None
    write_s: float | None = None
    stretched: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items() if v is not None}


@dataclass
class BatchResult:
    """What :func:`run_batch` did."""

    records: list[PairRecord]
    manifest: Path
    seconds: float
    roles: tuple[str, ...]
    shard: tuple[int, int] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        """One line for the user when the default rule stretched 16-bit sources (see
        :func:`fusecli.inference.prepare_16bit`), else nothing."""
        stretched = [(r.stem, name) for r in self.records if r.stretched for name in r.stretched]
        if not stretched:
            return []
        return [stretch_note([name for _, name in stretched], len({stem for stem, _ in stretched}))]

    @property
    def failures(self) -> list[PairRecord]:
        """Failed and unmatched pairs, by stem."""
        return [r for r in self.records if r.status in ("failed", "unmatched")]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def pairs_per_second(self) -> float:
        done = self.counts.get("fused", 0) + self.counts.get("failed", 0)
        return done / self.seconds if self.seconds > 0 else 0.0


# --- the run -----------------------------------------------------------------------------------------

ProgressFn = Callable[[int, int, "PairRecord | None"], None]


@releases_output_locks
def run_batch(
    dataset: str | os.PathLike[str],
    output: str | os.PathLike[str],
    model: str | nn.Module | Sequence[nn.Module] = DEFAULT_MODEL,
    *,
    checkpoint: str | Path | None = None,
    weights: str | None = "default",
    fusion: str | None = None,
    device: str = "auto",
    devices: str | Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    ext: str = "png",
    gray: bool = False,
    bit_depth: int = 8,
    tile: int = 0,
    overlap: int = 32,
    batch_size: int = 1,
    workers: int | None = None,
    overwrite: bool = False,
    shard: str | tuple[int, int] | None = None,
    resize_to: str | None = None,
    stretch_16bit: bool | None = None,
    max_pixels: int | None = None,
    progress: ProgressFn | None = None,
    precision: str = "fp32",
) -> BatchResult:
    """Fuse every pair of ``dataset`` into ``output/<stem>.<ext>`` and write a manifest.

    Args:
        dataset: folder with role sub-folders (``ir/`` + ``vis/``, ``ct/`` + ``mri/``, ...; see
            :data:`fusecli.pairs.LAYOUTS`).
        output: output folder (created); must not be the dataset or a role folder.
        model: a registry name (built with ``checkpoint``/``weights``/``fusion`` on each device),
            or ready model(s), one per device.
        checkpoint, weights, fusion: as for :func:`fusecli.models.create_model` (``weights=None``:
            untrained: its initialisation, random or, for DeRUN, its classical solver).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (one device).
        devices: several devices, e.g. ``"0,1"`` (CUDA indices): one model copy and compute thread each.
        roles: role folder names in model-input order (default: detected).
        ext: output format: png, jpg, tif or bmp.
        gray, bit_depth, tile, overlap: as for ``fusecli fuse``.
        batch_size: fuse up to this many pairs of equal size in one forward pass. 1 (the default) is
            byte-identical to ``fuse``; larger batches can differ from it by float rounding
            (at most one grey level, at very few pixels).
        workers: reader threads and writer threads (each); default min(4, CPU count).
        overwrite: fuse pairs whose output exists (default: skip them).
        shard: ``"i/N"``, ``"auto"`` (SLURM job array) or ``(i, N)``: process only the pairs whose
            stem hashes to shard i of N (see :func:`fusecli.pairs.shard_of`).
        resize_to: when the sides of a pair differ in size, resample the others to the size of this
            role (``ir``/``a``: first, ``vis``/``b``: second, or a role folder name): INTER_AREA when
            shrinking, INTER_LINEAR when enlarging. Default: such pairs fail.
        stretch_16bit: as for :func:`fusecli.inference.fuse_files` (None: stretch the 16-bit sources
            that use less than half of their range; the pairs are listed in ``PairRecord.stretched``
            and summed up in ``BatchResult.notes``).
        max_pixels: a source above this many pixels fails its pair (see :func:`fusecli.io.read_image`).
        progress: called in the calling thread as ``progress(done, total, record)``: once with
            ``record=None`` before fusing (``total``: pairs to fuse), then once per finished pair.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``: the models' compute precision
            (see :func:`fusecli.inference.resolve_precision`); recorded in the manifest (a resumed
            run must use the same).

    Returns:
        A :class:`BatchResult`; ``result.failures`` lists the failed and unmatched pairs.

    Raises:
        ConfigError, DeviceError, CheckpointError, UnknownNameError: bad options, dataset or
            output folder (nothing is fused). Per-pair problems are recorded, not raised.
        ImageWriteError: another run into ``output`` (the same shard, or an unsharded run) is going
            on: it holds the folder's lock (see :mod:`fusecli.locking`); nothing is written.
    """
    start = time.perf_counter()
    dataset = Path(dataset)
    # plan: check the options, pair the dataset, build the models, claim the output folder
    ext, workers, shard_spec = _check_options(ext, bit_depth, batch_size, tile, overlap, workers, shard)
    scan = scan_pairs(dataset, roles)
    resize = resize_index(resize_to, scan.roles)
    models, identity = _models(model, checkpoint=checkpoint, weights=weights, fusion=fusion, device=device,
                               devices=devices)
    precision = str(precision).strip().lower()
    for m in models:
        resolve_precision(precision, device_of(m))
    out_dir = claim_output(output, dataset, scan.roles, shard=shard_spec)  # one run per folder (shard) from here on
    records, todo = _plan(scan, dataset, out_dir, ext, shard_spec, overwrite)
    options = {"ext": ext[1:], "gray": gray, "bit_depth": bit_depth, "tile": tile, "overlap": overlap,
               "fusion": fusion, "resize_to": None if resize is None else scan.roles[resize],
               "stretch_16bit": stretch_record(stretch_16bit), "precision": precision,
               "batch_size": batch_size, "workers": workers, "overwrite": overwrite,
               "devices": [str(device_of(m)) for m in models]}
    header = {"format": MANIFEST_FORMAT, "fusecli_version": __version__, **identity, "options": options,
              "dataset": str(dataset.resolve()), "roles": list(scan.roles), "shard": format_shard(shard_spec)}
    manifest = _Manifest(out_dir / manifest_name(shard_spec), header, records, overwrite=overwrite, start=start)

    # execute: fuse what is to do; the manifest is rewritten every few seconds and at the end
    _remove_stale_temporaries(out_dir, {target.name for _, _, target in todo} | {manifest.path.name})
    manifest.write(finished=False)
    if progress:
        progress(0, len(todo), None)
    completed = False
    try:
        _Pipeline(models, todo, scan.roles, resize, spec_of(models[0]).min_size, gray, tile, overlap,
                  bit_depth, batch_size, workers, progress, len(todo), lambda: manifest.write(finished=False),
                  read_options={"max_pixels": max_pixels, "stretch_16bit": stretch_16bit}, precision=precision).run()
        completed = True
    finally:  # also on Ctrl-C: the manifest records what was done ("pending": not done)
        manifest.write(finished=completed)

    # report
    ordered = [records[s] for s in sorted(records)]
    return BatchResult(ordered, manifest.path, time.perf_counter() - start, scan.roles, shard_spec, _count(ordered))


# --- planning ------------------------------------------------------------------------------------------

def _check_options(ext: str, bit_depth: int, batch_size: int, tile: int, overlap: int, workers: int | None,
                   shard: str | tuple[int, int] | None) -> tuple[str, int, tuple[int, int] | None]:
    """The options that need no dataset, checked: ``(".ext", workers, shard)``.

    Raises:
        ConfigError: a bad value (the message names the option).
    """
    ext = "." + ext.lower().lstrip(".")
    if ext not in IMAGE_EXTENSIONS:
        raise ConfigError(f"--ext {ext[1:]!r}: use one of {', '.join(e[1:] for e in IMAGE_EXTENSIONS)}")
    if bit_depth not in (8, 16):
        raise ConfigError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and ext in _EIGHT_BIT_ONLY:
        raise ConfigError(f"--ext {ext[1:]} stores 8-bit images only; use --ext png or tif for --bit-depth 16")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    check_tiling(tile, overlap)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    shard_spec = parse_shard(shard) if isinstance(shard, str) or shard is None else tuple(shard)
    if shard_spec is not None:
        index, count = shard_spec
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"shard {index}/{count}: need 0 <= i < N")
    return ext, workers, shard_spec


def _models(model: str | nn.Module | Sequence[nn.Module], *, checkpoint: str | Path | None, weights: str | None,
            fusion: str | None, device: str, devices: str | Sequence[str] | None
            ) -> tuple[list[nn.Module], dict[str, Any]]:
    """One model per device, and what the manifest records of them (``model``, ``weights``,
    ``weights_sha256``). A name is built on each device (see :func:`fusecli.runs.build_models`);
    ready models are used as given."""
    if isinstance(model, str):
        name = model.lower()
        models = build_models(name, checkpoint=checkpoint, weights=weights, fusion=fusion,
                              devices=parse_devices(devices, default=device))
        return models, {"model": name, "weights": models[0].weights_info,
                        "weights_sha256": _weights_sha256(checkpoint, weights, name)}
    models = [model] if isinstance(model, nn.Module) else list(model)
    if not models:
        raise ConfigError("no model given")
    return models, {"model": type(models[0]).__name__.lower(), "weights": getattr(models[0], "weights_info", None),
                    "weights_sha256": None}


def parse_devices(spec: str | Sequence[str] | None, default: str = "auto") -> list[torch.device]:
    """Devices from ``--devices 0,1`` (CUDA indices, or names such as ``cuda:1``, ``cpu``), or ``default``.

    Raises:
        DeviceError: no CUDA GPU for CUDA devices, an index that is not there, or a repeated device.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return [resolve_device(default)]
    tokens = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if str(t).strip()]
    if not tokens:
        raise DeviceError("--devices is empty; give CUDA indices such as 0,1")
    names = [f"cuda:{t}" if t.isdigit() else t.lower() for t in tokens]
    if any(n.startswith("cuda") for n in names) and not torch.cuda.is_available():
        raise DeviceError(f"--devices {','.join(tokens)}: no CUDA GPU is available here; leave out --devices "
                          "(or use --device cpu)")
    devices = []
    for name in names:
        try:
            devices.append(resolve_device(name))
        except DeviceError as exc:
            raise DeviceError(f"--devices {','.join(tokens)}: {exc}") from None
    if len(set(map(str, devices))) != len(devices):
        raise DeviceError(f"--devices {','.join(tokens)} names a device twice")
    return devices


def _plan(scan: PairScan, dataset: Path, out_dir: Path, ext: str, shard: tuple[int, int] | None, overwrite: bool
          ) -> tuple[dict[str, PairRecord], deque[tuple[Pair, PairRecord, Path]]]:
    """A record for every pair (and unmatched file) of this shard, by stem, and the pairs to fuse:
    those whose output does not exist yet (all of them with ``overwrite``); the others are skipped."""

    def in_shard(stem: str) -> bool:
        return shard is None or shard_of(stem, shard[1]) == shard[0]

    def rel(path: Path) -> str:
        try:
            return path.relative_to(dataset).as_posix()
        except ValueError:
            return str(path)

    records: dict[str, PairRecord] = {}
    todo: deque[tuple[Pair, PairRecord, Path]] = deque()
    for pair in scan.pairs:
        if not in_shard(pair.stem):
            continue
        target = out_dir / f"{pair.stem}{ext}"
        record = PairRecord(pair.stem, "pending", [rel(p) for p in pair.paths], output=target.name)
        records[pair.stem] = record
        if target.exists() and not overwrite:
            record.status = "skipped"
        else:
            todo.append((pair, record, target))
    for kind, files in (("unmatched", scan.unmatched), ("duplicates", scan.duplicates)):
        for role, paths in files.items():
            for path in paths:
                if not in_shard(path.stem):
                    continue
                if kind == "unmatched":
                    others = " or ".join(f"{r}/" for r in scan.roles if r != role)
                    message = f"missing partner: no file with stem {path.stem!r} in {others}"
                else:
                    message = ambiguity(scan, path.stem)
                record = records.setdefault(path.stem, PairRecord(path.stem, "unmatched", [], error=message))
                record.inputs.append(rel(path))
    return records, todo


# --- the manifest --------------------------------------------------------------------------------------

def manifest_name(shard: tuple[int, int] | None) -> str:
    """``manifest.json``, or ``manifest.shard-I-of-N.json`` for shard I of N."""
    return MANIFEST if shard is None else f"manifest.shard-{shard[0]}-of-{shard[1]}.json"


class _Manifest:
    """A run's manifest: the fixed ``header`` (model, weights, options, dataset), then every pair's
    record, rewritten atomically by :meth:`write`.

    Opening it refuses an output folder that holds outputs made with other settings (unless
    ``overwrite``) and gives the records of pairs skipped in this run their earlier timings.
    """

    def __init__(self, path: Path, header: dict[str, Any], records: dict[str, PairRecord], *, overwrite: bool,
                 start: float):
        self.path, self.header, self.records, self.start = path, header, records, start
        earlier, self.created = _check_earlier_manifests(path.parent, path, header, overwrite)
        for stem, record in records.items():
            old = earlier.get(stem)
            if record.status == "skipped" and old and old.get("status") in ("fused", "skipped"):
                for key in ("width", "height", "channels", "device", "read_s", "fuse_s", "write_s"):
                    setattr(record, key, old.get(key))

    def write(self, *, finished: bool) -> None:
        write_json(self.path, {**self.header, "created": self.created,
                               "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "finished": finished, "seconds": round(time.perf_counter() - self.start, 3),
                               "summary": _count(self.records.values()),
                               "pairs": [self.records[s].to_json() for s in sorted(self.records)]})


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read manifest '{path}': {exc}; delete or repair it") from None
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        raise ConfigError(f"'{path}' is not a fusecli batch manifest; delete it or choose another output folder")
    return data


def _settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """The values that decide an output's pixels."""
    # runs from before an option: its value then (raw 16-bit values, fp32)
    options = {"stretch_16bit": False, "precision": "fp32", **manifest.get("options", {})}
    return {"model": manifest.get("model"), "weights": manifest.get("weights"),
            **{k: options.get(k) for k in _RESULT_OPTIONS}}


def _weights_sha256(checkpoint: str | Path | None, weights: str | None, model_name: str) -> dict[str, str] | None:
    """Full sha256 of every weights file, by file name (None for random weights)."""
    from .models import get_entry
    from .models._weights import CHECKPOINT_SUFFIXES, find_card, sha256_file

    if checkpoint is not None:
        path = Path(checkpoint)
        files = ([p for p in sorted(path.iterdir()) if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file()]
                 if path.is_dir() else [path])
        return {f.name: sha256_file(f) for f in files}
    if weights is None:
        return None
    card_name = get_entry(model_name).default_weights if weights == "default" else weights
    if card_name is None:  # a fixed-parameter model (needs_weights=False, e.g. derun-admm): no file
        return None
    card = find_card(card_name)
    return {card.file: card.sha256}


def _check_earlier_manifests(out_dir: Path, manifest_path: Path, header: dict[str, Any], overwrite: bool
                             ) -> tuple[dict[str, dict[str, Any]], str]:
    """Refuse to add outputs made with other settings to ``out_dir`` (unless ``overwrite``); return the
    pair records of earlier runs (from this manifest and ``manifest.json``) and the creation time."""
    earlier: dict[str, dict[str, Any]] = {}
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new = _settings(header)
    for other in sorted(out_dir.glob("manifest*.json")):
        data = _read_manifest(other)
        old = _settings(data)
        if not overwrite and old != new:
            diff = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in new if old[k] != new[k])
            raise ConfigError(f"'{out_dir}' holds outputs made with other settings ({other.name}: {diff}); "
                              "pass --overwrite to redo them, or choose another -o")
        if other == manifest_path or other.name == MANIFEST:
            earlier.update({p["stem"]: p for p in data["pairs"] if isinstance(p, dict) and "stem" in p})
        if other == manifest_path and isinstance(data.get("created"), str):
            created = data["created"]
    return earlier, created


def _count(records) -> dict[str, int]:
    counts = {"pairs": 0, "fused": 0, "skipped": 0, "failed": 0, "unmatched": 0, "pending": 0}
    for r in records:
        counts["pairs"] += 1
        counts[r.status] = counts.get(r.status, 0) + 1
    if not counts["pending"]:
        del counts["pending"]
    return counts


# --- the pipeline ----------------------------------------------------------------------------------

@dataclass
class _Loaded:
    pair: Pair
    record: PairRecord
    output: Path
    images: list[torch.Tensor]

    @property
    def key(self) -> tuple:
        return (*self.images[0].shape[-2:], *(im.shape[1] for im in self.images))


def _load(pair: Pair, record: PairRecord, output: Path, roles: tuple[str, ...], resize: int | None,
          min_size: int, *, max_pixels: int | None = None, stretch_16bit: bool | None = None) -> _Loaded:
    """Read one pair (as ``fuse`` does), check sizes, resample if asked. Runs in a reader thread."""
    start = time.perf_counter()
    loaded = [read_image(p, max_pixels=max_pixels) for p in pair.paths]
    sizes = [(info.width, info.height) for _, info in loaded]
    prepared = [prepare_16bit(t, info, stretch_16bit) for t, info in loaded]
    images = [t for t, _ in prepared]
    stretched = [f"{role}/{p.name}" for role, p, (_, note) in zip(roles, pair.paths, prepared) if note]
    if len(set(sizes)) > 1:
        listing = ", ".join(f"{role}/{p.name} is {w}x{h}" for role, p, (w, h) in zip(roles, pair.paths, sizes))
        if resize is None:
            raise ShapeError(f"size mismatch: {listing}; register the pair, or pass --resize-to "
                             f"{roles[0]} (or {roles[1]}) to resample the other side")
        width, height = sizes[resize]
        images = [im if i == resize else resample(im, width, height) for i, im in enumerate(images)]
    width, height = sizes[resize or 0]
    if min(width, height) < min_size:
        raise ShapeError(f"image is {width}x{height} pixels; this model needs at least {min_size}x{min_size}")
    record.width, record.height = width, height
    record.stretched = stretched or None
    record.read_s = time.perf_counter() - start
    return _Loaded(pair, record, output, images)


def _fuse_group(model: nn.Module, items: list[_Loaded], gray: bool, tile: int, overlap: int, precision: str = "fp32"
                ) -> list[tuple[_Loaded, torch.Tensor | None, FusecliError | None]]:
    """Fuse pairs of one size on ``model``'s device; per-pair errors. Runs in the device's thread."""
    start = time.perf_counter()
    results: list[tuple[_Loaded, torch.Tensor | None, FusecliError | None]] = []
    if len(items) > 1:
        try:
            stacked = [torch.cat([it.images[i] for it in items]) for i in range(len(items[0].images))]
            fused = fuse_images(model, stacked, gray=gray, tile=tile, overlap=overlap, precision=precision).cpu()
            results = [(it, fused[k:k + 1], None) for k, it in enumerate(items)]
        except FusecliError:
            results = []  # find out which pair it was: one at a time
    if not results:
        for it in items:
            try:
                results.append((it, fuse_images(model, it.images, gray=gray, tile=tile, overlap=overlap,
                                                precision=precision).cpu(), None))
            except FusecliError as exc:
                results.append((it, None, exc))
    share = (time.perf_counter() - start) / len(items)
    device = str(device_of(model))
    for it, _, _ in results:
        it.record.fuse_s, it.record.device = share, device
    return results


def _write(item: _Loaded, fused: torch.Tensor, bit_depth: int) -> None:
    start = time.perf_counter()
    write_image(item.output, fused, bit_depth=bit_depth, protect=item.pair.paths)
    item.record.channels = fused.shape[1]
    item.record.write_s = time.perf_counter() - start


def _remove_stale_temporaries(out_dir: Path, outputs: set[str]) -> int:
    """Delete the hidden temporary files a killed run left for ``outputs`` (names in ``out_dir``)."""
    pattern = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{16}\.tmp$")
    removed = 0
    for entry in out_dir.iterdir():
        match = pattern.match(entry.name)
        if match and match["name"] in outputs and entry.is_file():
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


class _Pipeline:
    """The event loop of a run: the calling thread schedules reads, batches and writes and waits."""

    MAX_BATCHES_PER_DEVICE = 2

    def __init__(self, models, todo, roles, resize, min_size, gray, tile, overlap, bit_depth, batch_size,
                 workers, progress, total, checkpoint_manifest, read_options=None, precision="fp32"):
        self.models, self.todo, self.roles, self.resize, self.min_size = models, todo, roles, resize, min_size
        self.gray, self.tile, self.overlap, self.bit_depth = gray, tile, overlap, bit_depth
        self.batch_size, self.workers, self.progress, self.total = batch_size, workers, progress, total
        self.checkpoint_manifest = checkpoint_manifest
        self.read_options = read_options or {}  # max_pixels, stretch_16bit: keywords of _load
        self.precision = precision
        self.window = max(2 * workers, 2 * batch_size * len(models)) + workers
        self.done = 0

    def _finish(self, record: PairRecord, error: Exception | None = None) -> None:
        if error is not None:
            record.status, record.error = "failed", " ".join(str(error).split())
        else:
            record.status = "fused"
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total, record)

    def run(self) -> None:
        if not self.todo:
            return
        n_dev = len(self.models)
        readers = ThreadPoolExecutor(self.workers, thread_name_prefix="fusecli-read")
        writers = ThreadPoolExecutor(self.workers, thread_name_prefix="fusecli-write")
        computes = [ThreadPoolExecutor(1, thread_name_prefix=f"fusecli-fuse{i}") for i in range(n_dev)]
        reads: dict[Future, PairRecord] = {}
        fusing: dict[Future, tuple[int, int]] = {}  # future -> (device index, pairs)
        writes: dict[Future, _Loaded] = {}
        buffer: OrderedDict[tuple, list[_Loaded]] = OrderedDict()
        busy = [0] * n_dev
        last_manifest = time.monotonic()
        try:
            while self.todo or reads or buffer or fusing or writes:
                buffered = sum(map(len, buffer.values()))
                in_pipeline = len(reads) + buffered + sum(n for _, n in fusing.values()) + len(writes)
                while self.todo and in_pipeline < self.window:
                    pair, record, target = self.todo.popleft()
                    future = readers.submit(_load, pair, record, target, self.roles, self.resize, self.min_size,
                                            **self.read_options)
                    reads[future] = record
                    in_pipeline += 1
                # hand batches to the least busy device
                while buffer:
                    d = min(range(n_dev), key=busy.__getitem__)
                    if busy[d] >= self.MAX_BATCHES_PER_DEVICE:
                        break
                    key = next((k for k, v in buffer.items() if len(v) >= self.batch_size), None)
                    if key is None and busy[d] == 0 and (buffered >= self.batch_size or not (self.todo or reads)):
                        key = max(buffer, key=lambda k: len(buffer[k]))
                    if key is None:
                        break
                    group = buffer[key][:self.batch_size]
                    del buffer[key][:self.batch_size]
                    if not buffer[key]:
                        del buffer[key]
                    buffered -= len(group)
                    future = computes[d].submit(_fuse_group, self.models[d], group, self.gray, self.tile,
                                                self.overlap, self.precision)
                    fusing[future] = (d, len(group))
                    busy[d] += 1
                pending = set(reads) | set(fusing) | set(writes)
                if not pending:
                    continue
                finished, _ = wait(pending, timeout=_MANIFEST_INTERVAL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    if future in reads:
                        record = reads.pop(future)
                        try:
                            item = future.result()
                        except FusecliError as exc:
                            self._finish(record, exc)
                            continue
                        buffer.setdefault(item.key, []).append(item)
                    elif future in fusing:
                        d, _ = fusing.pop(future)
                        busy[d] -= 1
                        for item, fused, error in future.result():
                            if error is not None:
                                self._finish(item.record, error)
                            else:
                                writes[writers.submit(_write, item, fused, self.bit_depth)] = item
                    else:
                        item = writes.pop(future)
                        try:
                            future.result()
                        except FusecliError as exc:
                            self._finish(item.record, exc)
                        else:
                            self._finish(item.record)
                if time.monotonic() - last_manifest > _MANIFEST_INTERVAL_S:
                    self.checkpoint_manifest()
                    last_manifest = time.monotonic()
        finally:
            # on an error or Ctrl-C: drop what has not started; let running writes finish (they are atomic)
            for pool in (readers, *computes):
                pool.shutdown(wait=False, cancel_futures=True)
            writers.shutdown(wait=True, cancel_futures=True)


# --- merging the manifests of shards ----------------------------------------------------------------

_SHARD_MANIFEST = re.compile(r"^manifest\.shard-(\d+)-of-(\d+)\.json$")


def merge_manifests(output: str | os.PathLike[str]) -> dict[str, Any]:
    """Merge the shard manifests of ``output`` (``manifest.shard-I-of-N.json``) into ``manifest.json``.

    The records of an existing ``manifest.json`` are kept unless a shard has a newer record of the
    same pair. The merged manifest lists the shards found (``merged_from``) and missing
    (``missing_shards``); it is written atomically and returned.

    Raises:
        ConfigError: no shard manifests, shards of different counts, or shards made with
            different settings (model, weights, options that change the pixels).
    """
    out_dir = Path(output)
    if not out_dir.is_dir():
        raise ConfigError(f"'{out_dir}' is not an existing folder; pass the -o folder of the shard runs")
    shards = []
    for path in sorted(out_dir.iterdir()):
        match = _SHARD_MANIFEST.match(path.name)
        if match:
            shards.append((int(match[1]), int(match[2]), path))
    if not shards:
        raise ConfigError(f"no shard manifests (manifest.shard-I-of-N.json) in '{out_dir}'; run "
                          "`fusecli batch ... --shard i/N` first")
    counts = {n for _, n, _ in shards}
    if len(counts) > 1:
        raise ConfigError(f"'{out_dir}' holds manifests of shard runs with different N ({sorted(counts)}); "
                          "delete the stale ones")
    count = counts.pop()
    datas = [(i, _read_manifest(p), p) for i, _, p in sorted(shards)]
    base_path = out_dir / MANIFEST
    base = _read_manifest(base_path) if base_path.exists() else None
    reference = datas[0][1]
    for _, data, path in datas[1:] + ([(None, base, base_path)] if base else []):
        if _settings(data) != _settings(reference):
            raise ConfigError(f"{path.name} was made with other settings than {datas[0][2].name} "
                              f"({_settings(data)} vs {_settings(reference)}); rerun that shard with --overwrite")
    pairs: dict[str, dict[str, Any]] = {}
    if base:
        pairs.update({p["stem"]: p for p in base["pairs"]})
    for _, data, _ in datas:
        pairs.update({p["stem"]: p for p in data["pairs"]})
    found = [i for i, _, _ in datas]
    summary: dict[str, int] = {"pairs": len(pairs)}
    for p in pairs.values():
        summary[p["status"]] = summary.get(p["status"], 0) + 1
    merged = {key: reference[key] for key in ("format", "fusecli_version", "model", "weights", "weights_sha256",
                                               "options", "dataset", "roles") if key in reference}
    merged.update({
        "shard": None,
        "merged_from": [f"{i}/{count}" for i in found],
        "missing_shards": [f"{i}/{count}" for i in range(count) if i not in found],
        "shard_options": {f"{i}/{count}": data.get("options") for i, data, _ in datas},
        "created": min(d.get("created", "") for _, d, _ in datas),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished": all(d.get("finished") for _, d, _ in datas) and len(found) == count,
        "seconds": round(sum(d.get("seconds", 0) for _, d, _ in datas), 3),
        "summary": summary,
        "pairs": [pairs[s] for s in sorted(pairs)],
    })
    write_json(base_path, merged)
    return merged


