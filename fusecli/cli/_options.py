"""The options the subcommands share, defined once: one spelling and one meaning each.

The vocabulary (a short flag means one long option in every command that has it):

======  =====================  ===========================================================
short   long                   meaning
======  =====================  ===========================================================
-o      --output               where the command writes (image, folder, video, report)
-m      --model                the model (``--models``, a comma-separated list, where a
                               command compares several: robustness, compare)
-c      --checkpoint           weights file or folder instead of the shipped ones
-d      --device               auto (default everywhere), cpu, cuda or cuda:N
-j      --workers              threads (or processes) working side by side
-b      --batch-size           items in one forward pass
-q      --quiet                no progress, notes or summary on stderr
-k, -l  --kind(s), --level(s)  degradation kinds and severity levels
-C      --convention           whose metric numbers to reproduce (metrics, robustness)
-n, -s, -p                     --limit (robustness), --sources (metrics), --pairs (compare)
======  =====================  ===========================================================

``--metrics`` (metrics, robustness) has no short flag: ``-m`` is the model.

Old spellings (:data:`RENAMED`) keep working for one release: :class:`Command` rewrites them to
the new ones before parsing and prints one deprecation line on stderr for each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import typer
from typer.core import TyperCommand

from ..errors import ConfigError
from ..models import DEFAULT_MODEL

__all__ = ["RENAMED", "Command", "rename_options", "role_folders", "output", "model", "models", "checkpoint",
           "weights", "device", "workers", "quiet", "tile", "overlap", "gray", "bit_depth", "fusion", "stretch_16bit",
           "max_pixels", "precision", "role_a", "role_b"]

RENAMED: dict[str, dict[str, str]] = {
    "metrics": {"-m": "--metrics", "-w": "-j"},
}
"""Per command, the old spellings that still work (for one release) and the option each now is."""


def rename_options(args: Sequence[str], renamed: dict[str, str], takes_value: Callable[[str], bool]
                   ) -> tuple[list[str], list[str]]:
    """``args`` with the old spellings in ``renamed`` replaced, and the old spellings met (in order, once each).

    Handles ``--old value``, ``--old=value``, ``-x value``, ``-xVALUE`` and clusters of short flags
    (``-qx value``); values and everything after ``--`` are left alone. ``takes_value(option)`` says
    whether an option of the command takes a value.
    """
    out: list[str] = []
    used: list[str] = []
    value_next = False
    for index, arg in enumerate(args):
        if value_next or arg == "--" or not arg.startswith("-") or arg == "-":
            if arg == "--" and not value_next:
                out.extend(args[index:])
                break
            out.append(arg)
            value_next = False
            continue
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in renamed:
                used.append(name)
                name = renamed[name]
            out.append(name + eq + value)
            value_next = not eq and takes_value(name)
            continue
        pieces: list[str] = []  # a cluster of short flags: -q, -j4, -qm EN
        changed = False
        for k, char in enumerate(arg[1:]):
            flag = "-" + char
            if flag in renamed:
                used.append(flag)
                flag, changed = renamed[flag], True
            pieces.append(flag)
            if takes_value(flag):
                rest = arg[k + 2:]
                pieces += [rest] if rest else []
                value_next = not rest
                break
        out.extend(pieces if changed else [arg])
    return out, list(dict.fromkeys(used))


class Command(TyperCommand):
    """A subcommand that accepts the old spellings of its options (:data:`RENAMED`) with one
    deprecation line each on stderr."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        renamed = RENAMED.get(self.name or "", {})
        if renamed:
            args, used = rename_options(args, renamed, self._takes_value)
            for old in [] if ctx.resilient_parsing else used:  # nothing while a shell completes a command line
                new = "/".join(sorted(getattr(self._option(renamed[old]), "opts", [renamed[old]]), key=len))
                typer.echo(f"warning: {old} is deprecated in `fusecli {self.name}`; write {new} (the old spelling "
                           "goes in the next release)", err=True)
        return super().parse_args(ctx, args)

    def _option(self, name: str) -> Any:
        return next((p for p in self.params if name in getattr(p, "opts", ()) + getattr(p, "secondary_opts", ())),
                    None)

    def _takes_value(self, name: str) -> bool:
        option = self._option(name)
        return option is not None and not getattr(option, "is_flag", False) and not getattr(option, "count", False)


# --- the shared options: ``from . import _options as opt``, then ``device: str = opt.device()`` ---------

def output(help: str, *, default: Any = ...) -> Any:
    return typer.Option(default, "--output", "-o", help=help, show_default=False)


def model() -> Any:
    return typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name (see `fusecli models`).")


def models(default: str | None, help: str) -> Any:
    """``-m/--models``: several models, comma-separated (``-m/--model``, plural)."""
    return typer.Option(default, "--models", "-m", help=help, show_default=default is not None)


def checkpoint(help: str, *, default: Any = None) -> Any:
    return typer.Option(default, "--checkpoint", "-c", help=help, show_default=False)


def weights() -> Any:
    return typer.Option("default", "--weights", help="Name of a weights card in weights/ (ignored with --checkpoint).")


def device() -> Any:
    return typer.Option("auto", "--device", "-d", help="auto (CUDA when available), cpu, cuda or cuda:N.")


def workers(default: int | None, help: str, **checks: Any) -> Any:
    return typer.Option(default, "--workers", "-j", help=help, show_default=default is not None, **checks)


def quiet() -> Any:
    return typer.Option(False, "--quiet", "-q", help="No progress, notes or summary on stderr; errors, problems and "
                        "results still show.")


def tile() -> Any:
    return typer.Option(0, "--tile", help="Fuse in tiles of this many pixels (0: whole image). Use it for large "
                        "images or when the GPU runs out of memory.")


def overlap() -> Any:
    return typer.Option(32, "--overlap", help="Overlap of neighbouring tiles, blended linearly.")


def gray() -> Any:
    return typer.Option(False, "--gray", help="Write gray images even if a source is in colour.")


def bit_depth() -> Any:
    return typer.Option(8, "--bit-depth", help="8 or 16 bits per channel (16: PNG and TIFF only).")


def fusion() -> Any:
    return typer.Option(None, "--fusion", help="Override the model's fusion rule, if it has one (AUIF: sum, "
                        "average, l1; cscfuse-ivf: saliency, l1, average, add).", show_default=False)


def stretch_16bit() -> Any:
    return typer.Option(None, "--stretch-16bit/--no-stretch-16bit", help="Stretch the 0.5-99.5 % range of 16-bit "
                        "sources to the full range before fusing. Default: only sources that use less than half "
                        "of 0..65535 (raw 12/14-bit counts), with a note on stderr.", show_default=False)


def max_pixels() -> Any:
    return typer.Option(None, "--max-pixels", min=0, help="Refuse images of more than this many pixels, checked in "
                        "the file header before decoding (default 89478485, about 9459x9459; 0: no limit).",
                        show_default=False)


def precision() -> Any:
    return typer.Option("fp32", "--precision", help="Compute precision: fp32 (default), bf16 or fp16 (the outputs "
                        "are the same 8/16-bit images). bf16: CUDA GPUs, and CPUs with AVX512-BF16 or AMX "
                        "(elsewhere it runs emulated, slower than fp32); fp16: CUDA only.")


def role_a() -> Any:
    return typer.Option(None, "--ir", "--a", help="Folder of the first input (infrared; for medical data the "
                        "CT/PET/SPECT scan), if not a known layout.", show_default=False)


def role_b() -> Any:
    return typer.Option(None, "--vis", "--b", help="Folder of the second input (visible; MRI).", show_default=False)


def role_folders(role_a: str | None, role_b: str | None) -> tuple[str, str] | None:
    """The role folders of ``--ir NAME --vis NAME``, or None (a known layout).

    Raises:
        ConfigError: only one of them given.
    """
    if (role_a is None) != (role_b is None):
        raise ConfigError("name both role folders: --ir NAME --vis NAME (or --a NAME --b NAME)")
    return None if role_a is None else (role_a, role_b)
