"""Fast inference for the CSCFuse encoders (CSC-IVF, CSC-MSF): the DCU chain as matrix products.

The reference path (:class:`~fusecli.models.layers.DCU`) spends most of its time in work a CPU does
badly: convolutions with one (or three) channels on one side (``D``: C -> image channels, ``E``:
image channels -> C), and full-size 64/256-channel temporaries (reflect padding of the code, the
convolution output, BatchNorm, the activation), each a fresh allocation the kernel must page in.
This module computes the same ISTA steps ``z <- act(BN(z + E(x - D z)))`` at inference (eval mode,
no autograd) differently:

* The code of one image lives in one (H W, C) matrix, channels last (pixel ``(y, x)`` at row
  ``y W + x``), updated **in place**, one block of rows at a time, so that all the work of a unit on a
  block happens while the block is in the CPU cache.
* BatchNorm is folded: ``BN(z + E r) = s z + (s E) r + t``. The code is kept pre-multiplied by the
  next unit's ``s``, so the whole pre-activation is one in-place matrix product
  ``y += [taps(r), 1] @ [s E; t]`` with the 3x3 taps of the reflect-padded data residual ``r``
  (9 per image channel) and a row of ones for the shift.
* ``D z`` with reflect padding: ``D`` is linear and the padding acts per channel, so the nine tap
  projections ``P_k = sum_c D[:, c, k] z_c`` (one (9 Ci, C) x (C, rows) product, taken while the
  block is in cache) are padded and summed with their shifts instead. Only image-channel planes (1, 3
  or 31 channels) are ever padded or shifted.
* Activations in place: PReLU as ``z + (a - 1) min(z, 0)``; the soft threshold
  ``sign(z) relu(|z| - theta)`` as ``z - clamp(z, -theta+, theta+) - theta- sign(z)`` with
  ``theta+ = max(theta, 0)``, ``theta- = min(theta, 0)`` (an unclamped negative threshold widens
  instead of shrinking, as in the reference).
* Independent chains (two sources, two branches) run side by side on the CPU cores, one intra-op
  thread each (:func:`~fusecli.models._tasks.run_parallel`): the small per-block operations then
  never wait for each other.

The results equal the reference path to float rounding (another summation order); the models keep
their reference path (``path="reference"``) as the test oracle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._tasks import run_parallel, task_threads, workers
from .layers import DCU, SoftThreshold

__all__ = ["Activation", "FoldedUnit", "fold_bn", "fold_activation", "fold_dcu", "fold_first", "run_chain",
           "split_chain", "run_parallel", "task_threads", "workers", "BLOCK_ELEMENTS"]

#: elements of a code updated per step: 1 MiB of float32 (one core's L2), 4096 rows of 64 channels
BLOCK_ELEMENTS = 1 << 18

class Activation(NamedTuple):
    """A DCU activation in the form :func:`_activate` applies in place; tensors (C,).

    ``kind``: ``"prelu"`` (``p`` = slope - 1), ``"sst"`` (``p`` = ``max(theta, 0)``, ``q`` =
    ``-min(theta, 0)`` or None when no threshold is negative) or ``"none"``.
    """

    kind: str
    p: torch.Tensor | None = None
    q: torch.Tensor | None = None


class FoldedUnit(NamedTuple):
    """One ISTA step in matrix form (see the module docstring).

    Attributes:
        enc: (9 Ci + 1, C): the encoder ``E`` times the BatchNorm scale ``s`` on the rows of the
            taps (image channel major, then the 3x3 tap), and the BatchNorm shift ``t`` (zeros
            without BatchNorm) as the last row.
        scale: (C,) ``s``, which the previous code is multiplied by (None for a first unit, which
            starts from ``z = 0``).
        dec: (9 Ci, C): the tap projections of the decoder ``D`` (None for a first unit).
        act: the activation.
    """

    enc: torch.Tensor
    scale: torch.Tensor | None
    dec: torch.Tensor | None
    act: Activation


def fold_bn(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``s x + t``: returns ``(s, t)``, each (C,)."""
    s = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return s, norm.bias - norm.running_mean * s


def fold_activation(act: nn.Module) -> Activation:
    """PReLU / :class:`~fusecli.models.layers.SoftThreshold` / Identity -> :class:`Activation`."""
    if isinstance(act, nn.PReLU):
        return Activation("prelu", act.weight.reshape(-1) - 1)
    if isinstance(act, SoftThreshold):
        theta = act.theta.reshape(-1)
        if act.clamp:
            theta = theta.clamp_min(0)
        neg = -theta.clamp_max(0)
        return Activation("sst", theta.clamp_min(0), neg if bool((neg > 0).any()) else None)
    if isinstance(act, nn.Identity):
        return Activation("none")
    raise TypeError(f"no fast form for activation {type(act).__name__}")


def _enc_rows(weight: torch.Tensor, s: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
    """(C, Ci, 3, 3) weight, BatchNorm (s, t) -> (9 Ci + 1, C) ``[s E; t]``."""
    enc = weight.reshape(weight.shape[0], -1).t()
    if s is not None:
        enc = enc * s
    shift = t if t is not None else enc.new_zeros(enc.shape[1])
    return torch.cat([enc, shift[None]]).contiguous()


def fold_dcu(unit: DCU) -> FoldedUnit:
    """An eval-mode :class:`~fusecli.models.layers.DCU` (a unit with an incoming code) as a :class:`FoldedUnit`."""
    s, t = fold_bn(unit.norm)
    dec = unit.dec.weight.transpose(0, 1).reshape(unit.dec.weight.shape[1], -1).t()  # (Ci * 9, C)
    return FoldedUnit(_enc_rows(unit.enc.weight, s, t), s.contiguous(), dec.contiguous(),
                      fold_activation(unit.act))


def fold_first(conv_weight: torch.Tensor, act: nn.Module, norm: nn.BatchNorm2d | None = None) -> FoldedUnit:
    """The unit that starts from ``z = 0``: ``act(BN(conv(x)))`` (``norm`` None: no BatchNorm)."""
    s, t = fold_bn(norm) if norm is not None else (None, None)
    return FoldedUnit(_enc_rows(conv_weight, s, t), None, None, fold_activation(act))


def _taps(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The reflect-padded 3x3 taps of ``x`` (Ci, H, W) and a row of ones: ``out`` (9 Ci + 1, H W)."""
    ci, h, w = x.shape
    padded = F.pad(x[None], (1, 1, 1, 1), mode="reflect")[0]
    rows = out[:9 * ci].view(ci, 9, h, w)
    for k in range(9):
        u, v = divmod(k, 3)
        rows[:, k].copy_(padded[:, u:u + h, v:v + w])
    out[9 * ci].fill_(1)
    return out


def _shifted_sum(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``D z`` from its tap projections: ``p`` (9 Ci, H W) -> (Ci, H, W).

    Row ``9 i + k`` of ``p`` is the code projected on tap ``k`` of output channel ``i``; the
    reflect-padded planes summed with their shifts are the reflect-padded 3x3 correlation.
    """
    ci = p.shape[0] // 9
    padded = F.pad(p.view(1, 9 * ci, h, w), (1, 1, 1, 1), mode="reflect").view(ci, 9, h + 2, w + 2)
    out = padded[:, 0, :h, :w].clone()
    for k in range(1, 9):
        u, v = divmod(k, 3)
        out += padded[:, k, u:u + h, v:v + w]
    return out


def _activate(z: torch.Tensor, act: Activation, tmp: torch.Tensor) -> None:
    """Apply ``act`` to ``z`` in place; ``tmp`` is scratch of ``z``'s shape."""
    if act.kind == "prelu":
        torch.clamp(z, max=0, out=tmp)
        z.addcmul_(tmp, act.p)
    elif act.kind == "sst":
        torch.clamp(z, -act.p, act.p, out=tmp)
        z.sub_(tmp)
        if act.q is not None:
            torch.sign(z, out=tmp)
            z.addcmul_(tmp, act.q)


def _step(y: torch.Tensor, taps: torch.Tensor, unit: FoldedUnit, nxt: FoldedUnit | None,
          proj: torch.Tensor | None, planar: torch.Tensor | None, block: int) -> None:
    """One unit on every block of rows of the code ``y`` (HW, C), in place.

    ``y`` holds the code times ``unit.scale`` (anything for a first unit). Afterwards it holds the
    new code times ``nxt.scale``, and ``proj`` (9 Ci, HW) its tap projections; without ``nxt`` it
    holds the new code, also copied to ``planar`` (C, HW) when given.
    """
    hw = y.shape[0]
    tmp = y.new_empty(min(block, hw), y.shape[1])
    for r0 in range(0, hw, block):
        r1 = min(r0 + block, hw)
        yb, tb = y[r0:r1], tmp[:r1 - r0]
        a = taps[:, r0:r1].t()
        if unit.scale is None:
            torch.mm(a, unit.enc, out=yb)
        else:
            yb.addmm_(a, unit.enc)
        _activate(yb, unit.act, tb)
        if nxt is not None:
            torch.mm(nxt.dec, yb.t(), out=proj[:, r0:r1])
            yb.mul_(nxt.scale)
        elif planar is not None:
            planar[:, r0:r1].copy_(yb.t())


def run_chain(first_input: torch.Tensor, data: torch.Tensor, first: FoldedUnit, units: Sequence[FoldedUnit],
              out: torch.Tensor | None = None, planar: torch.Tensor | None = None,
              block: int | None = None) -> torch.Tensor:
    """One image through a CSC encoder: ``z = act(BN(E0 x0))``, then ``z <- act(BN(z + E(x - D z)))``.

    Args:
        first_input: (Ci, H, W) what the first unit encodes (the image, or a filtered part of it).
        data: (Ci, H, W) the data ``x`` of the later units.
        first, units: folded units (:func:`fold_first`, :func:`fold_dcu`).
        out: optional (H W, C) contiguous buffer for the code.
        planar: optional (C, H, W) tensor that also receives the code, channels first.
        block: rows per in-cache step (default: :data:`BLOCK_ELEMENTS` / C).

    Returns:
        The code as an (H W, C) matrix, channels last.
    """
    ci, h, w = data.shape
    c = first.enc.shape[1]
    block = block or max(64, BLOCK_ELEMENTS // c)
    y = out if out is not None else data.new_empty(h * w, c)
    taps = data.new_empty(9 * ci + 1, h * w)
    proj = data.new_empty(9 * ci, h * w) if units else None
    planar_rows = planar.view(c, h * w) if planar is not None else None
    chain = [first, *units]
    for i, unit in enumerate(chain):
        source = first_input if i == 0 else data - _shifted_sum(proj, h, w)
        nxt = chain[i + 1] if i + 1 < len(chain) else None
        _step(y, _taps(source, taps), unit, nxt, proj, planar_rows, block)
    return y


def split_chain(first_input: torch.Tensor, data: torch.Tensor, first: FoldedUnit, units: Sequence[FoldedUnit],
                parts: int) -> tuple[list, Callable[[], torch.Tensor]]:
    """:func:`run_chain` as ``parts`` independent jobs on bands of rows, for :func:`run_parallel`.

    Every unit looks one pixel further (its decoder and its encoder: two 3x3 correlations, the
    first unit only its encoder), so a band with ``1 + 2 len(units)`` rows of context on each
    inner side computes its own rows exactly (the reflect padding at the band's inner edges
    corrupts only the context). Each band writes into its own stretch of one buffer; ``finish()``
    (after the jobs) closes the gaps the context rows leave and returns the (H W, C) code.

    Returns:
        ``(jobs, finish)``.
    """
    ci, h, w = data.shape
    c = first.enc.shape[1]
    halo = 1 + 2 * len(units)
    step = -(-h // parts)
    bands = [(y0, min(y0 + step, h)) for y0 in range(0, h, step)]
    spans = [(max(y0 - halo, 0), min(y1 + halo, h)) for y0, y1 in bands]
    starts = [0]
    for r0, r1 in spans:
        starts.append(starts[-1] + r1 - r0)
    buffer = data.new_empty(starts[-1] * w, c)

    def job(i: int) -> None:
        r0, r1 = spans[i]
        run_chain(first_input[:, r0:r1], data[:, r0:r1], first, units,
                  out=buffer[starts[i] * w:starts[i + 1] * w])

    def finish() -> torch.Tensor:
        # each band's own rows sit ``gap`` rows below their place: move them up in chunks of at
        # most ``gap`` rows, first rows first, so that no chunk overlaps its source
        rows = buffer.view(-1, w, c)
        for i, (y0, y1) in enumerate(bands):
            gap = starts[i] + y0 - spans[i][0] - y0
            for a in range(y0, y1, gap or 1) if gap else ():
                b = min(a + gap, y1)
                rows[a:b].copy_(rows[a + gap:b + gap])
        return buffer[:h * w]

    return [lambda i=i: job(i) for i in range(len(bands))], finish
