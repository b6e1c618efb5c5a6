"""One run per output folder: an advisory lock that a second ``batch`` or ``robustness`` run on
the same folder finds taken, so it stops with one line instead of doing every pair again.

The lock is ``flock`` on a hidden, empty file in the folder (``.fusecli.lock``, never listed as an
image or pair). The kernel drops it when the holding process ends in any way, ``kill -9``
included, so a rerun after a crash just works; the file itself stays. The shards of one batch
(``--shard i/N``) share a folder: each holds the folder's lock *shared* and its own shard lock
(``.fusecli.shard-i-of-N.lock``) exclusively, so shards run side by side while a second copy of a
shard, or an unsharded run, is refused. Where there are no advisory locks (Windows, a network file
system without them) or the lock file cannot be created (a read-only folder), runs go unguarded.

A function that takes a lock is decorated with :func:`releases_output_locks` and calls
:func:`hold_output_lock` once it has checked its arguments and before it writes; the locks are
released when the function returns or raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import ImageWriteError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "hold_output_lock", "releases_output_locks"]

LOCK_NAME = ".fusecli.lock"
"""The lock file of an output folder (hidden, empty)."""

F = TypeVar("F", bound=Callable[..., Any])
_HELD: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("fusecli_output_locks",
                                                                                   default=None)


def releases_output_locks(function: F) -> F:
    """Decorate a function that calls :func:`hold_output_lock`: its locks are released when it ends."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            token = _HELD.set(stack)
            try:
                return function(*args, **kwargs)
            finally:
                _HELD.reset(token)

    return wrapper  # type: ignore[return-value]


def hold_output_lock(folder: str | os.PathLike[str], shard: tuple[int, int] | None = None, *,
                     command: str = "batch") -> None:
    """Lock ``folder`` (created if missing) for this run, until the decorated caller ends.

    Args:
        folder: the output folder.
        shard: ``(i, N)`` for shard i of N of a batch: the folder's lock is taken shared and the
            shard's exclusively.
        command: the command's name, for the message.

    Raises:
        ImageWriteError: another process holds the lock (a run of ``command`` into ``folder``).
    """
    stack = _HELD.get()
    if stack is None:
        raise RuntimeError("hold_output_lock() called outside a function decorated with @releases_output_locks")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a parent that is a regular file, or a read-only place
        raise ImageWriteError(f"cannot create the output folder '{folder}': {exc.strerror or exc}; "
                              "choose another output folder") from None
    what = f"'{folder}'"
    _take(stack, folder / LOCK_NAME, exclusive=shard is None, what=what, command=command)
    if shard is not None:
        _take(stack, folder / f".fusecli.shard-{shard[0]}-of-{shard[1]}.lock", exclusive=True,
              what=f"shard {shard[0]}/{shard[1]} of {what}", command=command)


def _take(stack: contextlib.ExitStack, path: Path, *, exclusive: bool, what: str, command: str) -> None:
    if fcntl is None:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only folder: the run's first write will say so
        return
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ImageWriteError(
                f"another fusecli {command} is writing to {what} (it holds {path}); wait for it to end, "
                "or choose another output folder") from None
        return  # no advisory locks on this file system: unguarded
    stack.callback(os.close, fd)  # closing the file releases the lock
