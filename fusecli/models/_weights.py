"""Checkpoint files and weights cards.

A *card* is a YAML file in ``weights/`` that describes one checkpoint this project trained: the
model and config it belongs to, the weights file (safetensors) and its sha256, the training data and
recipe, and the metrics measured with it. :func:`find_card` reads one; :meth:`Card.load_state_dict`
verifies the sha256 before loading.

:func:`load_state_dict` reads any checkpoint a user hands us: a safetensors file, a torch file
(``weights_only=True``, legacy pickles included, nested ``state_dict`` / ``model`` entries and
``module.`` prefixes handled), or a folder of such files (merged: the official AUIF checkpoint is
three files with disjoint keys; when files of a folder share key names, as the official CSC-IVF
base and detail networks do, every key is prefixed with its file's stem, ``STEM/key``, so the
model's converter can tell them apart).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import CheckpointError

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".model", ".ckpt", ".bin")


def weights_dir() -> Path:
    """Where the shipped weights live: ``$FUSECLI_WEIGHTS`` if set, else the repository's ``weights/``
    (editable install), else ``<prefix>/share/fusecli/weights`` (wheel install)."""
    env = os.environ.get("FUSECLI_WEIGHTS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "weights"
    if repo.is_dir():
        return repo
    return Path(sys.prefix) / "share" / "fusecli" / "weights"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Card:
    """A weights card (``weights/<name>.yaml``)."""

    name: str
    model: str
    file: str
    sha256: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path:
        return self.path.parent / self.file

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors, after checking the file's sha256 against the card."""
        if not self.weights_path.is_file():
            raise CheckpointError(f"weights file {self.weights_path} named by card {self.path} is missing")
        digest = sha256_file(self.weights_path)
        if digest != self.sha256:
            raise CheckpointError(f"{self.weights_path} has sha256 {digest[:12]}..., but its card says "
                                  f"{self.sha256[:12]}...: the file is corrupt or was replaced")
        return load_state_dict(self.weights_path)[0]


def read_card(path: Path) -> Card:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"cannot read weights card {path}: {exc}") from exc
    required = ("name", "model", "file", "sha256")
    if not isinstance(data, dict) or any(k not in data for k in required):
        raise CheckpointError(f"weights card {path} must have the keys {', '.join(required)}")
    extra = {k: v for k, v in data.items() if k not in (*required, "config")}
    return Card(name=data["name"], model=data["model"], file=data["file"], sha256=data["sha256"],
                path=Path(path), config=dict(data.get("config") or {}), extra=extra)


def list_cards() -> list[Card]:
    folder = weights_dir()
    return [read_card(p) for p in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []


def find_card(name: str) -> Card:
    path = weights_dir() / f"{name}.yaml"
    if not path.is_file():
        known = [c.name for c in list_cards()]
        raise CheckpointError(f"no weights card {name!r} in {weights_dir()} (known: {', '.join(known) or 'none'})")
    return read_card(path)


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: our error says it in one line
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only load failed" not in text.lower():  # not a pickle at all
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {' '.join(text.split())}") from exc
        # torch's message advises trusting the file (a full unpickle): say why fusecli will not
        after = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        detail = f" ({after[0].strip()})" if after and after[0].strip() and "error:" in text else ""
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: torch's weights-only loader refused "
                              f"it{detail}; fusecli loads only tensors, numbers, strings and containers (unpickling "
                              "anything else could run code): use a safetensors file or a plain state dict") from exc
    except Exception as exc:  # pickle, zip and unpickler errors all mean "not a checkpoint we can read"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {first}") from exc
    for key in ("state_dict", "model", "net", "params"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint file, or every checkpoint file in a folder (merged).

    The files of a folder normally have disjoint keys and merge as they are. If two files define
    the same key (the official CSC-IVF ``LISTA_Base_Train.model`` and ``LISTA_Detail_Train.model``
    both hold ``convLayer0.*``), every key of every file is instead returned as ``"<stem>/<key>"``
    (``"LISTA_Base_Train/convLayer0.norm.weight"``), which the model's ``convert_official`` maps.

    Returns:
        (state dict, a short description with the sha256 of each file read)

    Raises:
        CheckpointError: missing path, unreadable file, a folder without checkpoints, or two files
        of a folder with the same stem (``a.pt``, ``a.pth``) that define the same key.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file())
        if not files:
            raise CheckpointError(f"folder {path} holds no checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)})")
    elif path.is_file():
        files = [path]
    else:
        raise CheckpointError(f"checkpoint {path} does not exist")
    states = [(f, _load_file(f)) for f in files]
    seen: set[str] = set()
    collide = False
    for _, state in states:
        collide = collide or not seen.isdisjoint(state)
        seen.update(state)
    merged: dict[str, torch.Tensor] = {}
    for f, state in states:
        for k, v in state.items():
            key = f"{f.stem}/{k}" if collide else k
            if key in merged:
                raise CheckpointError(f"key {k!r} appears in more than one file named {f.stem}.* in {path}")
            merged[key] = v
    info = ", ".join(f"{f.name} (sha256 {sha256_file(f)[:12]})" for f in files)
    return merged, info
