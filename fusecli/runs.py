"""What the dataset commands share: their models, their output folder, their records.

``batch`` (:mod:`fusecli.batch`), ``robustness`` (:mod:`fusecli.robustness`) and ``fuse`` on videos
(:mod:`fusecli.video`) each plan a run from their options, execute it, and report. The steps they
have in common are here, written once:

- :func:`build_models`: a registry model from name, checkpoint, weights card and fusion rule, one
  copy per device;
- :func:`claim_output`: refuse an output folder that is the dataset or one of its role folders,
  then hold the folder's lock (:mod:`fusecli.locking`) for the rest of the run;
- :func:`write_json`: a record (manifest, cell) written atomically;
- :func:`stretch_record` and :func:`stretch_note`: how the 16-bit rule is recorded and told;
- :func:`resize_index` and :func:`resample`: ``--resize-to`` for sources of different sizes.

Tensor contract: images are (1, C, H, W) float32 tensors in [0, 1].
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .io import write_text_atomic
from .locking import hold_output_lock

__all__ = ["build_models", "model_identity", "claim_output", "check_output_folder", "write_json", "stretch_record",
           "stretch_note", "resize_index", "resample"]


def build_models(name: str, *, checkpoint: str | os.PathLike[str] | None = None, weights: str | None = "default",
                 fusion: str | None = None, devices: Sequence[torch.device | str] = ("cpu",)) -> list[nn.Module]:
    """The registry model ``name`` (see :func:`fusecli.models.create_model`), one copy per device.

    The first is built on ``devices[0]``; the others are copies of it, not new models, so that with
    random weights (``weights=None``) every device computes the same.

    Raises:
        UnknownNameError, CheckpointError, ConfigError, DeviceError.
    """
    from .models import create_model

    first = create_model(name, checkpoint=checkpoint, weights=weights, device=devices[0], fusion=fusion)
    return [first] + [copy.deepcopy(first).to(device) for device in devices[1:]]


def model_identity(model: nn.Module) -> str:
    """What decides a model's outputs, as one string for the keys of reusable results: its weights
    (``weights_info``: the card and its sha256, or the checkpoint) and its config (the same weights
    with other settings, e.g. more CG steps, or a model without weights run with other parameters,
    compute something else)."""
    info = getattr(model, "weights_info", type(model).__name__)
    config = getattr(model, "config", None)
    return f"{info}; {config!r}" if config is not None else str(info)


def check_output_folder(output: str | os.PathLike[str], dataset: str | os.PathLike[str],
                        roles: Sequence[str]) -> None:
    """Refuse an output folder that is ``dataset`` or one of its role folders (the outputs would be
    paired as sources).

    Raises:
        ConfigError: it is.
    """
    out, data = Path(output).resolve(), Path(dataset)
    if out == data.resolve() or any(out == (data / role).resolve() for role in roles):
        raise ConfigError(f"the output folder '{output}' is the dataset or one of its role folders; "
                          "choose another -o")


def claim_output(output: str | os.PathLike[str], dataset: str | os.PathLike[str], roles: Sequence[str], *,
                 shard: tuple[int, int] | None = None, command: str = "batch") -> Path:
    """Check ``output`` (see :func:`check_output_folder`), create it and hold its lock until the run
    ends (see :func:`fusecli.locking.hold_output_lock`: the caller is decorated with
    :func:`~fusecli.locking.releases_output_locks`). Call it once the options are checked and the
    models built, before the first write.

    Returns:
        ``output`` as a path.

    Raises:
        ConfigError: ``output`` is the dataset or a role folder. ImageWriteError: another run of
        ``command`` holds the folder (or shard), or the folder cannot be created.
    """
    check_output_folder(output, dataset, roles)
    hold_output_lock(output, shard, command=command)
    return Path(output)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON to ``path`` atomically (its folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def stretch_record(stretch_16bit: bool | None) -> str | bool:
    """``--stretch-16bit`` as a record holds it: ``"auto"`` for the default rule, else the bool."""
    return "auto" if stretch_16bit is None else bool(stretch_16bit)


def stretch_note(sources: Sequence[str], pairs: int) -> str:
    """The one line that tells the user the default rule stretched ``sources`` (of ``pairs`` pairs)."""
    return (f"stretched {len(sources)} 16-bit source(s) of {pairs} pair(s) that use less than half of 0..65535 to "
            f"the full range (e.g. {sources[0]}); --no-stretch-16bit keeps the raw values")


def resize_index(resize_to: str | None, roles: Sequence[str]) -> int | None:
    """The source whose size ``--resize-to`` names: a role folder, ``ir``/``a`` (first) or
    ``vis``/``b`` (second); None when not given.

    Raises:
        ConfigError: another name.
    """
    if resize_to is None or resize_to == "":
        return None
    if resize_to in roles:
        return list(roles).index(resize_to)
    aliases = {"a": 0, "ir": 0, "b": 1, "vis": 1}
    if resize_to.lower() in aliases:
        return aliases[resize_to.lower()]
    raise ConfigError(f"--resize-to {resize_to!r}: use ir or vis (a or b), or a role folder ({', '.join(roles)})")


def resample(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resample a (1, C, H, W) image in [0, 1] to width x height: INTER_AREA to shrink, INTER_LINEAR
    to enlarge."""
    _, _, h, w = image.shape
    shrink = width <= w and height <= h
    array = image[0].permute(1, 2, 0).numpy()
    out = cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).unsqueeze(0).clamp_(0, 1)
