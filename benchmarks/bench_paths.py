"""Today's (reference) path and the fast path of each model, side by side, in one process.

    python benchmarks/bench_paths.py                                   # every entry, 2 threads, 3 repeats
    python benchmarks/bench_paths.py --models cscfuse-ivf,derun --repeats 5 --threads 2
    python benchmarks/bench_paths.py --models "derun train"

Each entry of :data:`ENTRIES` builds the model twice (``build_reference``: the path selected by the
config field that keeps today's implementation, e.g. ``path="reference"``; ``build_fast``: the
default) and times one unit of work on the inputs of ``make_inputs``: an inference (``s/pair``:
640x480 image pairs through ``fuse_tensors``, the library path of ``fusecli fuse``; CSC-MSF a
31-band 256x256 cube with its 512x512 RGB guide) or a training step (forward, the recipe's loss,
backward; batch 4, crop 128). After one untimed warm-up run of each path, the two paths run
alternately (reference first in odd repeats, fast first in even ones, so that drift in the
machine's load hits both) and the table shows the median wall-clock seconds of each and their
ratio. Weights: shipped or official ones where they exist (random otherwise). Speed does not
depend on the values, except DeRUN's fast inference, which skips filters whose weights are zero
(the shipped weights' 6 silent filters of 8): ``derun all filters`` is a random start, every filter
live. The load average is printed: on a shared machine the ratios are what counts.

To add a model: one ``ENTRIES["name"] = Entry(build_reference, build_fast, make_inputs)`` line
(``run`` defaults to inference on the inputs; see :func:`train_step` for training rows).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from fusecli import create_model, fuse_tensors
from fusecli.io import read_image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SIZE = (480, 640)  # (H, W) of the inference pairs


def infer(model: torch.nn.Module, inputs: tuple) -> Any:
    """One fused pair through the library path (``fuse_tensors``: inference mode, eval)."""
    return fuse_tensors(model, list(inputs))


def infer_cube(model: torch.nn.Module, inputs: tuple) -> Any:
    """One cube super-resolved (what ``fuse_cube_files`` runs)."""
    with torch.inference_mode():
        return model(*inputs)


def train_step(recipe: str) -> Callable[[torch.nn.Module, tuple], Any]:
    """One training step of ``fusecli train``'s recipe: forward, loss, backward (no optimiser step)."""
    from fusecli.train import RECIPES

    loss_fn = RECIPES[recipe].loss

    def run(model: torch.nn.Module, batch: tuple) -> Any:
        model.train()
        model.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model, batch)
        loss.backward()
        return loss

    return run


class Entry(NamedTuple):
    """One row: how to build each path's model, the inputs, and the timed unit of work."""

    build_reference: Callable[[], torch.nn.Module]
    build_fast: Callable[[], torch.nn.Module]
    make_inputs: Callable[[], tuple]
    run: Callable[[torch.nn.Module, tuple], Any] = infer
    unit: str = "s/pair"


def _sample(name: str, size: tuple[int, int], colour: bool = False) -> torch.Tensor:
    """A sample image resized to ``size`` (H, W): (1, C, H, W) in [0, 1]."""
    img, _ = read_image(REPO / "samples" / name)
    if not colour and img.shape[1] == 3:
        img = img.mean(1, keepdim=True)
    return F.interpolate(img, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def image_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """The samples' infrared and visible images at 640x480."""
    return _sample("ir.png", SIZE), _sample("vis.png", SIZE)


def training_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Batch 4 of 128x128 crops of the samples pair (the DeRUN recipe's batch and crop)."""
    ir, vis = _sample("ir.png", (256, 256)), _sample("vis.png", (256, 256))
    corners = ((0, 0), (0, 128), (128, 0), (128, 128))
    return tuple(torch.cat([img[..., y:y + 128, x:x + 128] for y, x in corners]) for img in (ir, vis))


def cube_and_guide() -> tuple[torch.Tensor, torch.Tensor]:
    """A 31-band 256x256 cube (smooth spectra from an RGB image) and its 512x512 RGB guide."""
    guide = _sample("vis_color.png", (512, 512), colour=True)
    wavelengths = torch.linspace(400, 700, 31)
    basis = torch.stack([torch.exp(-0.5 * ((wavelengths - c) / 40) ** 2) for c in (610.0, 545.0, 450.0)])
    cube = torch.einsum("bchw,cl->blhw", F.avg_pool2d(guide, 2), basis)
    return cube / cube.max(), guide


def _msf(path: str) -> torch.nn.Module:
    official = SHARED / "checkpoints" / "official" / "cscfuse" / "CSC-MSF"
    if official.exists():
        return create_model("cscfuse-msf", checkpoint=official, path=path)
    return create_model("cscfuse-msf", weights=None, path=path)


def _frufn(name: str, impl: str) -> torch.nn.Module:
    """FRUFN with the shipped frufn.ivf weights; EFRUFN with the official IVF checkpoint when it is
    here (the shipped efrufn.ivf otherwise)."""
    official = SHARED / "checkpoints" / "official" / "frufn" / "ufnet_deq_deeper_ivf.pth"
    if name == "efrufn" and official.exists():
        return create_model(name, checkpoint=official, impl=impl)
    return create_model(name, impl=impl)


def frufn_train_step(stage: str) -> Callable[[torch.nn.Module, tuple], Any]:
    """One step of fusecli's staged FRUFN / EFRUFN training (``fusecli.train.frufn``) in ``stage``:
    the stage's loss as ``train_stages`` computes it (``ivf``: the unsupervised IVF loss plus the
    gradient-transfer loss to a frozen teacher, a copy of the model run without autograd; ``mfif``:
    synthesised multi-focus pairs, SSIM loss, no teacher), then backward (no optimiser step)."""
    import copy

    from fusecli.train.frufn import STAGE_RECIPES, _stage_loss

    recipe, teachers = STAGE_RECIPES[stage], {}
    generators = {"synth": torch.Generator().manual_seed(0)}

    class _Batch:  # what _stage_loss samples from: the fixed batch
        def __init__(self, batch: tuple) -> None:
            self.fixed = batch

        def batch(self, n: int) -> tuple:
            return self.fixed

    def run(model: torch.nn.Module, batch: tuple) -> Any:
        teacher = None
        if stage != "mfif":
            teacher = teachers.get(id(model))
            if teacher is None:
                teacher = teachers[id(model)] = copy.deepcopy(model).eval().requires_grad_(False)
        model.train()
        model.zero_grad(set_to_none=True)
        crops = _Batch(batch if stage == "ivf" else (batch[1],))
        loss, _ = _stage_loss(stage, recipe, model, teacher, crops, batch[0].shape[0], generators,
                              torch.device("cpu"), warmup=False, mode="paper")
        loss.backward()
        return loss

    return run


ENTRIES: dict[str, Entry] = {
    "cscfuse-ivf": Entry(lambda: create_model("cscfuse-ivf", path="reference"),
                         lambda: create_model("cscfuse-ivf"), image_pair),
    "cscfuse-msf": Entry(lambda: _msf("reference"), lambda: _msf("fast"), cube_and_guide, infer_cube, "s/cube"),
    "derun": Entry(lambda: create_model("derun", path="reference"), lambda: create_model("derun"), image_pair),
    # every filter live (random start): the speed-up without the silent filters the shipped weights skip
    "derun all filters": Entry(lambda: create_model("derun", weights=None, init="random", path="reference"),
                               lambda: create_model("derun", weights=None, init="random"), image_pair),
    "derun train": Entry(lambda: create_model("derun", path="reference"), lambda: create_model("derun"),
                         training_batch, train_step("derun"), "s/step"),
    "frufn": Entry(lambda: _frufn("frufn", "reference"), lambda: _frufn("frufn", "fast"), image_pair),
    "efrufn": Entry(lambda: _frufn("efrufn", "reference"), lambda: _frufn("efrufn", "fast"), image_pair),
    "efrufn train": Entry(lambda: _frufn("efrufn", "reference"), lambda: _frufn("efrufn", "fast"),
                          training_batch, frufn_train_step("ivf"), "s/step"),
    "efrufn train mfif": Entry(lambda: _frufn("efrufn", "reference"), lambda: _frufn("efrufn", "fast"),
                               training_batch, frufn_train_step("mfif"), "s/step"),
}


def _timed(entry: Entry, model: torch.nn.Module, inputs: tuple) -> float:
    start = time.perf_counter()
    entry.run(model, inputs)
    return time.perf_counter() - start


def measure(entry: Entry, repeats: int) -> tuple[float, float]:
    """Median seconds (reference, fast) over ``repeats`` alternating runs, after one warm-up each."""
    reference, fast, inputs = entry.build_reference(), entry.build_fast(), entry.make_inputs()
    _timed(entry, reference, inputs)
    _timed(entry, fast, inputs)
    ref_times, fast_times = [], []
    for i in range(repeats):
        if i % 2 == 0:
            ref_times.append(_timed(entry, reference, inputs))
            fast_times.append(_timed(entry, fast, inputs))
        else:
            fast_times.append(_timed(entry, fast, inputs))
            ref_times.append(_timed(entry, reference, inputs))
    return statistics.median(ref_times), statistics.median(fast_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ENTRIES),
                        help=f"comma-separated entries (default: all: {', '.join(ENTRIES)})")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (median; default 3)")
    args = parser.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENTRIES]
    if unknown:
        parser.error(f"unknown entries {', '.join(unknown)}; known: {', '.join(ENTRIES)}")
    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} thread(s), {args.repeats} repeats (median), load average {load[0]:.1f} {load[1]:.1f}")
    print(f"| {'model':<14} | {'unit':<6} | {'today':>8} | {'fast':>8} | {'ratio':>6} |")
    print(f"|{'-' * 16}|{'-' * 8}|{'-' * 10}|{'-' * 10}|{'-' * 8}|")
    for name in names:
        entry = ENTRIES[name]
        ref, fast = measure(entry, args.repeats)
        print(f"| {name:<14} | {entry.unit:<6} | {ref:8.2f} | {fast:8.2f} | {ref / fast:5.1f}x |", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f}")


if __name__ == "__main__":
    main()
