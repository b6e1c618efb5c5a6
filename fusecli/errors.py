"""The one family of exceptions raised by fusecli's library code.

Every error a user can cause (a missing file, a wrong checkpoint, an unknown model name, an image
too small for a model) is a :class:`FusecliError`. The message says what was expected, what was
found and how to fix it, so the CLI can print it as a single line. Anything that is not a
``FusecliError`` is a bug in fusecli and keeps its traceback.

The subclasses also derive from the matching built-in exception, so callers that catch
``ValueError`` / ``KeyError`` / ``OSError`` keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FusecliError(Exception):
    """Base class of every error fusecli raises on purpose."""


class ImageReadError(FusecliError, OSError):
    """An input image is missing, unreadable, empty or of an unsupported type."""


class ImageWriteError(FusecliError, OSError):
    """An output image cannot be written (bad extension, unwritable folder, would overwrite an input)."""


class ShapeError(FusecliError, ValueError):
    """Tensors or images have shapes that do not fit together or do not fit a model."""


class CheckpointError(FusecliError, ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the model it is loaded into."""


class UnknownNameError(FusecliError, KeyError):
    """A name (model, metric, device ...) is not one of the known choices."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        choices = sorted(choices)
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Choose one of: {', '.join(choices)}.")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class DeviceError(FusecliError, RuntimeError):
    """The requested device does not exist, or it ran out of memory."""


class ConfigError(FusecliError, ValueError):
    """A configuration value, card or command-line option is invalid."""
