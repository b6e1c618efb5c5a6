"""CPU work as side-by-side tasks, one intra-op thread each (the fast inference paths).

Many small operations (blocks of rows, single planes, bands of an image) split across threads each
pay a synchronisation, which on a loaded machine costs more than the operation itself; one thread
per task, tasks side by side, pays none. :func:`task_threads` sets that up for a block of code,
:func:`run_parallel` runs the tasks.

Allocator warm-up: glibc serves an allocation at or above its *mmap threshold* with fresh pages from
the kernel (every page faulted in on first touch, ~1 ms per MiB here) and raises the threshold, up to
32 MiB, only to the size of a larger block when one is freed, so a loop that allocates the same size
again and again (a convolution's output, band after band) pays the page faults on every call.
:func:`task_threads` allocates and frees one block just under 32 MiB once per process, which raises
the threshold to where glibc's own heuristic ends up after any such free: later allocations below
32 MiB then reuse heap memory. (Elsewhere than glibc it is one allocation and nothing more.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from typing import TypeVar

import cv2
import torch

__all__ = ["task_threads", "run_parallel", "run_bands", "workers"]

T = TypeVar("T")

#: set inside :func:`task_threads`: the intra-op thread count it replaced (the workers of run_parallel)
_WORKERS: ContextVar[int | None] = ContextVar("fusecli_task_workers", default=None)
#: one pool per worker count, kept for the process (many short run_parallel calls)
_POOLS: dict[int, ThreadPoolExecutor] = {}
_WARMED = False


def _warm_allocator() -> None:
    """Allocate and free one block just under 32 MiB (see the module docstring), once."""
    global _WARMED
    if not _WARMED:
        _WARMED = True
        block = torch.empty(((32 << 20) - (64 << 10)) // 4)
        del block


def workers() -> int:
    """Tasks :func:`run_parallel` runs side by side here (1 outside :func:`task_threads` with one thread)."""
    return _WORKERS.get() or torch.get_num_threads()


@contextmanager
def task_threads() -> Iterator[int]:
    """Run the enclosed CPU work as tasks: intra-op threads (torch, OpenCV) set to 1, and
    :func:`run_parallel` given the previous thread count as workers. Restored on exit.

    The settings are process-wide: torch work started meanwhile in other threads also runs on one
    thread until the block ends. Yields the worker count.
    """
    outer = _WORKERS.get()
    if outer is not None:  # nested: already set up
        yield outer
        return
    _warm_allocator()
    torch_threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    token = _WORKERS.set(torch_threads)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield torch_threads
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv_threads)
        _WORKERS.reset(token)


def run_parallel(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """Run independent CPU jobs side by side, one intra-op thread each (see :func:`task_threads`).

    The jobs run in the caller's grad / inference mode and autocast state (all thread-local in
    torch: ``--precision bf16`` reaches the workers); with one worker (or one job) in turn, in
    order. Returns their results in order.
    """
    with task_threads() as count:
        if count <= 1 or len(jobs) <= 1:
            return [job() for job in jobs]
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
        autocast = [(dev, torch.get_autocast_dtype(dev)) for dev in ("cpu", "cuda") if torch.is_autocast_enabled(dev)]

        def call(job: Callable[[], T]) -> T:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad), ExitStack() as stack:
                for dev, dtype in autocast:
                    stack.enter_context(torch.autocast(dev, dtype=dtype))
                return job()

        pool = _POOLS.get(count)
        if pool is None:
            pool = _POOLS.setdefault(count, ThreadPoolExecutor(count, thread_name_prefix="fusecli-task"))
        return list(pool.map(call, jobs))


def run_bands(fn: Callable[[slice], object], height: int) -> None:
    """``fn(rows)`` on bands of ``height`` rows (one per worker) side by side (:func:`run_parallel`);
    one call with all rows when there is one worker."""
    count = workers()
    if count <= 1 or height < 2 * count:
        fn(slice(0, height))
        return
    step = -(-height // count)
    run_parallel([lambda y0=y0: fn(slice(y0, min(y0 + step, height))) for y0 in range(0, height, step)])
