"""DeRUN's stage with fused operators: fewer, larger convolutions (training and inference).

The reference :class:`~fusecli.models.derun.Stage` evaluates each PWSM branch on its own, pads
circularly before every convolution, and concatenates / slices channels between them: on a CPU,
with 4 to 16 channels, the time goes into the padding copies, the concatenations and the many small
convolutions. Here every operator of a stage is a *chain* of 3x3 convolutions (with PReLU between),
its weights assembled once per forward pass from the stage's parameters (differentiably, so training
takes this path too and its gradients are the reference's):

* ``T`` (both extractors at once): ``1 -> 2S+Sh`` (the three branches' first layers), PReLU, then
  ``2S+Sh -> 2(S+Sh)`` whose rows are ``[A_l, S, A_k, S]`` (the sharing branch's output written
  twice, block-sparse dense weights), i.e. ``[T_l y, T_k y]``; ``T_l`` / ``T_k`` alone likewise.
* ``T_l^T zl + T_k^T zk`` on ``[rho zl, tau zk]``: the four branch applications as one block-diagonal
  convolution (``rho`` and ``tau`` folded into its input channels), PReLU, then one ``-> 1``
  convolution whose weights are the four second layers side by side (the sum).
* ``Q_a y = y + T^T(T y)``: both chains back to back, the input padded once (by 4: circular padding
  commutes with circular convolutions, so valid convolutions on the padded map are exact).

Channels-last memory after the first convolution (oneDNN's fast layout for few channels).

Inference (no autograd) also drops what the weights leave silent, exactly: hidden channels whose
weights in or out are all zero (:func:`prune_chain`), and the filters that no stage's ``T^T`` reads
(:func:`live_filters`, :func:`restrict_filters`): from the classical start 6 of the 8 filters stay
silent in training, so the shipped weights run on 2. ``C -> 1`` convolutions run as a depthwise one
and a sum over channels (:func:`_to_one`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import _tasks

__all__ = ["Conv", "FusedStage", "fuse_stage", "prune_chain", "prune_stage", "live_filters", "restrict_filters",
           "inference_stages", "run_chain", "channels_last", "circular_pad", "empty_channels_last", "TILE_ROWS"]


class Conv(NamedTuple):
    """One 3x3 circular convolution of a chain and the PReLU after it (None: none)."""

    weight: torch.Tensor
    prelu: torch.Tensor | None = None


class FusedStage(NamedTuple):
    """The operators of one stage as chains (:func:`run_chain`); ``L = K`` filters.

    Attributes:
        t: ``y -> [T_l y, T_k y]`` (B, 1, H, W) -> (B, L + K, H, W).
        t_l, t_k: ``y -> T_l y``, ``y -> T_k y`` (B, 1, H, W) -> (B, L, H, W).
        tt: ``[zl, zk] -> T_l^T (rho zl) + T_k^T (tau zk)`` (B, L + K, H, W) -> (B, 1, H, W).
        tt_l: ``zl -> T_l^T zl`` (B, L, H, W) -> (B, 1, H, W).
        qa: ``t`` then ``tt``: ``Q_a y - y``.
    """

    t: list[Conv]
    t_l: list[Conv]
    t_k: list[Conv]
    tt: list[Conv]
    tt_l: list[Conv]
    qa: list[Conv]


def _prelu(branches: list[nn.Module]) -> torch.Tensor | None:
    acts = [b.act for b in branches]
    if not all(isinstance(a, nn.PReLU) for a in acts):
        return None
    return torch.cat([a.weight for a in acts])


def _place(weight: torch.Tensor, start: int, total: int) -> torch.Tensor:
    """``weight`` (cout, cin, 3, 3) as input channels ``start : start + cin`` of ``total``, zeros elsewhere."""
    return F.pad(weight, (0, 0, 0, 0, start, total - start - weight.shape[1]))


def _block_diagonal(weights: list[torch.Tensor]) -> torch.Tensor:
    total = sum(w.shape[1] for w in weights)
    rows, start = [], 0
    for w in weights:
        rows.append(_place(w, start, total))
        start += w.shape[1]
    return torch.cat(rows)


def _blocks(weights: list[torch.Tensor], prelu: torch.Tensor | None = None,
            in_scale: torch.Tensor | None = None) -> Conv:
    """Branches side by side, each on its own input channels: one dense block-diagonal convolution
    (oneDNN runs it no slower than the grouped one here, forward or backward). ``in_scale``
    (total input channels,) multiplies the input channels."""
    weight = _block_diagonal(weights)
    return Conv(weight if in_scale is None else weight * in_scale.view(1, -1, 1, 1), prelu)


def _forward_chain(branches: list[nn.Module]) -> list[Conv]:
    """Forward branches (``1 -> mid -> out``) side by side on one input: outputs concatenated."""
    return [Conv(torch.cat([b.conv1 for b in branches]), _prelu(branches)),
            _blocks([b.conv2 for b in branches])]


def fuse_stage(stage: nn.Module) -> FusedStage:
    """The chains of a :class:`~fusecli.models.derun.Stage` (differentiable in its parameters)."""
    T, Tt = stage.T, stage.Tt
    spec_l, spec_k, share = T.spec_l, T.spec_k, T.share
    s = T.specific
    first = [b for b in (spec_l, spec_k, share) if b is not None]
    hidden = sum(b.conv1.shape[0] for b in first)
    rows = []  # [A_l, S, A_k, S] over the hidden channels [spec_l, spec_k, share]
    for own, start in ((spec_l, 0), (spec_k, s)):
        if own is not None:
            rows.append(_place(own.conv2, start, hidden))
        if share is not None:
            rows.append(_place(share.conv2, 2 * s if spec_l is not None else 0, hidden))
    t = [Conv(torch.cat([b.conv1 for b in first]), _prelu(first)), Conv(torch.cat(rows))]
    t_l = _forward_chain([b for b in (spec_l, share) if b is not None])
    t_k = _forward_chain([b for b in (spec_k, share) if b is not None])
    back = [b for b in (Tt.spec_l, Tt.share, Tt.spec_k, Tt.share) if b is not None]
    scale = torch.cat([stage.rho, stage.tau], 1).reshape(-1)
    tt = [_blocks([b.conv1 for b in back], _prelu(back), scale), Conv(torch.cat([b.conv2 for b in back], 1))]
    back_l = [b for b in (Tt.spec_l, Tt.share) if b is not None]
    tt_l = [_blocks([b.conv1 for b in back_l], _prelu(back_l)), Conv(torch.cat([b.conv2 for b in back_l], 1))]
    # Q_a - I: T's second layer without the duplicated sharing output ([A_l, A_k, S] over the hidden
    # [spec_l, spec_k, share]); T^T's first layer reads the sharing output for both its l and k
    # halves, so those input columns (scaled by rho and by tau) are added.
    back1 = tt[0].weight
    hidden_out = sum(b.conv2.shape[0] for b in first)
    select = back1.new_zeros(back1.shape[1], hidden_out)  # T's output channel i <- hidden output j
    for i, j in enumerate(_t_output_sources(s, share.conv2.shape[0] if share is not None else 0)):
        select[i, j] = 1
    qa = [t[0], _blocks([b.conv2 for b in first]),
          Conv(torch.einsum("oikl,ij->ojkl", back1, select), tt[0].prelu), tt[1]]
    return FusedStage(t, t_l, t_k, tt, tt_l, qa)


def prune_chain(chain: list[Conv]) -> list[Conv]:
    """``chain`` without its silent hidden channels: the same map, fewer multiplications (inference).

    A hidden channel (the output of one convolution, the input of the next) is dropped when the next
    convolution reads it with all-zero weights, or when its own weights are all zero (it is then
    exactly 0, and PReLU(0) = 0). The chain's input and output channels are kept. Exact for finite
    inputs (only products ``0 * x`` go; the accumulation order may change the last bit). Trained
    DeRUN weights have such channels: see :meth:`~fusecli.models.derun.Stage.init_classical`.
    Not for training: a zero weight's gradient is not zero in general, and pruning drops it."""
    chain, changed = list(chain), True
    while changed:  # dropping a channel can silence one a layer earlier or later
        changed = False
        for i in range(len(chain) - 1):
            here, after = chain[i], chain[i + 1]
            live = (here.weight.flatten(1) != 0).any(1) & (after.weight.transpose(0, 1).flatten(1) != 0).any(1)
            if bool(live.all()) or here.weight.shape[0] == 1:
                continue
            keep = live.nonzero().flatten()
            if keep.numel() == 0:  # nothing reaches the next convolution: keep one (zero) channel
                keep = keep.new_zeros(1)
            chain[i] = Conv(here.weight[keep], None if here.prelu is None else here.prelu[keep])
            chain[i + 1] = Conv(after.weight[:, keep].contiguous(), after.prelu)
            changed = True
    return chain


def prune_stage(ops: FusedStage) -> FusedStage:
    """:func:`prune_chain` on every chain of ``ops`` (inference only)."""
    return FusedStage(*(prune_chain(chain) for chain in ops))


def live_filters(stages: list[FusedStage], filters: int) -> torch.Tensor:
    """The filters whose maps (E, F of ``l``; H, G of ``k``) reach the output: those that some stage's
    ``T^T`` reads with non-zero weights (``tt``'s input channel ``c`` or ``filters + c``, ``tt_l``'s
    ``c``). The updates of a filter's maps read only that filter's channels and the image, so the
    others never change ``Y``; inference may skip them (:func:`restrict_filters`). Returns a sorted
    index tensor (at least one filter)."""
    live = torch.zeros(filters, dtype=torch.bool, device=stages[0].tt[0].weight.device)
    for ops in stages:
        tt = (ops.tt[0].weight != 0).transpose(0, 1).flatten(1).any(1)
        live |= tt[:filters] | tt[filters:] | (ops.tt_l[0].weight != 0).transpose(0, 1).flatten(1).any(1)
    index = live.nonzero().flatten()
    return index if index.numel() else index.new_zeros(1)


def restrict_filters(ops: FusedStage, live: torch.Tensor, filters: int) -> FusedStage:
    """``ops`` on the ``live`` filters' channels only (:func:`live_filters`): the extractors' outputs
    and the transposes' inputs selected, then :func:`prune_stage` (inference only)."""
    both = torch.cat([live, live + filters])

    def rows(chain: list[Conv], index: torch.Tensor) -> list[Conv]:
        last = chain[-1]
        prelu = None if last.prelu is None else last.prelu[index]
        return [*chain[:-1], Conv(last.weight[index], prelu)]

    def columns(chain: list[Conv], index: torch.Tensor) -> list[Conv]:
        return [Conv(chain[0].weight[:, index].contiguous(), chain[0].prelu), *chain[1:]]

    return prune_stage(FusedStage(rows(ops.t, both), rows(ops.t_l, live), rows(ops.t_k, live),
                                  columns(ops.tt, both), columns(ops.tt_l, live), ops.qa))


def inference_stages(stages: list[nn.Module]) -> tuple[list[FusedStage], torch.Tensor]:
    """The chains of every :class:`~fusecli.models.derun.Stage` for inference without autograd: fused,
    pruned (:func:`prune_stage`; first, so that a transpose input read only by pruned channels counts
    as silent), restricted to the live filters (:func:`live_filters`, :func:`restrict_filters`).
    Returns (the stages' chains, the live filters' indices)."""
    filters = stages[0].filters
    ops = [prune_stage(fuse_stage(stage)) for stage in stages]
    live = live_filters(ops, filters)
    return [restrict_filters(o, live, filters) for o in ops], live


def _t_output_sources(specific: int, shared: int) -> list[int]:
    """For each channel of ``[T_l y, T_k y] = [A_l, S, A_k, S]``, its channel in ``[A_l, A_k, S]``."""
    sh = list(range(2 * specific, 2 * specific + shared))
    return [*range(specific), *sh, *range(specific, 2 * specific), *sh]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) in channels-last memory; a contiguous one-channel tensor only restrided
    (its memory is already channels last) so that oneDNN sees the layout and keeps it."""
    if x.shape[1] == 1 and x.is_contiguous():
        return x.as_strided(x.shape, (x.stride(0), 1, x.stride(2), 1))
    return x.contiguous(memory_format=torch.channels_last)


def empty_channels_last(like: torch.Tensor, channels: int) -> torch.Tensor:
    """An uninitialised (B, channels, H, W) tensor in channels-last memory, ``like``'s size, dtype, device."""
    b, _, h, w = like.shape
    return torch.empty(b, channels, h, w, dtype=like.dtype, device=like.device, memory_format=torch.channels_last)


def circular_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Circular padding by ``r`` of (B, C, H, W) ``x`` (r <= H, W), channels-last memory out (the
    library's circular padding would return channels-first memory, and slowly, for such input)."""
    if x.shape[1] == 1:
        return channels_last(F.pad(x.contiguous(), (r, r, r, r), mode="circular"))
    x = channels_last(x)
    b, c, h, w = x.shape
    out = torch.empty(b, c, h + 2 * r, w + 2 * r, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    out[:, :, r:r + h, r:r + w] = x
    out[:, :, :r, r:r + w] = x[:, :, h - r:]
    out[:, :, r + h:, r:r + w] = x[:, :, :r]
    out[:, :, :, :r] = out[:, :, :, w:w + r]
    out[:, :, :, r + w:] = out[:, :, :, r:2 * r]
    return out


def _convolve(x: torch.Tensor, chain: list[Conv]) -> torch.Tensor:
    for conv in chain:
        x = _to_one(x, conv.weight) if _one_out(x, conv.weight) else F.conv2d(x, conv.weight)
        if conv.prelu is not None:
            x = F.prelu(x, conv.prelu)
    return x


def _one_out(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`_to_one` takes this convolution: many channels to one, CPU, no autograd."""
    return weight.shape[0] == 1 and weight.shape[1] > 1 and x.device.type == "cpu" and not torch.is_grad_enabled()


def _to_one(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A valid ``C -> 1`` 3x3 convolution of channels-last ``x`` (B, C, H, W) as a depthwise one and
    a sum over channels (a matrix product with ones): oneDNN runs ``C -> 1`` at a small fraction of
    its rate; this is 1.8-2.8x faster at C = 2 to 16 (``python benchmarks/derun_to_one.py``: one
    thread, 130x674 tiles). Same values to float rounding (the sum's order differs). Returns
    (B, 1, H - 2, W - 2), channels-last memory."""
    c = weight.shape[1]
    per_channel = F.conv2d(x, weight.reshape(c, 1, *weight.shape[2:]), groups=c)
    ones = weight.new_ones(c, 1)
    return torch.matmul(per_channel.permute(0, 2, 3, 1), ones).permute(0, 3, 1, 2)


#: rows of one tile of :func:`_run_chain_tiles` (with the chain's context rows). Measured with
#: the shipped weights, 640x480, 2 threads, in one process: quiet machine 32 rows 6.19 s, 64 5.68,
#: 128 5.38, 256 (one tile per worker) 5.58; with other jobs on the cores small tiles gained most
#: (their intermediates stay in cache). Against the earlier code (one band per worker, one padded
#: copy per band) in the same process: 5.81 vs 7.18 s (medians of 4, load ~1.5)
TILE_ROWS = 128


def run_chain(x: torch.Tensor, chain: list[Conv]) -> torch.Tensor:
    """Circular 3x3 convolutions (and PReLUs) of ``chain`` on (B, C, H, W) ``x``: padded once by
    ``len(chain)``, then valid convolutions. Returns (B, C_out, H, W), channels-last memory.

    Without autograd on a CPU, the chain runs in tiles of rows (:func:`_run_chain_tiles`: at most
    :data:`TILE_ROWS`, and at least one tile per worker inside
    :func:`~fusecli.models._tasks.task_threads`, side by side)."""
    r = len(chain)
    h = x.shape[-2]
    if not torch.is_grad_enabled() and x.device.type == "cpu":
        rows = min(TILE_ROWS, -(-h // _tasks.workers()))
        if rows < h:
            return _run_chain_tiles(x, chain, rows)
    return _convolve(circular_pad(x, r), chain)


def _run_chain_tiles(x: torch.Tensor, chain: list[Conv], rows: int) -> torch.Tensor:
    """:func:`run_chain` in tiles of ``rows`` rows, each with ``len(chain)`` rows of (wrapped)
    context above and below and its columns padded circularly: the whole chain runs on a tile
    before the next (the intermediates stay in cache). Contiguous runs of tiles go to the workers
    of :func:`~fusecli.models._tasks.run_parallel` side by side. The same values as the whole-image
    chain (valid convolutions on exact circular context)."""
    r = len(chain)
    b, c, h, w = x.shape
    x = channels_last(x)
    out = torch.empty(b, chain[-1].weight.shape[0], h, w, dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    padded = torch.empty(b, c, rows + 2 * r, w + 2 * r, dtype=x.dtype, device=x.device,
                         memory_format=torch.channels_last)

    def tile(y0: int, y1: int, buffer: torch.Tensor) -> None:
        index = torch.arange(y0 - r, y1 + r, device=x.device) % h
        part = buffer[:, :, :y1 - y0 + 2 * r]
        part[..., r:r + w] = x.index_select(2, index)
        part[..., :r] = part[..., w:w + r]
        part[..., r + w:] = part[..., r:2 * r]
        out[:, :, y0:y1] = _convolve(part, chain)

    starts = list(range(0, h, rows))
    tasks = min(_tasks.workers(), len(starts))
    share = -(-len(starts) // tasks)

    def job(first: int) -> None:
        buffer = padded if first == 0 else torch.empty_like(padded)
        for y0 in starts[first:first + share]:
            tile(y0, min(y0 + rows, h), buffer)

    _tasks.run_parallel([lambda first=first: job(first) for first in range(0, len(starts), share)])
    return out
