"""``fusecli batch``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ..batch import PairRecord, merge_manifests, run_batch
from ..errors import ConfigError
from . import _options as opt
from ._console import Reporter, err, reporting_errors


class _Reporter(Reporter):
    """Progress (:class:`~fusecli.cli._console.Reporter`: a bar on a terminal, a line every 10 % in
    logs such as SLURM's, nothing with --quiet), and each failed pair as it happens."""

    def __init__(self, quiet: bool):
        super().__init__("fusing", unit="pairs", quiet=quiet)

    def __call__(self, done: int, total: int, record: PairRecord | None) -> None:
        if self.quiet:
            return
        if record is not None and record.status == "failed":
            self.print(f"[red]failed[/] {escape(record.stem)}: {escape(record.error or '')}")
        self.update(done, total)


def batch(
    dataset: Path | None = typer.Argument(None, help="Dataset folder with role folders (ir/+vis/, vi/, "
                                          "infrared/+visible/, A/+B/, ct|pet|spect/+mri/, under/+over/, "
                                          "near/+far/). Pairs are matched by file stem.", show_default=False),
    output: Path | None = opt.output("Output folder: OUT/<stem>.<ext> and OUT/manifest.json.", default=None),
    model: str = opt.model(),
    checkpoint: Path | None = opt.checkpoint("Checkpoint file or folder (default: the model's shipped weights)."),
    weights: str = opt.weights(),
    fusion: str | None = opt.fusion(),
    role_a: str | None = opt.role_a(),
    role_b: str | None = opt.role_b(),
    ext: str = typer.Option("png", "--ext", help="Output format: png, jpg, tif or bmp."),
    gray: bool = opt.gray(),
    bit_depth: int = opt.bit_depth(),
    tile: int = opt.tile(),
    overlap: int = opt.overlap(),
    device: str = opt.device(),
    devices: str | None = typer.Option(None, "--devices", help="Several GPUs, e.g. 0,1: one model copy per GPU.",
                                       show_default=False),
    workers: int | None = opt.workers(None, "Threads that read, and threads that write, images (default: "
                                         "min(4, CPUs))."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Fuse up to B pairs of equal size in one "
                                   "forward pass (GPU). 1 is byte-identical to `fuse`; larger batches may differ "
                                   "by float rounding (at most 1 grey level at a few pixels)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Fuse pairs whose output exists (default: skip)."),
    shard: str | None = typer.Option(None, "--shard", help="i/N: only the pairs whose stem hashes to shard i of "
                                     "N; auto: from SLURM_ARRAY_TASK_ID/COUNT.", show_default=False),
    resize_to: str | None = typer.Option(None, "--resize-to", help="For pairs of different sizes: resample "
                                         "the other side to this one's size (ir or vis, a or b). Default: such "
                                         "pairs fail.", show_default=False),
    stretch_16bit: bool | None = opt.stretch_16bit(),
    max_pixels: int | None = opt.max_pixels(),
    precision: str = opt.precision(),
    merge: bool = typer.Option(False, "--merge-manifests", help="Merge the shard manifests of -o OUT into "
                               "OUT/manifest.json, then exit (no DATASET)."),
    quiet: bool = opt.quiet(),
) -> None:
    """Fuse every pair of a dataset into OUT/<stem>.<ext>, resumably.

    Outputs are identical to `fusecli fuse` on each pair. Existing outputs are skipped (rerun after
    an interruption to complete the set); bad pairs are reported and skipped, and the exit code is 1
    if any pair failed or had no partner.
    """
    with reporting_errors():
        if output is None:
            raise ConfigError("pass the output folder with -o OUT")
        if merge:
            if dataset is not None:
                raise ConfigError("--merge-manifests takes only -o OUT, no DATASET")
            _merge(output, quiet)
            return
        if dataset is None:
            raise ConfigError("pass the DATASET folder (or --merge-manifests -o OUT)")
        roles = opt.role_folders(role_a, role_b)
        reporter = _Reporter(quiet)
        try:
            result = run_batch(dataset, output, model, checkpoint=checkpoint, weights=weights, fusion=fusion,
                               device=device, devices=devices, roles=roles, ext=ext, gray=gray, bit_depth=bit_depth,
                               tile=tile, overlap=overlap, batch_size=batch_size, workers=workers,
                               overwrite=overwrite, shard=shard, resize_to=resize_to, stretch_16bit=stretch_16bit,
                               max_pixels=max_pixels, progress=reporter, precision=precision)
        finally:
            reporter.stop()
    counts = result.counts
    if not quiet:
        for note in result.notes:
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
        shard_text = f" (shard {result.shard[0]}/{result.shard[1]})" if result.shard else ""
        err.print(f"{counts.get('pairs', 0)} pairs{shard_text}: {counts.get('fused', 0)} fused, "
                  f"{counts.get('skipped', 0)} skipped (output exists), {counts.get('failed', 0)} failed, "
                  f"{counts.get('unmatched', 0)} unmatched in {result.seconds:.1f} s"
                  + (f" ({result.pairs_per_second:.2f} pairs/s)" if counts.get("fused") else "")
                  + f"; manifest {result.manifest}", highlight=False, soft_wrap=True)
    if result.failures:
        err.print(f"[bold red]{len(result.failures)} problem(s):[/]", highlight=False)
        for record in result.failures:
            err.print(f"  {escape(record.stem)} ({record.status}): {escape(record.error or '')}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _merge(output: Path, quiet: bool) -> None:
    merged = merge_manifests(output)
    summary = ", ".join(f"{v} {k}" for k, v in merged["summary"].items() if k != "pairs")
    if not quiet:
        err.print(f"merged {', '.join(merged['merged_from'])} into {output / 'manifest.json'}: "
                  f"{merged['summary']['pairs']} pairs ({summary})", highlight=False, soft_wrap=True)
    problems = [p for p in merged["pairs"] if p.get("status") not in ("fused", "skipped")]
    if merged["missing_shards"]:
        raise ConfigError(f"shard(s) {', '.join(merged['missing_shards'])} have no manifest in '{output}': "
                          "run them, then merge again")
    if problems:
        err.print(f"[bold red]{len(problems)} problem(s):[/]", highlight=False)
        for p in problems:
            err.print(f"  {escape(p['stem'])} ({p['status']}): {escape(p.get('error', ''))}", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1)
