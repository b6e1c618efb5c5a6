"""The fast path of FRUFN's Swin-V2 layer: window attention in cache-sized chunks, channel-major.

The reference path (:class:`~fusecli.models.swin_v2.SwinV2Layer` as Swin2SR writes it) works on the
whole (B, H*W, C) token tensor at once: per block it rolls the image, copies it into windows, runs
``bmm`` / ``softmax`` on (B*nW*heads, N, N) tiles of N = 4 or 16 tokens and copies back. With
C = 32 channels, 8 heads of 4 and N = 4, every one of those operations is a short-row kernel over
tensors far larger than the caches, and the elementwise work dominates the run time.

This path computes the same maths (same parameters, same formulas; results equal to float
rounding) differently:

* tokens are gathered straight into window order with one precomputed index per block (the cyclic
  shift folded into it), and the next block gathers from the previous block's window order with a
  composed index; only the layer's output goes back to raster order;
* the layer runs over chunks of whole window rows (about :data:`CHUNK_TOKENS` tokens), so every
  intermediate stays in the CPU caches;
* inside a chunk the attention is channel-major, q, k, v as (heads, d, N, windows): the attention
  of all windows of a chunk is a handful of multiply-adds and one softmax over long vectors (the
  windows are the innermost axis) instead of millions of 4 x 4 matrix products; the residual
  stream, LayerNorms and MLP stay token-major (t, C), one matrix product per linear layer;
* the shifted-window mask is added only to the windows that need one (last window row and column);
* without autograd, the chunks run side by side as single-threaded tasks
  (:mod:`fusecli.models._tasks`, ``torch.get_num_threads()`` workers): a chunk's many small
  operations then never wait at an OpenMP barrier (with several threads per operation, one
  descheduled thread on a busy machine stalls every operation).

Everything is differentiable (in-place updates only where autograd allows them, none on saved
tensors when gradients are needed), so training uses this path too. The gather indices and masks
depend only on (batch, height, width, window, shift, chunk) and are cached.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial, wraps

import torch
import torch.nn.functional as F

from ._tasks import run_parallel
from .swin_v2 import shifted_window_mask

__all__ = ["CHUNK_TOKENS", "WindowPlan", "window_plan", "swin_layer_fast", "scratch_buffers", "scratch"]

#: tokens per chunk (whole window rows; at least one row). 4096 tokens x 96 hidden channels and the
#: logits of 16-token windows stay within a core's share of the caches.
CHUNK_TOKENS = 4096


_SCRATCH = threading.local()


@contextmanager
def scratch_buffers() -> Iterator[None]:
    """Within the block (in this thread), :func:`scratch` hands out reusable buffers; they are
    released at its end. Nested blocks share the outermost one's buffers.

    Why: glibc serves each allocation above its mmap threshold (32 MiB at most) with fresh pages
    from the kernel, and on this kind of machine every page costs a fault on first touch (about 1 ms
    per MiB): a 640x480 map of 32 channels is 39 MiB. A model forward that makes the same
    few large scratch tensors in every cell pays that once per block instead of once per cell.
    """
    if getattr(_SCRATCH, "buffers", None) is not None:
        yield
        return
    _SCRATCH.buffers = {}
    try:
        yield
    finally:
        _SCRATCH.buffers = None


def scratch(name: str, shape: tuple[int, ...], like: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` (``like``'s dtype and device): the buffer ``name`` of the
    enclosing :func:`scratch_buffers` block when there is one (reused while the shape, dtype and
    device stay the same), else a fresh one. Only for values that are dead before the next call
    with the same name, and never for tensors autograd saves."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None or like.device.type != "cpu":  # other devices have caching allocators
        return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)
    buf = buffers.get(name)
    if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
        buf = buffers[name] = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)
    return buf


@dataclass(frozen=True)
class WindowPlan:
    """How one block's tokens are laid out in window order, chunk by chunk.

    Attributes:
        order: (B*H*W,) raster index of the token at each window-order position (chunk-major;
            within a chunk ``(position in window, window row, window column)``).
        inverse: the inverse permutation (window-order position of each raster token).
        chunks: ``(start, stop, rows)`` per chunk: its token range in window order and the global
            window rows (over B*Hb) it covers.
        mask_col: per chunk, the (N, N, rows) additive masks of its last-column windows (None
            without shift).
        mask_row: (N, N, Wb - 1) additive masks of the last-row windows except the corner (None
            without shift).
        last_rows: per chunk, the local indices of its rows that are an image's last window row.
    """

    order: torch.Tensor
    inverse: torch.Tensor
    chunks: tuple[tuple[int, int, int, int], ...]
    mask_col: tuple[torch.Tensor, ...] | None
    mask_row: torch.Tensor | None
    last_rows: tuple[tuple[int, ...], ...]


def _cached_plan(fn):
    """``lru_cache(maxsize=64)`` whose entries are built outside inference mode: a plan first made
    during ``torch.inference_mode`` inference then serves training too (a tensor created in inference
    mode cannot be saved for backward)."""
    @lru_cache(maxsize=64)
    @wraps(fn)
    def cached(*args):
        with torch.inference_mode(False):
            return fn(*args)
    return cached


@_cached_plan
def window_plan(b: int, h: int, w: int, ws: int, shift: int, chunk_tokens: int, device: str) -> WindowPlan:
    """The cached :class:`WindowPlan` of a (B, H, W) token grid, window ``ws``, cyclic shift ``shift``."""
    hb, wb, n = h // ws, w // ws, ws * ws
    rows_idx = (torch.arange(hb)[:, None] * ws + torch.arange(ws)[None, :] + shift) % h  # (Hb, ws)
    cols_idx = (torch.arange(wb)[:, None] * ws + torch.arange(ws)[None, :] + shift) % w  # (Wb, ws)
    raster = (torch.arange(b)[:, None, None, None, None] * (h * w)
              + rows_idx[None, :, :, None, None] * w + cols_idx[None, None, None, :, :])  # (B, Hb, ws, Wb, ws)
    raster = raster.reshape(b * hb, ws, wb, ws)
    per_chunk = max(1, chunk_tokens // (n * wb))
    parts, chunks, last_rows, mask_col = [], [], [], []
    start = 0
    full = None
    if shift:
        full = shifted_window_mask(h, w, ws, shift).view(hb, wb, n, n).permute(2, 3, 0, 1)  # (N, N, Hb, Wb)
    for g0 in range(0, b * hb, per_chunk):
        g1 = min(b * hb, g0 + per_chunk)
        parts.append(raster[g0:g1].permute(1, 3, 0, 2).reshape(-1))
        stop = start + parts[-1].numel()
        chunks.append((start, stop, g0, g1))
        start = stop
        last_rows.append(tuple(g - g0 for g in range(g0, g1) if g % hb == hb - 1))
        if full is not None:
            rows = torch.arange(g0, g1) % hb
            mask_col.append(full[:, :, rows, wb - 1].contiguous().to(device))
    order = torch.cat(parts)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    mask_row = full[:, :, hb - 1, :wb - 1].contiguous().to(device) if full is not None else None
    return WindowPlan(order.to(device), inverse.to(device), tuple(chunks),
                      tuple(mask_col) if full is not None else None, mask_row, tuple(last_rows))


@_cached_plan
def _composed(b: int, h: int, w: int, windows: tuple[tuple[int, int], ...], chunk_tokens: int,
              device: str) -> tuple[torch.Tensor, ...]:
    """Gather indices of consecutive blocks: block 0 from raster order, block i from block i-1's
    window order, and the last entry from the last block's window order back to raster."""
    plans = [window_plan(b, h, w, ws, s, chunk_tokens, device) for ws, s in windows]
    out = [plans[0].order]
    for prev, cur in zip(plans, plans[1:]):
        out.append(prev.inverse[cur.order])
    out.append(plans[-1].inverse)
    return tuple(out)


def _inverse_norm(u: torch.Tensor) -> torch.Tensor:
    """1 / max(||u||, 1e-12) over axis 1 of (heads, d, N, windows) (F.normalize's eps); (heads, N, windows)."""
    parts = u.unbind(1)
    sq = parts[0] * parts[0]
    for p in parts[1:]:
        sq.addcmul_(p, p)  # sq is fresh: in place is autograd-safe
    return sq.sqrt_().clamp_min_(1e-12).reciprocal_() if not sq.requires_grad else \
        sq.sqrt().clamp_min(1e-12).reciprocal()


def _attention_chunk(attn, x: torch.Tensor, n: int, bias: torch.Tensor, scale: torch.Tensor,
                     qkv_bias: torch.Tensor, mask_col: torch.Tensor | None, mask_row: torch.Tensor | None,
                     last_rows: tuple[int, ...], rows: int) -> torch.Tensor:
    """Swin-V2 window attention (projection included) of a token-major chunk ``x`` (t, C) of whole
    windows in window order; returns (t, C).

    ``bias`` (heads, N, N) is the position bias, ``scale`` (heads, 1, 1) the clamped exp(logit_scale);
    inside, q, k, v are channel-major (heads, d, N, windows) so every step runs over the windows.
    """
    t, c = x.shape
    heads = attn.heads
    d, wc = c // heads, t // n
    qkv = torch.addmm(qkv_bias[:, None], attn.qkv.weight, x.t()).view(3, heads, d, n, wc)
    q, k, v = qkv[0], qkv[1], qkv[2]
    qs = (q * (_inverse_norm(q) * scale)[:, None]).unbind(1)  # cosine attention with the temperature
    ks = (k * _inverse_norm(k)[:, None]).unbind(1)
    logits = qs[0][:, :, None, :] * ks[0][:, None, :, :]  # (heads, N_i, N_j, windows)
    for qi, ki in zip(qs[1:], ks[1:]):
        logits.addcmul_(qi[:, :, None, :], ki[:, None, :, :])
    logits.add_(bias[..., None])
    if mask_col is not None:  # shifted windows: only the last window column and row have a mask
        grid = logits.view(heads, n, n, rows, wc // rows)
        grid[..., -1].add_(mask_col)
        for r in last_rows:
            grid[..., r, :-1].add_(mask_row)
    probs = logits.softmax(dim=2).unbind(2)
    vs = v.unbind(2)
    out = probs[0][:, None] * vs[0][:, :, None]  # (heads, d, N_i, windows)
    for pj, vj in zip(probs[1:], vs[1:]):
        out.addcmul_(pj[:, None], vj[:, :, None])
    return F.linear(out.view(c, t).t(), attn.proj.weight, attn.proj.bias)


def _block_chunk(blk, x: torch.Tensor, n: int, bias: torch.Tensor, scale: torch.Tensor, qkv_bias: torch.Tensor,
                 mask_col: torch.Tensor | None, mask_row: torch.Tensor | None, last_rows: tuple[int, ...],
                 rows: int, inplace: bool) -> torch.Tensor:
    """One Swin-V2 block (res-post-norm) on a token-major chunk ``x`` (t, C) of whole windows;
    updates ``x`` in place when ``inplace``."""
    c = x.shape[1]
    y = _attention_chunk(blk.attn, x, n, bias, scale, qkv_bias, mask_col, mask_row, last_rows, rows)
    y = F.layer_norm(y, (c,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    x = x.add_(y) if inplace else x + y
    y = blk.mlp.fc2(F.gelu(blk.mlp.fc1(x)))
    y = F.layer_norm(y, (c,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    return x.add_(y) if inplace else x + y


def _for_each_chunk(count: int, work: Callable[[int], None], parallel: bool) -> None:
    """``work(k)`` for k in range(count): side by side as single-threaded tasks
    (:func:`fusecli.models._tasks.run_parallel`) when ``parallel``, else in turn in this thread."""
    if parallel and not threading.current_thread().name.startswith("fusecli-"):
        run_parallel([partial(work, k) for k in range(count)])
    else:  # training (autograd records in this thread), or already inside a task
        for k in range(count):
            work(k)


def swin_layer_fast(layer, x: torch.Tensor, in_ln=None, out_ln=None, chunk_tokens: int = CHUNK_TOKENS) -> torch.Tensor:
    """``out_ln(layer(in_ln(tokens of x)))`` for a :class:`~fusecli.models.swin_v2.SwinV2Layer`.

    Args:
        layer: the Swin-V2 layer (its blocks' windows and shifts, its parameters).
        x: (B, C, H, W) feature map, H and W multiples of the window, any memory format
            (channels-last avoids one copy).
        in_ln, out_ln: optional ``nn.LayerNorm`` applied to every token before / after the layer.
        chunk_tokens: tokens per chunk.

    Returns:
        (B, C, H, W) in channels-last memory format.
    """
    b, c, h, w = x.shape
    blocks = list(layer.blocks)
    windows = tuple((blk.window, blk.shift) for blk in blocks)
    device = str(x.device)
    gathers = _composed(b, h, w, windows, chunk_tokens, device)
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in layer.parameters())))
    tokens = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # raster order (a view for channels-last input)
    last = len(blocks) - 1
    for i, blk in enumerate(blocks):
        plan = window_plan(b, h, w, blk.window, blk.shift, chunk_tokens, device)
        attn = blk.attn
        bias = attn.position_bias()
        scale = torch.clamp(attn.logit_scale, max=math.log(100.0)).exp()
        qkv_bias = torch.cat((attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias))
        if inplace:  # window order, into a scratch buffer (updated in place; blocks alternate two)
            tokens = torch.index_select(tokens, 0, gathers[i], out=scratch(f"swin{i % 2}", tokens.shape, tokens))
        else:
            tokens = tokens.index_select(0, gathers[i])
        outs: list[torch.Tensor | None] = [None] * len(plan.chunks)
        # with autograd, the chunks as one split (its backward is one concatenation; a slice's
        # backward writes its gradient into a zero tensor of the whole size, once per chunk)
        pieces = None if inplace else tokens.split([stop - start for start, stop, _, _ in plan.chunks])

        def work(k: int, i=i, blk=blk, plan=plan, tokens=tokens, bias=bias, scale=scale, qkv_bias=qkv_bias,
                 pieces=pieces) -> None:
            start, stop, g0, g1 = plan.chunks[k]
            chunk = tokens[start:stop] if pieces is None else pieces[k]
            if i == 0 and in_ln is not None:  # the per-token norms run on the chunk, in cache
                chunk = F.layer_norm(chunk, (c,), in_ln.weight, in_ln.bias, in_ln.eps)
            mask_col = plan.mask_col[k] if plan.mask_col is not None else None
            out = _block_chunk(blk, chunk, blk.window ** 2, bias, scale, qkv_bias, mask_col,
                               plan.mask_row, plan.last_rows[k], g1 - g0, inplace)
            if i == last and out_ln is not None:
                out = F.layer_norm(out, (c,), out_ln.weight, out_ln.bias, out_ln.eps)
            if inplace and out.data_ptr() != tokens[start:stop].data_ptr():
                tokens[start:stop] = out
            outs[k] = out

        _for_each_chunk(len(plan.chunks), work, inplace)
        if not inplace:
            tokens = torch.cat(outs)
    out = tokens.index_select(0, gathers[-1])
    return out.view(b, h, w, c).permute(0, 3, 1, 2)
