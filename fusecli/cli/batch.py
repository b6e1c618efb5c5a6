"""``fusecli batch``."""

from __future__ import annotations

from ..models import DEFAULT_MODEL

from pathlib import Path

import typer
from rich.markup import escape

from ..batch import PairRecord, merge_manifests, run_batch
from ..errors import ConfigError
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
    output: Path | None = typer.Option(None, "--output", "-o", help="Output folder: OUT/<stem>.<ext> and "
                                       "OUT/manifest.json.", show_default=False),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name (see `fusecli models`)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file or folder "
                                           "(default: the model's shipped weights).", show_default=False),
    weights: str = typer.Option("default", "--weights", help="Name of a weights card in weights/ "
                                "(ignored with --checkpoint)."),
    fusion: str | None = typer.Option(None, "--fusion", help="Override the model's fusion rule (AUIF: sum, "
                                      "average, l1; cscfuse-ivf: saliency, l1, average, add).", show_default=False),
    role_a: str | None = typer.Option(None, "--ir", "--a", help="Folder of the first input (infrared; for "
                                      "medical data the CT/PET/SPECT scan), if not a known layout.",
                                      show_default=False),
    role_b: str | None = typer.Option(None, "--vis", "--b", help="Folder of the second input (visible; MRI).",
                                      show_default=False),
    ext: str = typer.Option("png", "--ext", help="Output format: png, jpg, tif or bmp."),
    gray: bool = typer.Option(False, "--gray", help="Write gray images even if a source is in colour."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="8 or 16 bits per channel (16: png and tif only)."),
    tile: int = typer.Option(0, "--tile", help="Fuse in tiles of this many pixels (0: whole image)."),
    overlap: int = typer.Option(32, "--overlap", help="Overlap of neighbouring tiles."),
    device: str = typer.Option("auto", "--device", "-d", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    devices: str | None = typer.Option(None, "--devices", help="Several GPUs, e.g. 0,1: one model copy per GPU.",
                                       show_default=False),
    workers: int | None = typer.Option(None, "--workers", "-j", help="Threads that read, and threads that "
                                       "write, images (default: min(4, CPUs)).", show_default=False),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Fuse up to B pairs of equal size in one "
                                   "forward pass (GPU). 1 is byte-identical to `fuse`; larger batches may differ "
                                   "by float rounding (at most 1 grey level at a few pixels)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Fuse pairs whose output exists (default: skip)."),
    shard: str | None = typer.Option(None, "--shard", help="i/N: only the pairs whose stem hashes to shard i of "
                                     "N; auto: from SLURM_ARRAY_TASK_ID/COUNT.", show_default=False),
    resize_to: str | None = typer.Option(None, "--resize-to", help="For pairs of different sizes: resample "
                                         "the other side to this one's size (ir or vis, a or b). Default: such "
                                         "pairs fail.", show_default=False),
    stretch_16bit: bool | None = typer.Option(None, "--stretch-16bit/--no-stretch-16bit", help="Stretch the "
                                              "0.5-99.5 % range of 16-bit sources to the full range. Default: "
                                              "only sources that use less than half of 0..65535 (raw 12/14-bit "
                                              "counts), with a note on stderr.", show_default=False),
    max_pixels: int | None = typer.Option(None, "--max-pixels", min=0, help="A source of more than this many "
                                          "pixels (from its header, before decoding) fails its pair (default "
                                          "89478485, about 9459x9459; 0: no limit).", show_default=False),
    precision: str = typer.Option("fp32", "--precision", help="Compute precision: fp32 (default), bf16 or "
                                  "fp16 (the outputs are the same 8/16-bit images). bf16: CUDA GPUs, and CPUs "
                                  "with AVX512-BF16 or AMX (elsewhere it runs emulated, slower than fp32); "
                                  "fp16: CUDA only."),
    merge: bool = typer.Option(False, "--merge-manifests", help="Merge the shard manifests of -o OUT into "
                               "OUT/manifest.json, then exit (no DATASET)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary; the problems are "
                               "still listed at the end."),
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
        if (role_a is None) != (role_b is None):
            raise ConfigError("name both role folders: --ir NAME --vis NAME (or --a NAME --b NAME)")
        roles = None if role_a is None else (role_a, role_b)
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
